//! `sluice check` for a Postgres source: every prerequisite, each problem with its fix. Reads
//! only; creates nothing.

use tokio_postgres::Client;

use super::{catalog, connect_sql};
use crate::config::SourceConfig;
use crate::event::TableSchema;
use crate::finding::Finding;

fn subject(source: &SourceConfig) -> String {
    format!("source `{}` ({})", source.name, source.file.display())
}

/// `sluice check`: connect, then every prerequisite. Also returns the schemas of the captured
/// tables, which transforms are planned against.
pub(crate) async fn check(source: &SourceConfig) -> (Vec<Finding>, Vec<TableSchema>) {
    match connect_sql(source).await {
        Ok((client, db)) => {
            let mut findings = prerequisites(&client, &db, source).await;
            findings.extend(publication_privilege(&client, &db, source).await);
            findings.extend(slot_state(&client, source).await);
            findings.extend(risks(&client, source).await);
            let mut schemas = Vec::new();
            if let Ok((tables, _)) = catalog::resolve_tables(&client, &source.tables).await {
                for table in &tables {
                    if let Ok((schema, _)) =
                        catalog::table_schema(&client, &source.name, &db, table, 1).await
                    {
                        schemas.push(schema);
                    }
                }
            }
            (findings, schemas)
        }
        Err(e) => (
            vec![Finding::problem(
                &subject(source),
                format!("cannot connect: {e}"),
                "check `url` (host, port, user, password, database) and that Postgres accepts connections from this host (pg_hba.conf)".into(),
            )],
            Vec::new(),
        ),
    }
}

/// What must hold before the source creates anything (publication, slot): the daemon runs this
/// too, so a misconfigured database is refused with nothing half-created.
pub(crate) async fn prerequisites(
    client: &Client,
    db: &str,
    source: &SourceConfig,
) -> Vec<Finding> {
    let subject = subject(source);
    let mut findings = Vec::new();
    let mut problem =
        |what: String, fix: String| findings.push(Finding::problem(&subject, what, fix));
    match client.query_one("SHOW wal_level", &[]).await {
        Ok(row) if row.get::<_, String>(0) == "logical" => {}
        Ok(row) => problem(
            format!(
                "wal_level is `{}`, logical replication needs `logical`",
                row.get::<_, String>(0)
            ),
            "ALTER SYSTEM SET wal_level = logical; then restart Postgres".into(),
        ),
        Err(e) => problem(
            format!("cannot read wal_level: {e}"),
            "grant the user access to SHOW".into(),
        ),
    }
    match client
        .query_one("SELECT rolreplication OR rolsuper, current_user::text FROM pg_roles WHERE rolname = current_user", &[])
        .await
    {
        Ok(row) if row.get::<_, bool>(0) => {}
        Ok(row) => {
            let user: String = row.get(1);
            problem(
                format!("user `{user}` lacks the REPLICATION attribute"),
                format!("ALTER ROLE {} REPLICATION;", catalog::quote_ident(&user)),
            )
        }
        Err(e) => problem(format!("cannot read the user's attributes: {e}"), "check the user's access to pg_roles".into()),
    }
    match catalog::resolve_tables(client, &source.tables).await {
        Ok((tables, missing)) => {
            for name in missing {
                problem(
                    format!("table `{name}` does not exist in database `{db}`"),
                    "fix the name in `tables`, or create the table".into(),
                );
            }
            if tables.is_empty() {
                problem(
                    format!("no table matches {:?}", source.tables),
                    "list existing tables in `tables`".into(),
                );
            }
            for t in tables.iter().filter(|t| !t.identifiable()) {
                problem(
                    format!(
                        "table {} has no primary key and no usable replica identity",
                        t.display()
                    ),
                    format!(
                        "add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL;",
                        t.qualified()
                    ),
                );
            }
        }
        Err(e) => problem(
            format!("cannot list tables: {e}"),
            "grant the user USAGE on the schemas".into(),
        ),
    }
    findings
}

async fn publication_privilege(client: &Client, db: &str, source: &SourceConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let publication = source.publication_name();
    let has_publication = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map(|r| r.is_some())
        .unwrap_or(false);
    if !has_publication
        && let Ok(row) = client
            .query_one(
                "SELECT has_database_privilege(current_database(), 'CREATE')",
                &[],
            )
            .await
        && !row.get::<_, bool>(0)
    {
        findings.push(Finding::problem(
            &subject(source),
            format!("publication `{publication}` does not exist and the user may not create it"),
            format!("GRANT CREATE ON DATABASE {} TO <user>; or CREATE PUBLICATION {publication} FOR TABLE … as the owner", catalog::quote_ident(db)),
        ));
    }
    findings
}

/// Risks that do not stop the pipeline but that a user should know (printed as warnings by
/// `sluice check`, logged at start by the daemon).
pub(crate) async fn risks(client: &Client, source: &SourceConfig) -> Vec<Finding> {
    let subject = subject(source);
    let mut findings = Vec::new();
    let Ok((tables, _)) = catalog::resolve_tables(client, &source.tables).await else {
        return findings;
    };
    let relids: Vec<u32> = tables
        .iter()
        .filter(|t| t.replica_identity != 'f')
        .map(|t| t.relid)
        .collect();
    let toastable = client
        .query(
            "SELECT n.nspname || '.' || c.relname, string_agg(a.attname, ', ' ORDER BY a.attnum),
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage IN ('x', 'e')
               -- Only tables that hold out-of-line values now: a warning for every text column
               -- would be noise, and a table whose values all stay inline never loses one.
               AND c.reltoastrelid <> 0 AND pg_relation_size(c.reltoastrelid) > 0
             GROUP BY 1, 3 ORDER BY 1",
            &[&relids],
        )
        .await
        .unwrap_or_default();
    for row in toastable {
        let (table, columns, quoted): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        findings.push(Finding::warning(
            &subject,
            format!(
                "table {table} stores large (TOASTed) values, in columns among {columns}, and has REPLICA IDENTITY DEFAULT: an update \
                 that leaves such a value unchanged does not carry it, and the lake gets null for it (counted in \
                 sluice_source_unchanged_toast_total)"
            ),
            format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL;"),
        ));
    }
    if catalog::publication_scope(&source.tables).is_some() {
        let publication = source.publication_name();
        let covers = catalog::publication_covers_new_tables(client, &publication)
            .await
            .ok()
            .flatten();
        let superuser = catalog::is_superuser(client).await.unwrap_or(false);
        if covers == Some(false) || (covers.is_none() && !superuser) {
            findings.push(Finding::warning(
                &subject,
                format!(
                    "`tables` has globs but publication `{publication}` lists tables one by one: tables created \
                     later are not captured"
                ),
                format!(
                    "as a superuser: CREATE PUBLICATION {publication} FOR {} (or let sluice create it as a superuser)",
                    catalog::publication_scope(&source.tables).unwrap_or_default()
                ),
            ));
        }
    }
    findings
}

/// The slot: usable if it exists, creatable if it does not.
async fn slot_state(client: &Client, source: &SourceConfig) -> Vec<Finding> {
    let subject = subject(source);
    let slot = source.slot_name();
    let mut findings = Vec::new();
    let row = client
        .query_one(
            "SELECT (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1),
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
                    current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int,
                    current_setting('max_wal_senders')::int",
            &[&slot],
        )
        .await;
    let Ok(row) = row else { return findings };
    let (wal_status, exists, free_slots, senders): (Option<String>, bool, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if wal_status.as_deref() == Some("lost") {
        findings.push(Finding::problem(
            &subject,
            format!("replication slot `{slot}` is invalidated (wal_status = lost): the WAL it needed was removed"),
            format!("drop it (SELECT pg_drop_replication_slot('{slot}')) and start from a new lake path with `snapshot: initial`; raise max_slot_wal_keep_size"),
        ));
    }
    // A fresh start needs the main slot, and a resumed snapshot one temporary slot more.
    if !exists && free_slots < 2 {
        findings.push(Finding::problem(
            &subject,
            format!("only {free_slots} free replication slot(s); sluice needs 2 at start (its slot, and one while a snapshot resumes)"),
            "raise max_replication_slots (postgresql.conf) and restart Postgres, or drop unused slots".into(),
        ));
    }
    if senders < 2 {
        findings.push(Finding::problem(
            &subject,
            format!("max_wal_senders is {senders}; sluice needs 2"),
            "raise max_wal_senders (postgresql.conf) and restart Postgres".into(),
        ));
    }
    findings
}
