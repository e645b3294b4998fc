//! Where a resumable snapshot of Postgres or MySQL/MariaDB stands (the phases are explained in
//! `source/snapshot.rs`, which filters streamed changes by them).

use serde::{Deserialize, Serialize};

/// Where a snapshot stands; part of the committed source position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Every table has been read.
    pub(crate) complete: bool,
    /// Ordinal of the next snapshot row (the minor part of its sequence).
    pub(crate) next_ordinal: u64,
    /// Where reading goes on; `None` before the first table (or when complete).
    pub(crate) cursor: Option<Cursor>,
    /// Each phase's WAL position and where it started reading.
    pub(crate) phases: Vec<Phase>,
    /// The server's estimate of all captured tables' rows, for progress (`sluice status`).
    #[serde(default)]
    pub(crate) estimated_rows: u64,
}

/// Reading continues in `table` after the integer key `after_key` (from its start if `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) table: String,
    pub(crate) after_key: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Phase {
    /// The phase's log position (Postgres LSN, binlog coordinate): its rows reflect every
    /// commit before it.
    pub(crate) lsn: u64,
    /// The first row the phase read (`None`: the first table's start).
    pub(crate) from: Option<Cursor>,
}
