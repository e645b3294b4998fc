//! Sources read a database's log and hand batches of [`ChangeEvent`]s downstream.
//!
//! Every batch says from where a restart would be correct ([`SourceBatch::resume`]): the sink
//! records that position in the same commit as the data, and only then is the position
//! acknowledged to the database ([`Acks`]). A restart resumes from the committed position and the
//! sink cuts what it already has by sequence, so nothing is lost or written twice.

pub mod mysql;
pub mod postgres;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::config::SourceConfig;
use crate::event::{ChangeEvent, Op};
use crate::metrics as m;

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
        snapshot: Option<snapshot::SnapshotState>,
    },
    /// MySQL / MariaDB: binlog file and offset, GTID state, and the schema history there.
    Mysql(mysql::BinlogPosition),
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

/// Everything a run of a source needs from the runtime.
pub struct SourceContext {
    pub config: SourceConfig,
    pub out: mpsc::Sender<SourceBatch>,
    pub acks: Acks,
    pub shutdown: watch::Receiver<bool>,
    /// The position the lake has committed for this source, if any.
    pub committed: Option<SourcePosition>,
    /// Where this source reports its state for `/status`.
    pub status: crate::status::SharedStatus,
    /// The sink's path: a source that keeps state next to its positions (the MySQL schema
    /// history) writes it there.
    pub lake_path: String,
}

/// Whether retrying can help. Materialize's split: definite errors mean the data or the setup is
/// wrong (stop with a clear message); transient ones are the network or a restarting server.
pub trait Classify {
    fn is_transient(&self) -> bool;
}

/// An error of any source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    #[error(transparent)]
    Mysql(#[from] mysql::MyError),
}

impl Classify for SourceError {
    fn is_transient(&self) -> bool {
        match self {
            SourceError::Postgres(e) => e.is_transient(),
            SourceError::Mysql(e) => e.is_transient(),
        }
    }
}

impl SourceError {
    /// The source's log position is gone (slot dropped, binlog purged).
    pub fn is_position_lost(&self) -> bool {
        matches!(
            self,
            SourceError::Postgres(postgres::PgError::SlotLost { .. })
                | SourceError::Mysql(mysql::MyError::PositionLost { .. })
        )
    }
}

/// Count a batch's events by table and op (`sluice_source_events_total`).
pub fn count_events(source: &str, events: &[ChangeEvent]) {
    let mut counts: HashMap<(&str, Op), u64> = HashMap::new();
    for e in events {
        *counts.entry((e.table.stream.as_str(), e.op)).or_default() += 1;
    }
    for ((stream, op), n) in counts {
        metrics::counter!(m::SOURCE_EVENTS, "source" => source.to_string(), "table" => stream.to_string(), "op" => op.code())
            .increment(n);
    }
}
