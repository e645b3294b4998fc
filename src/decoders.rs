//! The decoders of what comes from outside (replication messages, binlog events and DDL, change
//! stream documents and tokens), reachable from outside the crate for the fuzz tests in
//! `tests/it/`, which feed them arbitrary bytes. The sources themselves are private to the crate;
//! this small facade is their only public window.

/// Postgres: pgoutput messages, COPY and text values, LSNs.
pub mod postgres {
    pub use crate::source::postgres::catalog::parse_lsn;
    pub use crate::source::postgres::{pgoutput, text};
}

/// MySQL/MariaDB: rows events and TABLE_MAP, column types, DDL, GTIDs, MariaDB's own events.
pub mod mysql {
    pub use crate::source::mysql::{ddl, gtid, mariadb, rows, schema, types};
}

/// MongoDB: documents into typed rows, `_id`s and resume tokens.
pub mod mongodb {
    pub use crate::source::mongodb::documents;
    pub use crate::source::mongodb::snapshot::parse_id;
    pub use crate::source::mongodb::stream::parse_token;
}
