//! What sluice reads from the server's catalog: which server it is, which tables the configured
//! names match, and their definitions (`information_schema`). Also the connection options.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

use super::MyError;
use super::ddl::Tables;
use super::schema::MyTableDef;
use super::types::{MyColumn, canonical_type};
use crate::config::{SourceConfig, TlsMode};

/// MariaDB and MySQL differ in GTIDs, snapshot support and some events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    MariaDb,
    Mysql,
}

impl Flavor {
    /// Debezium's connector name for the `source` block.
    pub(crate) fn connector(self) -> &'static str {
        match self {
            Flavor::MariaDb => "mariadb",
            Flavor::Mysql => "mysql",
        }
    }
}

/// The server, as far as sluice cares.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    pub(crate) flavor: Flavor,
    pub(crate) version: String,
    pub(crate) server_id: u32,
    /// MySQL `gtid_mode=ON` (MariaDB always writes GTIDs).
    pub(crate) gtid_mode: bool,
}

/// Connection options from the source's URL, TLS settings and password file.
pub(crate) fn opts(source: &SourceConfig) -> Result<Opts, MyError> {
    let url = source.url.as_str();
    let opts = Opts::from_url(url).map_err(|e| {
        MyError::Setup(format!(
            "source url is not a MySQL URL (mysql://user:password@host:3306/db): {e}"
        ))
    })?;
    let mut builder = OptsBuilder::from_opts(opts)
        .tcp_nodelay(true)
        .stmt_cache_size(16)
        // UTC for TIMESTAMP values read by the snapshot; utf8mb4 for text.
        .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
    if let Some(path) = &source.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MyError::Setup(format!("password_file {}: {e}", path.display())))?;
        builder = builder.pass(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    builder = match source.tls.mode {
        None | Some(TlsMode::Disable) => builder,
        Some(mode) => {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &source.tls.ca_file {
                ssl = ssl
                    .with_root_certs(vec![ca.clone().into()])
                    .with_disable_built_in_roots(true);
            }
            ssl = match mode {
                TlsMode::Require => ssl.with_danger_accept_invalid_certs(true),
                TlsMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
                TlsMode::VerifyFull | TlsMode::Disable => ssl,
            };
            builder.ssl_opts(ssl)
        }
    };
    Ok(builder.into())
}

pub(crate) async fn connect(source: &SourceConfig) -> Result<Conn, MyError> {
    let opts = opts(source)?;
    tokio::time::timeout(Duration::from_secs(30), Conn::new(opts))
        .await
        .map_err(|_| {
            MyError::Connect(super::error::DriverError {
                message: "timed out after 30 s".into(),
                code: None,
                transient: true,
            })
        })?
        .map_err(|e| MyError::Connect(e.into()))
}

/// A global server variable as text; None when the server has no such variable. `name` is
/// one of sluice's own constants (it is put into the statement as is).
pub(crate) async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, MyError> {
    debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    match conn
        .query_first::<Option<String>, _>(format!("SELECT @@GLOBAL.{name}"))
        .await
    {
        Ok(v) => Ok(v.flatten()),
        // 1193: unknown system variable.
        Err(mysql_async::Error::Server(e)) if e.code == 1193 => Ok(None),
        Err(e) => Err(MyError::query("reading a server variable")(e)),
    }
}

/// The binlog series the server writes: its identity (MySQL's `server_uuid`, MariaDB's
/// `server_id`) and the binlog's base name (`mysql-bin.000042` → `mysql-bin`).
pub(crate) async fn binlog_series(
    conn: &mut Conn,
    server: &ServerInfo,
    binlog_file: &str,
) -> Result<String, MyError> {
    let identity = match server.flavor {
        Flavor::Mysql => variable(conn, "server_uuid")
            .await?
            .unwrap_or_else(|| server.server_id.to_string()),
        Flavor::MariaDb => server.server_id.to_string(),
    };
    let base = binlog_file
        .rsplit_once('.')
        .map_or(binlog_file, |(base, _)| base);
    Ok(format!("{identity} {base}"))
}

pub(crate) async fn server_info(conn: &mut Conn) -> Result<ServerInfo, MyError> {
    let (version, server_id): (String, u32) = conn
        .query_first("SELECT VERSION(), @@server_id")
        .await
        .map_err(MyError::query("reading the server version"))?
        .ok_or_else(|| MyError::Setup("SELECT VERSION() returned nothing".into()))?;
    let flavor = if version.to_ascii_lowercase().contains("mariadb") {
        Flavor::MariaDb
    } else {
        Flavor::Mysql
    };
    let gtid_mode = match flavor {
        Flavor::MariaDb => true,
        Flavor::Mysql => variable(conn, "gtid_mode")
            .await?
            .is_some_and(|v| v.eq_ignore_ascii_case("ON")),
    };
    Ok(ServerInfo {
        flavor,
        version,
        server_id,
        gtid_mode,
    })
}

const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// `db.table` of every base table matching the configured names (globs allowed), sorted.
pub(crate) async fn resolve_tables(
    conn: &mut Conn,
    patterns: &[glob::Pattern],
) -> Result<Vec<String>, MyError> {
    let rows: Vec<(String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS})"
        ))
        .await
        .map_err(MyError::query("listing tables"))?;
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|(db, t)| format!("{db}.{t}"))
        .filter(|name| patterns.iter().any(|p| p.matches(name)))
        .collect();
    out.sort();
    Ok(out)
}

/// A table's definition from `information_schema`, or None if it does not exist.
pub(crate) async fn table_def(conn: &mut Conn, name: &str) -> Result<Option<MyTableDef>, MyError> {
    let (db, table) = name.split_once('.').unwrap_or(("", name));
    type ColumnRow = (
        String,
        String,
        Option<String>,
        String,
        String,
        Option<String>,
    );
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, IS_NULLABLE, COLUMN_KEY, EXTRA
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(MyError::query("reading a table's columns"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let collation: Option<Option<String>> = conn
        .exec_first(
            "SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(MyError::query("reading a table's collation"))?;
    let charset = collation
        .flatten()
        .map(|c| super::ddl::charset_of_collation(&c))
        .unwrap_or_else(|| "utf8mb4".into());
    let columns = rows
        .into_iter()
        .map(|(name, ty, cs, nullable, key, _extra)| MyColumn {
            name,
            column_type: canonical_type(&ty),
            charset: cs.map(|c| c.to_ascii_lowercase()),
            nullable: nullable.eq_ignore_ascii_case("YES"),
            key: key == "PRI",
        })
        .collect();
    Ok(Some(MyTableDef { columns, charset }))
}

/// The definitions of `names` (tables that vanished meanwhile are left out).
pub(crate) async fn table_defs(conn: &mut Conn, names: &[String]) -> Result<Tables, MyError> {
    let mut out = Tables::new();
    for name in names {
        if let Some(def) = table_def(conn, name).await? {
            out.insert(name.clone(), def);
        }
    }
    Ok(out)
}

/// A database's default character set.
pub(crate) async fn db_charset(conn: &mut Conn, db: &str) -> Result<String, MyError> {
    let cs: Option<String> = conn
        .exec_first(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (db,),
        )
        .await
        .map_err(MyError::query("reading a database's charset"))?;
    Ok(cs.unwrap_or_else(|| "utf8mb4".into()).to_ascii_lowercase())
}

/// Estimated rows of a table (for snapshot progress).
pub(crate) async fn estimated_rows(conn: &mut Conn, name: &str) -> u64 {
    let (db, table) = name.split_once('.').unwrap_or(("", name));
    conn.exec_first::<Option<u64>, _, _>(
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (db, table),
    )
    .await
    .ok()
    .flatten()
    .flatten()
    .unwrap_or(0)
}

/// The binlog files the server still has, oldest first, with their sizes.
pub(crate) async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, MyError> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(MyError::query("listing binary logs"))?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| Some((r.take::<String, _>(0)?, r.take::<u64, _>(1).unwrap_or(0))))
        .collect())
}

/// Binlog bytes from `file:pos` to the end of the newest binlog (what the server has written
/// that a reader at that position has not read).
pub(crate) fn bytes_behind(logs: &[(String, u64)], file: &str, pos: u64) -> Option<u64> {
    let at = logs.iter().position(|(name, _)| name == file)?;
    let rest: u64 = logs[at + 1..].iter().map(|(_, size)| size).sum();
    Some(logs[at].1.saturating_sub(pos) + rest)
}

/// MySQL-style identifier quoting.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db.table` → `` `db`.`table` ``.
pub(crate) fn quote_table(name: &str) -> String {
    match name.split_once('.') {
        Some((db, t)) => format!("{}.{}", quote_ident(db), quote_ident(t)),
        None => quote_ident(name),
    }
}
