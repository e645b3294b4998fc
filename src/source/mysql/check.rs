//! `sluice check` for a MySQL/MariaDB source, and the prerequisites the daemon checks before it
//! starts: the binlog on, in ROW format with full images, the privileges a replica needs, GTID
//! mode, and how long the server keeps binlogs. Reads only.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::MyError;
use super::catalog::{self, Flavor, ServerInfo};
use crate::config::SourceConfig;
use crate::event::TableSchema;
use crate::finding::Finding;

fn subject(source: &SourceConfig) -> String {
    format!("source `{}` ({})", source.name, source.file.display())
}

/// `sluice check`: connect, then every prerequisite and risk. Also returns the schemas of the
/// captured tables, which transforms are planned against.
pub(crate) async fn check(source: &SourceConfig) -> (Vec<Finding>, Vec<TableSchema>) {
    let subject = subject(source);
    let mut conn = match catalog::connect(source).await {
        Ok(c) => c,
        Err(e) => {
            return (
                vec![Finding::problem(
                    &subject,
                    format!("cannot connect: {e}"),
                    "check `url` (host, port, user, password) and that the server accepts connections from this host".into(),
                )],
                Vec::new(),
            );
        }
    };
    let result = async {
        let server = catalog::server_info(&mut conn).await?;
        let mut findings = prerequisites(&mut conn, &server, source).await?;
        findings.extend(risks(&mut conn, &server, source).await?);
        let patterns = super::table_patterns(source)?;
        let tables = catalog::resolve_tables(&mut conn, &patterns).await?;
        if tables.is_empty() {
            findings.push(Finding::problem(
                &subject,
                format!("no table matches {:?}", source.tables),
                "list tables as `database.table` (globs allowed, e.g. shop.*) that exist on the server".into(),
            ));
        }
        let defs = catalog::table_defs(&mut conn, &tables).await?;
        let mut history = super::schema::History::new(&source.name, server.flavor.connector(), Default::default());
        let mut schemas = Vec::new();
        for (name, def) in defs {
            if !def.columns.iter().any(|c| c.key) {
                findings.push(Finding::problem(
                    &subject,
                    format!("table {name} has no primary key: sluice needs one to tell rows apart (ODS, transforms, deletes)"),
                    format!("ALTER TABLE {} ADD PRIMARY KEY (…); or leave the table out of `tables`", catalog::quote_table(&name)),
                ));
            }
            schemas.push((*history.derive(&name, def).schema).clone());
        }
        Ok::<_, MyError>((findings, schemas))
    }
    .await;
    let _ = conn.disconnect().await;
    match result {
        Ok(r) => r,
        Err(e) => (
            vec![Finding::problem(
                &subject,
                e.to_string(),
                "see the message".into(),
            )],
            Vec::new(),
        ),
    }
}

/// What must hold for the binlog to be read correctly: the daemon refuses to start otherwise.
pub(crate) async fn prerequisites(
    conn: &mut Conn,
    server: &ServerInfo,
    source: &SourceConfig,
) -> Result<Vec<Finding>, MyError> {
    let subject = subject(source);
    let mut findings = Vec::new();
    let var = |v: Option<String>| v.unwrap_or_default().to_ascii_uppercase();
    let log_bin = var(catalog::variable(conn, "log_bin").await?);
    if !matches!(log_bin.as_str(), "ON" | "1") {
        findings.push(Finding::problem(
            &subject,
            "the binary log is off (log_bin)".into(),
            "start the server with log_bin=mysql-bin (and server_id set), then restart it".into(),
        ));
    }
    let format = var(catalog::variable(conn, "binlog_format").await?);
    if format != "ROW" {
        findings.push(Finding::problem(
            &subject,
            format!("binlog_format is `{format}`; sluice reads row events"),
            "SET GLOBAL binlog_format = 'ROW'; and binlog_format=ROW in the server's config".into(),
        ));
    }
    let image = var(catalog::variable(conn, "binlog_row_image").await?);
    if !image.is_empty() && image != "FULL" {
        findings.push(Finding::problem(
            &subject,
            format!("binlog_row_image is `{image}`; sluice needs whole before and after images"),
            "SET GLOBAL binlog_row_image = 'FULL'; and binlog_row_image=FULL in the server's config".into(),
        ));
    }
    match server.flavor {
        Flavor::MariaDb => {
            if var(catalog::variable(conn, "log_bin_compress").await?) == "ON" {
                findings.push(Finding::problem(
                    &subject,
                    "log_bin_compress is ON; sluice does not decode compressed binlog events"
                        .into(),
                    "SET GLOBAL log_bin_compress = OFF".into(),
                ));
            }
        }
        Flavor::Mysql => {
            let options = var(catalog::variable(conn, "binlog_row_value_options").await?);
            if options.contains("PARTIAL_JSON") {
                findings.push(Finding::problem(
                    &subject,
                    "binlog_row_value_options is PARTIAL_JSON; sluice needs whole JSON values"
                        .into(),
                    "SET GLOBAL binlog_row_value_options = ''".into(),
                ));
            }
        }
    }
    let ours = super::server_id(source);
    if server.server_id == ours {
        findings.push(Finding::problem(
            &subject,
            format!("the server's server_id is {ours}, the same as sluice's replica id"),
            "set `server_id:` in the source file to a number no server or replica uses".into(),
        ));
    }
    findings.extend(privileges(conn, server, &subject).await?);
    Ok(findings)
}

/// REPLICATION SLAVE (to read the binlog), REPLICATION CLIENT / BINLOG MONITOR (positions),
/// SELECT (snapshot), and on MySQL RELOAD (the snapshot's brief read lock).
async fn privileges(
    conn: &mut Conn,
    server: &ServerInfo,
    subject: &str,
) -> Result<Vec<Finding>, MyError> {
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(MyError::query("reading the user's grants"))?;
    // Only the privilege list before ` ON ` is looked at: the rest may hold a password hash.
    let mut global = Vec::new();
    let mut any_select = false;
    for g in &grants {
        let upper = g.to_ascii_uppercase();
        let Some(body) = upper.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privs, rest)) = body.split_once(" ON ") else {
            continue;
        };
        let privs: Vec<String> = privs.split(',').map(|p| p.trim().to_string()).collect();
        if privs.iter().any(|p| p == "SELECT" || p.starts_with("ALL")) {
            any_select = true;
        }
        if rest.trim_start().starts_with("*.*") {
            global.extend(privs);
        }
    }
    let has = |names: &[&str]| {
        global
            .iter()
            .any(|p| p.starts_with("ALL") || names.iter().any(|n| p == n))
    };
    let mut missing = Vec::new();
    if !has(&["REPLICATION SLAVE", "REPLICATION REPLICA"]) {
        missing.push("REPLICATION SLAVE");
    }
    let client = match server.flavor {
        Flavor::MariaDb => "BINLOG MONITOR",
        Flavor::Mysql => "REPLICATION CLIENT",
    };
    if !has(&["REPLICATION CLIENT", "BINLOG MONITOR"]) {
        missing.push(client);
    }
    if server.flavor == Flavor::Mysql && !has(&["RELOAD"]) {
        missing.push("RELOAD");
    }
    if !any_select {
        missing.push("SELECT");
    }
    Ok(if missing.is_empty() {
        Vec::new()
    } else {
        vec![Finding::problem(
            subject,
            format!("the user lacks {}", missing.join(", ")),
            format!("GRANT {} ON *.* TO <the user>;", missing.join(", ")),
        )]
    })
}

/// Worth knowing, but not stopping for: GTID mode, and binlog retention.
pub(crate) async fn risks(
    conn: &mut Conn,
    server: &ServerInfo,
    source: &SourceConfig,
) -> Result<Vec<Finding>, MyError> {
    let subject = subject(source);
    let mut findings = Vec::new();
    if server.flavor == Flavor::Mysql && !server.gtid_mode {
        findings.push(Finding::warning(
            &subject,
            "gtid_mode is OFF: positions are binlog file and offset, which do not survive a failover to another server".into(),
            "enable GTIDs (gtid_mode=ON, enforce_gtid_consistency=ON) to resume by GTID".into(),
        ));
    }
    let seconds = match catalog::variable(conn, "binlog_expire_logs_seconds").await? {
        Some(s) if s.parse::<u64>().is_ok_and(|s| s > 0) => s.parse::<u64>().ok(),
        _ => catalog::variable(conn, "expire_logs_days")
            .await?
            .and_then(|d| d.parse::<f64>().ok())
            .map(|d| (d * 86_400.0) as u64),
    };
    match seconds {
        Some(s) if s > 0 && s < 86_400 => findings.push(Finding::warning(
            &subject,
            format!("the server keeps binlogs for {s} s only: if sluice is down longer, its position is purged and it must re-snapshot"),
            "keep binlogs at least a few days: SET GLOBAL binlog_expire_logs_seconds = 604800".into(),
        )),
        _ => {}
    }
    Ok(findings)
}
