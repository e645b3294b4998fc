//! Compares our envelope with real Debezium 3.6 output for the benchmark table.

use std::sync::Arc;

use super::*;
use crate::event::{ChangeOrigin, Column, Seq, SourceInfo, TableId, Value};

fn bench_schema() -> Arc<TableSchema> {
    // Nullability as in the benchmark table (id, i32, name and created_at are NOT NULL).
    let col = |name: &str, ty: ColumnType, key: bool| Column {
        name: name.into(),
        ty,
        nullable: !["id", "i32", "name", "created_at"].contains(&name),
        key,
        source_type: String::new(),
    };
    Arc::new(TableSchema::new(
        TableId {
            source: "pg".into(),
            namespace: "public".into(),
            table: "bench".into(),
        },
        vec![
            col("id", ColumnType::Int64, true),
            col("i32", ColumnType::Int32, false),
            col("i64", ColumnType::Int64, false),
            col("name", ColumnType::Text, false),
            col("descr", ColumnType::Text, false),
            col(
                "price",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                false,
            ),
            col("ratio", ColumnType::Float64, false),
            col("created_at", ColumnType::Timestamp, false),
            col("updated_at", ColumnType::TimestampTz, false),
            col("flag", ColumnType::Bool, false),
            col("payload", ColumnType::Json, false),
        ],
        1,
        SourceInfo {
            connector: "postgresql",
            db: "cdctest".into(),
            documents: false,
        },
    ))
}

fn sample() -> Json {
    let text = include_str!("../../../tests/fixtures/debezium/pg_events.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn update_matches_debezium_before_after_key_and_source() {
    let before = vec![
        Value::Int(1),
        Value::Int(7),
        Value::Int(1000003),
        Value::Text("name-1".into()),
        Value::Text("description for row 1 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into()),
        Value::Decimal(1),
        Value::Float(0.3333333333333333),
        Value::Temporal(1704067201000001),
        Value::Null,
        Value::Bool(false),
        Value::Text("{\"k\": 1, \"tags\": [\"a\", \"b\"], \"nested\": {\"x\": 1}}".into()),
    ];
    let mut after = before.clone();
    after[1] = Value::Int(8);
    after[4] = Value::Text("updated 1".into());
    after[5] = Value::Decimal(151);
    after[8] = Value::Temporal(1717243200123456);
    after[9] = Value::Bool(true);
    after[10] = Value::Text("{\"k\": 1, \"updated\": true}".into());
    let event = ChangeEvent {
        table: bench_schema(),
        op: Op::Update,
        before: Some(before),
        after: Some(after),
        seq: Seq::new(267185912, 0),
        commit_ts_us: 1795239333446691,
        pos: ChangeOrigin::PgLsn {
            lsn: 267185968,
            commit_lsn: 267185912,
        },
        tx_id: Some(1425),
        snapshot: false,
        partial_before: false,
    };
    let expected = &sample()["u"];
    let got = envelope_json(&event, 1795239338567684);
    assert_eq!(key_json(&event), expected["key"]);
    // The text Kafka records are written as (straight from the serializer) says the same.
    let text = serde_json::to_string(&serialize::Envelope {
        event: &event,
        processed_at_us: 1795239338567684,
    })
    .unwrap();
    assert_eq!(serde_json::from_str::<Json>(&text).unwrap(), got);
    assert!(text.starts_with("{\"before\":{\"id\":1,"), "{text}");
    for field in ["before", "after", "op", "transaction", "ts_ms", "ts_us"] {
        assert_eq!(got[field], expected["value"][field], "field {field}");
    }
    let (src, want) = (&got["source"], &expected["value"]["source"]);
    for field in [
        "connector",
        "name",
        "ts_ms",
        "snapshot",
        "db",
        "sequence",
        "ts_us",
        "ts_ns",
        "schema",
        "table",
        "txId",
        "lsn",
        "xmin",
    ] {
        assert_eq!(src[field], want[field], "source.{field}");
    }
    let got_keys: Vec<_> = src.as_object().unwrap().keys().collect();
    let want_keys: Vec<_> = want.as_object().unwrap().keys().collect();
    assert_eq!(got_keys, want_keys, "source fields in Debezium's order");
}

#[test]
fn decimal_bytes_are_minimal_twos_complement() {
    assert_eq!(decimal_bytes(0), vec![0]);
    assert_eq!(decimal_bytes(1), vec![1]);
    assert_eq!(decimal_bytes(151), vec![0x00, 0x97]);
    assert_eq!(decimal_bytes(90001), vec![0x01, 0x5f, 0x91]);
    assert_eq!(decimal_bytes(-1), vec![0xff]);
    assert_eq!(decimal_bytes(-129), vec![0xff, 0x7f]);
    assert_eq!(decimal_bytes(i128::MIN).len(), 16);
}

#[test]
fn zoned_timestamps_print_the_shortest_fraction() {
    assert_eq!(
        zoned_timestamp(1717243200123456),
        "2024-06-01T12:00:00.123456Z"
    );
    assert_eq!(zoned_timestamp(1717243200000000), "2024-06-01T12:00:00Z");
    assert_eq!(zoned_timestamp(1717243200100000), "2024-06-01T12:00:00.1Z");
    assert_eq!(zoned_timestamp(-1), "1969-12-31T23:59:59.999999Z");
}

#[test]
fn variable_scale_decimals_match_fixed_ones() {
    for (text, unscaled, scale) in [
        ("1.51", 151i128, 2),
        ("-1.29", -129, 2),
        ("0", 0, 0),
        ("-0.001", -1, 3),
        ("900.01", 90001, 2),
    ] {
        let got = variable_scale_decimal(text);
        assert_eq!(got["scale"], json!(scale), "{text}");
        assert_eq!(
            got["value"],
            json!(BASE64.encode(decimal_bytes(unscaled))),
            "{text}"
        );
    }
    let huge = variable_scale_decimal(&"9".repeat(60));
    assert_eq!(huge["scale"], json!(0));
    assert_eq!(
        BASE64
            .decode(huge["value"].as_str().unwrap())
            .unwrap()
            .len(),
        26,
        "60 nines need 200 bits, plus a sign byte"
    );
    assert_eq!(variable_scale_decimal("NaN"), Json::Null);
}

#[test]
fn embedded_schemas_match_debezium_json_converter() {
    let text = include_str!("../../../tests/fixtures/debezium/pg-schemas-events.json");
    let sample: Json = serde_json::from_str(text).unwrap();
    let table = bench_schema();
    let expected = &sample["c"]["value"]["schema"];
    let got = envelope_schema(&table);
    for (i, want) in expected["fields"].as_array().unwrap().iter().enumerate() {
        assert_eq!(&got["fields"][i], want, "envelope field {}", want["field"]);
    }
    for key in ["type", "optional", "name", "version"] {
        assert_eq!(got[key], expected[key], "envelope {key}");
    }
    let event = ChangeEvent {
        table,
        op: Op::Create,
        before: None,
        after: Some(vec![Value::Int(1); 11]),
        seq: Seq::new(1, 0),
        commit_ts_us: 0,
        pos: ChangeOrigin::PgLsn {
            lsn: 1,
            commit_lsn: 1,
        },
        tx_id: None,
        snapshot: false,
        partial_before: false,
    };
    assert_eq!(
        key_json_with_schema(&event)["schema"],
        sample["c"]["key"]["schema"]
    );
    assert_eq!(envelope_json_with_schema(&event, 0)["payload"]["op"], "c");
}

/// The MariaDB variant of the benchmark table, typed as the MySQL source types it.
fn mariadb_bench_schema() -> Arc<TableSchema> {
    let pg = bench_schema();
    let mut columns = pg.columns.clone();
    columns[9].ty = ColumnType::Int16; // BOOLEAN is tinyint(1)
    columns[10].ty = ColumnType::Text; // MariaDB's JSON is longtext
    Arc::new(TableSchema::new(
        TableId {
            source: "my".into(),
            namespace: "cdctest".into(),
            table: "bench".into(),
        },
        columns,
        1,
        SourceInfo {
            connector: "mariadb",
            db: "cdctest".into(),
            documents: false,
        },
    ))
}

#[test]
fn mariadb_update_matches_debezium() {
    let text = include_str!("../../../tests/fixtures/debezium/mariadb_events.json");
    let sample: Json = serde_json::from_str(text).unwrap();
    let expected = &sample["u"];
    let before = vec![
        Value::Int(1),
        Value::Int(7),
        Value::Int(1000003),
        Value::Text("name-1".into()),
        Value::Text("description for row 1 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into()),
        Value::Decimal(1),
        Value::Float(0.3333333333333333),
        Value::Temporal(1704067201000001),
        Value::Null,
        Value::Int(0),
        Value::Text("{\"k\":1,\"tags\":[\"a\",\"b\"],\"nested\":{\"x\":1}}".into()),
    ];
    let mut after = before.clone();
    after[1] = Value::Int(8);
    after[4] = Value::Text("updated 1".into());
    after[5] = Value::Decimal(151);
    after[8] = Value::Temporal(1717243200123456);
    after[9] = Value::Int(1);
    after[10] = Value::Text("{\"k\": 1, \"updated\": true}".into());
    let event = ChangeEvent {
        table: mariadb_bench_schema(),
        op: Op::Update,
        before: Some(before),
        after: Some(after),
        seq: Seq::new(1, 0),
        commit_ts_us: 1795239447000000,
        pos: ChangeOrigin::Binlog {
            file: "mysql-bin.000003".into(),
            pos: 314278256,
            row: 0,
            server_id: 1,
            gtid: Some("0-1-1010".into()),
        },
        tx_id: None,
        snapshot: false,
        partial_before: false,
    };
    let got = envelope_json(&event, 1795239448896100);
    assert_eq!(key_json(&event), expected["key"]);
    for field in ["before", "after", "op", "transaction", "ts_ms", "ts_us"] {
        assert_eq!(got[field], expected["value"][field], "field {field}");
    }
    let (src, want) = (&got["source"], &expected["value"]["source"]);
    let got_keys: Vec<_> = src.as_object().unwrap().keys().collect();
    let want_keys: Vec<_> = want.as_object().unwrap().keys().collect();
    assert_eq!(got_keys, want_keys, "source fields in Debezium's order");
    for key in want_keys.iter().filter(|k| k.as_str() != "version") {
        assert_eq!(src[key.as_str()], want[key.as_str()], "source.{key}");
    }

    let text = include_str!("../../../tests/fixtures/debezium/mariadb-schemas-events.json");
    let sample: Json = serde_json::from_str(text).unwrap();
    let expected = &sample["c"]["value"]["schema"];
    let got = envelope_schema(&event.table);
    for (i, want) in expected["fields"].as_array().unwrap().iter().enumerate() {
        assert_eq!(&got["fields"][i], want, "envelope field {}", want["field"]);
    }
    assert_eq!(
        key_json_with_schema(&event)["schema"],
        sample["c"]["key"]["schema"]
    );
}

fn mongo_schema() -> Arc<TableSchema> {
    let col = |name: &str, ty: ColumnType, key: bool| Column {
        name: name.into(),
        ty,
        nullable: !key,
        key,
        source_type: String::new(),
    };
    Arc::new(TableSchema::new(
        TableId {
            source: "mg".into(),
            namespace: "shop".into(),
            table: "orders".into(),
        },
        vec![
            col("_id", ColumnType::Text, true),
            col("qty", ColumnType::Int64, false),
            col("_doc", ColumnType::Text, false),
        ],
        1,
        SourceInfo {
            connector: "mongodb",
            db: "shop".into(),
            documents: true,
        },
    ))
}

/// Debezium's MongoDB connector (capture.mode `change_streams_update_full_with_pre_image`):
/// `before`/`after` are the documents as extended JSON strings, the key is `{"id": <_id as
/// extended JSON>}`, and the source block names the collection, `ord` and `wallTime`.
#[test]
fn mongo_update_matches_debezium_mongodb_envelope() {
    let doc =
        |qty: i64| format!("{{\"_id\":{{\"$oid\":\"6650a1b2c3d4e5f601234567\"}},\"qty\":{qty}}}");
    let row = |qty: i64| {
        vec![
            Value::Text("6650a1b2c3d4e5f601234567".into()),
            Value::Int(qty),
            Value::Text(doc(qty)),
        ]
    };
    let time = (1_716_000_000u64 << 32) | 3;
    let event = ChangeEvent {
        table: mongo_schema(),
        op: Op::Update,
        before: Some(row(1)),
        after: Some(row(2)),
        partial_before: false,
        seq: Seq::new(time, 0),
        commit_ts_us: 1_716_000_000_123_000,
        pos: ChangeOrigin::Mongo {
            time,
            txn_number: Some(7),
            id: "{\"$oid\":\"6650a1b2c3d4e5f601234567\"}".into(),
        },
        tx_id: None,
        snapshot: false,
    };
    let envelope = envelope_json(&event, 1_716_000_000_500_000);
    assert_eq!(envelope["before"], json!(doc(1)));
    assert_eq!(envelope["after"], json!(doc(2)));
    assert_eq!(envelope["op"], "u");
    assert_eq!(envelope["updateDescription"], Json::Null);
    let source = &envelope["source"];
    assert_eq!(source["connector"], "mongodb");
    assert_eq!(source["name"], "mg");
    assert_eq!(source["db"], "shop");
    assert_eq!(source["collection"], "orders");
    assert_eq!(source["ord"], 3);
    assert_eq!(source["txnNumber"], 7);
    assert_eq!(source["ts_ms"], 1_716_000_000_123i64);
    assert_eq!(source["snapshot"], "false");
    assert_eq!(
        key_json(&event),
        json!({ "id": "{\"$oid\":\"6650a1b2c3d4e5f601234567\"}" })
    );
    // The embedded schemas are the MongoDB connector's: strings for the documents, its Source.
    let with_schema = envelope_json_with_schema(&event, 1_716_000_000_500_000);
    let fields = with_schema["schema"]["fields"].as_array().unwrap();
    let field = |name: &str| fields.iter().find(|f| f["field"] == name).unwrap();
    assert_eq!(field("after")["type"], "string");
    assert_eq!(field("after")["name"], "io.debezium.data.Json");
    assert_eq!(
        field("source")["name"],
        "io.debezium.connector.mongo.Source"
    );
    assert_eq!(
        key_json_with_schema(&event)["schema"]["fields"][0]["field"],
        "id"
    );
}
