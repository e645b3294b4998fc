//! The MongoDB source end to end: documents of every BSON type and every change stream event
//! kind into typed Parquet, read back with pyarrow and compared with the collections; resume
//! after a restart; a lost resume token; the snapshot's hand-over to streaming under concurrent
//! writes; `sluice check`.
//!
//! The server is SecantusDB, a MongoDB-wire stand-in (no mongod can be had on these machines;
//! see tests/common/mongo.rs): it serves change streams, resume tokens, snapshot reads and
//! pre-images like a one-node replica set. A deployment-wide change stream (what sluice opens)
//! is never invalidated by drops or renames, so `invalidate` cannot be produced here.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::mongo::*;
use crate::common::*;
use mongodb::bson::{self, Bson, Document, doc, oid::ObjectId};

const WAIT: Duration = Duration::from_secs(60);

/// The source streams from one second of cluster time before its snapshot (the stream margin),
/// so a test's setup written just before the start replays too: the drop of the test's own
/// database lands as a truncate ahead of the snapshot rows, and exact row counts break. Let the
/// setup age past the margin first, as a real deployment's history has.
fn let_setup_age_past_the_stream_margin() {
    std::thread::sleep(std::time::Duration::from_millis(1500));
}

fn configure(name: &str, tables: &[&str]) -> Daemon {
    let_setup_age_past_the_stream_margin();
    let mut d = Daemon::configure_kind(
        "mongodb",
        name,
        &mongo_url(),
        tables,
        "{ rows: 1000, interval: 200ms }",
        None,
    );
    d.add_sink_settings(&["zones: [raw, ods]", "ods_interval: 300ms"]);
    d.log_env = true;
    d
}

/// The ODS `_doc` of every document of a stream, by `_id`.
fn ods_docs(d: &Daemon, stream: &str) -> BTreeMap<String, serde_json::Value> {
    zone_rows(&d.lake, "ods", stream)
        .into_iter()
        .map(|r| {
            let doc = r.values["_doc"].clone().unwrap();
            (
                r.values["_id"].clone().unwrap(),
                serde_json::from_str(&doc).unwrap(),
            )
        })
        .collect()
}

fn want_docs(docs: &BTreeMap<String, Document>) -> BTreeMap<String, serde_json::Value> {
    docs.iter().map(|(k, d)| (k.clone(), doc_json(d))).collect()
}

/// pyarrow reads the stream's ODS table and compares it with the collection.
fn pyarrow_agrees(d: &Daemon, stream: &str, db: &str, coll: &str) -> String {
    let ods = d.lake.join("ods").join(stream);
    python_stdout(&[
        "tests/py/mongo_vs_lake.py",
        ods.to_str().unwrap(),
        &mongo_url(),
        db,
        coll,
    ])
}

fn typed_document(id: Bson, n: i32) -> Document {
    doc! {
        "_id": id,
        "i32": n,
        "i64": (n as i64) << 40,
        "dbl": n as f64 + 0.5,
        "dec": bson::Decimal128::from_bytes(dec_bytes(n)),
        "str": format!("text {n} ünï"),
        "flag": n % 2 == 0,
        "when": bson::DateTime::from_millis(1_700_000_000_123 + n as i64),
        "oid": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
        "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0, 1, 2, n as u8] },
        "uuid": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: (0..16).map(|b| b + n as u8).collect() },
        "re": bson::Regex { pattern: "^a.*z$".into(), options: "i".into() },
        "ts": bson::Timestamp { time: 1_700_000_000, increment: n as u32 },
        "sub": { "a": n, "b": { "c": "deep" } },
        "ints": [1, 2, n],
        "mixed": [1, "two", { "three": 3 }],
        "nothing": Bson::Null,
    }
}

/// Decimal128 of `n.25`: the 16 bytes of (n * 100 + 25) × 10^-2.
fn dec_bytes(n: i32) -> [u8; 16] {
    let coefficient = (n as u128) * 100 + 25;
    // Exponent bias 6176, exponent -2, in bits 49..63 of the high word.
    let high: u64 = ((6176u64 - 2) << 49) | (coefficient >> 64) as u64;
    let low = coefficient as u64;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&low.to_le_bytes());
    out[8..].copy_from_slice(&high.to_le_bytes());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bson_type_and_event_kind_lands_typed_and_whole() {
    let _turn = one_at_a_time().await;
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_types").await;
    let doomed_db = fresh_db(&client, "sluice_it_mg_doomed").await;
    let items = create_with_pre_images(&db, "items").await;
    let plain = db.collection::<Document>("plain");
    let gone = db.collection::<Document>("gone");
    let moving = db.collection::<Document>("moving");
    let leaving = db.collection::<Document>("leaving");
    items
        .insert_many([
            typed_document(Bson::Int32(1), 1),
            typed_document(Bson::String("s-2".into()), 2),
            typed_document(Bson::ObjectId(ObjectId::new()), 3),
            typed_document(Bson::Int32(4), 4),
        ])
        .await
        .unwrap();
    plain
        .insert_many((1..=5).map(|i| doc! { "_id": i, "v": 0, "name": format!("p{i}") }))
        .await
        .unwrap();
    gone.insert_one(doc! { "_id": 1, "x": 1 }).await.unwrap();
    moving
        .insert_many([doc! { "_id": 1, "m": "a" }, doc! { "_id": 2, "m": "b" }])
        .await
        .unwrap();
    leaving.insert_one(doc! { "_id": 1 }).await.unwrap();
    doomed_db
        .collection::<Document>("x")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();

    let mut d = configure(
        "mgtypes",
        &[
            "sluice_it_mg_types.items",
            "sluice_it_mg_types.plain",
            "sluice_it_mg_types.gone",
            "sluice_it_mg_types.mov*",
            "sluice_it_mg_types.leaving",
            "sluice_it_mg_doomed.*",
        ],
    );
    d.append_source("snapshot_chunk_rows: 2\n");
    d.start();
    let items_stream = "mgtypes.sluice_it_mg_types.items";
    let streaming = wait_until(WAIT, || async {
        zone_row_count(&d.lake, "raw", items_stream) == 4 && d.log().contains("streaming")
    })
    .await;
    assert!(streaming, "no snapshot:\n{}", d.log());

    // Every event kind while streaming.
    items
        .insert_one(
            doc! { "_id": 10, "i32": "not a number any more", "added": true, "str": "late" },
        )
        .await
        .unwrap();
    items
        .update_one(
            doc! { "_id": 1 },
            doc! { "$set": { "str": "updated", "sub.b.c": "deeper", "ints.0": 100 }, "$inc": { "i32": 5 }, "$unset": { "flag": "" } },
        )
        .await
        .unwrap();
    items
        .replace_one(
            doc! { "_id": "s-2" },
            doc! { "str": "replaced", "i64": 7i64 },
        )
        .await
        .unwrap();
    items.delete_one(doc! { "_id": 4 }).await.unwrap();
    plain
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 1 } })
        .await
        .unwrap();
    plain.delete_one(doc! { "_id": 2 }).await.unwrap();
    gone.drop().await.unwrap();
    client
        .database("admin")
        .run_command(doc! { "renameCollection": "sluice_it_mg_types.moving", "to": "sluice_it_mg_types.moved" })
        .await
        .unwrap();
    client
        .database("admin")
        .run_command(doc! { "renameCollection": "sluice_it_mg_types.leaving", "to": "sluice_it_mg_types.left" })
        .await
        .unwrap();
    doomed_db.drop().await.unwrap();
    let moved = db.collection::<Document>("moved");
    moved.insert_one(doc! { "_id": 3, "m": "c" }).await.unwrap();

    let want_items = docs_by_id(&items).await;
    let want_plain = docs_by_id(&plain).await;
    let want_moved = docs_by_id(&moved).await;
    wait_for("the changes in the ODS", WAIT, || async {
        ods_docs(&d, items_stream) == want_docs(&want_items)
            && ods_docs(&d, "mgtypes.sluice_it_mg_types.plain") == want_docs(&want_plain)
            && ods_docs(&d, "mgtypes.sluice_it_mg_types.moved") == want_docs(&want_moved)
            && ods_docs(&d, "mgtypes.sluice_it_mg_types.gone").is_empty()
            && ods_docs(&d, "mgtypes.sluice_it_mg_doomed.x").is_empty()
    })
    .await;

    // pyarrow reads typed columns equal to the documents.
    for (stream, coll) in [
        (items_stream, "items"),
        ("mgtypes.sluice_it_mg_types.plain", "plain"),
        ("mgtypes.sluice_it_mg_types.moved", "moved"),
    ] {
        let out = pyarrow_agrees(&d, stream, "sluice_it_mg_types", coll);
        assert!(out.starts_with("ok "), "{stream}: {out}");
    }

    // Types as documented: the snapshot's schema, then `i32` widened to JSON text by a string.
    let files = parquet_files(&d.lake.join("raw").join(items_stream));
    let first = parquet_schema(&files[0]);
    for (field, ty) in [
        ("_id", "Utf8"),
        ("i32", "Int32"),
        ("i64", "Int64"),
        ("dbl", "Float64"),
        ("dec", "Utf8"),
        ("flag", "Boolean"),
        ("when", "Timestamp(Microsecond, Some(\"UTC\"))"),
        ("bin", "Binary"),
        ("ints", "List"),
        ("_doc", "Utf8"),
    ] {
        let got = first
            .get(field)
            .unwrap_or_else(|| panic!("no column {field}: {first:?}"));
        assert!(got.starts_with(ty), "{field}: {got}, want {ty}");
    }
    assert!(!first.contains_key("added"), "a field first seen later");
    let last = parquet_schema(files.last().unwrap());
    assert!(last.contains_key("added"), "the schema evolved: {last:?}");
    assert_eq!(last["i32"], "Utf8", "int32 and string widen to JSON text");
    let rows = lake_rows(&d.lake, items_stream);
    let by_id = |id: &str, op: &str| {
        rows.iter()
            .find(|r| r.values["_id"].as_deref() == Some(id) && r.op == op)
            .unwrap_or_else(|| panic!("no {op} of {id}"))
            .values
            .clone()
    };
    let snap = by_id("1", "r");
    assert_eq!(snap["dec"].as_deref(), Some("1.25"), "Decimal128 exact");
    assert_eq!(
        snap["when"].as_deref(),
        Some("1700000000124000"),
        "UTC microseconds"
    );
    assert_eq!(snap["oid"].as_deref(), Some("65a1b2c3d4e5f60718293a4b"));
    assert_eq!(
        snap["uuid"].as_deref(),
        Some("01020304-0506-0708-090a-0b0c0d0e0f10")
    );
    assert_eq!(snap["re"].as_deref(), Some("/^a.*z$/i"));
    assert_eq!(snap["ts"].as_deref(), Some("1700000000:1"));
    assert_eq!(snap["ints"].as_deref(), Some("[1,2,1]"));
    let update = by_id("1", "u");
    assert_eq!(update["str"].as_deref(), Some("updated"));
    assert_eq!(update["flag"], None, "$unset");
    assert_eq!(
        update["i32"].as_deref(),
        Some("6"),
        "JSON text of the $inc-ed number"
    );
    let deleted = by_id("4", "d");
    assert_eq!(
        deleted["str"].as_deref(),
        Some("text 4 ünï"),
        "the pre-image"
    );
    let plain_rows = lake_rows(&d.lake, "mgtypes.sluice_it_mg_types.plain");
    let plain_delete = plain_rows
        .iter()
        .find(|r| r.op == "d")
        .unwrap_or_else(|| panic!("no delete in {plain_rows:?}\n{}", d.log()));
    assert_eq!(plain_delete.values["_id"].as_deref(), Some("2"));
    assert_eq!(
        plain_delete.values["name"], None,
        "no pre-image: the key only"
    );
    assert!(
        lake_rows(&d.lake, "mgtypes.sluice_it_mg_types.gone")
            .iter()
            .any(|r| r.op == "t")
    );
    assert!(
        lake_rows(&d.lake, "mgtypes.sluice_it_mg_doomed.x")
            .iter()
            .any(|r| r.op == "t")
    );
    let leaving_rows = lake_rows(&d.lake, "mgtypes.sluice_it_mg_types.leaving");
    assert_eq!(
        leaving_rows.last().unwrap().op,
        "t",
        "renamed out of the captured set"
    );
    assert!(!d.lake.join("raw/mgtypes.sluice_it_mg_types.left").exists());
    assert!(d.metric("sluice_source_events_total{source=\"mgtypes\"") >= 10.0);
    assert!(d.terminate().success());
}

/// The schema of a Parquet file: column → Arrow type.
fn parquet_schema(path: &std::path::Path) -> BTreeMap<String, String> {
    let file = std::fs::File::open(path).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), format!("{:?}", f.data_type())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_hands_over_to_streaming_under_concurrent_writes() {
    let _turn = one_at_a_time().await;
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_handoff").await;
    let coll = create_with_pre_images(&db, "docs").await;
    seed_versioned(&coll, 8000).await;
    let mut d = configure("mghand", &["sluice_it_mg_handoff.docs"]);
    d.append_source("snapshot_chunk_rows: 500\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(versioned_workload(
        coll.clone(),
        1,
        8000,
        stop.clone(),
        7,
        None,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.start();
    let stream = "mghand.sluice_it_mg_handoff.docs";
    wait_for("the snapshot", WAIT, || async {
        d.log().contains("snapshot of collection done")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let want = versions(&coll).await;
    let caught_up = wait_until(WAIT, || async {
        state_from_log(&lake_rows(&d.lake, stream), "_id", &["_id", "v"]) == want
    })
    .await;
    if !caught_up {
        let got = state_from_log(&lake_rows(&d.lake, stream), "_id", &["_id", "v"]);
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| (k, v, got.get(k)))
            .take(10)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(10)
            .collect();
        panic!(
            "the lake did not catch up: {diff:?} extra {extra:?}\n{}",
            d.log()
        );
    }
    let by_op = assert_version_chains(&lake_rows(&d.lake, stream), &want, "_id", "v");
    assert!(by_op.get("u").copied().unwrap_or(0) > 10, "{by_op:?}");
    assert!(by_op.get("r").copied().unwrap_or(0) > 7000, "{by_op:?}");
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_resumes_after_the_committed_token() {
    let _turn = one_at_a_time().await;
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_resume").await;
    let coll = create_with_pre_images(&db, "docs").await;
    seed_versioned(&coll, 200).await;
    let mut d = configure("mgres", &["sluice_it_mg_resume.docs"]);
    let stream = "mgres.sluice_it_mg_resume.docs";
    d.start();
    for round in 0..3i64 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = tokio::spawn(versioned_workload(
            coll.clone(),
            10_000 * (round + 1),
            0,
            stop.clone(),
            11 + round as u64,
            None,
        ));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(d.terminate().success(), "{}", d.log());
        // Changes while sluice is down come from the change stream after the token.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.await.unwrap();
        coll.update_many(
            doc! { "_id": { "$lte": 20 } },
            doc! { "$inc": { "v": 1i64 } },
        )
        .await
        .unwrap();
        d.start();
    }
    let want = versions(&coll).await;
    wait_for("the lake to catch up", WAIT, || async {
        state_from_log(&lake_rows(&d.lake, stream), "_id", &["_id", "v"]) == want
    })
    .await;
    assert_version_chains(&lake_rows(&d.lake, stream), &want, "_id", "v");
    let commit = latest_commit(&d.lake).unwrap();
    let position = &commit["positions"]["mgres"];
    assert_eq!(position["kind"], "mongo");
    assert!(
        position["token"]
            .as_str()
            .is_some_and(|t| t.contains("_data")),
        "{position}"
    );
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_resume_token_stops_the_source_with_the_recovery() {
    let _turn = one_at_a_time().await;
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_lost").await;
    let coll = db.collection::<Document>("docs");
    coll.insert_one(doc! { "_id": 1, "v": 0 }).await.unwrap();
    let mut d = configure("mglost", &["sluice_it_mg_lost.docs"]);
    let stream = "mglost.sluice_it_mg_lost.docs";
    d.start();
    // The document lands as a snapshot row, or as a create when it was written while its
    // chunk was read (the test's own drop of the database may come before it as a truncate).
    let snapshot = wait_until(WAIT, || async {
        lake_rows(&d.lake, stream)
            .iter()
            .any(|r| r.values["_id"].as_deref() == Some("1"))
    })
    .await;
    assert!(snapshot, "no snapshot:\n{}", d.log());
    coll.insert_one(doc! { "_id": 2, "v": 0 }).await.unwrap();
    wait_for("a token in the lake", WAIT, || async {
        latest_commit(&d.lake).is_some_and(|c| c["positions"]["mglost"]["token"].is_string())
    })
    .await;
    assert!(d.terminate().success());
    // The oplog no longer holds the token: a token the server cannot resume from.
    let commits = d.lake.join("_sluice/commits");
    let newest = std::fs::read_dir(&commits)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    record["positions"]["mglost"]["token"] =
        serde_json::json!("{\"_data\":\"8200000001000000002B0229296E04\"}");
    std::fs::write(&newest, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    coll.insert_one(doc! { "_id": 3, "v": 0 }).await.unwrap();
    d.start();
    let stopped = wait_until(Duration::from_secs(30), || {
        let running = d.is_running();
        async move { !running }
    })
    .await;
    assert!(
        stopped,
        "the source must stop, not restart from now:\n{}",
        d.log()
    );
    let status = d.child.take().unwrap().wait().unwrap();
    assert!(!status.success());
    let log = d.log();
    assert!(
        log.contains("no longer in the oplog") && log.contains("re-snapshotting"),
        "{log}"
    );
    assert!(
        !lake_rows(&d.lake, stream)
            .iter()
            .any(|r| r.values["_id"].as_deref() == Some("3")),
        "nothing after the lost position is written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_the_replica_set_pre_images_and_collections() {
    let _turn = one_at_a_time().await;
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_check").await;
    create_with_pre_images(&db, "with_images").await;
    db.collection::<Document>("without")
        .insert_one(doc! { "_id": 1, "n": 1, "name": "x" })
        .await
        .unwrap();
    let d = configure("mgcheck", &["sluice_it_mg_check.*"]);
    let (ok, out) = d.check();
    assert!(ok, "{out}");
    assert!(
        out.contains("sluice_it_mg_check.without keeps no pre-images")
            && out.contains("changeStreamPreAndPostImages"),
        "{out}"
    );
    assert!(!out.contains("with_images keeps no pre-images"), "{out}");
    let d = configure("mgcheck2", &["sluice_it_mg_check.nothing_here"]);
    let (ok, out) = d.check();
    assert!(!ok && out.contains("no collection matches"), "{out}");
}

/// The example transform on MongoDB documents (transforms/clean.reviews.sql): the cleansed
/// stream's state equals the same view evaluated on the collection, and the document whose
/// rating is not a number is a dead letter while the others land.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_transform_on_documents_equals_the_view() {
    let _turn = one_at_a_time().await;
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_tr").await;
    let reviews = create_with_pre_images(&db, "reviews").await;
    let countries = ["FR", "DE", "JP"];
    let review = |i: i64| {
        doc! {
            "_id": i, "product_id": i % 20 + 1, "rating": (i % 5 + 1) as i32, "text": format!("review {i}"),
            "author": { "name": format!("user{i}"), "country": countries[(i as usize - 1) % 3] },
            "created_at": bson::DateTime::from_millis(1_704_067_200_000 + i * 3_600_000),
        }
    };
    reviews.insert_many((1..=50).map(review)).await.unwrap();
    let_setup_age_past_the_stream_margin();
    let mut d = Daemon::configure_kind(
        "mongodb",
        "mgtr",
        &mongo_url(),
        &["sluice_it_mg_tr.reviews"],
        "{ rows: 1000, interval: 200ms }",
        None,
    );
    d.log_env = true;
    let sql = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("transforms/clean.reviews.sql"),
    )
    .unwrap();
    std::fs::create_dir_all(d.dir.path().join("transforms")).unwrap();
    std::fs::write(
        d.dir.path().join("transforms/clean.reviews.sql"),
        sql.replace("catalog.catalog.reviews", "mgtr.sluice_it_mg_tr.reviews"),
    )
    .unwrap();
    d.add_sink_settings(&["zones: [raw, cleansed, ods]", "ods_interval: 300ms"]);
    let (passed, text) = d.check();
    assert!(passed, "sluice check: {text}");
    d.start();
    wait_for("the snapshot", WAIT, || async {
        zone_row_count(&d.lake, "ods", "mgtr.sluice_it_mg_tr.reviews") == 50
    })
    .await;
    reviews
        .update_many(doc! { "rating": 1 }, doc! { "$set": { "rating": 0 } })
        .await
        .unwrap();
    reviews
        .update_one(
            doc! { "_id": 7 },
            doc! { "$set": { "author.country": "IT" } },
        )
        .await
        .unwrap();
    reviews
        .delete_many(doc! { "_id": { "$gt": 45 } })
        .await
        .unwrap();
    reviews
        .insert_one(doc! { "_id": 102, "product_id": 4, "rating": "great", "author": { "name": "bo", "country": "SE" }, "created_at": bson::DateTime::now() })
        .await
        .unwrap();
    reviews.insert_one(review(103)).await.unwrap();

    // The view, evaluated on the collection.
    let docs = docs_by_id(&reviews).await;
    let want: BTreeMap<String, Vec<Option<String>>> = docs
        .values()
        .filter_map(|d| {
            let rating = d.get("rating").and_then(Bson::as_i32).filter(|r| *r > 0)?;
            let author = d.get_document("author").unwrap();
            let id = id_text(d.get("_id").unwrap());
            Some((
                id.clone(),
                vec![
                    Some(id),
                    Some(d.get("product_id").unwrap().as_i64().unwrap().to_string()),
                    Some(rating.to_string()),
                    Some(author.get_str("name").unwrap().to_string()),
                    Some(author.get_str("country").unwrap().to_string()),
                ],
            ))
        })
        .collect();
    let cols = ["review_id", "product_id", "rating", "author", "country"];
    let caught_up = wait_until(WAIT, || async {
        state_from_log(
            &zone_rows(&d.lake, "cleansed", "clean.reviews"),
            "review_id",
            &cols,
        ) == want
    })
    .await;
    assert!(
        caught_up,
        "{:?}\nwant {want:?}\n{}",
        state_from_log(
            &zone_rows(&d.lake, "cleansed", "clean.reviews"),
            "review_id",
            &cols
        ),
        d.log()
    );
    let dead = zone_rows(&d.lake, "dlq", "dlq.reviews");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].values["error"]
            .as_deref()
            .is_some_and(|e| e.contains("great") || e.to_lowercase().contains("cast")),
        "{dead:?}"
    );
    assert!(d.terminate().success());
}
