//! The benchmark table (bench/README.md) as synthetic change events, shared by the examples.

use std::sync::Arc;

use sluice::event::{
    ChangeEvent, ChangeOrigin, Column, ColumnType, Op, Seq, SourceInfo, TableId, TableSchema, Value,
};

pub fn schema() -> Arc<TableSchema> {
    let col = |name: &str, ty: ColumnType| Column {
        name: name.into(),
        ty,
        nullable: true,
        key: name == "id",
        source_type: String::new(),
    };
    Arc::new(TableSchema::new(
        TableId {
            source: "bench".into(),
            namespace: "public".into(),
            table: "bench".into(),
        },
        vec![
            col("id", ColumnType::Int64),
            col("i32", ColumnType::Int32),
            col("i64", ColumnType::Int64),
            col("name", ColumnType::Text),
            col("descr", ColumnType::Text),
            col(
                "price",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
            ),
            col("ratio", ColumnType::Float64),
            col("created_at", ColumnType::Timestamp),
            col("updated_at", ColumnType::TimestampTz),
            col("flag", ColumnType::Bool),
            col("payload", ColumnType::Json),
        ],
        1,
        SourceInfo {
            connector: "postgresql",
            db: "bench".into(),
            documents: false,
        },
    ))
}

pub fn event(table: &Arc<TableSchema>, i: u64) -> ChangeEvent {
    let row = vec![
        Value::Int(i as i64),
        Value::Int((i % 30_000) as i64),
        Value::Int(i as i64 * 1_000_003),
        Value::Text(format!("name-{i}")),
        Value::Text(format!(
            "description for row {i} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        )),
        Value::Decimal(i as i128),
        Value::Float(i as f64 / 3.0),
        Value::Temporal(1_704_067_200_000_000 + i as i64 * 1_000_001),
        Value::Null,
        Value::Bool(i.is_multiple_of(2)),
        Value::Text(format!(
            "{{\"k\": {i}, \"tags\": [\"a\", \"b\"], \"nested\": {{\"x\": 1}}}}"
        )),
    ];
    ChangeEvent {
        table: table.clone(),
        op: Op::Create,
        before: None,
        after: Some(row),
        seq: Seq::new(1, i),
        commit_ts_us: 1_795_000_000_000_000,
        pos: ChangeOrigin::PgLsn {
            lsn: i,
            commit_lsn: i,
        },
        tx_id: Some(1),
        snapshot: false,
        partial_before: false,
    }
}
