//! MariaDB's own binlog events, which mysql_common does not know (they arrive as unknown event
//! types): GTID (162), GTID_LIST (163), BINLOG_CHECKPOINT (161) and ANNOTATE_ROWS (160). Layouts
//! from MariaDB's `log_event.h`; every read is bounds-checked.

use super::gtid::MariaGtid;
use super::rows::{Reader, RowError};

pub const ANNOTATE_ROWS_EVENT: u8 = 160;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 161;
pub const GTID_EVENT: u8 = 162;
pub const GTID_LIST_EVENT: u8 = 163;
pub const START_ENCRYPTION_EVENT: u8 = 164;
/// 165 (QUERY_COMPRESSED) to 171: events written with `log_bin_compress=ON`.
pub const FIRST_COMPRESSED_EVENT: u8 = 165;
pub const LAST_COMPRESSED_EVENT: u8 = 171;

/// GTID flags (`Gtid_log_event::FL_*`).
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

/// A MariaDB GTID event: the start of an event group (a transaction, or one DDL statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GtidEvent {
    pub(crate) gtid: MariaGtid,
    /// No BEGIN/COMMIT follows: the group is one statement (DDL, or a non-transactional write).
    pub(crate) standalone: bool,
    /// The group is an XA PREPARE (its changes commit later, with XA COMMIT).
    pub(crate) xa_prepare: bool,
}

/// Parse a GTID event body; `server_id` comes from the event header.
pub fn parse_gtid(body: &[u8], server_id: u32) -> Result<GtidEvent, RowError> {
    let mut r = Reader::new(body);
    let seq = r.uint_le(8, "GTID sequence number")?;
    let domain = r.uint_le(4, "GTID domain")? as u32;
    let flags = r.u8("GTID flags")?;
    if flags & FL_GROUP_COMMIT_ID != 0 {
        r.bytes(8, "GTID commit id")?;
    }
    Ok(GtidEvent {
        gtid: MariaGtid {
            domain,
            server: server_id,
            seq,
        },
        standalone: flags & FL_STANDALONE != 0,
        xa_prepare: flags & FL_PREPARED_XA != 0 && flags & FL_COMPLETED_XA == 0,
    })
}

/// Parse a GTID_LIST event: the binlog state at the start of a binlog file.
pub fn parse_gtid_list(body: &[u8]) -> Result<Vec<MariaGtid>, RowError> {
    let mut r = Reader::new(body);
    // The low 28 bits are the count; the top 4 are flags.
    let count = (r.uint_le(4, "GTID list count")? & 0x0fff_ffff) as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        out.push(MariaGtid {
            domain: r.uint_le(4, "GTID domain")? as u32,
            server: r.uint_le(4, "GTID server id")? as u32,
            seq: r.uint_le(8, "GTID sequence number")?,
        });
    }
    Ok(out)
}

/// Parse a BINLOG_CHECKPOINT event: the oldest binlog file still needed for crash recovery.
pub fn parse_binlog_checkpoint(body: &[u8]) -> Result<String, RowError> {
    let mut r = Reader::new(body);
    let len = r.uint_le(4, "checkpoint file name length")? as usize;
    let name = r.bytes(len, "checkpoint file name")?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// ANNOTATE_ROWS: the statement that made the following rows events (its text may hold row
/// values, so sluice never logs it).
pub fn parse_annotate_rows(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Whether an unknown event type is MariaDB's compressed form of a query or rows event.
pub(crate) fn is_compressed(event_type: u8) -> bool {
    (FIRST_COMPRESSED_EVENT..=LAST_COMPRESSED_EVENT).contains(&event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_events_parse_with_and_without_commit_ids() {
        let mut body = 910u64.to_le_bytes().to_vec();
        body.extend(0u32.to_le_bytes());
        body.push(FL_STANDALONE);
        let ev = parse_gtid(&body, 1).unwrap();
        assert_eq!(ev.gtid.to_string(), "0-1-910");
        assert!(ev.standalone && !ev.xa_prepare);

        let mut grouped = 5u64.to_le_bytes().to_vec();
        grouped.extend(3u32.to_le_bytes());
        grouped.push(FL_GROUP_COMMIT_ID);
        assert!(parse_gtid(&grouped, 2).is_err(), "commit id missing");
        grouped.extend(77u64.to_le_bytes());
        let ev = parse_gtid(&grouped, 2).unwrap();
        assert_eq!(ev.gtid.to_string(), "3-2-5");
        assert!(!ev.standalone);
    }

    #[test]
    fn gtid_lists_and_checkpoints_parse() {
        let mut body = 2u32.to_le_bytes().to_vec();
        for (d, s, n) in [(0u32, 1u32, 100u64), (1, 2, 7)] {
            body.extend(d.to_le_bytes());
            body.extend(s.to_le_bytes());
            body.extend(n.to_le_bytes());
        }
        let list = parse_gtid_list(&body).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "1-2-7");
        assert!(parse_gtid_list(&body[..20]).is_err());

        let mut cp = 16u32.to_le_bytes().to_vec();
        cp.extend(b"mysql-bin.000003");
        assert_eq!(parse_binlog_checkpoint(&cp).unwrap(), "mysql-bin.000003");
        assert!(parse_binlog_checkpoint(&cp[..10]).is_err());
    }
}
