//! MongoDB for the tests: a database of the test's own on the MongoDB-wire server that
//! `scripts/services.sh up mongodb` starts. No mongod can be had on these machines: that server is
//! SecantusDB (../shared/test-services.md), a stand-in that serves change streams, resume tokens,
//! snapshot reads and pre-images like a one-node replica set. Real MongoDB 7 is in
//! docker-compose.yaml.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection, Database};

pub fn mongo_url() -> String {
    std::env::var("SLUICE_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true".into())
}

/// The stand-in server is one Python process: the tests of a binary take turns on it rather than
/// time out together. Hold the guard for the whole test.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
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

/// Documents `{_id, v, pad}` where every update bumps `v`: inserts, updates and deletes at
/// random until `stop`, counting them in `done`. From the 300th change on, inserted documents
/// carry a new field `tag` (the inferred schema widens).
pub async fn versioned_workload(
    coll: Collection<Document>,
    first: i64,
    initial: i64,
    stop: Arc<AtomicBool>,
    seed: u64,
    done: Option<Arc<AtomicU64>>,
) {
    let mut rng = super::Rng(seed);
    let mut live: Vec<i64> = (first..first + initial).collect();
    let mut next = first + initial;
    let mut changes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.below(100);
        if roll < 30 || live.len() < 10 {
            let mut d = doc! { "_id": next, "v": 0i64, "pad": "new" };
            if changes >= 300 {
                d.insert("tag", "tagged");
            }
            coll.insert_one(d).await.unwrap();
            live.push(next);
            next += 1;
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let id = live[i];
            if roll < 90 {
                coll.update_one(doc! { "_id": id }, doc! { "$inc": { "v": 1i64 } })
                    .await
                    .unwrap();
            } else {
                coll.delete_one(doc! { "_id": id }).await.unwrap();
                live.swap_remove(i);
            }
        }
        changes += 1;
        if let Some(done) = &done {
            done.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `n` documents `{_id: 1..=n, v: 0, pad}`.
pub async fn seed_versioned(coll: &Collection<Document>, n: i64) {
    let pad = "p".repeat(100);
    for start in (1..=n).step_by(1000) {
        let docs: Vec<Document> = (start..(start + 1000).min(n + 1))
            .map(|i| doc! { "_id": i, "v": 0i64, "pad": &pad })
            .collect();
        coll.insert_many(docs).await.unwrap();
    }
}

/// The collection's `{_id: [_id, v]}`, for the version chains.
pub async fn versions(coll: &Collection<Document>) -> BTreeMap<String, Vec<Option<String>>> {
    field_state(&docs_by_id(coll).await, &["v"])
}
