//! Sources read a database's log and hand batches of [`ChangeEvent`]s downstream.
//!
//! Every batch says from where a restart would be correct (`SourceBatch::resume`): the sink
//! records that position in the same commit as the data, and only then is the position
//! acknowledged to the database (`contract::ack`). A restart resumes from the committed position
//! and the sink cuts what it already has by sequence, so nothing is lost or written twice.
//!
//! This file is the one place that knows the kinds of source ([`register_sources!`] below).
//! Adding one: a folder beside `postgres/`, `mysql/` and `mongodb/` with a type that implements
//! [`Source`] and an error that implements [`SourceFailure`], its `kind:` in
//! `config::SourceKind`, its checkpoint shape in `contract::position::ResumePosition`, and one
//! line in the registration. Its streaming phase implements [`stream::LogStream`] and runs the
//! loop every source shares, [`stream::run`].

pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub(crate) mod snapshot;
pub(crate) mod stream;

use tokio::sync::{mpsc, watch};

use crate::config::{SourceConfig, SourceKind};
use crate::contract::ack::Acks;
use crate::contract::batch::SourceBatch;
use crate::contract::position::ResumePosition;
use crate::error::Classify;
use crate::event::{ChangeEvent, Op, TableSchema};
use crate::finding::Finding;
use crate::metrics as m;

/// Everything a run of a source needs from the runtime.
pub(crate) struct SourceContext {
    pub(crate) config: SourceConfig,
    pub(crate) out: mpsc::Sender<SourceBatch>,
    pub(crate) acks: Acks,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The position the lake has committed for this source, if any.
    pub(crate) committed: Option<ResumePosition>,
    /// Where this source reports its state for `/status`.
    pub(crate) status: crate::status::SharedStatus,
    /// The sink's path: a source that keeps state next to its positions (the MySQL schema
    /// history) writes it there.
    pub(crate) lake_path: String,
}

/// A kind of source: how it runs and how `sluice check` examines it.
pub(crate) trait Source: Sized {
    type Error: SourceFailure;
    /// Connect, check the prerequisites, resolve the configured tables.
    async fn connect(ctx: SourceContext) -> Result<Self, Self::Error>;
    /// Snapshot and stream until the context's shutdown turns true (then Ok) or an error.
    async fn run(self) -> Result<(), Self::Error>;
    /// `sluice check` of one source: every problem found, and the captured tables' schemas
    /// (empty when the source could not be reached).
    async fn check(config: &SourceConfig) -> (Vec<Finding>, Vec<TableSchema>);
}

/// What every source's error says beyond transient or definite.
pub(crate) trait SourceFailure:
    std::error::Error + Classify + Send + Sync + 'static
{
    /// The source's log position is gone (slot dropped, binlog purged, resume token expired):
    /// only a new snapshot can go on.
    fn is_position_lost(&self) -> bool;
}

/// An error of any source, its chain intact.
#[derive(Debug)]
pub struct SourceError(Box<dyn SourceFailure>);

impl<E: SourceFailure> From<E> for SourceError {
    fn from(error: E) -> Self {
        SourceError(Box::new(error))
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Classify for SourceError {
    fn is_transient(&self) -> bool {
        self.0.is_transient()
    }
}

impl SourceError {
    pub(crate) fn is_position_lost(&self) -> bool {
        self.0.is_position_lost()
    }
}

/// The registration: one line per kind of source, `Kind => folder::Type`. It makes [`run`] and
/// [`check`], the only dispatch on the kind.
macro_rules! register_sources {
    ($($kind:ident => $source:ty),+ $(,)?) => {
        /// Run the source `ctx` configures until shutdown; `connected` is called once it has
        /// connected and checked its prerequisites.
        pub(crate) async fn run(ctx: SourceContext, connected: impl FnOnce()) -> Result<(), SourceError> {
            match ctx.config.kind {
                $(SourceKind::$kind => {
                    let source = <$source as Source>::connect(ctx).await?;
                    connected();
                    Ok(<$source as Source>::run(source).await?)
                })+
            }
        }

        /// `sluice check` of one source: the problems found, and the captured tables' schemas.
        pub(crate) async fn check(config: &SourceConfig) -> (Vec<Finding>, Vec<TableSchema>) {
            match config.kind {
                $(SourceKind::$kind => <$source as Source>::check(config).await,)+
            }
        }
    };
}

register_sources! {
    Postgres => postgres::PostgresSource,
    Mysql => mysql::MysqlSource,
    Mongodb => mongodb::MongoSource,
}

/// Count a batch's events by table and op (`sluice_source_events_total`). Runs of one table
/// and op are counted without hashing: a batch is mostly long runs.
pub(crate) fn count_events(source: &str, events: &[ChangeEvent]) {
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
