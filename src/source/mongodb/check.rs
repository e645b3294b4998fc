//! `sluice check` for a MongoDB source, and the prerequisite the daemon checks before it starts:
//! a replica set or a sharded cluster (change streams need one), the privileges to read change
//! streams, and whether the collections keep pre-images. Reads only.

use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};

use super::MongoError;
use super::documents::CollectionSchema;
use crate::config::SourceConfig;
use crate::event::TableSchema;
use crate::finding::Finding;

/// A prerequisite that does not hold, and how to fix it.
pub(crate) struct Problem {
    pub(crate) problem: String,
    pub(crate) fix: String,
}

/// Documents per collection `check` reads to infer the schema transforms are planned against.
const SAMPLE_DOCS: i64 = 1000;

fn subject(source: &SourceConfig) -> String {
    format!("source `{}` ({})", source.name, source.file.display())
}

/// Change streams need a replica set (`hello` names one) or a sharded cluster (`mongos`).
pub(crate) async fn deployment_problem(client: &Client) -> Result<Option<Problem>, MongoError> {
    let hello = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(MongoError::driver("asking the server what it is (hello)"))?;
    let replica_set = hello.get_str("setName").is_ok();
    let mongos = hello.get_str("msg") == Ok("isdbgrid");
    Ok((!replica_set && !mongos).then(|| Problem {
        problem: "the server is a standalone mongod: change streams need a replica set or a sharded cluster".into(),
        fix: "start mongod with --replSet rs0 and run rs.initiate() once (a one-node replica set is enough)".into(),
    }))
}

/// `sluice check`: connect, then every prerequisite and risk. Also returns schemas inferred from
/// a sample of each captured collection, which transforms are planned against.
pub(crate) async fn check(source: &SourceConfig) -> (Vec<Finding>, Vec<TableSchema>) {
    let subject = subject(source);
    let client = match super::connect_client(source).await {
        Ok(c) => c,
        Err(e) => {
            return (
                vec![Finding::problem(
                    &subject,
                    e.to_string(),
                    "check `url`".into(),
                )],
                Vec::new(),
            );
        }
    };
    match findings(&client, source, &subject).await {
        Ok(r) => r,
        Err(e) => (
            vec![Finding::problem(
                &subject,
                format!("cannot check the server: {e}"),
                "check `url` (host, port, user, password, TLS) and that the server accepts connections from this host".into(),
            )],
            Vec::new(),
        ),
    }
}

async fn findings(
    client: &Client,
    source: &SourceConfig,
    subject: &str,
) -> Result<(Vec<Finding>, Vec<TableSchema>), MongoError> {
    let mut findings = Vec::new();
    if let Some(p) = deployment_problem(client).await? {
        findings.push(Finding::problem(subject, p.problem, p.fix));
    }
    findings.extend(privileges(client, subject).await?);
    let patterns = super::table_patterns(source)?;
    let collections = super::resolve_collections(client, &patterns).await?;
    if collections.is_empty() {
        findings.push(Finding::problem(
            subject,
            format!("no collection matches {:?}", source.tables),
            "list collections as `database.collection` (globs allowed, e.g. shop.*) that exist on the server".into(),
        ));
    }
    let mut schemas = Vec::new();
    for name in &collections {
        if !pre_images_enabled(client, name).await? {
            let (db, coll) = name.split_once('.').unwrap_or(("", name));
            findings.push(Finding::warning(
                subject,
                format!("collection {name} keeps no pre-images: updates carry the document as looked up when read (it may be a later version), deletes carry only the _id"),
                format!("use {db}; db.runCommand({{collMod: \"{coll}\", changeStreamPreAndPostImages: {{enabled: true}}}}) (MongoDB 6.0+)"),
            ));
        }
        schemas.push(sample_schema(client, source, name).await?);
    }
    if findings.iter().all(|f| f.warning)
        && let Err(e) = client.watch().await
    {
        findings.push(Finding::problem(
                subject,
                format!("cannot open a change stream: {}", MongoError::driver("opening a change stream")(e)),
                "grant the user the changeStream and find actions (the read role on the databases, or readAnyDatabase)".into(),
            ));
    }
    Ok((findings, schemas))
}

/// With authentication on, the user needs `find` and `changeStream` somewhere (the `read` role).
async fn privileges(client: &Client, subject: &str) -> Result<Vec<Finding>, MongoError> {
    let status = client
        .database("admin")
        .run_command(doc! { "connectionStatus": 1, "showPrivileges": true })
        .await
        .map_err(MongoError::driver("reading the user's privileges"))?;
    let auth = status.get_document("authInfo").cloned().unwrap_or_default();
    let authenticated = auth
        .get_array("authenticatedUsers")
        .is_ok_and(|u| !u.is_empty());
    if !authenticated {
        return Ok(Vec::new()); // no authentication: every action is allowed
    }
    let actions: Vec<String> = auth
        .get_array("authenticatedUserPrivileges")
        .map(|privs| {
            privs
                .iter()
                .filter_map(Bson::as_document)
                .filter_map(|p| p.get_array("actions").ok())
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<&str> = ["find", "changeStream"]
        .into_iter()
        .filter(|a| !actions.iter().any(|x| x == a))
        .collect();
    Ok(if missing.is_empty() {
        Vec::new()
    } else {
        vec![Finding::problem(
            subject,
            format!("the user lacks the {} action(s)", missing.join(", ")),
            "grant the read role on the captured databases (or readAnyDatabase)".into(),
        )]
    })
}

async fn pre_images_enabled(client: &Client, name: &str) -> Result<bool, MongoError> {
    let (db, coll) = name.split_once('.').unwrap_or(("", name));
    let specs: Vec<Document> = client
        .database(db)
        .run_command(doc! { "listCollections": 1, "filter": { "name": coll } })
        .await
        .map_err(MongoError::driver("listing collection options"))?
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| b.iter().filter_map(Bson::as_document).cloned().collect())
        .unwrap_or_default();
    Ok(specs.iter().any(|s| {
        s.get_document("options")
            .and_then(|o| o.get_document("changeStreamPreAndPostImages"))
            .and_then(|p| p.get_bool("enabled"))
            .unwrap_or(false)
    }))
}

/// The schema of `name` as its first documents suggest.
async fn sample_schema(
    client: &Client,
    source: &SourceConfig,
    name: &str,
) -> Result<TableSchema, MongoError> {
    let (db, coll) = name.split_once('.').unwrap_or(("", name));
    let docs: Vec<Document> = client
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .limit(SAMPLE_DOCS)
        .await
        .map_err(MongoError::driver("sampling documents"))?
        .try_collect()
        .await
        .map_err(MongoError::driver("sampling documents"))?;
    let mut schema = CollectionSchema::default();
    for d in &docs {
        schema.observe(d);
    }
    Ok(super::table_schema(&source.name, name, &schema, 1))
}
