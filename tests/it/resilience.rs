//! Transient failures are retried, graceful stops drain, and logs carry neither row values nor
//! secrets.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_replication_connection_is_retried_without_loss() {
    let db = TestDb::create("sluice_it_retry").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g;")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "retry",
        &db.url,
        &["public.t"],
        "{ rows: 1000, interval: 200ms }",
    );
    d.start();
    wait_for("the snapshot", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "retry.public.t").len() == 100
    })
    .await;

    for round in 1..=3 {
        client
            .execute("UPDATE t SET v = v + 1 WHERE id <= $1", &[&(round * 10)])
            .await
            .unwrap();
        // Cut sluice's connections from the server side, as a restarting server or a network blip would.
        client
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'sluice' OR (backend_type = 'walsender' AND datname = '{}')",
                db.name, db.name
            ))
            .await
            .unwrap();
        client
            .execute("INSERT INTO t VALUES ($1, 0)", &[&(1000 + round)])
            .await
            .unwrap();
    }
    let want = table_state(&client, "t", &["id", "v"]).await;
    let caught_up = wait_until(Duration::from_secs(60), || async {
        state_from_log(&lake_rows(&d.lake, "retry.public.t"), "id", &["id", "v"]) == want
    })
    .await;
    assert!(
        caught_up,
        "the lake did not catch up after reconnecting:\n{}",
        d.log()
    );
    assert!(
        d.is_running(),
        "a transient error must not stop the daemon:\n{}",
        d.log()
    );
    let restarts = d.metric("sluice_pipeline_restarts_total");
    assert!(
        restarts >= 1.0,
        "expected restarts to be counted:\n{}",
        d.metrics()
    );
    let rows = lake_rows(&d.lake, "retry.public.t");
    let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), rows.len(), "no change twice");
    assert_eq!(
        rows.iter().filter(|r| r.op == "u").count(),
        60,
        "10 + 20 + 30 updates, each once"
    );
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_and_commits_everything_it_read() {
    let db = TestDb::create("sluice_it_drain").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "drain",
        &db.url,
        &["public.t"],
        "{ rows: 100000, interval: 60s }",
    );
    d.start();
    wait_for("the slot", Duration::from_secs(30), || async {
        !db.slots().await.is_empty()
    })
    .await;
    for batch in 0..20 {
        client
            .execute(
                "INSERT INTO t SELECT g, 'v' FROM generate_series($1::int, $1::int + 999) g",
                &[&(batch * 1000)],
            )
            .await
            .unwrap();
    }
    // The interval is a minute: anything in the lake now was committed by the shutdown itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.log());
    let after_stop = lake_rows(&d.lake, "drain.public.t").len();
    assert!(after_stop > 0, "the shutdown commits what it read");
    // Whatever was not read before the stop comes on the next run, once.
    d.start();
    wait_for(
        "the rest after a restart",
        Duration::from_secs(60),
        || async { lake_rows(&d.lake, "drain.public.t").len() >= 20_000 },
    )
    .await;
    assert!(d.terminate().success());
    assert_eq!(lake_rows(&d.lake, "drain.public.t").len(), 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_no_row_values_and_no_password() {
    let db = TestDb::create("sluice_it_logs").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, secret text); INSERT INTO t VALUES (1, 'row-value-XYZZY');")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "logs",
        &db.url,
        &["public.t"],
        "{ rows: 10, interval: 200ms }",
    );
    // Levels by module: warnings overall, debug for the sink (its commits).
    let cfg = std::fs::read_to_string(&d.config).unwrap()
        + "log_format: json\nlog_level: warn,sluice::sink=debug\n";
    d.log_env = false;
    std::fs::write(&d.config, cfg).unwrap();
    d.start();
    wait_for("the snapshot", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "logs.public.t").len() == 1
    })
    .await;
    client
        .execute("UPDATE t SET secret = 'row-value-PLUGH' WHERE id = 1", &[])
        .await
        .unwrap();
    wait_for("the update", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "logs.public.t").len() == 2
    })
    .await;
    assert!(d.terminate().success());
    let log = d.log();
    assert!(!log.trim().is_empty());
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(
        log.contains("\"target\":\"sluice::sink\"") && log.contains("committed"),
        "debug from the sink: {log}"
    );
    assert!(
        !log.contains("\"level\":\"INFO\""),
        "info from other modules is filtered: {log}"
    );
    for forbidden in ["XYZZY", "PLUGH", "sluice:sluice@"] {
        assert!(
            !log.contains(forbidden),
            "the log contains `{forbidden}`:\n{log}"
        );
    }
}

/// A small tmpfs on a fresh folder, unmounted when dropped (the tests run as root, as CI does).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs (needs root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fill what is free with a ballast file.
    fn fill(&self) {
        use std::io::Write;
        let mut ballast = std::fs::File::create(self.path().join("ballast")).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while ballast.write_all(&chunk).is_ok() {}
        let _ = ballast.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lake_that_fills_up_waits_and_loses_nothing_when_space_returns() {
    let db = TestDb::create("sluice_it_full_lake").await;
    let client = db.client().await;
    create_accounts(&client, 200).await;
    let disk = SmallDisk::mount(48);
    let lake = disk.path().join("lake");
    let mut d = Daemon::configure_with_sink(
        "full",
        &db.url,
        &["public.accounts"],
        "{ rows: 100, interval: 200ms }",
        Some(&format!("file://{}", lake.display())),
    );
    d.lake = lake.clone();
    let (seed, _) = seeded_rng("full lake");
    let load = Workload::start(&db.url, seed, 200);
    d.start();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            latest_commit(&lake).is_some()
        })
        .await,
        "never committed"
    );

    disk.fill();
    let waiting = wait_until(Duration::from_secs(60), || async {
        d.status()
            .is_some_and(|s| s["state"] == "lake_not_writable")
            && d.metric("sluice_lake_writable") == 0.0
    })
    .await;
    assert!(waiting, "no `lake not writable` state:\n{}", d.log());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(d.is_running(), "sluice stopped on a full lake");
    // Retried with a backoff, not in a storm.
    let restarts = d.metric("sluice_pipeline_restarts_total");
    assert!(restarts <= 8.0, "{restarts} restarts in a few seconds");

    disk.free();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.stop().await;
    let want = table_state(&client, "accounts", &["id", "version"]).await;
    let got = || {
        state_from_log(
            &lake_rows(&lake, "full.public.accounts"),
            "id",
            &["id", "version"],
        )
    };
    if let Err(diff) = wait_for_state(Duration::from_secs(120), &want, got).await {
        panic!("the lake did not catch up once space returned: {diff}");
    }
    assert_version_chains(
        &lake_rows(&lake, "full.public.accounts"),
        &want,
        "id",
        "version",
    );
    assert_eq!(d.metric("sluice_lake_writable"), 1.0);
    assert!(d.terminate().success());
}
