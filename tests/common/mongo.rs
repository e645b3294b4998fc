//! MongoDB for the tests: a database of the test's own on the MongoDB-wire server that
//! `scripts/services.sh up mongodb` starts. No mongod can be had on these machines: that server is
//! SecantusDB (../shared/test-services.md), a stand-in that serves change streams, resume tokens,
//! snapshot reads and pre-images like a one-node replica set. Real MongoDB 7 is in
//! docker-compose.yaml.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection, Database};

pub fn mongo_url() -> String {
    std::env::var("SLUICE_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into())
}

pub async fn mongo_client() -> Client {
    let client = Client::with_uri_str(mongo_url()).await.unwrap();
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no MongoDB at {} (scripts/services.sh up mongodb): {e}",
                mongo_url()
            )
        });
    client
}

/// A database of the test's own, dropped on creation.
pub async fn fresh_db(client: &Client, name: &str) -> Database {
    let db = client.database(name);
    db.drop().await.unwrap();
    db
}

/// A collection that keeps pre-images for its change stream events.
pub async fn create_with_pre_images(db: &Database, name: &str) -> Collection<Document> {
    db.run_command(doc! { "create": name, "changeStreamPreAndPostImages": { "enabled": true } })
        .await
        .unwrap();
    db.collection(name)
}

/// Every document of a collection by `_id` text (as the lake's `_id` column holds it).
pub async fn docs_by_id(coll: &Collection<Document>) -> BTreeMap<String, Document> {
    coll.find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (id_text(d.get("_id").unwrap()), d))
        .collect()
}

/// The lake's `_id` text for an `_id`.
pub fn id_text(id: &Bson) -> String {
    match id {
        Bson::ObjectId(o) => o.to_hex(),
        Bson::String(s) => s.clone(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        other => other.clone().into_relaxed_extjson().to_string(),
    }
}

/// A document as the lake's `_doc` JSON holds it (relaxed extended JSON).
pub fn doc_json(d: &Document) -> serde_json::Value {
    Bson::Document(d.clone()).into_relaxed_extjson()
}

/// `field` of every document, as canonical text (None when missing or null), keyed by `_id`.
pub fn field_state(
    docs: &BTreeMap<String, Document>,
    fields: &[&str],
) -> BTreeMap<String, Vec<Option<String>>> {
    docs.iter()
        .map(|(id, d)| {
            let mut row = vec![Some(id.clone())];
            row.extend(fields.iter().map(|f| match d.get(*f) {
                None | Some(Bson::Null) => None,
                Some(Bson::Int32(i)) => Some(i.to_string()),
                Some(Bson::Int64(i)) => Some(i.to_string()),
                Some(Bson::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            }));
            (id.clone(), row)
        })
        .collect()
}
