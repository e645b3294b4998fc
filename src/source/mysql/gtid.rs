//! GTID positions: MariaDB's `domain-server-seq` list and MySQL's `uuid:1-N` sets.
//!
//! A source position keeps the GTID state after the last whole transaction in the lake, so a
//! restart (or a replica promoted after a failover) resumes after exactly that transaction.

use std::collections::BTreeMap;
use std::fmt;

/// MariaDB: the last GTID per replication domain (`@@gtid_binlog_pos` form, `0-1-100,1-2-5`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaGtidPos {
    /// domain → (server id, sequence number).
    pub(crate) domains: BTreeMap<u32, (u32, u64)>,
}

/// One MariaDB GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtid {
    pub(crate) domain: u32,
    pub(crate) server: u32,
    pub(crate) seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl MariaGtidPos {
    pub fn parse(text: &str) -> Result<MariaGtidPos, String> {
        let mut domains = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let nums: Vec<&str> = part.split('-').collect();
            let bad = || format!("`{part}` is not a MariaDB GTID (domain-server-sequence)");
            if nums.len() != 3 {
                return Err(bad());
            }
            let domain = nums[0].parse().map_err(|_| bad())?;
            let server = nums[1].parse().map_err(|_| bad())?;
            let seq = nums[2].parse().map_err(|_| bad())?;
            domains.insert(domain, (server, seq));
        }
        Ok(MariaGtidPos { domains })
    }

    /// A transaction ended: its domain is now at `gtid`.
    pub(crate) fn advance(&mut self, gtid: MariaGtid) {
        self.domains.insert(gtid.domain, (gtid.server, gtid.seq));
    }
}

impl fmt::Display for MariaGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .domains
            .iter()
            .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// MySQL: executed GTIDs per server UUID, as closed intervals (`uuid:1-5:7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// Lower-case UUID with dashes → sorted, disjoint, non-adjacent inclusive intervals.
    pub(crate) sets: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    pub fn parse(text: &str) -> Result<MysqlGtidSet, String> {
        let mut set = MysqlGtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut pieces = part.split(':');
            let uuid = pieces.next().unwrap_or_default().to_ascii_lowercase();
            if parse_uuid(&uuid).is_none() {
                return Err(format!("`{part}` does not start with a server UUID"));
            }
            for range in pieces {
                let bad = || format!("`{range}` in `{part}` is not a GTID interval");
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                    None => {
                        let n = range.parse().map_err(|_| bad())?;
                        (n, n)
                    }
                };
                if lo == 0 || hi < lo {
                    return Err(bad());
                }
                set.add_interval(&uuid, lo, hi);
            }
        }
        Ok(set)
    }

    /// Mark transaction `uuid:gno` executed.
    pub(crate) fn add(&mut self, uuid: &str, gno: u64) {
        self.add_interval(uuid, gno, gno);
    }

    fn add_interval(&mut self, uuid: &str, lo: u64, hi: u64) {
        let intervals = self.sets.entry(uuid.to_ascii_lowercase()).or_default();
        intervals.push((lo, hi));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(a, b) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *intervals = merged;
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .sets
            .iter()
            .map(|(uuid, ranges)| {
                let ranges: Vec<String> = ranges
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                format!("{uuid}:{}", ranges.join(":"))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `3E11FA47-71CA-11E1-9E33-C80AA9429562` → its 16 bytes.
pub(crate) fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// 16 bytes → `3e11fa47-71ca-11e1-9e33-c80aa9429562`.
pub(crate) fn format_uuid(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_positions_advance_per_domain() {
        let mut pos = MariaGtidPos::parse("0-1-100,1-2-5").unwrap();
        pos.advance(MariaGtid {
            domain: 0,
            server: 1,
            seq: 101,
        });
        pos.advance(MariaGtid {
            domain: 2,
            server: 1,
            seq: 1,
        });
        assert_eq!(pos.to_string(), "0-1-101,1-2-5,2-1-1");
        assert!(MariaGtidPos::parse("0-1").is_err());
        assert_eq!(MariaGtidPos::parse("").unwrap().to_string(), "");
    }

    #[test]
    fn mysql_sets_merge_intervals() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut set = MysqlGtidSet::parse(&format!("{uuid}:1-5:7")).unwrap();
        set.add(uuid, 6);
        set.add(uuid, 9);
        assert_eq!(set.to_string(), format!("{uuid}:1-7:9"));
        set.add("3E11FA47-71CA-11E1-9E33-C80AA9429563", 1);
        assert_eq!(
            set.to_string(),
            format!("{uuid}:1-7:9,3e11fa47-71ca-11e1-9e33-c80aa9429563:1")
        );
        assert!(MysqlGtidSet::parse("nope:1-2").is_err());
        assert!(MysqlGtidSet::parse(&format!("{uuid}:5-2")).is_err());
        let bytes = parse_uuid(uuid).unwrap();
        assert_eq!(format_uuid(&bytes), uuid);
    }
}
