//! Sources read a database's log and hand batches of [`ChangeEvent`]s downstream.
//!
//! Every batch says from where a restart would be correct ([`SourceBatch::resume`]): the sink
//! records that position in the same commit as the data, and only then is the position
//! acknowledged to the database ([`Acks`]). A restart resumes from the committed position and the
//! sink cuts what it already has by sequence, so nothing is lost or written twice.

pub mod history;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::config::SourceConfig;
use crate::event::{ChangeEvent, Op, Seq};
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
    /// MongoDB: the change stream's resume token (or the cluster time to start at), the
    /// inferred schemas there, and an unfinished snapshot.
    Mongo(mongodb::MongoPosition),
    /// Kafka mode's sinks: the next offset to read of one topic partition.
    Kafka {
        topic: String,
        partition: i32,
        next_offset: i64,
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
    /// `None`: raw events from a source, cut by sequence, transformed, and written to the raw
    /// zone. `Some(zone)`: events read back from a Kafka topic of that zone, written as they are
    /// (their offsets, in `resume`, are the cut).
    pub zone: Option<&'static str>,
}

impl SourceBatch {
    /// A batch of raw events from a source.
    pub fn raw(source: Arc<str>, events: Vec<ChangeEvent>, resume: Option<SourcePosition>) -> Self {
        SourceBatch {
            source,
            events,
            resume,
            zone: None,
        }
    }
}

/// Replays are cut by sequence: per raw stream, the highest sequence already taken, so an
/// event at or below it (a source re-reading from its last resumable position) is skipped.
#[derive(Debug, Default, Clone)]
pub struct SeqCut {
    high: std::collections::HashMap<String, Seq>,
}

impl SeqCut {
    pub fn new(high: std::collections::HashMap<String, Seq>) -> Self {
        SeqCut { high }
    }

    /// Take the event (true) or skip it as a replay (false).
    pub fn admit(&mut self, event: &ChangeEvent) -> bool {
        match self.high.get_mut(&event.table.stream) {
            Some(high) if event.seq <= *high => false,
            Some(high) => {
                *high = event.seq;
                true
            }
            None => {
                self.high.insert(event.table.stream.clone(), event.seq);
                true
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Seq)> {
        self.high.iter()
    }
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
    #[error(transparent)]
    Mongo(#[from] mongodb::MongoError),
}

impl Classify for SourceError {
    fn is_transient(&self) -> bool {
        match self {
            SourceError::Postgres(e) => e.is_transient(),
            SourceError::Mysql(e) => e.is_transient(),
            SourceError::Mongo(e) => e.is_transient(),
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
                | SourceError::Mongo(mongodb::MongoError::PositionLost { .. })
        )
    }
}

/// The batch a source is building. It goes downstream when it holds [`Batcher::MAX_EVENTS`]
/// events or [`Batcher::MAX_BYTES`] bytes, whichever comes first (so the memory in flight, a
/// few batches, is bounded whatever the row width), or when it has waited [`Batcher::LINGER`]
/// (so a quiet stream still reaches the lake).
#[derive(Debug, Default)]
pub struct Batcher {
    events: Vec<ChangeEvent>,
    bytes: usize,
    started: Option<std::time::Instant>,
}

impl Batcher {
    pub const MAX_EVENTS: usize = 4096;
    pub const MAX_BYTES: usize = 1 << 20;
    /// Short, because it is all latency in Kafka mode (a 10 ms transaction interval commits each
    /// batch as it comes: at 10k changes/s the commit-to-topic median was 54 ms with 50 ms here).
    /// A busy stream fills its batches long before it; a quiet one sends small ones. The
    /// Postgres and MySQL streams do not wait it out once a whole transaction is in and nothing
    /// more is ready: it bounds a transaction whose changes arrive slowly.
    pub const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

    pub fn push(&mut self, event: ChangeEvent) {
        self.start();
        self.bytes += event.approx_bytes();
        self.events.push(event);
    }

    /// Push a streamed change whose sequence is (its major, `*index`), advancing `*index`. An
    /// update that changed the key goes as a delete of the old key, then a create of the new
    /// one, with consecutive sequences: a change log holds rows by key.
    pub fn push_change(&mut self, event: ChangeEvent, index: &mut u64) {
        let major = event.seq.major();
        let (delete, mut event) = event.split_key_change();
        if let Some(mut delete) = delete {
            delete.seq = Seq::new(major, *index);
            self.push(delete);
            *index += 1;
        }
        event.seq = Seq::new(major, *index);
        self.push(event);
        *index += 1;
    }

    /// Start the linger clock without an event (a position moved past changes of no captured
    /// table: it should reach the lake too).
    pub fn start(&mut self) {
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    pub fn is_full(&self) -> bool {
        self.events.len() >= Self::MAX_EVENTS || self.bytes >= Self::MAX_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// When the batch must go, if it has been started.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.started.map(|t| t + Self::LINGER)
    }

    /// The events, leaving an empty batch sized like this one (so the next does not grow by
    /// reallocating and copying).
    pub fn take(&mut self) -> Vec<ChangeEvent> {
        self.started = None;
        self.bytes = 0;
        let size = self.events.len();
        std::mem::replace(&mut self.events, Vec::with_capacity(size))
    }
}

/// Count a batch's events by table and op (`sluice_source_events_total`). Runs of one table
/// and op are counted without hashing: a batch is mostly long runs.
pub fn count_events(source: &str, events: &[ChangeEvent]) {
    let mut counts: Vec<(&str, Op, u64)> = Vec::new();
    for e in events {
        let stream = e.table.stream.as_str();
        match counts.last_mut() {
            Some((s, op, n)) if std::ptr::eq(*s, stream) && *op == e.op => *n += 1,
            _ => match counts
                .iter_mut()
                .find(|(s, op, _)| *s == stream && *op == e.op)
            {
                Some((_, _, n)) => *n += 1,
                None => counts.push((stream, e.op, 1)),
            },
        }
    }
    for (stream, op, n) in counts {
        metrics::counter!(m::SOURCE_EVENTS, "source" => source.to_string(), "table" => stream.to_string(), "op" => op.code())
            .increment(n);
    }
}
