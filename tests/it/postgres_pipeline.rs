//! End to end against the real Postgres (scripts/services.sh up postgres): snapshot of existing
//! tables, then inserts, updates, deletes and a truncate, read back from the Parquet files in Rust
//! and with pyarrow, and compared row for row with the tables. Also: the slot's confirmed
//! position follows the lake's commits, and a restart resumes without duplicates.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;

const ITEMS: &str = "CREATE TABLE items (
    id bigint PRIMARY KEY, i int, s smallint, name varchar(64), descr text, price numeric(12,2),
    ratio double precision, r real, created timestamp(6), updated timestamptz, flag boolean,
    payload jsonb, d date, t time, u uuid, b bytea)";

const ITEMS_INSERT: &str = "INSERT INTO items
    SELECT g, g * 7, (g % 100)::smallint, 'name-' || g, repeat('x', (g % 50)::int), g * 1.25,
           g / 4.0, (g % 8) / 4.0, timestamp '2024-01-01 00:00:00' + g * interval '1.000001 second',
           CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2024-06-01 12:00:00+00' + g * interval '1 ms' END,
           g % 2 = 0, jsonb_build_object('k', g, 'tags', jsonb_build_array('a', 'b')),
           date '2020-01-01' + g::int, time '00:00:00' + (g % 50000) * interval '1.5 second',
           md5(g::text)::uuid, decode(lpad(to_hex(g), 8, '0'), 'hex')
    FROM generate_series($1::bigint, $2::bigint) g";

/// Canonical text of each column, matching `common::render` on the lake side.
const ITEMS_EXPRS: &[&str] = &[
    "id",
    "i",
    "s",
    "name",
    "descr",
    "price",
    "ratio",
    "r",
    "(extract(epoch from created) * 1000000)::bigint",
    "(extract(epoch from updated) * 1000000)::bigint",
    "flag",
    "payload",
    "d - date '1970-01-01'",
    "(extract(epoch from t) * 1000000)::bigint",
    "u",
    "encode(b, 'hex')",
];
const ITEMS_COLS: &[&str] = &[
    "id", "i", "s", "name", "descr", "price", "ratio", "r", "created", "updated", "flag",
    "payload", "d", "t", "u", "b",
];

async fn lake_equals_table(
    d: &Daemon,
    client: &tokio_postgres::Client,
    stream: &str,
    table: &str,
    exprs: &[&str],
    cols: &[&str],
) -> bool {
    let lake = state_from_log(&lake_rows(&d.lake, stream), cols[0], cols);
    let want = table_state(client, table, exprs).await;
    lake == want
}

async fn items_match(d: &Daemon, client: &tokio_postgres::Client) -> bool {
    lake_equals_table(
        d,
        client,
        "pgt.public.items",
        "items",
        ITEMS_EXPRS,
        ITEMS_COLS,
    )
    .await
}

fn op_counts(rows: &[LakeRow]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.op.clone()).or_default() += 1;
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn latest_committed_lsn(lake: &std::path::Path) -> Option<u64> {
    let dir = lake.join("_sluice/commits");
    let latest = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .max()?;
    let commit: serde_json::Value = serde_json::from_slice(&std::fs::read(latest).ok()?).ok()?;
    commit["positions"]["pgt"]["lsn"].as_u64()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_changes_land_in_the_lake_exactly() {
    let db = TestDb::create("sluice_it_pipeline").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    client
        .execute(ITEMS_INSERT, &[&1i64, &300i64])
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE audit (id int PRIMARY KEY, what text);
                        INSERT INTO audit SELECT g, 'before-' || g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();

    let mut d = Daemon::configure(
        "pgt",
        &db.url,
        &["public.items", "public.audit"],
        "{ rows: 100, interval: 500ms }",
    );
    d.start();
    let audit_cols = ["id", "what"];
    wait_for(
        "the snapshot in the lake",
        Duration::from_secs(60),
        || async {
            lake_rows(&d.lake, "pgt.public.items").len() == 300
                && lake_rows(&d.lake, "pgt.public.audit").len() == 10
        },
    )
    .await;

    // Changes of every kind, in several transactions.
    client
        .execute(ITEMS_INSERT, &[&301i64, &400i64])
        .await
        .unwrap();
    client
        .batch_execute(
            "UPDATE items SET price = price + 0.01, name = 'renamed-' || id, updated = now(), payload = '{\"u\": true}' WHERE id <= 50;
             UPDATE items SET descr = NULL, flag = NULL WHERE id BETWEEN 51 AND 60;
             DELETE FROM items WHERE id BETWEEN 381 AND 400;
             BEGIN; UPDATE items SET i = -i WHERE id = 7; UPDATE items SET i = 0 WHERE id = 7; COMMIT;
             UPDATE items SET id = id + 1000 WHERE id = 100; -- a key change: delete and create
             TRUNCATE audit;
             INSERT INTO audit VALUES (100, 'after-1'), (101, 'after-2'), (102, 'after-3');",
        )
        .await
        .unwrap();

    wait_for(
        "the lake to equal the tables",
        Duration::from_secs(60),
        || async {
            items_match(&d, &client).await
                && lake_equals_table(
                    &d,
                    &client,
                    "pgt.public.audit",
                    "audit",
                    &["id", "what"],
                    &audit_cols,
                )
                .await
        },
    )
    .await;

    let items = lake_rows(&d.lake, "pgt.public.items");
    assert_eq!(
        op_counts(&items),
        counts(&[("r", 300), ("c", 101), ("u", 62), ("d", 21)])
    );
    let audit = lake_rows(&d.lake, "pgt.public.audit");
    assert_eq!(op_counts(&audit), counts(&[("r", 10), ("t", 1), ("c", 3)]));
    assert!(
        parquet_files(&d.lake.join("raw/pgt.public.items")).len() >= 3,
        "rotation by rows makes several files"
    );

    // The slot is acknowledged up to what the lake committed, and no further.
    wait_for(
        "the slot to confirm the committed position",
        Duration::from_secs(20),
        || async {
            let committed = latest_committed_lsn(&d.lake).unwrap_or(0);
            let slots = db.slots().await;
            let confirmed = slots
                .iter()
                .find(|(n, _)| n == "sluice_pgt")
                .and_then(|(_, l)| l.clone())
                .map(|l| lsn(&l));
            confirmed.is_some_and(|c| c == committed && committed > 0)
        },
    )
    .await;

    let status = d
        .command(&["status", "--addr", &d.metrics_addr])
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status_text}");
    assert!(
        status_text.contains("pgt")
            && status_text.contains("streaming")
            && status_text.contains("pipeline: running")
            && status_text.contains("pgt.public.items"),
        "{status_text}"
    );
    let metrics = d.metrics();
    assert!(
        metrics.contains(
            "sluice_source_events_total{source=\"pgt\",table=\"pgt.public.items\",op=\"c\"} 101"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_sink_commits_total"), "{metrics}");
    assert_eq!(
        http_get(&d.metrics_addr, "/healthz").as_deref(),
        Some("ok\n")
    );

    let status = d.terminate();
    assert!(
        status.success(),
        "SIGTERM must drain and exit 0: {status:?}\n{}",
        d.log()
    );

    // A restart resumes where the lake ends: new changes once, nothing replayed twice.
    d.start();
    client
        .batch_execute("UPDATE items SET s = 1 WHERE id <= 5; DELETE FROM items WHERE id = 6;")
        .await
        .unwrap();
    wait_for(
        "the changes after the restart",
        Duration::from_secs(60),
        || async { items_match(&d, &client).await },
    )
    .await;
    let items = lake_rows(&d.lake, "pgt.public.items");
    assert_eq!(
        op_counts(&items),
        counts(&[("r", 300), ("c", 101), ("u", 67), ("d", 22)])
    );
    assert!(d.terminate().success());

    // An independent reader: pyarrow rebuilds the state and compares it with the tables.
    for (stream, table, key) in [
        ("pgt.public.items", "items", "id"),
        ("pgt.public.audit", "audit", "id"),
    ] {
        let out = std::process::Command::new(python())
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/lake_vs_table.py"),
                d.lake.to_str().unwrap(),
                stream,
                &db.url,
                table,
                key,
            ])
            .output()
            .expect("run python (scripts/services.sh up python)");
        assert!(
            out.status.success(),
            "pyarrow comparison failed for {table}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
