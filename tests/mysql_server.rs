//! What happens to the MySQL/MariaDB source when the server itself changes: a restart in the
//! middle of streaming (reconnect with backoff, resume, nothing lost or twice) and binlogs
//! purged past sluice's position (an error naming the position and the recovery, never a
//! silent skip). Its own test binary, because both disturb the MariaDB every other test uses;
//! the two tests here take turns.

mod common;

use std::process::Command;
use std::time::Duration;

use common::mysql::*;
use common::*;
use mysql_async::prelude::Queryable;

static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// As root over the local socket (the tests' user may not purge binlogs or stop the server).
fn root_sql(sql: &str) {
    let out = Command::new("mariadb")
        .args(["-uroot", "-e", sql])
        .output()
        .expect("the mariadb client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restart_mariadb() {
    let _ = Command::new("pkill").args(["-x", "mariadbd"]).status();
    for _ in 0..200 {
        let alive = Command::new("pgrep")
            .args(["-x", "mariadbd"])
            .output()
            .unwrap();
        if !alive.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let up = Command::new(script)
        .args(["up", "mariadb"])
        .status()
        .unwrap();
    assert!(up.success(), "MariaDB restarts");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restart_mid_stream_loses_and_duplicates_nothing() {
    let _turn = SERVER.lock().await;
    let db = MyDb::create("sluice_it_my_restart").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)",
    )
    .await;
    let mut d = Daemon::configure_mysql(
        "mrestart",
        &db.url,
        &["sluice_it_my_restart.t"],
        "{ rows: 500, interval: 200ms }",
    );
    d.start();
    wait_for("streaming", Duration::from_secs(60), || async {
        d.log().contains("streaming")
    })
    .await;

    let url = db.url.clone();
    let writer = tokio::spawn(async move {
        // Keep writing through the restart, reconnecting when the server is back.
        let mut conn = my_connect(&url).await;
        let mut id = 0;
        while id < 3000 {
            match conn
                .exec_drop("INSERT INTO t VALUES (?, ?)", (id, id))
                .await
            {
                Ok(_) => id += 1,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(c) =
                        mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap()).await
                    {
                        conn = c;
                    }
                    // The insert may have committed before the connection broke.
                    let n: Option<u64> = conn
                        .query_first("SELECT COUNT(*) FROM t")
                        .await
                        .ok()
                        .flatten();
                    if let Some(n) = n {
                        id = n as i32;
                    }
                }
            }
            if id % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::spawn_blocking(restart_mariadb).await.unwrap();
    writer.await.unwrap();

    let mut conn = db.conn().await;
    let want = my_table_state(&mut conn, "t", &["id", "v"]).await;
    assert_eq!(want.len(), 3000);
    let stream = "mrestart.sluice_it_my_restart.t";
    let caught_up = wait_until(Duration::from_secs(90), || async {
        state_from_log(&lake_rows(&d.lake, stream), "id", &["id", "v"]) == want
    })
    .await;
    assert!(
        caught_up,
        "the lake did not catch up after the restart:\n{}",
        d.log()
    );
    assert!(d.is_running(), "a server restart is transient: {}", d.log());
    assert_eq!(
        lake_rows(&d.lake, stream).len(),
        3000,
        "every insert exactly once"
    );
    assert!(
        d.log().contains("transient error"),
        "the restart was seen and retried"
    );
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purged_binlog_stops_the_source_with_the_recovery() {
    let _turn = SERVER.lock().await;
    let db = MyDb::create("sluice_it_my_purged").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)",
    )
    .await;
    let mut d = Daemon::configure_mysql(
        "mpurged",
        &db.url,
        &["sluice_it_my_purged.t"],
        "{ rows: 100, interval: 200ms }",
    );
    d.start();
    let stream = "mpurged.sluice_it_my_purged.t";
    wait_for("the snapshot", Duration::from_secs(60), || async {
        lake_rows(&d.lake, stream).len() == 1
    })
    .await;
    assert!(d.terminate().success());
    // While sluice is down: a change, then every binlog up to a new one is purged.
    my_exec(&mut conn, "INSERT INTO t VALUES (2)").await;
    let old = current_binlog(&mut conn).await;
    root_sql("FLUSH BINARY LOGS");
    let current = current_binlog(&mut conn).await;
    // The server keeps a file a dump thread still reads; the stopped sluice's thread ends when
    // the server notices its connection is gone.
    let mut purged = false;
    for _ in 0..100 {
        root_sql(&format!("PURGE BINARY LOGS TO '{current}'"));
        let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
        if !logs
            .into_iter()
            .any(|mut r| r.take::<String, _>(0).as_deref() == Some(old.as_str()))
        {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(purged, "{old} could not be purged");
    d.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.is_running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !d.is_running(),
        "the source must stop, not skip:\n{}",
        d.log()
    );
    let status = d.child.take().unwrap().wait().unwrap();
    assert!(!status.success());
    let log = d.log();
    assert!(
        log.contains("is no longer on the server") && log.contains("re-snapshotting"),
        "{log}"
    );
    assert_eq!(
        lake_rows(&d.lake, stream).len(),
        1,
        "nothing skipped silently"
    );
}
