//! The ODS zone: the current state of each table, merged from the change log, equal to the
//! table (read in Rust and with DuckDB), across deletes, a truncate, a schema change, and kill -9
//! in the middle of merges.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_ods_equals_the_table_through_deletes_truncates_schema_changes_and_crashes() {
    let db = TestDb::create("sluice_it_ods").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, note text);
             INSERT INTO t SELECT g, 0, 'n' || g FROM generate_series(1, 3000) g;
             CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone SELECT generate_series(1, 10);",
        )
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "ods",
        &db.url,
        &["public.t", "public.gone"],
        "{ rows: 400, interval: 100ms }",
    );
    d.add_sink_settings(&["zones: [raw, ods]", "ods_interval: 100ms"]);
    d.start();
    let cols = ["id", "v", "note"];
    let want = table_state(&client, "t", &["id", "v", "note"]).await;
    wait_for(
        "the ODS of the snapshot",
        Duration::from_secs(30),
        || async { ods_state(&d, "ods.public.t", &cols) == want },
    )
    .await;

    // Changes while the daemon is killed now and then, often in the middle of a merge.
    let mut seed = 0x9E3779B97F4A7C15u64;
    for round in 0..8 {
        client
            .batch_execute(&format!(
                "UPDATE t SET v = v + 1 WHERE id % 7 = {round};
                 DELETE FROM t WHERE id % 97 = {round};
                 INSERT INTO t SELECT g, 0, 'new' FROM generate_series({lo}, {hi}) g;",
                lo = 10_000 + round * 100,
                hi = 10_000 + round * 100 + 49
            ))
            .await
            .unwrap();
        if round == 4 {
            client
                .batch_execute(
                    "ALTER TABLE t ADD COLUMN extra text; UPDATE t SET extra = 'x' WHERE id < 100;",
                )
                .await
                .unwrap();
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(100 + seed % 400)).await;
        d.kill9();
        d.start();
    }
    client
        .batch_execute("TRUNCATE gone; INSERT INTO gone VALUES (42);")
        .await
        .unwrap();

    let cols = ["id", "v", "note", "extra"];
    let want = table_state(&client, "t", &["id", "v", "note", "extra"]).await;
    let caught_up = wait_until(Duration::from_secs(60), || async {
        ods_state(&d, "ods.public.t", &cols) == want
    })
    .await;
    assert!(
        caught_up,
        "the ODS did not converge to the table:\n{}",
        d.log()
    );
    let gone = wait_until(Duration::from_secs(30), || async {
        ods_state(&d, "ods.public.gone", &["id"])
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            == vec!["42".to_string()]
    })
    .await;
    assert!(gone, "a truncate clears the ODS");
    assert!(d.terminate().success());

    // Readers never see a temporary file, and DuckDB agrees with the table.
    let ods_dir = d.lake.join("ods/ods.public.t");
    let names: Vec<String> = std::fs::read_dir(&ods_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["part-0.parquet".to_string()]);
    let stdout = python_stdout(&[
        "-c",
        "import sys, duckdb; print(duckdb.sql(f\"SELECT count(*), sum(v), count(extra) FROM read_parquet('{sys.argv[1]}/*.parquet')\").fetchall()[0])",
        ods_dir.to_str().unwrap(),
    ]);
    let row = client
        .query_one("SELECT count(*), sum(v), count(extra) FROM t", &[])
        .await
        .unwrap();
    let (n, sum, extra): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(stdout.as_str(), format!("({n}, {sum}, {extra})"));
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_table_definitions_work_in_duckdb() {
    let db = TestDb::create("sluice_it_ddl_gen").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, price numeric(8,2), tags text[]); INSERT INTO items SELECT g, g, '{a,b}' FROM generate_series(1, 100) g;")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "gen",
        &db.url,
        &["public.items"],
        "{ rows: 1000, interval: 100ms }",
    );
    d.add_sink_settings(&["zones: [raw, ods]", "ods_interval: 100ms"]);
    d.start();
    wait_for("the snapshot", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "gen.public.items").len() == 100
    })
    .await;
    client
        .batch_execute(
            "DELETE FROM items WHERE id <= 10; UPDATE items SET price = 0 WHERE id = 50;",
        )
        .await
        .unwrap();
    wait_for("the changes", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "gen.public.items").len() == 111
    })
    .await;
    assert!(d.terminate().success());

    let out = d
        .command(&["ddl", "--config", d.config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `raw_gen_public_items`")
            && text.contains("PARTITIONED BY (`date` STRING)"),
        "{text}"
    );
    assert!(
        text.contains("`price` DECIMAL(8,2)") && text.contains("`tags` ARRAY<STRING>"),
        "{text}"
    );
    // A reader that stops early (`sluice ddl | head`) ends the printing, not in a panic.
    let mut early = d
        .command(&["ddl", "--config", d.config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(early.stdout.take());
    assert_eq!(early.wait().unwrap().code(), Some(0));
    let duckdb_sql = d.lake.join("_ddl/gen.public.items.duckdb.sql");
    assert!(duckdb_sql.exists() && d.lake.join("_ddl/gen.public.items.hive.sql").exists());
    let stdout = python_stdout(&[
        "-c",
        "import sys, duckdb; con = duckdb.connect(); con.execute(open(sys.argv[1]).read()); \
             print(con.sql('SELECT count(*), sum(price) FROM ods_gen_public_items').fetchall()[0], \
                   con.sql(\"SELECT count(*) FROM raw_gen_public_items WHERE _op = 'd'\").fetchall()[0][0])",
        duckdb_sql.to_str().unwrap(),
    ]);
    let row = client
        .query_one("SELECT count(*), sum(price)::text FROM items", &[])
        .await
        .unwrap();
    let (n, sum): (i64, String) = (row.get(0), row.get(1));
    assert_eq!(stdout.as_str(), format!("({n}, Decimal('{sum}')) 10"));
}

/// Spark (pyspark from PyPI, with its embedded Hive metastore) runs the generated Hive DDL and
/// reads the raw, cleansed and ODS zones, and DuckDB reads the cleansed zone through its views;
/// their answers equal the table, the SQL view over it, and the change histories.
#[tokio::test(flavor = "multi_thread")]
async fn spark_reads_the_lake_through_the_generated_ddl() {
    let db = TestDb::create("sluice_it_spark").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 300) g;")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "spk",
        &db.url,
        &["public.t"],
        "{ rows: 1000, interval: 100ms }",
    );
    d.add_sink_settings(&["zones: [raw, cleansed, ods]", "ods_interval: 100ms"]);
    std::fs::create_dir_all(d.dir.path().join("transforms")).unwrap();
    std::fs::write(
        d.dir.path().join("transforms/clean.t.sql"),
        "CREATE STREAM clean.t AS SELECT id, v * 10 AS v10 FROM spk.public.t WHERE v % 2 = 0",
    )
    .unwrap();
    d.start();
    wait_for("the snapshot", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "spk.public.t").len() == 300
    })
    .await;
    client
        .batch_execute("DELETE FROM t WHERE id <= 20; UPDATE t SET v = v * 2 WHERE id > 290; ALTER TABLE t ADD COLUMN w text; INSERT INTO t VALUES (1000, 1, 'new');")
        .await
        .unwrap();
    wait_for("the changes", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "spk.public.t").len() == 331
    })
    .await;
    assert!(d.terminate().success());
    let out = d
        .command(&[
            "ddl",
            "--config",
            d.config.to_str().unwrap(),
            "--dialect",
            "hive",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ddl = d.lake.join("_ddl/spk.public.t.hive.sql");
    let cleansed_ddl = d.lake.join("_ddl/clean.t.hive.sql");
    let out = std::process::Command::new(python())
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/spark_reads.py"),
            ddl.to_str().unwrap(),
            "raw_spk_public_t",
            "ods_spk_public_t",
            "v",
            cleansed_ddl.to_str().unwrap(),
            "cleansed_clean_t",
            "ods_clean_t",
            "v10",
        ])
        .output()
        .expect("pyspark (scripts/services.sh up python)");
    assert!(
        out.status.success(),
        "spark failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = client
        .query_one("SELECT count(*), sum(v) FROM t", &[])
        .await
        .unwrap();
    let (n, sum): (i64, i64) = (row.get(0), row.get(1));
    let view = client
        .query_one(
            "SELECT count(*), sum(v * 10)::bigint FROM t WHERE v % 2 = 0",
            &[],
        )
        .await
        .unwrap();
    let (vn, vsum): (i64, i64) = (view.get(0), view.get(1));
    let cleansed_log = zone_rows(&d.lake, "cleansed", "clean.t");
    let cleansed_deletes = cleansed_log.iter().filter(|r| r.op == "d").count();
    assert!(cleansed_deletes > 0 && cleansed_log.len() > vn as usize);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.trim().lines().rev().take(2).collect();
    assert_eq!(
        lines,
        vec![
            format!("{vn} {vsum} {cleansed_deletes} {}", cleansed_log.len()),
            format!("{n} {sum} 20 331"),
        ],
        "{stdout}"
    );
    // DuckDB through the generated views of the cleansed stream answers the same.
    let duck = python_stdout(&[
        "-c",
        "import sys, duckdb; con = duckdb.connect(); con.execute(open(sys.argv[1]).read()); \
             print(*con.sql('SELECT count(*), sum(v10) FROM ods_clean_t').fetchall()[0], \
                   con.sql(\"SELECT count(*) FROM cleansed_clean_t WHERE _op = 'd'\").fetchall()[0][0])",
        d.lake.join("_ddl/clean.t.duckdb.sql").to_str().unwrap(),
    ]);
    assert_eq!(duck, format!("{vn} {vsum} {cleansed_deletes}"));
}
