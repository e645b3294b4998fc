//! Errors of the MongoDB source: transient ones (network, elections, a restarting server)
//! restart the pipeline from the last commit; definite ones (setup, a lost resume token) stop it
//! with what to do. Driver errors become text here; documents never appear in them.

use mongodb::error::{Error, ErrorKind};

use crate::error::Classify;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("MongoDB {what}: {message}")]
    Driver {
        what: &'static str,
        message: String,
        code: Option<i32>,
        transient: bool,
    },
    #[error("{0}")]
    Setup(String),
    #[error(
        "the change stream position of source `{source_name}` is no longer in the oplog ({detail}): \
         changes since then cannot be read. Recover by re-snapshotting: remove the lake's state for \
         source `{source_name}` (_sluice/ in the sink path) or point the sink at a new path, with \
         `snapshot: initial`; size the oplog (replSetResizeOplog) for the longest time sluice may be down"
    )]
    PositionLost { source_name: String, detail: String },
    #[error("schema history in the lake: {0}")]
    History(#[source] std::io::Error),
    #[error("the downstream pipeline stopped")]
    Downstream,
}

/// Server error codes worth retrying: elections and shutdowns (NotWritablePrimary 10107,
/// InterruptedAtShutdown 11600, ShutdownInProgress 91, PrimarySteppedDown 189,
/// NotPrimaryNoSecondaryOk 13435, NotPrimaryOrSecondary 13436, InterruptedDueToReplStateChange
/// 11602), network trouble (HostUnreachable 6, HostNotFound 7, NetworkTimeout 89,
/// SocketException 9001), and busy or stale reads (ExceededTimeLimit 262, SnapshotTooOld 239,
/// WriteConflict 112).
pub(crate) fn code_is_transient(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 89 | 91 | 112 | 189 | 239 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436
    )
}

/// Codes that mean a change stream cannot resume where it was asked to: the token's history
/// is gone (ChangeStreamHistoryLost 286, CappedPositionLost 136), the token is not one this
/// server can read (FailedToParse 9, BadValue 2, ChangeStreamFatalError 280).
pub(crate) fn code_is_position_lost(code: i32) -> bool {
    matches!(code, 2 | 9 | 136 | 280 | 286)
}

impl MongoError {
    /// `map_err` helper naming what was being done.
    pub(crate) fn driver(what: &'static str) -> impl FnOnce(Error) -> MongoError {
        move |e| {
            let (code, transient) = match &*e.kind {
                ErrorKind::Command(c) => (Some(c.code), code_is_transient(c.code)),
                ErrorKind::Io(_)
                | ErrorKind::ServerSelection { .. }
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::DnsResolve { .. } => (None, true),
                _ => (
                    None,
                    e.contains_label("RetryableWriteError")
                        || e.contains_label("ResumableChangeStreamError"),
                ),
            };
            MongoError::Driver {
                what,
                message: describe(&e),
                code,
                transient,
            }
        }
    }

    pub(crate) fn code(&self) -> Option<i32> {
        match self {
            MongoError::Driver { code, .. } => *code,
            _ => None,
        }
    }
}

/// The error without the driver's debug dumps of commands (which could hold documents).
fn describe(e: &Error) -> String {
    match &*e.kind {
        ErrorKind::Command(c) => format!("error {} ({}): {}", c.code, c.code_name, c.message),
        ErrorKind::Io(io) => format!("I/O: {io}"),
        ErrorKind::ServerSelection { message, .. } => format!("no server: {message}"),
        ErrorKind::Authentication { message, .. } => format!("authentication: {message}"),
        ErrorKind::InvalidArgument { message, .. } => format!("invalid argument: {message}"),
        ErrorKind::InvalidTlsConfig { message, .. } => format!("TLS: {message}"),
        ErrorKind::DnsResolve { message, .. } => format!("DNS: {message}"),
        ErrorKind::BsonDeserialization(_) | ErrorKind::BsonSerialization(_) => {
            "a reply could not be decoded".to_string()
        }
        other => {
            let text = format!("{other:?}");
            // The variant's name, never its contents.
            text.split(['(', ' ', '{'])
                .next()
                .unwrap_or("error")
                .to_string()
        }
    }
}

impl Classify for MongoError {
    fn is_transient(&self) -> bool {
        match self {
            MongoError::Driver { transient, .. } => *transient,
            MongoError::History(_) | MongoError::Downstream => true,
            MongoError::Setup(_) | MongoError::PositionLost { .. } => false,
        }
    }
}

impl crate::source::SourceFailure for MongoError {
    fn is_position_lost(&self) -> bool {
        matches!(self, MongoError::PositionLost { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert!(code_is_transient(10107) && code_is_transient(91));
        assert!(!code_is_transient(13)); // Unauthorized
        assert!(code_is_position_lost(286) && code_is_position_lost(9));
        assert!(
            !MongoError::PositionLost {
                source_name: "s".into(),
                detail: "x".into()
            }
            .is_transient()
        );
    }
}
