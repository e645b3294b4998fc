//! Sources read a database's log and hand batches of [`ChangeEvent`]s downstream.
//!
//! Every batch says from where a restart would be correct ([`SourceBatch::resume`]): the sink
//! records that position in the same commit as the data, and only then is the position
//! acknowledged to the database ([`Acks`]). A restart resumes from the committed position and the
//! sink cuts what it already has by sequence, so nothing is lost or written twice.

pub mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::event::ChangeEvent;

/// A source's durable position, stored in the lake's commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourcePosition {
    /// Postgres: stream from `lsn` (the end of the last transaction wholly in the lake; during
    /// the snapshot, the slot's consistent point). `slot` names the slot the position belongs to.
    Postgres {
        lsn: u64,
        slot: String,
        /// An unfinished snapshot, or a finished one whose phase filter still applies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<postgres::snapshot::SnapshotState>,
    },
}

/// A group of events from one source, in log order.
#[derive(Debug)]
pub struct SourceBatch {
    pub source: Arc<str>,
    pub events: Vec<ChangeEvent>,
    /// Where to restart so that, with the sink's sequence cut, nothing is lost. `None` while
    /// nothing resumable exists yet (during the initial snapshot), so such data is committed only
    /// together with a later batch that has a position.
    pub resume: Option<SourcePosition>,
}

/// Positions the sink has committed, per source; sources acknowledge these to their database.
pub type CommittedPositions = Arc<BTreeMap<String, SourcePosition>>;

/// The receiving end sources watch for commits.
pub type Acks = watch::Receiver<CommittedPositions>;

/// Whether retrying can help. Materialize's split: definite errors mean the data or the setup is
/// wrong (stop with a clear message); transient ones are the network or a restarting server.
pub trait Classify {
    fn is_transient(&self) -> bool;
}
