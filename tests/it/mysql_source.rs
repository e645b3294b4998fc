//! The MySQL/MariaDB source against the real MariaDB 10.11 (scripts/services.sh): every mapped
//! type with edge values through the snapshot and the binlog, DDL while streaming, a restart at
//! an old position after an ALTER, GTID and file-position resumes, heartbeats, and `sluice check`.

use std::time::Duration;

use crate::common::mysql::*;
use crate::common::*;
use mysql_async::prelude::Queryable;

/// The columns of the types table, as the lake renders them and as MariaDB computes the same
/// text (epoch days and microseconds, lower-case hex for bytes).
const TYPES: &[(&str, &str)] = &[
    ("id", "id"),
    ("ti", "ti"),
    ("tu", "tu"),
    ("si", "si"),
    ("su", "su"),
    ("mi", "mi"),
    ("mu", "mu"),
    ("i", "i"),
    ("iu", "iu"),
    ("bi", "bi"),
    ("bu", "bu"),
    ("dec1", "dec1"),
    ("dec2", "dec2"),
    ("dec3", "dec3"),
    ("f", "f"),
    ("d", "d"),
    ("c", "c"),
    ("vc", "vc"),
    ("lat", "lat"),
    ("tx", "tx"),
    ("bin", "LOWER(HEX(bin))"),
    ("vb", "LOWER(HEX(vb))"),
    ("bl", "LOWER(HEX(bl))"),
    ("dt", "DATEDIFF(dt, '1970-01-01')"),
    ("zd", "DATEDIFF(zd, '1970-01-01')"),
    ("tm", "CAST(TIME_TO_SEC(tm) * 1000000 AS SIGNED)"),
    (
        "dtm",
        "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', dtm)",
    ),
    ("ts", "CAST(UNIX_TIMESTAMP(ts) * 1000000 AS SIGNED)"),
    ("y", "y"),
    ("js", "js"),
    ("e", "e"),
    ("st", "st"),
    ("b1", "IF(b1, 'true', 'false')"),
    ("b12", "LOWER(LPAD(HEX(b12), 4, '0'))"),
    ("g", "LOWER(HEX(ST_AsWKB(g)))"),
    ("flag", "flag"),
];

const CREATE_TYPES: &str = "CREATE TABLE types (
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT,
    mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
    dec1 DECIMAL(12,2), dec2 DECIMAL(38,10), dec3 DECIMAL(65,30), f FLOAT, d DOUBLE,
    c CHAR(5), vc VARCHAR(300), lat VARCHAR(20) CHARACTER SET latin1, tx TEXT,
    bin BINARY(4), vb VARBINARY(10), bl BLOB, dt DATE, zd DATE NULL, tm TIME(3),
    dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, y YEAR, js JSON,
    e ENUM('small','medium','large'), st SET('a','b','c'), b1 BIT(1), b12 BIT(12),
    g GEOMETRY, flag BOOLEAN
) DEFAULT CHARSET=utf8mb4";

/// Rows at the edges of every type: minimums, maximums, negatives, empty and non-ASCII text,
/// zero dates (written as null), fractional seconds, and nulls everywhere but the key.
fn edge_rows(base: i32) -> String {
    let row1 = format!(
        "({}, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
          -9223372036854775808, 18446744073709551615, -9999999999.99,
          1234567890123456789012345678.0123456789,
          -12345678901234567890123456789012345.123456789012345678901234567890,
          1.5, -12345.0625, 'ab', '😀 ok', 'café', 'tiny text', 'ab', X'00ff', X'deadbeef',
          '1000-01-01', '0000-00-00', '-838:59:59.000', '1000-01-01 00:00:00.000000',
          '1970-01-01 00:00:01.000000', 1901, '{{\"k\": [1, 2], \"s\": \"x\"}}', 'small', 'a,c',
          b'1', b'101010101010', ST_GeomFromText('POINT(1 2)'), TRUE)",
        base
    );
    let row2 = format!(
        "({}, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, 0.01,
          -0.0000000001, 0.000000000000000000000000000001, -0.25, 2.5, '', '', '', '', X'',
          X'', X'', '9999-12-31', NULL, '838:59:59.999', '9999-12-31 23:59:59.999999',
          '2038-01-19 03:14:07.999999', 2155, '[]', 'large', '', b'0', b'000000000000',
          ST_GeomFromText('LINESTRING(0 0, 1 1)'), FALSE)",
        base + 1
    );
    let row3 = format!(
        "({}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        base + 2
    );
    format!("INSERT INTO types VALUES {row1}, {row2}, {row3}")
}

fn lake_state(d: &Daemon, stream: &str) -> std::collections::BTreeMap<String, Vec<Option<String>>> {
    let cols: Vec<&str> = TYPES.iter().map(|(c, _)| *c).collect();
    state_from_log(&lake_rows(&d.lake, stream), "id", &cols)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_through_snapshot_and_binlog_equals_the_table() {
    let db = MyDb::create("sluice_it_my_types").await;
    let mut conn = db.conn().await;
    my_exec(&mut conn, CREATE_TYPES).await;
    // Zero dates need a permissive sql_mode, as old applications have.
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    conn.query_drop(edge_rows(1)).await.unwrap();
    let mut d = Daemon::configure_mysql(
        "mt",
        &db.url,
        &["sluice_it_my_types.types"],
        "{ rows: 100, interval: 200ms }",
    );
    d.start();
    let stream = "mt.sluice_it_my_types.types";
    wait_for("the snapshot", Duration::from_secs(60), || async {
        lake_rows(&d.lake, stream).len() == 3
    })
    .await;
    // The same edge values through the binlog, then updates that swap extremes, and deletes.
    conn.query_drop(edge_rows(11)).await.unwrap();
    my_exec(
        &mut conn,
        "UPDATE types SET ti = -ti, bu = 1, dec3 = -dec3, lat = 'ÿ', js = '{\"u\": true}', tm = '-00:00:01.500', st = 'b' WHERE id IN (1, 11);
         UPDATE types SET vc = REPEAT('x', 300), e = 'medium', b1 = b'1' WHERE id IN (2, 12);
         DELETE FROM types WHERE id IN (3, 13)",
    )
    .await;
    let exprs: Vec<&str> = TYPES.iter().map(|(_, e)| *e).collect();
    let want = my_table_state(&mut conn, "types", &exprs).await;
    assert_eq!(want.len(), 4);
    let ok = wait_until(Duration::from_secs(60), || async {
        lake_state(&d, stream) == want
    })
    .await;
    let got = lake_state(&d, stream);
    for (k, row) in &want {
        let lake = got.get(k);
        for (i, (name, _)) in TYPES.iter().enumerate() {
            assert_eq!(
                lake.map(|r| &r[i]),
                Some(&row[i]),
                "key {k} column {name}\n{}",
                d.log()
            );
        }
    }
    assert!(ok);
    // Zero dates were counted as lossy, and the rows carry binlog positions.
    assert!(
        d.metric("sluice_source_lossy_values_total") >= 1.0,
        "{}",
        d.metrics()
    );
    let rows = lake_rows(&d.lake, stream);
    let change = rows.iter().find(|r| r.op == "c").unwrap();
    assert!(
        change.values["_source_pos"]
            .as_deref()
            .unwrap()
            .starts_with("mysql-bin.")
    );
    assert!(d.terminate().success());
}

/// Columns added, dropped, retyped and renamed while changes stream: each row lands with the
/// columns of its time.
#[tokio::test(flavor = "multi_thread")]
async fn ddl_while_streaming_changes_the_schema_in_binlog_order() {
    let db = MyDb::create("sluice_it_my_ddl").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b INT);
         INSERT INTO t VALUES (1, 'one', 10)",
    )
    .await;
    let mut d = Daemon::configure_mysql(
        "md",
        &db.url,
        &["sluice_it_my_ddl.*"],
        "{ rows: 100, interval: 200ms }",
    );
    d.start();
    let stream = "md.sluice_it_my_ddl.t";
    wait_for("the snapshot", Duration::from_secs(60), || async {
        lake_rows(&d.lake, stream).len() == 1
    })
    .await;
    my_exec(
        &mut conn,
        "INSERT INTO t VALUES (2, 'two', 20);
         ALTER TABLE t ADD COLUMN c DECIMAL(8,3) DEFAULT 1.5 AFTER a;
         INSERT INTO t VALUES (3, 'three', 3.25, 30);
         ALTER TABLE t DROP COLUMN b;
         INSERT INTO t VALUES (4, 'four', 4.5);
         ALTER TABLE t MODIFY a VARCHAR(50) CHARACTER SET latin1, CHANGE c amount DECIMAL(10,3);
         INSERT INTO t VALUES (5, 'fünf', 5.125);
         UPDATE t SET a = 'ONE' WHERE id = 1;
         ALTER TABLE t ADD COLUMN w INT DEFAULT 9, ALGORITHM=NOCOPY;
         INSERT INTO t VALUES (6, 'six', 6.5, 66);
         CREATE TABLE u (k BIGINT UNSIGNED PRIMARY KEY, v TEXT);
         INSERT INTO u VALUES (18446744073709551615, 'max');
         TRUNCATE TABLE u;
         INSERT INTO u VALUES (1, 'after truncate')",
    )
    .await;
    let ok = wait_until(Duration::from_secs(60), || async {
        lake_rows(&d.lake, stream).len() == 7
            && lake_rows(&d.lake, "md.sluice_it_my_ddl.u").len() == 3
    })
    .await;
    assert!(ok, "{}", d.log());
    let rows = lake_rows(&d.lake, stream);
    let get = |id: &str, col: &str| {
        rows.iter()
            .rfind(|r| r.values["id"].as_deref() == Some(id))
            .and_then(|r| r.values.get(col).cloned().flatten())
    };
    assert_eq!(get("2", "b").as_deref(), Some("20"));
    assert_eq!(get("3", "c").as_deref(), Some("3.250"));
    assert_eq!(get("3", "b").as_deref(), Some("30"));
    assert_eq!(get("4", "c").as_deref(), Some("4.500"));
    assert!(
        rows.iter()
            .filter(|r| r.values["id"].as_deref() == Some("4"))
            .all(|r| !r.values.contains_key("b"))
    );
    assert_eq!(get("5", "amount").as_deref(), Some("5.125"));
    assert_eq!(get("5", "a").as_deref(), Some("fünf"));
    assert_eq!(get("1", "a").as_deref(), Some("ONE"));
    // MariaDB's ALGORITHM=NOCOPY is beyond the parser: reported, and the table re-read.
    assert_eq!(get("6", "w").as_deref(), Some("66"));
    assert!(d.metric("sluice_source_ddl_unparsed_total") >= 1.0);
    assert!(d.log().contains("DDL not understood"), "{}", d.log());
    let u = lake_rows(&d.lake, "md.sluice_it_my_ddl.u");
    let ops: Vec<&str> = u.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(ops, ["c", "t", "c"]);
    assert_eq!(u[0].values["k"].as_deref(), Some("18446744073709551615"));
    // The lake's current state is the table's (a renamed column starts anew under its new
    // name: older rows keep theirs, as the change log recorded them).
    let want = my_table_state(&mut conn, "t", &["id", "a"]).await;
    assert_eq!(state_from_log(&rows, "id", &["id", "a"]), want);
    assert!(d.terminate().success());
}

/// sluice stopped; inserts, an ALTER, more inserts; sluice restarts at its old position and
/// must decode the earlier rows with the earlier schema (from the history in the lake).
#[tokio::test(flavor = "multi_thread")]
async fn restart_at_an_old_position_decodes_with_the_schema_of_that_time() {
    let db = MyDb::create("sluice_it_my_history").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, b VARCHAR(10), c DATETIME(6));
         INSERT INTO t VALUES (1, 1, 'x', '2024-01-01 00:00:00')",
    )
    .await;
    let mut d = Daemon::configure_mysql(
        "mh",
        &db.url,
        &["sluice_it_my_history.t"],
        "{ rows: 100, interval: 200ms }",
    );
    d.start();
    let stream = "mh.sluice_it_my_history.t";
    wait_for("the snapshot", Duration::from_secs(60), || async {
        lake_rows(&d.lake, stream).len() == 1
    })
    .await;
    assert!(d.terminate().success());
    // Behind sluice's back: rows of the old shape, then columns dropped and reordered.
    my_exec(
        &mut conn,
        "INSERT INTO t VALUES (2, 2, 'old', '2024-01-02 00:00:00.5');
         UPDATE t SET a = 10 WHERE id = 1;
         ALTER TABLE t DROP COLUMN a, ADD COLUMN z INT FIRST;
         INSERT INTO t (z, id, b, c) VALUES (99, 3, 'new', '2024-01-03 00:00:00')",
    )
    .await;
    d.start();
    let ok = wait_until(Duration::from_secs(60), || async {
        lake_rows(&d.lake, stream).len() == 4
    })
    .await;
    assert!(ok, "{}", d.log());
    let rows = lake_rows(&d.lake, stream);
    let by = |id: &str| {
        rows.iter()
            .rfind(|r| r.values["id"].as_deref() == Some(id))
            .unwrap()
    };
    assert_eq!(
        by("2").values["a"].as_deref(),
        Some("2"),
        "decoded with the old columns"
    );
    assert_eq!(by("2").values["b"].as_deref(), Some("old"));
    assert_eq!(by("2").values["c"].as_deref(), Some("1704153600500000"));
    assert_eq!(by("1").values["a"].as_deref(), Some("10"));
    assert_eq!(by("3").values["z"].as_deref(), Some("99"));
    assert_eq!(by("3").values["b"].as_deref(), Some("new"));
    assert!(!by("3").values.contains_key("a"));
    let saved = std::fs::read_dir(d.lake.join("_sluice/schemas/mh"))
        .unwrap()
        .count();
    assert!(saved >= 2, "one history per schema: {saved}");
    assert!(d.terminate().success());
}

/// Resume by GTID (the default on MariaDB) and by file and offset, with changes made while
/// sluice was down; the committed position follows the binlog even when only tables sluice does
/// not capture change.
#[tokio::test(flavor = "multi_thread")]
async fn resumes_by_gtid_and_by_position_without_loss_or_duplicates() {
    for (name, resume_by) in [("mg", "gtid"), ("mp", "position")] {
        let db_name = format!("sluice_it_my_resume_{resume_by}");
        let db = MyDb::create(&db_name).await;
        let mut conn = db.conn().await;
        my_exec(
            &mut conn,
            "CREATE TABLE t (id INT PRIMARY KEY, v INT);
             CREATE TABLE other (id INT PRIMARY KEY);
             INSERT INTO t VALUES (1, 0), (2, 0)",
        )
        .await;
        let mut d = Daemon::configure_mysql(
            name,
            &db.url,
            &[&format!("{db_name}.t")],
            "{ rows: 100, interval: 200ms }",
        );
        d.append_source(&format!("resume_by: {resume_by}\nheartbeat: 1s\n"));
        d.start();
        let stream = format!("{name}.{db_name}.t");
        for round in 0..3 {
            my_exec(
                &mut conn,
                &format!(
                    "UPDATE t SET v = v + 1;
                     UPDATE t SET id = id + 10000 WHERE id = 1 AND {round} = 0;
                     INSERT INTO t VALUES ({}, {round});
                     DELETE FROM t WHERE id = 2 AND {round} = 1;
                     INSERT INTO other VALUES ({round})",
                    100 + round
                ),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(d.terminate().success(), "{}", d.log());
            my_exec(
                &mut conn,
                &format!(
                    "UPDATE t SET v = v + 10 WHERE id = 10001; INSERT INTO t VALUES ({}, 7)",
                    200 + round
                ),
            )
            .await;
            d.start();
        }
        let want = my_table_state(&mut conn, "t", &["id", "v"]).await;
        let ok = wait_until(Duration::from_secs(60), || async {
            state_from_log(&lake_rows(&d.lake, &stream), "id", &["id", "v"]) == want
        })
        .await;
        assert!(ok, "{resume_by}: {}", d.log());
        let rows = lake_rows(&d.lake, &stream);
        let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), rows.len(), "{resume_by}: no change twice");
        // The committed position is past the last transaction, even the uncaptured one.
        my_exec(&mut conn, "INSERT INTO other VALUES (1000)").await;
        let binlog_end: u64 = {
            let mut row: mysql_async::Row = conn
                .query_first("SHOW MASTER STATUS")
                .await
                .unwrap()
                .unwrap();
            row.take(1).unwrap()
        };
        let ok = wait_until(Duration::from_secs(20), || async {
            latest_commit(&d.lake)
                .and_then(|c| c["positions"][name]["pos"].as_u64())
                .is_some_and(|p| p >= binlog_end)
        })
        .await;
        assert!(ok, "{resume_by}: the committed position follows the binlog");
        // Caught up and idle: nothing left to read, which the lag in bytes says.
        let idle = wait_until(Duration::from_secs(20), || async {
            d.metrics()
                .lines()
                .any(|l| l.starts_with("sluice_source_lag_bytes") && l.ends_with(" 0"))
        })
        .await;
        assert!(idle, "{resume_by}: lag bytes reach 0: {}", d.metrics());
        let commit = latest_commit(&d.lake).unwrap();
        if resume_by == "gtid" {
            assert!(
                commit["positions"][name]["gtid"]
                    .as_str()
                    .is_some_and(|g| g.starts_with("0-1-"))
            );
        }
        assert!(d.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_privileges_and_tables_without_keys() {
    let db = MyDb::create("sluice_it_my_check").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE keyed (id INT PRIMARY KEY); CREATE TABLE unkeyed (v INT)",
    )
    .await;
    let d = Daemon::configure_mysql(
        "mc",
        &db.url,
        &["sluice_it_my_check.keyed"],
        "{ rows: 100 }",
    );
    let (ok, out) = d.check();
    assert!(ok, "a good setup passes:\n{out}");
    let d = Daemon::configure_mysql("mc", &db.url, &["sluice_it_my_check.*"], "{ rows: 100 }");
    let (ok, out) = d.check();
    assert!(!ok && out.contains("unkeyed has no primary key"), "{out}");
    // A user without replication privileges gets the GRANT to run.
    let url = db.url.replace("sluice:sluice@", "norepl:norepl@");
    let d = Daemon::configure_mysql("mc", &url, &["sluice_it_my_check.keyed"], "{ rows: 100 }");
    let (ok, out) = d.check();
    assert!(
        !ok && out.contains("REPLICATION SLAVE") && out.contains("GRANT"),
        "{out}"
    );
    assert!(
        !out.contains("*9") && !out.contains("PASSWORD"),
        "no password hash in the output:\n{out}"
    );
    let d = Daemon::configure_mysql(
        "mc",
        &db.url,
        &["sluice_it_my_check.nothing"],
        "{ rows: 100 }",
    );
    let (ok, out) = d.check();
    assert!(!ok && out.contains("no table matches"), "{out}");
}

/// TLS to MariaDB: services.sh gives it a certificate for 127.0.0.1 from a CA of its own, and a
/// user that may only connect over TLS, so a session sluice failed to encrypt would be refused.
#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_reach_mariadb() {
    let tls_dir = std::env::var("SLUICE_MYSQL_TLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/sluice-services/mariadb-tls",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let db = MyDb::create("sluice_it_my_tls").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)",
    )
    .await;
    let url = db.url.replace("sluice:sluice@", "sluice_tls:sluice@");
    let configure = |name: &str, mode: &str, ca: &str| {
        let d = Daemon::configure_mysql(
            name,
            &url,
            &["sluice_it_my_tls.t"],
            "{ rows: 100, interval: 200ms }",
        );
        d.append_source(&format!(
            "tls: {{ mode: {mode}, ca_file: {tls_dir}/{ca} }}\n"
        ));
        d
    };
    // Without TLS the TLS-only user is refused.
    let plain = Daemon::configure_mysql("mplain", &url, &["sluice_it_my_tls.t"], "{ rows: 100 }");
    let (ok, out) = plain.check();
    assert!(!ok && out.contains("cannot connect"), "{out}");
    // verify-ca with a CA that signed nothing fails, and says so.
    let (ok, out) = configure("mtls2", "verify-ca", "other-ca.pem").check();
    assert!(!ok && out.contains("cannot connect"), "{out}");
    let mut d = configure("mtls", "verify-full", "ca.pem");
    let (ok, out) = d.check();
    assert!(ok, "{out}");
    d.start();
    wait_for("the snapshot over TLS", Duration::from_secs(60), || async {
        lake_rows(&d.lake, "mtls.sluice_it_my_tls.t").len() == 1
    })
    .await;
    my_exec(&mut conn, "INSERT INTO t VALUES (2)").await;
    wait_for("a change over TLS", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "mtls.sluice_it_my_tls.t").len() == 2
    })
    .await;
    assert!(d.terminate().success(), "{}", d.log());
    for mode in ["require", "verify-ca"] {
        let (ok, out) = configure("mtls3", mode, "ca.pem").check();
        assert!(ok, "{mode}: {out}");
    }
}

/// A million-row table is snapshotted in chunks with memory bounded by the batch and row-group
/// sizes, not by the table: every row arrives, across several commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_row_snapshot_has_bounded_memory() {
    let db = MyDb::create("sluice_it_my_million").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE big (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(40));
         INSERT INTO big SELECT seq, seq % 1000, CONCAT('row ', seq) FROM seq_1_to_1000000",
    )
    .await;
    let mut d = Daemon::configure_mysql(
        "mbig",
        &db.url,
        &["sluice_it_my_million.big"],
        "{ rows: 200000, interval: 1s }",
    );
    d.start();
    let ok = wait_until(Duration::from_secs(240), || async {
        d.metric("sluice_sink_rows_total") >= 1_000_000.0
    })
    .await;
    assert!(ok, "{}", d.log());
    let peak = d.peak_rss_mb();
    eprintln!("peak RSS during the 1M-row snapshot: {peak:.1} MB");
    assert!(
        peak < 200.0,
        "memory is bounded by batches, not the table: {peak:.1} MB"
    );
    assert!(
        d.metric("sluice_sink_commits_total") >= 5.0,
        "committed as it goes"
    );
    assert_eq!(
        zone_row_count(&d.lake, "raw", "mbig.sluice_it_my_million.big"),
        1_000_000
    );
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_pipeline_with_the_same_server_id_is_a_named_stop() {
    let db = MyDb::create("sluice_it_my_sid").await;
    let mut conn = db.conn().await;
    my_exec(
        &mut conn,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)",
    )
    .await;
    my_exec(&mut conn, "INSERT INTO t VALUES (1, 0)").await;
    let table = ["sluice_it_my_sid.t"];
    let rotate = "{ rows: 100, interval: 200ms }";
    let mut first = Daemon::configure_mysql("sida", &db.url, &table, rotate);
    first.append_source("server_id: 7521\n");
    first.start();
    wait_for("the first to stream", Duration::from_secs(60), || async {
        first.log().contains("streaming")
    })
    .await;
    // Another pipeline (its own lake and source name) with the same replica id.
    let mut second = Daemon::configure_mysql("sidb", &db.url, &table, rotate);
    second.append_source("server_id: 7521\n");
    second.start();
    let status = first.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "the first pipeline went on without its binlog"
    );
    assert!(
        first.log().contains("with this source's server_id 7521"),
        "the stop does not name the clash:\n{}",
        first.log()
    );
    assert!(second.is_running());
    assert!(second.terminate().success());
}
