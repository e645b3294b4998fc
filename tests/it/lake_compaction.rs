//! Small-file compaction: partitions of many small change-log files are rewritten as one, as a
//! lake commit, and kill -9 at any moment (including mid-compaction) loses nothing and leaves no
//! duplicate.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn compaction_under_kills_keeps_every_change_once() {
    let db = TestDb::create("sluice_it_compact").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "cmp",
        &db.url,
        &["public.t"],
        "{ rows: 25, interval: 100ms }",
    );
    let cfg = std::fs::read_to_string(&d.config).unwrap().replace(
        "sink:\n",
        "sink:\n  compaction: { interval: 200ms, min_files: 4, small_bytes: 1MiB }\n",
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.start();
    wait_for("the slot", Duration::from_secs(30), || async {
        !db.slots().await.is_empty()
    })
    .await;
    let mut next = 0;
    for round in 0..10u64 {
        for _ in 0..8 {
            client
                .execute(
                    "INSERT INTO t SELECT g, 0 FROM generate_series($1::int, $1::int + 19) g",
                    &[&next],
                )
                .await
                .unwrap();
            client
                .execute(
                    "UPDATE t SET v = v + 1 WHERE id % 13 = $1",
                    &[&((next / 20) % 13)],
                )
                .await
                .unwrap();
            next += 20;
        }
        tokio::time::sleep(Duration::from_millis(150 + (round * 97) % 400)).await;
        d.kill9();
        d.start();
    }
    let want = table_state(&client, "t", &["id", "v"]).await;
    let caught_up = wait_until(Duration::from_secs(60), || async {
        state_from_log(&lake_rows(&d.lake, "cmp.public.t"), "id", &["id", "v"]) == want
    })
    .await;
    assert!(caught_up, "the lake did not converge:\n{}", d.log());
    // Let a last compaction round run, then stop.
    tokio::time::sleep(Duration::from_millis(800)).await;
    client
        .execute("INSERT INTO t VALUES (-1, 0)", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(d.terminate().success());

    let rows = lake_rows(&d.lake, "cmp.public.t");
    let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), rows.len(), "no change twice after compaction");
    let files = parquet_files(&d.lake.join("raw/cmp.public.t"));
    // Without compaction: at least one file per 25 rows (more, with the interval and the kills).
    assert!(
        files.len() * 25 * 3 < rows.len(),
        "{} files for {} rows: compaction ran",
        files.len(),
        rows.len()
    );
    assert!(d.log().contains("compacted"), "compaction ran");
}
