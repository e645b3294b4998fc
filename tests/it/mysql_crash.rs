//! Crash test against MariaDB, as the foundation's for Postgres: kill -9 the daemon at random
//! moments (inside the chunked snapshot, while streaming, around an ALTER TABLE) while a
//! workload writes, a dozen times; then let it catch up and prove the lake holds every change
//! exactly once (per-key version chains, see common::assert_version_chains).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::mysql::*;
use crate::common::*;
use mysql_async::TxOpts;
use mysql_async::prelude::Queryable;

const INITIAL_ROWS: i64 = 60_000;

async fn workload(url: String, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>, seed: u64) {
    let mut conn = my_connect(&url).await;
    let mut rng = Rng(seed);
    let mut live: Vec<i64> = (1..=INITIAL_ROWS).collect();
    let mut next_id = INITIAL_ROWS + 1;
    let mut transactions = 0u64;
    let mut insert = "INSERT INTO accounts (id, version, balance, note) VALUES (?, 0, 0, 'new')";
    while !stop.load(Ordering::Relaxed) {
        transactions += 1;
        if transactions == 400 {
            // A schema change in the middle of the kills: later rows carry the new column.
            conn.query_drop("ALTER TABLE accounts ADD COLUMN tag VARCHAR(20)")
                .await
                .unwrap();
            insert = "INSERT INTO accounts (id, version, balance, note, tag) VALUES (?, 0, 0, 'new', 'tagged')";
        }
        let mut tx = conn.start_transaction(TxOpts::default()).await.unwrap();
        let mut inserted = Vec::new();
        let mut deleted = Vec::new();
        let n = 1 + rng.below(4);
        for _ in 0..n {
            let roll = rng.below(100);
            if roll < 35 || live.len() < 10 {
                tx.exec_drop(insert, (next_id,)).await.unwrap();
                inserted.push(next_id);
                next_id += 1;
            } else {
                let id = live[rng.below(live.len() as u64) as usize];
                if deleted.contains(&id) {
                    continue;
                }
                if roll < 88 {
                    tx.exec_drop(
                        "UPDATE accounts SET version = version + 1, balance = balance + 1.25 WHERE id = ?",
                        (id,),
                    )
                    .await
                    .unwrap();
                } else {
                    tx.exec_drop("DELETE FROM accounts WHERE id = ?", (id,))
                        .await
                        .unwrap();
                    deleted.push(id);
                }
            }
        }
        tx.commit().await.unwrap();
        committed.fetch_add(n, Ordering::Relaxed);
        live.extend(inserted);
        live.retain(|id| !deleted.contains(id));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let db = MyDb::create("sluice_it_my_crash").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, version INT NOT NULL, balance DECIMAL(12,2), note TEXT);
         INSERT INTO accounts SELECT seq, 0, 0, REPEAT('n', 100) FROM seq_1_to_60000",
    )
    .await;
    let mut d = Daemon::configure_mysql(
        "mcrash",
        &db.url,
        &["sluice_it_my_crash.accounts"],
        "{ rows: 700, interval: 200ms }",
    );
    d.append_source("snapshot_chunk_rows: 2500\n");

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let (seed, mut rng) = seeded_rng("crash test");
    d.start();
    let load = tokio::spawn(workload(
        db.url.clone(),
        stop.clone(),
        committed.clone(),
        seed,
    ));

    // The first kill lands inside the snapshot, after some of it is committed.
    wait_for(
        "part of the snapshot in the lake",
        Duration::from_secs(60),
        || async { d.metric("sluice_sink_rows_total") >= 5000.0 },
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
        tokio::time::sleep(Duration::from_millis(150 + rng.below(2000))).await;
        assert!(
            d.is_running(),
            "sluice exited by itself before kill {i}:\n{}",
            d.log()
        );
        d.kill9();
        d.start();
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    eprintln!(
        "workload committed {} statements",
        committed.load(Ordering::Relaxed)
    );

    let want = my_table_state(&mut conn, "accounts", &["id", "version"]).await;
    let stream = "mcrash.sluice_it_my_crash.accounts";
    let caught_up = wait_until(Duration::from_secs(120), || async {
        state_from_log(&lake_rows(&d.lake, stream), "id", &["id", "version"]) == want
    })
    .await;
    assert!(caught_up, "the lake did not catch up:\n{}", d.log());
    assert!(d.terminate().success(), "{}", d.log());

    let rows = lake_rows(&d.lake, stream);
    let by_op = assert_version_chains(&rows, &want, "id", "version");
    eprintln!("lake events by op: {by_op:?}");
    assert!(
        rows.iter()
            .any(|r| r.values.get("tag").is_some_and(|t| t.is_some())),
        "rows inserted after the ALTER carry the new column"
    );
    assert!(by_op.get("u").copied().unwrap_or(0) > 100, "{by_op:?}");
    assert!(by_op.get("d").copied().unwrap_or(0) > 10, "{by_op:?}");
}
