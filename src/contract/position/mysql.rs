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
}
