//! Errors of the MySQL/MariaDB source: transient ones (network, restarting server) restart the
//! pipeline from the last commit; definite ones (setup, undecodable binlog, lost position) stop
//! it with what to do.
//!
//! Driver errors are turned into text here, without the row values some of them carry
//! (`FromRow`, `UnexpectedPacket` payloads), so no error message can leak data into the logs.

use super::rows::RowError;
use crate::error::Classify;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MyError {
    #[error("cannot connect to MySQL/MariaDB: {0}")]
    Connect(DriverError),
    #[error("MySQL/MariaDB query failed while {what}: {error}")]
    Query {
        what: &'static str,
        error: DriverError,
    },
    #[error("binlog stream: {0}")]
    Binlog(DriverError),
    #[error("cannot decode a binlog event at {position}: {source}")]
    Decode {
        position: String,
        #[source]
        source: RowError,
    },
    #[error(
        "table {table}: {source} (at binlog {position}); the schema history does not match the binlog. Recover by re-snapshotting the source (remove its position from the lake or use a new sink path)"
    )]
    Schema {
        table: String,
        position: String,
        #[source]
        source: RowError,
    },
    #[error("{0}")]
    Setup(String),
    #[error(
        "the binlog position {position} of source `{source_name}` is no longer on the server ({detail}): \
         changes since then cannot be read. Recover by re-snapshotting: remove the lake's state for \
         source `{source_name}` (_sluice/ in the sink path) or point the sink at a new path, with \
         `snapshot: initial`; keep binlogs longer (binlog_expire_logs_seconds / expire_logs_days) \
         than sluice may be down"
    )]
    PositionLost {
        position: String,
        source_name: String,
        detail: String,
    },
    #[error(
        "another replica connected to the server with this source's server_id {server_id} ({detail}): \
         a second sluice pipeline, or a database replica, uses the same id, and the server lets only \
         one of them read. Give every source and replica its own `server_id:` (in the source file); \
         two pipelines on one source need two ids and two lakes"
    )]
    ServerIdClash { server_id: u32, detail: String },
    #[error("schema history in the lake: {0}")]
    History(#[source] std::io::Error),
    #[error("the downstream pipeline stopped")]
    Downstream,
}

/// A driver error as text, with whether retrying can help and the server's error code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct DriverError {
    pub(crate) message: String,
    /// The server's error number (e.g. 1236), when the server answered.
    pub(crate) code: Option<u16>,
    pub(crate) transient: bool,
}

/// Server error numbers worth retrying: too many connections (1040), shutdown in progress
/// (1053), lock wait timeout (1205), deadlock (1213), query interrupted (1317), net read/write
/// timeouts (1159-1161), table definition changed under a consistent snapshot (1412), a killed
/// connection (1927), and the server not accepting connections while it starts (1043, 1152).
pub(crate) fn code_is_transient(code: u16) -> bool {
    matches!(
        code,
        1040 | 1043
            | 1053
            | 1152
            | 1159
            | 1160
            | 1161
            | 1205
            | 1213
            | 1317
            | 1412
            | 1927
            | 2006
            | 2013
    )
}

impl From<mysql_async::Error> for DriverError {
    fn from(e: mysql_async::Error) -> Self {
        use mysql_async::{DriverError as D, Error as E};
        match e {
            E::Server(s) => DriverError {
                message: format!("ERROR {} ({}): {}", s.code, s.state, s.message),
                code: Some(s.code),
                transient: code_is_transient(s.code),
            },
            E::Io(io) => DriverError {
                message: format!("I/O: {io}"),
                code: None,
                transient: true,
            },
            E::Url(u) => DriverError {
                message: format!("url: {u}"),
                code: None,
                transient: false,
            },
            E::Driver(d) => {
                let (message, transient) = match &d {
                    // These carry row values or raw packets: name them only.
                    D::FromValue { .. } => ("a value could not be converted".to_string(), false),
                    D::FromRow { .. } => ("a row could not be converted".to_string(), false),
                    D::UnexpectedPacket { .. } => {
                        ("unexpected packet from the server".to_string(), true)
                    }
                    D::ConnectionClosed | D::PoolDisconnected => (d.to_string(), true),
                    other => (other.to_string(), false),
                };
                DriverError {
                    message,
                    code: None,
                    transient,
                }
            }
            E::Other(o) => DriverError {
                message: o.to_string(),
                code: None,
                transient: true,
            },
        }
    }
}

impl MyError {
    /// `map_err` helper that names what we were doing.
    pub(crate) fn query(what: &'static str) -> impl FnOnce(mysql_async::Error) -> MyError {
        move |e| MyError::Query {
            what,
            error: e.into(),
        }
    }
}

impl Classify for MyError {
    fn is_transient(&self) -> bool {
        match self {
            MyError::Connect(e) => e.transient || e.code.is_none(),
            MyError::Query { error, .. } | MyError::Binlog(error) => error.transient,
            MyError::History(_) | MyError::Downstream => true,
            MyError::Decode { .. }
            | MyError::Schema { .. }
            | MyError::Setup(_)
            | MyError::ServerIdClash { .. }
            | MyError::PositionLost { .. } => false,
        }
    }
}

impl crate::source::SourceFailure for MyError {
    fn is_position_lost(&self) -> bool {
        matches!(self, MyError::PositionLost { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let gone = DriverError {
            message: "x".into(),
            code: Some(1053),
            transient: code_is_transient(1053),
        };
        assert!(MyError::Binlog(gone).is_transient());
        let denied = DriverError {
            message: "denied".into(),
            code: Some(1045),
            transient: code_is_transient(1045),
        };
        assert!(!MyError::Connect(denied).is_transient());
        assert!(
            !MyError::ServerIdClash {
                server_id: 7,
                detail: "same server_id".into()
            }
            .is_transient()
        );
        assert!(
            !MyError::PositionLost {
                position: "f:4".into(),
                source_name: "s".into(),
                detail: "purged".into()
            }
            .is_transient()
        );
    }
}
