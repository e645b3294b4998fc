//! Errors of the Postgres source, split into transient (retry) and definite (stop and say why).

use pgwire_replication::PgWireError;

use super::pgoutput::DecodeError;
use super::text::ValueError;
use crate::source::Classify;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("Postgres query failed while {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("replication stream: {0}")]
    Replication(#[from] PgWireError),
    #[error("cannot decode the replication stream: {0}")]
    Decode(#[from] DecodeError),
    #[error("table {table}, column {column}: {source}")]
    Value {
        table: String,
        column: String,
        #[source]
        source: ValueError,
    },
    #[error("{0}")]
    Setup(String),
    #[error(
        "replication slot `{slot}` is gone but the lake has a position for it: changes since then \
         cannot be read. Recover by re-snapshotting: remove the lake's state for source `{source_name}` \
         (_sluice/ in the sink path) or point the sink at a new path, with `snapshot: initial`"
    )]
    SlotLost { slot: String, source_name: String },
    #[error("the downstream pipeline stopped")]
    Downstream,
}

impl PgError {
    /// `map_err` helper that names what we were doing.
    pub fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        move |source| PgError::Query { what, source }
    }
}

impl Classify for PgError {
    fn is_transient(&self) -> bool {
        match self {
            PgError::Connect(_) => true,
            PgError::Query { source, .. } => source.is_closed() || source.as_db_error().is_none(),
            PgError::Replication(e) => e.is_transient() || e.is_io(),
            PgError::Downstream => true,
            PgError::Decode(_)
            | PgError::Value { .. }
            | PgError::Setup(_)
            | PgError::SlotLost { .. } => false,
        }
    }
}
