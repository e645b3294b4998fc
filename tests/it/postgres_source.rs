//! The Postgres source in depth, on the real server: every type family with edge values (read
//! by the snapshot and by the stream, which must agree), unchanged TOAST values, ALTER TABLE
//! while streaming, new tables under a glob, heartbeats on a filtered database, a dropped slot.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;

const TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
CREATE TABLE types (
    id int PRIMARY KEY, i2 smallint, i4 int, i8 bigint, n numeric(38,10), nn numeric(10,2), nu numeric,
    ninf numeric, f4 real, f8 double precision, t text, vc varchar(5), ch char(3), by bytea, bo boolean,
    d date, d2 date, ts timestamp, tsz timestamptz, tm time, ttz timetz, iv interval, u uuid, j json, jb jsonb,
    ip inet, cd cidr, mac macaddr, md mood, ai int[], at text[], an numeric(10,2)[], a2 int[], dom positive_int,
    pt point, emptya int[]);
"#;

const ROW: &str = r#"
    -32768, 2147483647, -9223372036854775808, 1234567890123456789012345678.0123456789, 'NaN',
    -12345678901234567890123456789012345678901234567890.000000000000000000001, '-Infinity',
    '-Infinity', 'NaN', E'tab\there\nnewline \\ backslash "quote" ünïcødé 🦀', 'abcde', 'ab', '\x00ff00', true,
    'infinity', '0044-03-15 BC', '-infinity', '2024-02-29 23:59:59.999999+05:30', '24:00:00', '12:00:00.5+02',
    '1 year 2 months 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b":1,  "a":[1,2]}',
    '{"b":1,  "a":[1,2]}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 'happy', '{1,NULL,3}',
    '{"a,b","c\"d",NULL}', '{1.5,NULL}', '{{1,2},{3,4}}', 5, '(1,2)', '{}'"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_type_family_reads_the_same_from_snapshot_and_stream() {
    let db = TestDb::create("sluice_it_types").await;
    let client = db.client().await;
    client.batch_execute(TYPES).await.unwrap();
    client
        .batch_execute(&format!("INSERT INTO types VALUES (1, {ROW})"))
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "typ",
        &db.url,
        &["public.types"],
        "{ rows: 100, interval: 200ms }",
    );
    d.start();
    wait_for("the snapshot row", FIRST_SNAPSHOT, || async {
        lake_rows(&d.lake, "typ.public.types").len() == 1
    })
    .await;
    client
        .batch_execute(&format!("INSERT INTO types VALUES (2, {ROW})"))
        .await
        .unwrap();
    wait_for("the streamed row", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "typ.public.types").len() == 2
    })
    .await;

    let rows = lake_rows(&d.lake, "typ.public.types");
    let (snap, streamed) = (&rows[0], &rows[1]);
    assert_eq!((snap.op.as_str(), streamed.op.as_str()), ("r", "c"));
    let strip = |r: &LakeRow| -> BTreeMap<String, Option<String>> {
        r.values
            .iter()
            .filter(|(k, _)| !k.starts_with('_') && *k != "id")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(
        strip(snap),
        strip(streamed),
        "COPY and pgoutput decode the same values"
    );

    let v = |c: &str| snap.values[c].clone();
    let expected: &[(&str, Option<&str>)] = &[
        ("i2", Some("-32768")),
        ("i4", Some("2147483647")),
        ("i8", Some("-9223372036854775808")),
        ("n", Some("1234567890123456789012345678.0123456789")),
        ("nn", None), // NaN cannot be a decimal: null, counted
        (
            "nu",
            Some("-12345678901234567890123456789012345678901234567890.000000000000000000001"),
        ),
        ("ninf", Some("-Infinity")),
        ("f4", Some("-inf")),
        ("f8", Some("NaN")),
        (
            "t",
            Some("tab\there\nnewline \\ backslash \"quote\" ünïcødé 🦀"),
        ),
        ("vc", Some("abcde")),
        ("ch", Some("ab ")),
        ("by", Some("00ff00")),
        ("bo", Some("true")),
        ("d", Some("2147483647")),
        ("ts", Some("-9223372036854775807")),
        ("tsz", Some("1709231399999999")),
        ("tm", Some("86400000000")),
        ("ttz", Some("10:00:00.5Z")),
        ("iv", Some("P1Y2M3DT4H5M6.7S")),
        ("u", Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        ("j", Some("{\"b\":1,  \"a\":[1,2]}")),
        ("jb", Some("{\"a\": [1, 2], \"b\": 1}")),
        ("ip", Some("192.168.0.1/24")),
        ("cd", Some("10.0.0.0/8")),
        ("mac", Some("08:00:2b:01:02:03")),
        ("md", Some("happy")),
        ("ai", Some("[1,NULL,3]")),
        ("at", Some("[a,b,c\"d,NULL]")),
        ("an", Some("[1.50,NULL]")),
        ("a2", Some("[1,2,3,4]")),
        ("dom", Some("5")),
        ("pt", Some("(1,2)")),
        ("emptya", Some("[]")),
    ];
    for (col, want) in expected {
        assert_eq!(v(col).as_deref(), *want, "column {col}");
    }
    // 0044-03-15 BC: year -43 in the proleptic Gregorian calendar.
    let bc_days: i64 = v("d2").unwrap().parse().unwrap();
    assert_eq!(bc_days, -735_000 + (bc_days + 735_000), "parsed");
    assert!(
        bc_days < -700_000,
        "a BC date is far before the epoch: {bc_days}"
    );

    let m = d.metrics();
    assert!(
        metric_sum(
            &m,
            "sluice_source_lossy_values_total{reason=\"numeric_nan_in_decimal\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "sluice_source_lossy_values_total{reason=\"multidimensional_array\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        m.contains(
            "sluice_source_unmapped_type_columns{table=\"typ.public.types\",type=\"point\"} 1"
        ),
        "{m}"
    );
    assert!(d.terminate().success());

    // An independent reader sees the logical types.
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.dataset as ds; t = ds.dataset(sys.argv[1], format='parquet', partitioning='hive').to_table(); \
             print(t.schema.field('n').type, t.schema.field('ai').type, t.schema.field('tsz').type, t.schema.field('d').type)",
            d.lake.join("raw/typ.public.types").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "decimal128(38, 10) list<item: int32> timestamp[us, tz=UTC] date32[day]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_toast_values_resolved_with_full_identity_and_counted_without() {
    let db = TestDb::create("sluice_it_toast").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE big_default (id int PRIMARY KEY, n int, doc text);
             CREATE TABLE big_full (id int PRIMARY KEY, n int, doc text);
             ALTER TABLE big_default ALTER COLUMN doc SET STORAGE EXTERNAL;
             ALTER TABLE big_full ALTER COLUMN doc SET STORAGE EXTERNAL;
                          ALTER TABLE big_full REPLICA IDENTITY FULL;
             -- Out-of-line values already stored: what `sluice check` looks for.
             INSERT INTO big_default VALUES (100, 0, repeat('y', 5000));
             INSERT INTO big_full VALUES (100, 0, repeat('y', 5000));",
        )
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "toast",
        &db.url,
        &["public.big_default", "public.big_full"],
        "{ rows: 100, interval: 200ms }",
    );
    let (check_passed, text) = d.check();
    assert!(check_passed, "warnings do not fail the check: {text}");
    assert!(
        text.contains("warning:")
            && text.contains("public.big_default")
            && text.contains("REPLICA IDENTITY FULL"),
        "{text}"
    );
    assert!(!text.contains("table public.big_full stores"), "{text}");

    d.start();
    wait_for("the slot", FIRST_SNAPSHOT, || async {
        !db.slots().await.is_empty()
    })
    .await;
    let doc = "x".repeat(5000);
    for table in ["big_default", "big_full"] {
        client
            .execute(&format!("INSERT INTO {table} VALUES (1, 0, $1)"), &[&doc])
            .await
            .unwrap();
        client
            .execute(&format!("UPDATE {table} SET n = 1 WHERE id = 1"), &[])
            .await
            .unwrap();
    }
    for stream in ["toast.public.big_default", "toast.public.big_full"] {
        wait_for(
            "snapshot, insert and update",
            Duration::from_secs(30),
            || async { lake_rows(&d.lake, stream).len() == 3 },
        )
        .await;
    }
    let full = lake_rows(&d.lake, "toast.public.big_full");
    assert_eq!(
        full[2].values["doc"].as_deref(),
        Some(doc.as_str()),
        "FULL identity: the old row fills the unchanged value"
    );
    let default = lake_rows(&d.lake, "toast.public.big_default");
    assert_eq!(
        default[2].values["doc"], None,
        "DEFAULT identity: the server did not send it"
    );
    let m = d.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "sluice_source_unchanged_toast_total{table=\"toast.public.big_default\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "sluice_source_unchanged_toast_total{table=\"toast.public.big_full\"}"
        ),
        0.0,
        "{m}"
    );
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn alter_table_while_streaming_starts_files_with_the_new_schema() {
    let db = TestDb::create("sluice_it_ddl").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, a int, b text); INSERT INTO t VALUES (1, 1, 'one');")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "ddl",
        &db.url,
        &["public.t"],
        "{ rows: 1000, interval: 200ms }",
    );
    d.start();
    wait_for("the snapshot", FIRST_SNAPSHOT, || async {
        lake_rows(&d.lake, "ddl.public.t").len() == 1
    })
    .await;
    client
        .batch_execute(
            "INSERT INTO t VALUES (2, 2, 'two');
             ALTER TABLE t ADD COLUMN c numeric(8,3);
             INSERT INTO t VALUES (3, 3, 'three', 3.5);
             ALTER TABLE t DROP COLUMN b;
             INSERT INTO t VALUES (4, 4, 4.25);
             ALTER TABLE t ALTER COLUMN a TYPE bigint;
             INSERT INTO t VALUES (5, 5000000000, 5);
             UPDATE t SET c = 1.125 WHERE id = 1;",
        )
        .await
        .unwrap();
    wait_for("every change", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "ddl.public.t").len() == 6
    })
    .await;
    assert!(d.terminate().success(), "{}", d.log());

    let rows = lake_rows(&d.lake, "ddl.public.t");
    let by_id = |id: &str| {
        rows.iter()
            .rev()
            .find(|r| r.values["id"].as_deref() == Some(id))
            .unwrap()
    };
    assert_eq!(by_id("2").values["b"].as_deref(), Some("two"));
    assert_eq!(by_id("3").values["c"].as_deref(), Some("3.500"));
    assert_eq!(
        by_id("4").values.get("b"),
        None,
        "b is gone from files after the drop"
    );
    assert_eq!(
        by_id("5").values["a"].as_deref(),
        Some("5000000000"),
        "a widened to bigint"
    );
    assert_eq!(by_id("1").values["c"].as_deref(), Some("1.125"));
    // Each file has one schema; the schema changes make several files.
    let files = parquet_files(&d.lake.join("raw/ddl.public.t"));
    assert!(files.len() >= 4, "a new file per schema version: {files:?}");
    let out = std::process::Command::new(python())
        .args([
            "-c",
            // Readers merge the files' schemas (added columns, widened types), as docs/types.md shows.
            "import sys, glob, pyarrow as pa, pyarrow.parquet as pq, pyarrow.dataset as ds; \
             files = glob.glob(sys.argv[1] + '/*/*.parquet'); \
             schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options='permissive'); \
             t = ds.dataset(files, schema=schema, format='parquet').to_table(); print(t.schema.field('a').type, t.num_rows)",
            d.lake.join("raw/ddl.public.t").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow reads every version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "int64 6");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_table_under_a_glob_is_captured_from_its_first_row() {
    let db = TestDb::create("sluice_it_glob").await;
    let client = db.client().await;
    client.batch_execute("CREATE TABLE orders_2024 (id int PRIMARY KEY, v text); INSERT INTO orders_2024 VALUES (1, 'a');").await.unwrap();
    // A superuser lets sluice publish the whole schema, so later tables are in the stream.
    let url = db.url.replace("sluice:sluice@", "sluice_su:sluice@");
    let mut d = Daemon::configure(
        "glob",
        &url,
        &["public.orders_*"],
        "{ rows: 1000, interval: 200ms }",
    );
    d.start();
    wait_for("the snapshot", FIRST_SNAPSHOT, || async {
        lake_rows(&d.lake, "glob.public.orders_2024").len() == 1
    })
    .await;
    client
        .batch_execute(
            "CREATE TABLE orders_2025 (id int PRIMARY KEY, v text);
             INSERT INTO orders_2025 VALUES (1, 'first'), (2, 'second');
             CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1);",
        )
        .await
        .unwrap();
    wait_for("the new table", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "glob.public.orders_2025").len() == 2
    })
    .await;
    assert!(
        !d.lake.join("raw/glob.public.other").exists(),
        "tables outside the glob are not captured"
    );
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_advance_the_slot_of_a_filtered_database() {
    let db = TestDb::create("sluice_it_heartbeat").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE captured (id int PRIMARY KEY); CREATE TABLE noisy (id int, pad text);",
        )
        .await
        .unwrap();
    let d = Daemon::configure(
        "hb",
        &db.url,
        &["public.captured"],
        "{ rows: 1000, interval: 200ms }",
    );
    let source = d.dir.path().join("sources/hb.yaml");
    std::fs::write(
        &source,
        std::fs::read_to_string(&source).unwrap() + "heartbeat: 300ms\n",
    )
    .unwrap();
    let mut d = d;
    d.start();
    wait_for("the slot", FIRST_SNAPSHOT, || async {
        !db.slots().await.is_empty()
    })
    .await;
    // WAL that the slot filters out entirely (no captured table changes).
    client
        .batch_execute(
            "INSERT INTO noisy SELECT g, repeat('p', 200) FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let after: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let target = lsn(&after);
    wait_for(
        "the slot to move past the filtered WAL",
        Duration::from_secs(30),
        || async {
            db.slots()
                .await
                .iter()
                .any(|(_, confirmed)| confirmed.as_deref().map(lsn).unwrap_or(0) >= target)
        },
    )
    .await;
    // The slot health check sets it at each heartbeat, beside the acknowledgements that moved
    // the slot: wait for it rather than assume it came first.
    wait_for(
        "the slot's lag in bytes on /metrics",
        Duration::from_secs(10),
        || async {
            d.metrics()
                .contains("sluice_source_lag_bytes{source=\"hb\"}")
        },
    )
    .await;
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_slot_stops_the_source_with_the_recovery() {
    let db = TestDb::create("sluice_it_slotlost").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "lost",
        &db.url,
        &["public.t"],
        "{ rows: 1000, interval: 200ms }",
    );
    d.start();
    wait_for("the snapshot", FIRST_SNAPSHOT, || async {
        lake_rows(&d.lake, "lost.public.t").len() == 1
    })
    .await;
    assert!(d.terminate().success());
    client
        .execute("SELECT pg_drop_replication_slot('sluice_lost')", &[])
        .await
        .unwrap();
    let out = d
        .command(&["run", "--config", d.config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("replication slot `sluice_lost` is gone")
            && text.contains("snapshot: initial"),
        "{text}"
    );
    assert!(
        db.slots().await.is_empty(),
        "sluice must not silently make a new slot and start from now"
    );
}

/// TLS on both connections, with Debian's snakeoil certificate as the CA (its name is the
/// machine's hostname, not 127.0.0.1, so verify-full must refuse it). The password comes from
/// a file.
#[tokio::test(flavor = "multi_thread")]
async fn tls_modes_and_password_file() {
    const CA: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let db = TestDb::create("sluice_it_tls").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let url_without_password = db.url.replace("sluice:sluice@", "sluice@");
    let mut d = Daemon::configure(
        "tls",
        &url_without_password,
        &["public.t"],
        "{ rows: 1000, interval: 200ms }",
    );
    let secret = d.dir.path().join("pg-password");
    std::fs::write(&secret, "sluice\n").unwrap();
    let source = d.dir.path().join("sources/tls.yaml");
    let base = std::fs::read_to_string(&source).unwrap();
    let with_tls = |mode: &str| {
        format!(
            "{base}password_file: {}\ntls: {{ mode: {mode}, ca_file: {CA} }}\n",
            secret.display()
        )
    };

    std::fs::write(&source, with_tls("verify-full")).unwrap();
    let (out_passed, text) = d.check();
    assert!(
        !out_passed && text.contains("cannot connect"),
        "verify-full must refuse a certificate for another name: {text}"
    );

    std::fs::write(&source, with_tls("verify-ca")).unwrap();
    d.start();
    let ok = wait_until(FIRST_SNAPSHOT, || async {
        lake_rows(&d.lake, "tls.public.t").len() == 1
    })
    .await;
    assert!(ok, "the snapshot over TLS:\n{}", d.log());
    client
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap();
    wait_for("a change over TLS", Duration::from_secs(30), || async {
        lake_rows(&d.lake, "tls.public.t").len() == 2
    })
    .await;
    let encrypted = client
        .query(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
             WHERE a.datname = 'sluice_it_tls' AND (a.application_name = 'sluice' OR a.backend_type = 'walsender')",
            &[],
        )
        .await
        .unwrap();
    assert!(
        encrypted.len() >= 2,
        "the SQL and the replication connection: {encrypted:?}"
    );
    assert!(
        encrypted.iter().all(|r| r.get::<_, bool>(1)),
        "every sluice connection is encrypted"
    );
    assert!(
        encrypted
            .iter()
            .any(|r| r.get::<_, String>(0) == "walsender")
    );
    assert!(d.terminate().success(), "{}", d.log());
}

/// Tables without a single integer key are read whole (committed when complete); composite and
/// text keys work through snapshot, stream and a kill in the middle.
#[tokio::test(flavor = "multi_thread")]
async fn composite_and_text_keys_through_snapshot_stream_and_kill() {
    let db = TestDb::create("sluice_it_keys").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE pairs (a text, b int, v int, PRIMARY KEY (a, b));
             INSERT INTO pairs SELECT 'k' || (g % 50), g, 0 FROM generate_series(1, 20000) g;
             CREATE TABLE codes (code uuid PRIMARY KEY, v int);
             INSERT INTO codes SELECT md5(g::text)::uuid, g FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "keys",
        &db.url,
        &["public.pairs", "public.codes"],
        "{ rows: 1000, interval: 100ms }",
    );
    d.start();
    tokio::time::sleep(Duration::from_millis(400)).await;
    d.kill9();
    client
        .batch_execute(
            "UPDATE pairs SET v = 1 WHERE b % 7 = 0; DELETE FROM codes WHERE v % 10 = 0;",
        )
        .await
        .unwrap();
    d.start();
    let pairs_cols = ["a", "b", "v"];
    let want_pairs: BTreeMap<String, Vec<Option<String>>> =
        table_state(&client, "pairs", &["a || '/' || b", "a", "b", "v"])
            .await
            .into_iter()
            .map(|(k, v)| (k, v[1..].to_vec()))
            .collect();
    let want_codes = table_state(&client, "codes", &["code", "v"]).await;
    let converged = wait_until(Duration::from_secs(60), || async {
        let pairs: BTreeMap<String, Vec<Option<String>>> = {
            let mut state = BTreeMap::new();
            for r in lake_rows(&d.lake, "keys.public.pairs") {
                let key = format!(
                    "{}/{}",
                    r.values["a"].clone().unwrap(),
                    r.values["b"].clone().unwrap()
                );
                if r.op == "d" {
                    state.remove(&key);
                } else {
                    state.insert(
                        key,
                        pairs_cols.iter().map(|c| r.values[*c].clone()).collect(),
                    );
                }
            }
            state
        };
        pairs == want_pairs
            && state_from_log(
                &lake_rows(&d.lake, "keys.public.codes"),
                "code",
                &["code", "v"],
            ) == want_codes
    })
    .await;
    assert!(converged, "composite and uuid keys converge:\n{}", d.log());
    let rows = lake_rows(&d.lake, "keys.public.pairs");
    assert_eq!(
        rows.iter().filter(|r| r.op == "r").count(),
        20000,
        "a whole-table snapshot lands once, even when killed midway"
    );
    assert!(d.terminate().success());
}
