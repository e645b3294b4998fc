//! `sluice check` for a Postgres source: every prerequisite, each problem with its fix. Reads
//! only; creates nothing.

use tokio_postgres::Client;

use super::{catalog, connect_sql};
use crate::check::Finding;
use crate::config::SourceConfig;

fn subject(source: &SourceConfig) -> String {
    format!("source `{}` ({})", source.name, source.file.display())
}

/// `sluice check`: connect, then every prerequisite.
pub async fn check(source: &SourceConfig) -> Vec<Finding> {
    match connect_sql(&source.url).await {
        Ok((client, db)) => {
            let mut findings = prerequisites(&client, &db, source).await;
            findings.extend(publication_privilege(&client, &db, source).await);
            findings
        }
        Err(e) => vec![Finding::problem(
            &subject(source),
            format!("cannot connect: {e}"),
            "check `url` (host, port, user, password, database) and that Postgres accepts connections from this host (pg_hba.conf)".into(),
        )],
    }
}

/// What must hold before the source creates anything (publication, slot): the daemon runs this
/// too, so a misconfigured database is refused with nothing half-created.
pub async fn prerequisites(client: &Client, db: &str, source: &SourceConfig) -> Vec<Finding> {
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
