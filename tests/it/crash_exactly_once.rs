//! Crash test: kill -9 the daemon at random moments (in the middle of the chunked snapshot, while
//! streaming, in the middle of commits, around an ALTER TABLE) while a workload writes, a dozen
//! times; then let it catch up and prove the lake holds every change exactly once.
//!
//! Every update bumps the row's `version` by one, so per key the change log must read: `r` (any
//! version) or `c` (version 0), then `u` with versions rising by exactly one, then at most one `d`
//! at the end. A lost change leaves a gap, a duplicate repeats a version, and the final state must
//! equal the table.
//!
//! A second test kills the daemon while Postgres is still creating its replication slot.

use std::time::Duration;

use crate::common::*;

/// Rows before the first start: enough for a snapshot of many chunks that kills land inside.
const INITIAL_ROWS: i64 = 60_000;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let db = TestDb::create("sluice_it_crash").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, balance numeric(12,2), note text);
             INSERT INTO accounts SELECT g, 0, 0, repeat('n', 100) FROM generate_series(1, 60000) g;",
        )
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "crash",
        &db.url,
        &["public.accounts"],
        "{ rows: 700, interval: 200ms }",
    );
    let source = d.dir.path().join("sources/crash.yaml");
    std::fs::write(
        &source,
        std::fs::read_to_string(&source).unwrap() + "snapshot_chunk_rows: 2500\n",
    )
    .unwrap();

    let (seed, mut rng) = seeded_rng("crash test");
    d.start();
    let load = Workload::start(&db.url, seed, INITIAL_ROWS);

    // The first kill lands inside the snapshot, after some of it is committed: the next start
    // must resume it, not start over.
    wait_for(
        "part of the snapshot in the lake",
        Duration::from_secs(60),
        || async {
            let m = d.metrics();
            let rows: f64 = m
                .lines()
                .filter(|l| l.starts_with("sluice_sink_rows_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            rows >= 5000.0
        },
    )
    .await;
    d.kill9();
    d.start();
    wait_for(
        "the snapshot to resume",
        Duration::from_secs(30),
        || async { d.log().contains("resuming the snapshot") },
    )
    .await;

    const KILLS: usize = 12;
    for i in 0..KILLS {
        if !d.is_running() {
            d.child = None;
            d.start();
        }
        let wait = 150 + rng.below(2000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert!(
            d.is_running(),
            "sluice exited by itself before kill {i}:\n{}",
            d.log()
        );
        d.kill9();
        d.start();
    }
    let statements = load.stop().await;
    eprintln!("workload committed {statements} statements");

    let want = table_state(&client, "accounts", &["id", "version"]).await;
    let caught_up = wait_until(Duration::from_secs(120), || async {
        state_from_log(
            &lake_rows(&d.lake, "crash.public.accounts"),
            "id",
            &["id", "version"],
        ) == want
    })
    .await;
    if !caught_up {
        let log = d.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let lake = state_from_log(
            &lake_rows(&d.lake, "crash.public.accounts"),
            "id",
            &["id", "version"],
        );
        let missing: Vec<_> = want
            .keys()
            .filter(|k| !lake.contains_key(*k))
            .take(10)
            .collect();
        let extra: Vec<_> = lake
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(10)
            .collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| lake.get(*k).is_some_and(|l| l != *v))
            .take(10)
            .collect();
        panic!(
            "the lake did not catch up: missing {missing:?} extra {extra:?} differ {differ:?}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(d.terminate().success(), "{}", d.log());

    let rows = lake_rows(&d.lake, "crash.public.accounts");
    let by_op = assert_version_chains(&rows, &want, "id", "version");
    eprintln!(
        "lake events by op: {by_op:?}; files: {}",
        parquet_files(&d.lake.join("raw")).len()
    );
    let with_tag = rows
        .iter()
        .filter(|r| r.values.get("tag").is_some_and(|t| t.is_some()))
        .count();
    assert!(
        with_tag > 0,
        "rows inserted after the ALTER carry the new column"
    );
    assert!(
        by_op.get("u").copied().unwrap_or(0) > 100,
        "the workload ran during the kills: {by_op:?}"
    );
    assert!(by_op.get("d").copied().unwrap_or(0) > 10, "{by_op:?}");
}

/// `CREATE_REPLICATION_SLOT` waits for the transactions running when it starts; a transaction
/// held open keeps it waiting, so the kill lands inside it. The killed start's walsender lives
/// on and finishes the slot later: the next start must drop that uncommitted slot (it waits
/// while the old walsender still holds it) and snapshot every row once.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_while_the_slot_is_being_created_leaves_one_snapshot() {
    let db = TestDb::create("sluice_it_slot_kill").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, version int NOT NULL);
             INSERT INTO t SELECT g, 0 FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; INSERT INTO t VALUES (5000, 0);")
        .await
        .unwrap();

    let mut d = Daemon::configure(
        "slotkill",
        &db.url,
        &["public.t"],
        "{ rows: 500, interval: 200ms }",
    );
    d.start();
    wait_for(
        "the slot to be in creation, waiting for the open transaction",
        Duration::from_secs(30),
        || async {
            db.slots()
                .await
                .iter()
                .any(|(name, _)| name == "sluice_slotkill")
        },
    )
    .await;
    d.kill9();
    d.start();
    // The new start finds the half-made slot still held by the old walsender.
    wait_for(
        "the new start to find the uncommitted slot",
        Duration::from_secs(30),
        || async { d.log().contains("slot exists but nothing was committed") },
    )
    .await;
    // The old walsender holds the slot while it waits: the new start retries until it lets go.
    wait_for(
        "the new start to retry while the old walsender holds the slot",
        Duration::from_secs(30),
        || async { d.log().contains("is active for PID") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    client
        .batch_execute("UPDATE t SET version = version + 1 WHERE id <= 10")
        .await
        .unwrap();

    let want = table_state(&client, "t", &["id", "version"]).await;
    let caught_up = wait_until(Duration::from_secs(90), || async {
        state_from_log(
            &lake_rows(&d.lake, "slotkill.public.t"),
            "id",
            &["id", "version"],
        ) == want
    })
    .await;
    assert!(caught_up, "the lake did not catch up:\n{}", d.log());
    assert!(d.terminate().success(), "{}", d.log());
    let rows = lake_rows(&d.lake, "slotkill.public.t");
    assert_version_chains(&rows, &want, "id", "version");
    assert_eq!(
        rows.iter().filter(|r| r.op == "r").count(),
        1001,
        "one snapshot of every row"
    );
}
