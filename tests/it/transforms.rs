//! Cleansing transforms end to end: the repository's example transforms (transforms/*.sql) on a
//! real Postgres, through snapshot, inserts, updates that move rows in and out of the WHERE,
//! deletes with REPLICA IDENTITY DEFAULT (key-only), a poison row and kill -9. The cleansed
//! zone's current state must equal the same SELECT run by Postgres on the source tables, the
//! poison row must be in the dead-letter zone with its reason, and its neighbours cleansed. The
//! MariaDB example (clean.products) gets the same treatment against the real MariaDB.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

type State = BTreeMap<String, Vec<Option<String>>>;

/// The current state of a cleansed stream from its change log.
fn cleansed_state(d: &Daemon, stream: &str, cols: &[&str]) -> State {
    state_from_log(&zone_rows(&d.lake, "cleansed", stream), cols[0], cols)
}

/// Each example transform, its output columns, and the same view in Postgres's SQL (values as
/// the lake renders them: timestamps in epoch microseconds, decimals at their scale).
struct View {
    stream: &'static str,
    columns: &'static [&'static str],
    table: &'static str,
    postgres: &'static [&'static str],
    filter: &'static str,
}

const MICROS: &str = "(extract(epoch FROM {}) * 1000000)::bigint";

fn views() -> Vec<View> {
    vec![
        View {
            stream: "clean.orders",
            columns: &["id", "customer_id", "amount", "status", "placed_at_utc"],
            table: "orders",
            postgres: &[
                "id",
                "customer_id",
                "amount::numeric(12,2)",
                "lower(trim(status))",
                "placed_at",
            ],
            filter: "status <> 'test'",
        },
        View {
            stream: "clean.customers",
            columns: &["id", "email_sha256", "email_masked", "created_day"],
            table: "customers",
            postgres: &[
                "id",
                "encode(sha256(convert_to(lower(email), 'UTF8')), 'hex')",
                "regexp_replace(email, '^[^@]+', '***')",
                "date_trunc('day', created AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
            ],
            filter: "true",
        },
        View {
            stream: "clean.purchases",
            columns: &["id", "sku", "price", "customer_id", "at"],
            table: "events",
            postgres: &[
                "id",
                "payload->>'sku'",
                "(payload->>'price')::numeric(10,2)",
                "(payload->'customer'->>'id')::bigint",
                "at",
            ],
            // Rows whose price is no number cannot be in the view: they are dead letters.
            filter: "kind = 'purchase' AND payload->>'price' ~ '^[0-9]+(\\.[0-9]+)?$'",
        },
        View {
            stream: "clean.page_views",
            columns: &["id", "page", "referrer", "at"],
            table: "events",
            postgres: &[
                "id",
                "lower(payload->>'page')",
                "payload->>'referrer'",
                "at",
            ],
            filter: "kind = 'page_view'",
        },
    ]
}

async fn view_state(client: &tokio_postgres::Client, v: &View) -> State {
    let exprs: Vec<String> = v
        .postgres
        .iter()
        .map(|e| {
            let is_time = ["placed_at", "at"].contains(e) || e.starts_with("date_trunc");
            if is_time {
                MICROS.replace("{}", e)
            } else {
                e.to_string()
            }
        })
        .collect();
    let exprs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    table_state(client, &format!("{} WHERE {}", v.table, v.filter), &exprs).await
}

/// Every example view's cleansed state equals Postgres's answer.
async fn all_equal(lake: &Path, client: &tokio_postgres::Client) -> bool {
    for v in views() {
        let want = view_state(client, &v).await;
        let rows = zone_rows(lake, "cleansed", v.stream);
        if state_from_log(&rows, v.columns[0], v.columns) != want {
            return false;
        }
    }
    true
}

/// Copy the repository's example transforms that read `from_prefix` (e.g. `shop.public.`),
/// reading `to_prefix` instead (the test's own database).
fn copy_example_transforms(d: &Daemon, from_prefix: &str, to_prefix: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("transforms");
    let to = d.dir.path().join("transforms");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let sql = std::fs::read_to_string(entry.path()).unwrap();
        if sql.contains(&format!("FROM {from_prefix}")) {
            std::fs::write(
                to.join(entry.file_name()),
                sql.replace(from_prefix, to_prefix),
            )
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn example_transforms_cleansed_state_equals_the_view_on_the_source() {
    let db = TestDb::create("sluice_it_transforms").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, created timestamptz DEFAULT now());
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, amount numeric(12,2), status text,
                                  placed_at timestamp(6) DEFAULT now()::timestamp);
             CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb, at timestamptz DEFAULT now());
             ALTER TABLE customers REPLICA IDENTITY FULL; -- full before images; the others send keys only
             INSERT INTO customers SELECT g, 'User' || g || '@Example.com' FROM generate_series(1, 200) g;
             INSERT INTO orders SELECT g, 1 + g % 200, g * 1.25, CASE WHEN g % 7 = 0 THEN 'test' ELSE ' New ' END
               FROM generate_series(1, 2000) g;
             INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'purchase' ELSE 'page_view' END,
               CASE WHEN g % 2 = 0 THEN jsonb_build_object('sku', 'S' || g, 'price', (g * 0.5)::text, 'customer', jsonb_build_object('id', g % 50))
                    ELSE jsonb_build_object('page', '/P/' || g, 'referrer', 'ad') END
               FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let mut d = Daemon::configure(
        "shop",
        &db.url,
        &["public.orders", "public.customers", "public.events"],
        "{ rows: 500, interval: 200ms }",
    );
    // The slot name must not clash with the demo's (`sluice_shop`) on the shared server.
    let source = d.dir.path().join("sources/shop.yaml");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(
        &source,
        format!("{text}slot: sluice_it_transforms\npublication: sluice_it_transforms\n"),
    )
    .unwrap();
    copy_example_transforms(&d, "shop.public.", "shop.public.");
    d.add_sink_settings(&["zones: [raw, cleansed, ods]", "ods_interval: 300ms"]);

    let (passed, text) = d.check();
    assert!(passed, "sluice check: {text}");
    d.start();

    wait_for("the cleansed snapshot", Duration::from_secs(60), || {
        all_equal(&d.lake, &client)
    })
    .await;

    // Changes in rounds, with kill -9 between some of them.
    for round in 0..6 {
        let base = 10_000 + round * 100;
        client
            .batch_execute(&format!(
                "UPDATE orders SET status = 'test' WHERE id % 11 = {round};          -- leave the view
                 UPDATE orders SET status = 'Paid' WHERE id % 7 = 0 AND id % 3 = {round} % 3; -- enter it
                 UPDATE orders SET amount = amount + 1 WHERE id % 13 = {round};
                 UPDATE orders SET id = id + 100000 WHERE id = {round} * 5 + 1;      -- key change
                 DELETE FROM orders WHERE id % 17 = {round};
                 INSERT INTO orders SELECT g, 1, 3.5, CASE WHEN g % 2 = 0 THEN 'test' ELSE 'new' END
                   FROM generate_series({base}, {base} + 40) g;
                 UPDATE customers SET email = 'Renamed' || id || '@x.org' WHERE id % 9 = {round};
                 DELETE FROM customers WHERE id = 150 + {round};
                 UPDATE events SET kind = CASE kind WHEN 'purchase' THEN 'page_view' ELSE 'purchase' END,
                                   payload = CASE kind WHEN 'purchase' THEN '{{\"page\": \"/Moved\"}}'::jsonb
                                                       ELSE '{{\"sku\": \"M\", \"price\": \"2.50\"}}'::jsonb END
                   WHERE id % 19 = {round};
                 INSERT INTO events VALUES ({base}, 'purchase', '{{\"sku\": \"ok-before\", \"price\": \"1.00\"}}'),
                                           ({base} + 1, 'purchase', '{{\"sku\": \"poison\", \"price\": \"one euro\"}}'),
                                           ({base} + 2, 'purchase', '{{\"sku\": \"ok-after\", \"price\": \"3.00\"}}');
                 DELETE FROM events WHERE id % 23 = {round};"
            ))
            .await
            .unwrap();
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(150 + 70 * round as u64)).await;
            d.kill9();
            d.start();
        }
    }
    wait_for(
        "the cleansed state to equal the views",
        Duration::from_secs(90),
        || all_equal(&d.lake, &client),
    )
    .await;

    // No cleansed change was written twice across the kills.
    for v in views() {
        let rows = zone_rows(&d.lake, "cleansed", v.stream);
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            let id = r.values[v.columns[0]].clone();
            assert!(
                seen.insert((r.seq.clone(), id.clone(), r.op.clone())),
                "{}: change {} of key {id:?} written twice",
                v.stream,
                r.seq
            );
        }
    }

    // Each poison row is a dead letter with its reason; its neighbours are cleansed.
    let dead = zone_rows(&d.lake, "dlq", "dlq.purchases");
    assert_eq!(dead.len(), 6, "one poison row per round");
    for r in &dead {
        assert_eq!(r.values["transform"].as_deref(), Some("clean.purchases"));
        assert_eq!(
            r.values["raw_stream"].as_deref(),
            Some("shop.public.events")
        );
        let error = r.values["error"].clone().unwrap();
        assert!(
            error.contains("one euro") || error.to_lowercase().contains("cast"),
            "{error}"
        );
        let record: serde_json::Value =
            serde_json::from_str(r.values["record"].as_deref().unwrap()).unwrap();
        assert!(
            record["after"]["payload"]
                .as_str()
                .unwrap()
                .contains("poison")
        );
    }
    let purchases = cleansed_state(&d, "clean.purchases", &["id", "sku"]);
    assert_eq!(purchases["10000"][1].as_deref(), Some("ok-before"));
    assert_eq!(purchases["10002"][1].as_deref(), Some("ok-after"));

    // The ODS of a cleansed stream is its current state too.
    let orders = views().remove(0);
    let want = view_state(&client, &orders).await;
    wait_for(
        "the ODS of clean.orders",
        Duration::from_secs(30),
        || async { ods_state(&d, orders.stream, orders.columns) == want },
    )
    .await;
    assert_eq!(d.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_bad_transforms_with_file_line_and_reason() {
    let db = TestDb::create("sluice_it_transforms_check").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let d = Daemon::configure("chk", &db.url, &["public.t"], "{ rows: 10 }");
    d.add_sink_settings(&["zones: [raw, cleansed]"]);
    let dir = d.dir.path().join("transforms");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "unknown_column.sql",
            "CREATE STREAM c.a AS\nSELECT id, nope\nFROM chk.public.t;",
            "unknown_column.sql:2",
            "nope",
        ),
        (
            "join.sql",
            "CREATE STREAM c.b AS\nSELECT t.id FROM chk.public.t\nJOIN chk.public.t u ON t.id = u.id;",
            "join.sql:3",
            "JOIN is not allowed",
        ),
        (
            "unknown_stream.sql",
            "CREATE STREAM c.c AS\nSELECT id FROM chk.public.missing;",
            "unknown_stream.sql:2",
            "unknown stream",
        ),
        (
            "type_error.sql",
            "CREATE STREAM c.d AS\nSELECT id FROM chk.public.t WHERE v + 1;",
            "type_error.sql:2",
            "",
        ),
    ];
    for (file, sql, _, _) in &cases {
        std::fs::write(dir.join(file), sql).unwrap();
    }
    // Static problems (join, unknown stream) are reported by the loader, all at once.
    let (passed, text) = d.check();
    assert!(!passed);
    for (_, _, location, words) in &cases[1..3] {
        assert!(text.contains(location.split(':').next().unwrap()), "{text}");
        assert!(text.contains(words), "{words}: {text}");
    }
    assert!(text.contains("line 3") && text.contains("line 2"), "{text}");
    // With those fixed, the planner finds the unknown column and the type error against the
    // live table.
    std::fs::remove_file(dir.join("join.sql")).unwrap();
    std::fs::remove_file(dir.join("unknown_stream.sql")).unwrap();
    let (passed, text) = d.check();
    assert!(!passed, "{text}");
    assert!(
        text.contains("unknown_column.sql:2") && text.contains("nope"),
        "{text}"
    );
    assert!(text.contains("type_error.sql:2"), "{text}");
}

#[test]
fn transform_test_runs_a_transform_on_recorded_debezium_events() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("bench.sql");
    std::fs::write(
        &sql,
        "CREATE STREAM clean.bench AS\nSELECT id, upper(name) AS name, CAST(price AS DECIMAL(14, 1)) AS price\nFROM pg.public.bench WHERE i32 > 6;",
    )
    .unwrap();
    // The real Debezium 3.6 records of the benchmark table, as a topic dump shows them.
    let samples: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/debezium/pg-schemas-events.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut lines: Vec<String> = ["c", "u", "d"]
        .iter()
        .map(|op| {
            serde_json::json!({"key": samples[op]["key"], "value": samples[op]["value"]})
                .to_string()
        })
        .collect();
    lines.push("{not json".into());
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "transform",
            "test",
            sql.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = outputs
        .iter()
        .map(|o| o["op"].as_str().unwrap_or("-"))
        .collect();
    // Insert, update and delete pass the WHERE (i32 7, 7 → 8, 6307); the garbage line is a dead
    // letter.
    assert_eq!(ops, vec!["c", "u", "d", "-"], "{outputs:?}");
    let garbage = outputs.last().unwrap();
    assert_eq!(garbage["stream"], "dlq.clean.bench");
    assert!(garbage["error"].as_str().unwrap().contains("line 4"));
    for o in outputs.iter().filter(|o| o["stream"] == "clean.bench") {
        assert_eq!(
            o["key"].as_object().unwrap().keys().collect::<Vec<_>>(),
            vec!["id"]
        );
        let image = if o["op"] == "d" {
            &o["value"]["before"]
        } else {
            &o["value"]["after"]
        };
        let name = image["name"].as_str().unwrap();
        assert_eq!(name, name.to_uppercase());
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("clean.bench:"));
}

/// clean.products (transforms/clean.products.sql) on the real MariaDB, loaded with the sample
/// inventory database: rows moving in and out of the WHERE, updates of latin1 names and JSON
/// attributes, deletes, one poison row per round (a weight that is no number), and kill -9.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_changes_through_the_example_transform_equal_the_view() {
    use common::mysql::*;
    let db = MyDb::create("sluice_it_my_transforms").await;
    let mut conn = db.conn().await;
    let init = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compose/mysql-init.sql"),
    )
    .unwrap();
    let init: String = init
        .lines()
        .filter(|l| !l.starts_with("GRANT"))
        .collect::<Vec<_>>()
        .join("\n");
    my_exec(&mut conn, &init).await;
    let mut d = Daemon::configure_mysql(
        "store",
        &db.url,
        &["sluice_it_my_transforms.products"],
        "{ rows: 500, interval: 200ms }",
    );
    copy_example_transforms(&d, "store.inventory.", "store.sluice_it_my_transforms.");
    d.add_sink_settings(&["zones: [raw, cleansed, ods]", "ods_interval: 300ms"]);
    let (passed, text) = d.check();
    assert!(passed, "sluice check: {text}");
    d.start();

    // The view in MariaDB's SQL, values as the lake renders them.
    let columns = [
        "id",
        "sku",
        "name",
        "price",
        "stock",
        "color",
        "weight_g",
        "updated_at",
    ];
    let exprs = [
        "id",
        "sku",
        "UPPER(TRIM(name))",
        "price",
        "stock",
        "JSON_VALUE(attrs, '$.color')",
        "CAST(JSON_VALUE(attrs, '$.weight_g') AS SIGNED)",
        "CAST(UNIX_TIMESTAMP(updated_at) * 1000000 AS SIGNED)",
    ];
    let view =
        "products WHERE discontinued = 0 AND JSON_VALUE(attrs, '$.weight_g') REGEXP '^[0-9]+$'";
    let equal = |d: &Daemon, want: &State| {
        state_from_log(
            &zone_rows(&d.lake, "cleansed", "clean.products"),
            "id",
            &columns,
        ) == *want
    };
    let want = my_table_state(&mut conn, view, &exprs).await;
    let ok = wait_until(Duration::from_secs(60), || async { equal(&d, &want) }).await;
    assert!(ok, "the cleansed snapshot:\n{}", d.log());

    for round in 0..4u32 {
        let base = 1000 + round * 10;
        my_exec(
            &mut conn,
            &format!(
                "UPDATE products SET discontinued = NOT discontinued WHERE id % 13 = {round};
                 UPDATE products SET name = CONCAT(' café ', id), price = price + 0.5 WHERE id % 7 = {round};
                 UPDATE products SET attrs = JSON_SET(attrs, '$.color', 'black') WHERE id % 5 = {round};
                 DELETE FROM products WHERE id % 19 = {round};
                 INSERT INTO products (id, sku, name, price, stock, attrs) VALUES
                   ({base}, 'OK-BEFORE', 'before', 1.00, 1, '{{\"color\": \"red\", \"weight_g\": \"5\"}}'),
                   ({base} + 1, 'POISON', 'poison', 2.00, 2, '{{\"color\": \"red\", \"weight_g\": \"heavy\"}}'),
                   ({base} + 2, 'OK-AFTER', 'after', 3.00, 3, '{{\"color\": \"red\", \"weight_g\": \"7\"}}')"
            ),
        )
        .await;
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(200 + 90 * round as u64)).await;
            d.kill9();
            d.start();
        }
    }
    let want = my_table_state(&mut conn, view, &exprs).await;
    let ok = wait_until(Duration::from_secs(90), || async { equal(&d, &want) }).await;
    assert!(ok, "the cleansed state equals the view:\n{}", d.log());
    // Every change of a poison row is a dead letter (later rounds update some of them too).
    let dead = zone_rows(&d.lake, "dlq", "dlq.products");
    let poisoned: std::collections::BTreeSet<String> = dead
        .iter()
        .map(|r| {
            let record: serde_json::Value =
                serde_json::from_str(r.values["record"].as_deref().unwrap()).unwrap();
            // BIGINT UNSIGNED is a Decimal(20,0): Debezium's base64 big-endian unscaled bytes.
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(record["after"]["id"].as_str().unwrap())
                .unwrap();
            bytes
                .iter()
                .fold(0u64, |n, b| n << 8 | *b as u64)
                .to_string()
        })
        .collect();
    assert_eq!(
        poisoned.into_iter().collect::<Vec<_>>(),
        ["1001", "1011", "1021", "1031"],
        "one poison row per round"
    );
    for r in &dead {
        assert_eq!(r.values["transform"].as_deref(), Some("clean.products"));
        assert_eq!(
            r.values["raw_stream"].as_deref(),
            Some("store.sluice_it_my_transforms.products")
        );
        let record: serde_json::Value =
            serde_json::from_str(r.values["record"].as_deref().unwrap()).unwrap();
        assert_eq!(record["after"]["sku"], "POISON");
        assert_eq!(record["source"]["connector"], "mariadb");
    }
    let state = state_from_log(
        &zone_rows(&d.lake, "cleansed", "clean.products"),
        "id",
        &columns,
    );
    assert_eq!(state["1000"][1].as_deref(), Some("OK-BEFORE"));
    assert_eq!(state["1012"][1].as_deref(), Some("OK-AFTER"));
    assert!(
        state
            .values()
            .any(|r| r[2].as_deref().is_some_and(|n| n.starts_with("CAFÉ")))
    );
    wait_until(Duration::from_secs(30), || async {
        ods_state(&d, "clean.products", &columns) == want
    })
    .await;
    assert_eq!(
        ods_state(&d, "clean.products", &columns),
        want,
        "the ODS of clean.products"
    );
    let st = d.terminate();
    assert_eq!(st.code(), Some(0), "{st:?}\n{}", d.log());
}
