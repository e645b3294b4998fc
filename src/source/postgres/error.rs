//! Errors of the Postgres source, split into transient (retry) and definite (stop and say why).

use pgwire_replication::PgWireError;

use super::pgoutput::DecodeError;
use super::text::ValueError;
use crate::error::Classify;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
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
    #[error(
        "replication slot `{slot}` exists, but the lake at {lake} has no position for source \
         `{source_name}` and did not create that slot: it may be another pipeline's (the same \
         source name with another sink path), and sluice never drops a slot it cannot prove is \
         its own. Choose one: point sink.path at the lake that slot belongs to; or give this \
         source its own slot (`slot: <name>` in its source file); or, if the slot is abandoned, \
         drop it yourself (SELECT pg_drop_replication_slot('{slot}')) and start again to \
         snapshot anew"
    )]
    SlotNotOurs {
        slot: String,
        source_name: String,
        lake: String,
    },
    #[error(
        "replication slot `{slot}` has confirmed changes up to {slot_lsn}, but the lake's position \
         for source `{source_name}` is {lake_lsn}: the changes between are in neither, so streaming \
         would skip them. Either the lake was restored from an older backup, or another pipeline \
         uses this slot. Choose one: restore the newer lake; or give this source its own slot \
         (`slot: <name>` in its source file) and snapshot again with `snapshot: initial`"
    )]
    LakeBehindSlot {
        slot: String,
        source_name: String,
        lake_lsn: String,
        slot_lsn: String,
    },
    #[error("the lake's record of this source's slot: {0}")]
    Lake(#[source] std::io::Error),
    #[error(
        "replication slot `{slot}` appeared while sluice was creating it: an earlier start that \
         died before its first commit was still creating it; it is dropped and made again"
    )]
    SlotRaced { slot: String },
    #[error("the downstream pipeline stopped")]
    Downstream,
}

impl PgError {
    /// `map_err` helper that names what we were doing.
    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        move |source| PgError::Query { what, source }
    }
}

/// Server errors worth retrying: the connection was cut (class 08), the server is short of
/// resources (53), shutting down or starting (57P01-57P03), the slot is still held by a
/// connection that has not noticed its client died (55006), or a serialization conflict (40).
pub(crate) fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("40")
        || matches!(code, "57P01" | "57P02" | "57P03" | "55006")
}

/// Whether a replication command failed with this SQLSTATE.
pub(crate) fn is_server_error(error: &PgWireError, code: &str) -> bool {
    matches!(error, PgWireError::Server(message) if sqlstate_in_message(message) == Some(code))
}

/// pgwire-replication reports server errors as text ending in `(SQLSTATE xxxxx)`.
fn sqlstate_in_message(message: &str) -> Option<&str> {
    let at = message.rfind("SQLSTATE ")? + "SQLSTATE ".len();
    message.get(at..at + 5)
}

impl Classify for PgError {
    fn is_transient(&self) -> bool {
        match self {
            // Refused or cut: retry. The server's answer (a wrong password, 28P01; no such
            // database, 3D000) is the setup's fault: stop and say so.
            PgError::Connect(e) => e.code().is_none_or(|c| sqlstate_is_transient(c.code())),
            PgError::Query { source, .. } => match source.code() {
                Some(code) => sqlstate_is_transient(code.code()),
                None => true, // not a server answer: the connection broke
            },
            PgError::Replication(PgWireError::Server(message)) => {
                sqlstate_in_message(message).is_some_and(sqlstate_is_transient)
            }
            PgError::Replication(e) => e.is_transient(),
            PgError::Downstream | PgError::SlotRaced { .. } | PgError::Lake(_) => true,
            PgError::Decode(_)
            | PgError::Value { .. }
            | PgError::Setup(_)
            | PgError::SlotLost { .. }
            | PgError::SlotNotOurs { .. }
            | PgError::LakeBehindSlot { .. } => false,
        }
    }
}

impl crate::source::SourceFailure for PgError {
    fn is_position_lost(&self) -> bool {
        matches!(
            self,
            PgError::SlotLost { .. } | PgError::LakeBehindSlot { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified_by_sqlstate() {
        let cut = PgError::Replication(PgWireError::Server(
            "terminating connection due to administrator command (SQLSTATE 57P01)".into(),
        ));
        assert!(cut.is_transient());
        let busy = PgError::Replication(PgWireError::Server(
            "replication slot \"s\" is active for PID 42 (SQLSTATE 55006)".into(),
        ));
        assert!(busy.is_transient());
        let gone = PgError::Replication(PgWireError::Server(
            "replication slot \"s\" does not exist (SQLSTATE 42704)".into(),
        ));
        assert!(!gone.is_transient());
        assert!(!PgError::Setup("x".into()).is_transient());
    }
}
