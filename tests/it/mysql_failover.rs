//! A MariaDB failover under sluice: two private MariaDB servers of the test's own (a primary and
//! a replica replicating from it with GTIDs and `log_slave_updates`), the source streaming from
//! the primary, then repointed to the promoted replica. The replica's binlog is numbered from 1
//! while the primary's was at 4, so without the sequence epoch (source/mysql, `coord`) every
//! change written after the failover would sort below the lake's mark and be cut as a replay.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::mysql::*;
use crate::common::*;

/// A MariaDB server in a temporary folder, on a port of its own, run by the test.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl PrivateMariaDb {
    fn start(server_id: u32, binlog: &str, extra: &[&str]) -> PrivateMariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let installed = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db");
        assert!(installed.status.success(), "{installed:?}");
        let port = free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--server-id={server_id}"))
            .arg(format!("--log-bin={}", data.join(binlog).display()))
            .args([
                "--bind-address=127.0.0.1",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--skip-name-resolve",
                "--user=root",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ))
            .spawn()
            .expect("mariadbd");
        let server = PrivateMariaDb { dir, port, child };
        for _ in 0..100 {
            if server.try_sql("SELECT 1").is_some() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "mariadbd {server_id} did not start: {}",
            server.server_log()
        );
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .args(["-uroot", "-N", "-B"])
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-e", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run `sql` as root over the socket; its output.
    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("{sql} failed: {}", self.server_log()))
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn url(&self, db: &str) -> String {
        format!("mysql://sluice:sluice@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repoint(source_file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(source_file).unwrap();
    std::fs::write(source_file, text.replace(from, to)).unwrap();
}

/// Updates, inserts and deletes on `fo.accounts`, `rounds` statements from `first_id` on.
async fn write_changes(url: &str, rounds: i64, first_id: i64) {
    let mut conn = my_connect(url).await;
    for i in 0..rounds {
        let sql = match i % 4 {
            0 | 1 => format!(
                "UPDATE accounts SET version = version + 1 WHERE id = {}",
                1 + (i * 7) % 100
            ),
            2 => format!("INSERT INTO accounts VALUES ({}, 0)", first_id + i),
            _ => format!("DELETE FROM accounts WHERE id = {}", 101 + (i * 3) % 100),
        };
        my_exec(&mut conn, &sql).await;
    }
}

const STREAM: &str = "fo.fo.accounts";

#[tokio::test(flavor = "multi_thread")]
async fn changes_written_on_the_promoted_replica_after_a_failover_land() {
    let primary = PrivateMariaDb::start(11, "primary-bin", &[]);
    let replica = PrivateMariaDb::start(12, "replica-bin", &["--log-slave-updates"]);
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
         MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos",
        primary.port
    ));
    primary.sql(
        "CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl'; \
         GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1';",
    );
    replica.sql("START SLAVE");
    // The primary's binlog numbers run ahead of the replica's.
    primary.sql("FLUSH BINARY LOGS; FLUSH BINARY LOGS; FLUSH BINARY LOGS;");
    primary.sql(
        "CREATE USER sluice@'127.0.0.1' IDENTIFIED BY 'sluice'; \
         GRANT SELECT, RELOAD, SHOW DATABASES, LOCK TABLES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO sluice@'127.0.0.1'; \
         GRANT ALL ON fo.* TO sluice@'127.0.0.1'; \
         CREATE DATABASE fo; \
         CREATE TABLE fo.accounts (id INT PRIMARY KEY, version INT NOT NULL); \
         INSERT INTO fo.accounts SELECT seq, 0 FROM fo.seq_1_to_200;",
    );

    let mut d = Daemon::configure_mysql(
        "fo",
        &primary.url("fo"),
        &["fo.accounts"],
        "{ rows: 100, interval: 200ms }",
    );
    d.append_source("server_id: 7411\n");
    d.start();
    write_changes(&primary.url("fo"), 120, 1000).await;
    let mut on_primary = my_connect(&primary.url("fo")).await;
    let want = my_table_state(&mut on_primary, "accounts", &["id", "version"]).await;
    let lake = d.lake.clone();
    let lake_state = || state_from_log(&lake_rows(&lake, STREAM), "id", &["id", "version"]);
    if let Err(diff) = wait_for_state(Duration::from_secs(90), &want, lake_state).await {
        panic!("the lake did not catch up with the primary: {diff}");
    }
    let replica_url = replica.url("fo");
    let replica_has_it = wait_until(Duration::from_secs(60), || {
        let (want, url) = (want.clone(), replica_url.clone());
        async move {
            let mut conn = my_connect(&url).await;
            my_table_state(&mut conn, "accounts", &["id", "version"]).await == want
        }
    })
    .await;
    assert!(
        replica_has_it,
        "the replica did not catch up: {}",
        replica.server_log()
    );
    assert!(d.terminate().success());

    // Failover: the primary is gone, the replica is promoted, the source is repointed.
    drop(on_primary);
    let primary_url = primary.url("fo");
    drop(primary);
    replica.sql("STOP SLAVE; RESET SLAVE ALL;");
    repoint(&d.source_file(), &primary_url, &replica.url("fo"));
    write_changes(&replica.url("fo"), 80, 2000).await;
    d.start();
    write_changes(&replica.url("fo"), 40, 3000).await;

    let mut on_replica = my_connect(&replica_url).await;
    let want = my_table_state(&mut on_replica, "accounts", &["id", "version"]).await;
    if let Err(diff) = wait_for_state(Duration::from_secs(90), &want, lake_state).await {
        panic!("the changes written on the new primary did not land: {diff}");
    }
    assert_version_chains(&lake_rows(&d.lake, STREAM), &want, "id", "version");
    assert!(
        d.log().contains("the binlog series changed"),
        "no new epoch was taken:\n{}",
        d.log()
    );
    assert!(d.terminate().success());
}
