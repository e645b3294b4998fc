//! The lake on real HDFS 2.7.3 (scripts/services.sh up hdfs): the change log and the ODS land
//! exactly once across kill -9, read back through hdfs-native (Rust) and the Python hdfs-native
//! client with pyarrow, and compared with the table.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_and_its_crashes_on_hdfs() {
    let db = TestDb::create("sluice_it_hdfs").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g;")
        .await
        .unwrap();
    let lake_url = format!("{}/sluice-it-{}", hdfs_url(), std::process::id());
    let mut d = Daemon::configure_with_sink(
        "hdfs",
        &db.url,
        &["public.t"],
        "{ rows: 500, interval: 200ms }",
        Some(&lake_url),
    );
    let cfg = std::fs::read_to_string(&d.config).unwrap().replace(
        "sink:\n",
        "sink:\n  zones: [raw, ods]\n  ods_interval: 300ms\n",
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.start();

    // Changes while the daemon is killed now and then, in the middle of uploads and commits.
    for round in 0..6i32 {
        client
            .batch_execute(&format!(
                "UPDATE t SET v = v + 1 WHERE id % 5 = {round}; DELETE FROM t WHERE id % 101 = {round};
                 INSERT INTO t SELECT g, 0 FROM generate_series({lo}, {hi}) g;",
                lo = 5000 + round * 100,
                hi = 5000 + round * 100 + 99
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300 + (round as u64 * 137) % 500)).await;
        d.kill9();
        d.start();
    }
    let want = table_state(&client, "t", &["id", "v"]).await;
    let local = d.dir.path().join("mirror");
    let caught_up = wait_until(Duration::from_secs(90), || async {
        mirror_lake(&lake_url, &local).is_ok()
            && state_from_log(&lake_rows(&local, "hdfs.public.t"), "id", &["id", "v"]) == want
            && zone_rows(&local, "ods", "hdfs.public.t").len() == want.len()
    })
    .await;
    assert!(caught_up, "the HDFS lake did not converge:\n{}", d.log());
    assert!(d.terminate().success());
    mirror_lake(&lake_url, &local).unwrap();
    let rows = lake_rows(&local, "hdfs.public.t");
    let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), rows.len(), "no change twice in the HDFS lake");

    // An independent reader: the Python hdfs-native client and pyarrow, straight from HDFS.
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, io, pyarrow.parquet as pq; from hdfs_native import Client; \
             c = Client(sys.argv[1]); root = sys.argv[2]; \
             files = [s.path for s in c.list_status(root + '/ods/hdfs.public.t')]; \
             t = pq.read_table(io.BytesIO(c.read(files[0]).read())); print(t.num_rows, sum(t.column('v').to_pylist()))",
            &hdfs_url(),
            lake_url.strip_prefix(&hdfs_url()).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = client
        .query_one("SELECT count(*), sum(v) FROM t", &[])
        .await
        .unwrap();
    let (n, sum): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{n} {sum}")
    );
}
