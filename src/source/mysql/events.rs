//! One binlog event, read into what the stream acts on. Pure (no connection, no state), so event
//! bytes — from MariaDB, or assembled as MySQL 8 writes them — can be checked without a server.
//!
//! mysql_common frames events and parses the common ones (QUERY, XID, MySQL's GTID); TABLE_MAP,
//! rows events, ROTATE and MariaDB's own events are read by sluice's decoders.

use mysql_async::binlog::EventType;
use mysql_common::binlog::consts::BinlogChecksumAlg;
use mysql_common::binlog::events::{Event, GtidEvent, QueryEvent};

use super::gtid::MariaGtid;
use super::mariadb;
use super::rows::{self, RowError, RowsEvent, RowsKind, TableMap};

/// What an event means to the source.
#[derive(Debug)]
pub(crate) enum BinlogEvent<'a> {
    /// The stream goes on in `file` at `position`. `artificial`: the one a dump starts with,
    /// which names the file only.
    Rotate {
        file: String,
        position: u64,
        artificial: bool,
    },
    TableMap(TableMap),
    Rows(RowsEvent<'a>),
    /// A transaction committed.
    Xid,
    Query {
        schema: String,
        sql: String,
    },
    /// MySQL: a transaction starts; `commit_us` is its commit time in microseconds (MySQL 8), or
    /// 0 when the event has none (MySQL 5.7).
    MysqlGtid {
        sid: [u8; 16],
        gno: u64,
        commit_us: u64,
    },
    /// MySQL without GTIDs: a transaction starts.
    AnonymousGtid {
        commit_us: u64,
    },
    /// MariaDB: a transaction (or one standalone statement) starts.
    MariaGtid(mariadb::GtidEvent),
    /// MariaDB: the GTID state where a binlog file starts.
    MariaGtidList(Vec<MariaGtid>),
    /// The server is idle.
    Heartbeat,
    /// Nothing sluice needs (format description, ANNOTATE_ROWS, checkpoints, previous GTIDs, …).
    Other,
}

/// Read an event. Events sluice cannot decode correctly are refused with the setting to change
/// (`RowError::Unsupported`); a malformed event is an error, never a panic.
pub(crate) fn read(event: &Event) -> Result<BinlogEvent<'_>, RowError> {
    let header = event.header();
    let malformed = |e: std::io::Error| RowError::Malformed(e.to_string());
    if header.event_type_raw() != EventType::FORMAT_DESCRIPTION_EVENT as u8 {
        verify_checksum(event)?;
    }
    let rows_event =
        |kind, v2| rows::parse_rows_event(event.data(), kind, v2).map(BinlogEvent::Rows);
    Ok(match header.event_type() {
        Ok(EventType::ROTATE_EVENT) => {
            let (file, position) = parse_rotate(event);
            BinlogEvent::Rotate {
                file,
                position,
                artificial: header.log_pos() == 0,
            }
        }
        Ok(EventType::TABLE_MAP_EVENT) => {
            BinlogEvent::TableMap(rows::parse_table_map(event.data())?)
        }
        Ok(EventType::WRITE_ROWS_EVENT_V1) => rows_event(RowsKind::Write, false)?,
        Ok(EventType::UPDATE_ROWS_EVENT_V1) => rows_event(RowsKind::Update, false)?,
        Ok(EventType::DELETE_ROWS_EVENT_V1) => rows_event(RowsKind::Delete, false)?,
        Ok(EventType::WRITE_ROWS_EVENT) => rows_event(RowsKind::Write, true)?,
        Ok(EventType::UPDATE_ROWS_EVENT) => rows_event(RowsKind::Update, true)?,
        Ok(EventType::DELETE_ROWS_EVENT) => rows_event(RowsKind::Delete, true)?,
        Ok(EventType::PARTIAL_UPDATE_ROWS_EVENT) => {
            return Err(RowError::Unsupported(
                "the binlog holds partial JSON updates, which sluice cannot apply: SET GLOBAL binlog_row_value_options = ''".into(),
            ));
        }
        Ok(EventType::XID_EVENT) => BinlogEvent::Xid,
        Ok(EventType::QUERY_EVENT) => {
            let q: QueryEvent<'_> = event.read_event().map_err(malformed)?;
            BinlogEvent::Query {
                schema: q.schema().into_owned(),
                sql: q.query().into_owned(),
            }
        }
        Ok(EventType::GTID_EVENT | EventType::GTID_TAGGED_LOG_EVENT) => {
            let g: GtidEvent = event.read_event().map_err(malformed)?;
            BinlogEvent::MysqlGtid {
                sid: g.sid(),
                gno: g.gno(),
                commit_us: g.immediate_commit_timestamp(),
            }
        }
        Ok(EventType::ANONYMOUS_GTID_EVENT) => {
            let g: mysql_common::binlog::events::AnonymousGtidEvent =
                event.read_event().map_err(malformed)?;
            BinlogEvent::AnonymousGtid {
                commit_us: g.0.immediate_commit_timestamp(),
            }
        }
        Ok(EventType::HEARTBEAT_EVENT) => BinlogEvent::Heartbeat,
        Ok(_) => BinlogEvent::Other,
        Err(_) => match header.event_type_raw() {
            mariadb::GTID_EVENT => {
                BinlogEvent::MariaGtid(mariadb::parse_gtid(event.data(), header.server_id())?)
            }
            mariadb::GTID_LIST_EVENT => {
                BinlogEvent::MariaGtidList(mariadb::parse_gtid_list(event.data())?)
            }
            t if mariadb::is_compressed(t) => {
                return Err(RowError::Unsupported(
                    "the binlog is compressed (log_bin_compress=ON), which sluice does not decode: SET GLOBAL log_bin_compress = OFF".into(),
                ));
            }
            _ => BinlogEvent::Other,
        },
    })
}

/// A ROTATE event's next file and position. The artificial ROTATE a dump starts with comes
/// before the format description, so the reader does not know yet that it ends in a CRC32: the
/// last four bytes are dropped when they are the checksum of the rest (they can be nothing
/// else: a file name does not end in its own event's CRC).
fn parse_rotate(event: &Event) -> (String, u64) {
    let data = event.data();
    let position = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .unwrap_or(4);
    let mut name = data.get(8..).unwrap_or_default();
    if name.len() > 4 {
        let (body, sum) = name.split_at(name.len() - 4);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header_bytes(event));
        crc.update(&data[..8]);
        crc.update(body);
        if crc.finalize().to_le_bytes() == sum {
            name = body;
        }
    }
    (String::from_utf8_lossy(name).into_owned(), position)
}

/// The 19-byte common header as the server wrote it.
fn header_bytes(event: &Event) -> Vec<u8> {
    let h = event.header();
    let mut out = Vec::with_capacity(19);
    out.extend(h.timestamp().to_le_bytes());
    out.push(h.event_type_raw());
    out.extend(h.server_id().to_le_bytes());
    out.extend(h.event_size().to_le_bytes());
    out.extend(h.log_pos().to_le_bytes());
    out.extend(h.flags_raw().to_le_bytes());
    out
}

/// CRC32 of the event as the server computed it (`binlog_checksum=CRC32`), when it has one.
fn verify_checksum(event: &Event) -> Result<(), RowError> {
    let Some(sum) = event.checksum() else {
        return Ok(());
    };
    if !matches!(
        event.footer().get_checksum_alg(),
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
    ) {
        return Ok(());
    }
    let want = u32::from_le_bytes(sum);
    let got = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
    if want != got {
        return Err(RowError::Malformed(format!(
            "event checksum {got:08x} does not match the server's {want:08x}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
