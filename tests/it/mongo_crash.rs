//! Crash test against the MongoDB source, as the Postgres and MariaDB ones: kill -9 the daemon
//! at random moments (inside the chunked snapshot, while streaming, around a schema widening)
//! while a workload writes, a dozen times; then let it catch up and prove the lake holds every
//! change exactly once (per-key version chains, see common::assert_version_chains).
//!
//! The server is SecantusDB, the MongoDB-wire stand-in of tests/common/mongo.rs (no mongod can
//! be had here); the collection keeps pre-images, as a production deployment would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::mongo::*;
use crate::common::*;

const INITIAL_DOCS: i64 = 10_000;

/// Changes the workload makes at least, across the kills (the stand-in server is slow).
const CHANGES: u64 = 500;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let client = mongo_client().await;
    let db = fresh_db(&client, "sluice_it_mg_crash").await;
    let coll = create_with_pre_images(&db, "accounts").await;
    seed_versioned(&coll, INITIAL_DOCS).await;
    let mut d = Daemon::configure_kind(
        "mongodb",
        "mgcrash",
        &mongo_url(),
        &["sluice_it_mg_crash.accounts"],
        "{ rows: 700, interval: 200ms }",
        None,
    );
    // Twenty chunks: the first kill must land with most of the snapshot still to read (with
    // five, a fast stand-in finished the rest between the metrics poll and the kill).
    d.append_source("snapshot_chunk_rows: 500\n");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (seed, mut rng) = seeded_rng("crash test");
    d.start();
    let load = tokio::spawn(versioned_workload(
        coll.clone(),
        1,
        INITIAL_DOCS,
        stop.clone(),
        seed,
        Some(done.clone()),
    ));

    // The first kill lands inside the snapshot, after some of it is committed.
    wait_for(
        "part of the snapshot in the lake",
        Duration::from_secs(60),
        || async { d.metric("sluice_sink_rows_total") >= 1500.0 },
    )
    .await;
    d.kill9();
    let before_kill = d.log();
    assert!(
        !before_kill.contains("snapshot of collection done"),
        "the snapshot ended before the kill meant to land inside it:\n{before_kill}"
    );
    d.start();
    let resumed = wait_until(
        // The MongoDB-wire stand-in is Python: under the whole suite's load it took over 30 s.
        Duration::from_secs(90),
        || async { d.log().contains("resuming the snapshot") },
    )
    .await;
    assert!(resumed, "the snapshot did not resume:\n{}", d.log());

    const KILLS: usize = 12;
    for i in 0..KILLS {
        if !d.is_running() {
            d.child = None;
            d.start();
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2000))).await;
        assert!(
            d.is_running(),
            "sluice exited by itself before kill {i}:\n{}",
            d.log()
        );
        d.kill9();
        d.start();
        if i == KILLS - 1 {
            wait_until(Duration::from_secs(180), || async {
                done.load(Ordering::Relaxed) >= CHANGES
            })
            .await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    eprintln!("workload made {} changes", done.load(Ordering::Relaxed));

    let want = versions(&coll).await;
    let stream = "mgcrash.sluice_it_mg_crash.accounts";
    let caught_up = wait_until(Duration::from_secs(120), || async {
        state_from_log(&lake_rows(&d.lake, stream), "_id", &["_id", "v"]) == want
    })
    .await;
    assert!(caught_up, "the lake did not catch up:\n{}", d.log());
    assert!(d.terminate().success(), "{}", d.log());

    let rows = lake_rows(&d.lake, stream);
    let by_op = assert_version_chains(&rows, &want, "_id", "v");
    eprintln!("lake events by op: {by_op:?}");
    assert!(
        rows.iter()
            .any(|r| r.values.get("tag").is_some_and(|t| t.is_some())),
        "documents with the new field carry it in a column"
    );
    assert!(by_op.get("u").copied().unwrap_or(0) > 50, "{by_op:?}");
    assert!(by_op.get("d").copied().unwrap_or(0) > 5, "{by_op:?}");
}
