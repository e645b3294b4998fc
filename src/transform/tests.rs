//! The changelog-view semantics, op by op, with DataFusion evaluating real SQL.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::event::{ChangeOrigin, ColumnType, Row, Seq};

fn raw_table() -> Arc<TableSchema> {
    crate::event::test_table(
        ("shop", "public", "orders"),
        &[
            ("id", ColumnType::Int64, true),
            ("status", ColumnType::Text, false),
            ("email", ColumnType::Text, false),
            ("amount", ColumnType::Text, false),
        ],
    )
}

fn row(id: i64, status: &str, email: &str, amount: &str) -> Row {
    vec![
        Value::Int(id),
        Value::Text(status.into()),
        Value::Text(email.into()),
        Value::Text(amount.into()),
    ]
}

fn key_only(id: i64) -> Row {
    vec![Value::Int(id), Value::Null, Value::Null, Value::Null]
}

fn event(op: Op, before: Option<Row>, after: Option<Row>, seq: u64) -> ChangeEvent {
    ChangeEvent {
        table: raw_table(),
        op,
        before,
        after,
        partial_before: false,
        seq: Seq::new(seq, 0),
        commit_ts_us: 1_700_000_000_000_000,
        pos: ChangeOrigin::PgLsn {
            lsn: seq,
            commit_lsn: seq,
        },
        tx_id: Some(7),
        snapshot: false,
    }
}

const ORDERS: &str = "CREATE STREAM clean.orders AS\nSELECT id, upper(email) AS email, CAST(amount AS INT) AS amount\nFROM shop.public.orders\nWHERE status <> 'test';";

fn compiled(sql: &str) -> Compiled {
    let def = definition::parse(Path::new("t.sql"), sql).expect("parses");
    plan::compile(&def, &raw_table()).expect("plans")
}

/// What a run of raw events became, its output events as rows.
struct Applied {
    cleansed: Vec<ChangeEvent>,
    dead: Vec<(ChangeEvent, String)>,
    filtered: u64,
}

/// Run `t` on `events`. Every case also checks that the lake's record batch, built from the
/// projection's arrays, is the one the output events as rows give.
fn apply(t: &Compiled, events: &[ChangeEvent]) -> Applied {
    let out = t.apply(events);
    let cleansed = out.cleansed.to_events().expect("rows of the projection");
    let schema = crate::lake::parquet::arrow_schema(&t.output);
    let from_arrays = out.cleansed.to_record_batch(&schema).expect("a batch");
    let from_rows = crate::lake::parquet::to_record_batch(&schema, &t.output, &cleansed).unwrap();
    assert_eq!(from_arrays, from_rows);
    Applied {
        cleansed,
        dead: out.dead,
        filtered: out.filtered,
    }
}

/// (op, before id, after id) of each output event.
fn ops(events: &[ChangeEvent]) -> Vec<(&'static str, Option<i64>, Option<i64>)> {
    let id = |r: &Option<Row>| match r.as_ref().map(|r| r[0].clone()) {
        Some(Value::Int(i)) => Some(i),
        _ => None,
    };
    events
        .iter()
        .map(|e| (e.op.code(), id(&e.before), id(&e.after)))
        .collect()
}

#[test]
fn inserts_and_snapshot_rows_pass_or_vanish() {
    let t = compiled(ORDERS);
    let out = apply(
        &t,
        &[
            event(Op::Read, None, Some(row(1, "new", "a@x", "5")), 1),
            event(Op::Read, None, Some(row(2, "test", "b@x", "5")), 2),
            event(Op::Create, None, Some(row(3, "new", "c@x", "7")), 3),
            event(Op::Create, None, Some(row(4, "test", "d@x", "7")), 4),
        ],
    );
    assert_eq!(
        ops(&out.cleansed),
        vec![("r", None, Some(1)), ("c", None, Some(3))]
    );
    assert_eq!(out.filtered, 2);
    let first = out.cleansed[0].after.as_ref().unwrap();
    assert_eq!(
        first,
        &vec![Value::Int(1), Value::Text("A@X".into()), Value::Int(5)]
    );
    assert_eq!(out.cleansed[0].table.stream, "clean.orders");
    assert_eq!(out.cleansed[0].seq, Seq::new(1, 0));
}

#[test]
fn updates_with_full_before_image_follow_the_view() {
    let t = compiled(ORDERS);
    let live = |id| row(id, "new", "e@x", "1");
    let test = |id| row(id, "test", "e@x", "1");
    let out = apply(
        &t,
        &[
            event(Op::Update, Some(live(1)), Some(live(1)), 1), // both pass → u
            event(Op::Update, Some(test(2)), Some(live(2)), 2), // only after → c
            event(Op::Update, Some(live(3)), Some(test(3)), 3), // only before → d
            event(Op::Update, Some(test(4)), Some(test(4)), 4), // neither → nothing
            event(Op::Update, Some(live(5)), Some(live(6)), 5), // key changed → d + c
        ],
    );
    assert_eq!(
        ops(&out.cleansed),
        vec![
            ("u", Some(1), Some(1)),
            ("c", None, Some(2)),
            ("d", Some(3), None),
            ("d", Some(5), None),
            ("c", None, Some(6)),
        ]
    );
    assert_eq!(out.filtered, 1);
}

#[test]
fn deletes_follow_the_before_image_or_delete_the_key() {
    let t = compiled(ORDERS);
    let mut partial = event(Op::Delete, Some(key_only(3)), None, 3);
    partial.partial_before = true;
    let out = apply(
        &t,
        &[
            event(Op::Delete, Some(row(1, "new", "a", "1")), None, 1),
            event(Op::Delete, Some(row(2, "test", "a", "1")), None, 2),
            partial,
        ],
    );
    assert_eq!(
        ops(&out.cleansed),
        vec![("d", Some(1), None), ("d", Some(3), None)]
    );
}

#[test]
fn updates_without_before_image_upsert_or_delete_the_key() {
    let t = compiled(ORDERS);
    let mut key_change = event(
        Op::Update,
        Some(key_only(3)),
        Some(row(4, "new", "a", "1")),
        3,
    );
    key_change.partial_before = true;
    let out = apply(
        &t,
        &[
            event(Op::Update, None, Some(row(1, "new", "a", "1")), 1),
            event(Op::Update, None, Some(row(2, "test", "a", "1")), 2),
            key_change,
        ],
    );
    assert_eq!(
        ops(&out.cleansed),
        vec![
            ("u", None, Some(1)),
            ("d", Some(2), None),
            ("d", Some(3), None),
            ("u", None, Some(4)),
        ]
    );
    // The key-only delete carries no values but the key.
    assert_eq!(
        out.cleansed[1].before.as_ref().unwrap(),
        &vec![Value::Int(2), Value::Null, Value::Null]
    );
}

#[test]
fn truncate_passes_through() {
    let out = apply(&compiled(ORDERS), &[event(Op::Truncate, None, None, 1)]);
    assert_eq!(ops(&out.cleansed), vec![("t", None, None)]);
}

#[test]
fn a_poison_row_is_dead_and_its_neighbours_are_not() {
    let t = compiled(ORDERS);
    let out = apply(
        &t,
        &[
            event(Op::Create, None, Some(row(1, "new", "a", "10")), 1),
            event(Op::Create, None, Some(row(2, "new", "b", "ten")), 2),
            event(Op::Create, None, Some(row(3, "new", "c", "30")), 3),
            // A filtered row is not evaluated by the projection, so it cannot fail it.
            event(Op::Create, None, Some(row(4, "test", "d", "forty")), 4),
        ],
    );
    assert_eq!(
        ops(&out.cleansed),
        vec![("c", None, Some(1)), ("c", None, Some(3))]
    );
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0].0.seq, Seq::new(2, 0));
    assert!(out.dead[0].1.contains("Cannot cast"), "{}", out.dead[0].1);
    assert_eq!(out.filtered, 1);
}

#[test]
fn key_option_makes_a_changed_key_a_delete_and_an_insert() {
    let t = compiled(
        "CREATE STREAM by_email WITH (key = 'email') AS SELECT email, id FROM shop.public.orders",
    );
    assert_eq!(t.key, vec![0]);
    assert!(t.output.columns[0].key && !t.output.columns[1].key);
    let out = apply(
        &t,
        &[
            event(
                Op::Update,
                Some(row(1, "n", "a", "1")),
                Some(row(1, "n", "b", "1")),
                1,
            ),
            event(
                Op::Update,
                Some(row(1, "n", "b", "1")),
                Some(row(1, "x", "b", "1")),
                2,
            ),
        ],
    );
    assert_eq!(
        ops(&out.cleansed).iter().map(|o| o.0).collect::<Vec<_>>(),
        vec!["d", "c", "u"]
    );
}

#[test]
fn renamed_key_column_stays_the_key_and_keeps_its_type() {
    let t = compiled("CREATE STREAM c AS SELECT id AS order_id, status FROM shop.public.orders");
    assert_eq!(t.output.columns[0].name, "order_id");
    assert!(t.output.columns[0].key);
    assert_eq!(t.output.columns[0].ty, ColumnType::Int64);
}

fn plan_error(sql: &str) -> String {
    let def = definition::parse(Path::new("transforms/c.sql"), sql).expect("parses");
    plan::compile(&def, &raw_table())
        .expect_err("must not plan")
        .to_string()
}

#[test]
fn plan_errors_name_the_file_line_and_reason() {
    let unknown = plan_error("CREATE STREAM c AS\nSELECT id, emial FROM shop.public.orders");
    assert!(
        unknown.starts_with("transforms/c.sql:2: ") && unknown.contains("emial"),
        "{unknown}"
    );
    let dropped = plan_error("CREATE STREAM c AS SELECT status FROM shop.public.orders");
    assert!(dropped.contains("drops key column `id`"), "{dropped}");
    let stream = plan_error("CREATE STREAM c AS SELECT id FROM shop.public.nope");
    assert!(stream.contains("nope"), "{stream}");
    let typed = plan_error("CREATE STREAM c AS SELECT id FROM shop.public.orders WHERE email");
    assert!(typed.to_lowercase().contains("boolean"), "{typed}");
    let key =
        plan_error("CREATE STREAM c WITH (key = 'nope') AS SELECT id FROM shop.public.orders");
    assert!(key.contains("key column `nope`"), "{key}");
}

#[test]
fn json_fields_are_extracted() {
    let t = compiled(
        "CREATE STREAM c AS SELECT id, json_get_str(email, 'city') AS city, CAST(json_get_int(email, 'n') AS INT) AS n FROM shop.public.orders",
    );
    let out = apply(
        &t,
        &[event(
            Op::Create,
            None,
            Some(row(1, "x", r#"{"city": "Oslo", "n": 3}"#, "1")),
            1,
        )],
    );
    assert_eq!(
        out.cleansed[0].after.as_ref().unwrap(),
        &vec![Value::Int(1), Value::Text("Oslo".into()), Value::Int(3)]
    );
}

#[test]
fn set_routes_streams_and_dead_letters_carry_the_record() {
    let defs = [
        ORDERS,
        "CREATE STREAM clean.tests WITH (dlq = 'dlq.tests') AS SELECT id FROM shop.public.orders WHERE status = 'test'",
        "CREATE STREAM clean.other AS SELECT id FROM shop.public.customers",
    ]
    .iter()
    .map(|sql| definition::parse(Path::new("t.sql"), sql).unwrap())
    .collect();
    let mut set = TransformSet::new(defs);
    let out = set.apply(&[
        event(Op::Create, None, Some(row(1, "new", "a", "x")), 1),
        event(Op::Create, None, Some(row(2, "test", "a", "1")), 2),
    ]);
    let streams: Vec<&str> = out
        .cleansed
        .iter()
        .flat_map(|run| run.events.iter().map(|e| e.event.table.stream.as_str()))
        .collect();
    assert_eq!(streams, vec!["clean.tests"]);
    assert_eq!(out.dead_letters.len(), 1);
    let dead = &out.dead_letters[0];
    assert_eq!(dead.table.stream, "dlq.clean.orders");
    let row = dead.after.as_ref().unwrap();
    assert_eq!(row[0], Value::Text("clean.orders".into()));
    assert_eq!(row[2], Value::Text("shop.public.orders".into()));
    let Value::Text(record) = &row[4] else {
        panic!()
    };
    let record: serde_json::Value = serde_json::from_str(record).unwrap();
    assert_eq!(record["after"]["amount"], "x");
    assert_eq!(record["op"], "c");
}

#[test]
fn only_the_columns_the_sql_reads_are_converted() {
    // `amount` is read by the filter only, `status` by nothing: it is not converted.
    let t = compiled(
        "CREATE STREAM clean.orders AS\nSELECT id, upper(email) AS email\nFROM shop.public.orders\nWHERE CAST(amount AS INT) > 1;",
    );
    assert_eq!(t.reads, vec![true, false, true, true]);
    let out = apply(
        &t,
        &[
            event(Op::Create, None, Some(row(1, "new", "a@x", "5")), 1),
            event(Op::Create, None, Some(row(2, "new", "b@x", "1")), 2),
        ],
    );
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    assert_eq!(ops(&out.cleansed), vec![("c", None, Some(1))]);
    assert_eq!(
        out.cleansed[0].after.as_ref().unwrap(),
        &vec![Value::Int(1), Value::Text("A@X".into())]
    );
}
