//! The lake on S3 (moto's S3 server, the stand-in test-services.md names; scripts/services.sh up
//! s3): the change log and the ODS land exactly once across kill -9 (multipart uploads, objects
//! visible only when complete), read back with pyarrow's own S3 client and compared with the table.

mod common;

use std::time::Duration;

use common::*;

fn s3_env() -> Vec<(String, String)> {
    let endpoint =
        std::env::var("SLUICE_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "AK"),
        ("AWS_SECRET_ACCESS_KEY", "SK"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_and_its_crashes_on_s3() {
    let env = s3_env();
    for (k, v) in &env {
        // SAFETY: the only test in this binary; set before any thread reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
    let db = TestDb::create("sluice_it_s3").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g;")
        .await
        .unwrap();
    let prefix = format!("run-{}", std::process::id());
    let lake_url = format!("s3://sluice-test/{prefix}");
    let mut d = Daemon::configure_with_sink(
        "s3",
        &db.url,
        &["public.t"],
        "{ rows: 500, interval: 200ms }",
        Some(&lake_url),
    );
    d.env = env.clone();
    let cfg = std::fs::read_to_string(&d.config).unwrap().replace(
        "sink:\n",
        "sink:\n  zones: [raw, ods]\n  ods_interval: 300ms\n",
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.start();

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
            && state_from_log(&lake_rows(&local, "s3.public.t"), "id", &["id", "v"]) == want
            && zone_rows(&local, "ods", "s3.public.t").len() == want.len()
    })
    .await;
    if !caught_up {
        let mirrored = mirror_lake(&lake_url, &local);
        let raw = state_from_log(&lake_rows(&local, "s3.public.t"), "id", &["id", "v"]);
        let ods = zone_rows(&local, "ods", "s3.public.t").len();
        panic!(
            "the S3 lake did not converge: mirror {mirrored:?}, raw state equal {}, ods rows {ods} of {}\n{}",
            raw == want,
            want.len(),
            d.log()
        );
    }
    assert!(d.terminate().success());
    mirror_lake(&lake_url, &local).unwrap();
    let rows = lake_rows(&local, "s3.public.t");
    let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), rows.len(), "no change twice in the S3 lake");

    // An independent reader: pyarrow's S3 filesystem, straight from the bucket.
    let endpoint = env
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT")
        .unwrap()
        .1
        .clone();
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.fs as fs, pyarrow.dataset as ds; \
             s3 = fs.S3FileSystem(access_key='AK', secret_key='SK', region='us-east-1', endpoint_override=sys.argv[1].split('://')[1], scheme='http'); \
             t = ds.dataset('sluice-test/' + sys.argv[2] + '/ods/s3.public.t', filesystem=s3, format='parquet').to_table(); \
             print(t.num_rows, sum(t.column('v').to_pylist()))",
            &endpoint,
            &prefix,
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
