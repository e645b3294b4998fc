//! MySQL / MariaDB: where in the binlog a source resumes.

use serde::{Deserialize, Serialize};

use super::SnapshotState;

/// A MySQL/MariaDB source position, stored in the lake's commit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Read on from here: the binlog file and the offset after the last whole transaction
    /// (during the snapshot, the snapshot's binlog point).
    pub(crate) file: String,
    pub(crate) pos: u64,
    /// The GTID state at that point (MariaDB `domain-server-seq,…`, MySQL `uuid:1-N,…`), when
    /// the server has GTIDs; a restart resumes by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gtid: Option<String>,
    /// The schema history valid at that point (`_sluice/schemas/<source>/<id>.json`).
    pub(crate) schemas: String,
    /// An unfinished snapshot, or a finished one whose phase filter still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<SnapshotState>,
    /// The binlog series `file` belongs to (`<server id or uuid> <log_bin name>`): a resume on
    /// another series moves the sequence epoch on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) series: Option<String>,
    /// The sequence epoch of the changes up to here (the top bits of their `_seq`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) epoch: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
