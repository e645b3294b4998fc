//! Dead letters: what a transform (or Kafka mode's decoder) could not process, as rows of a
//! dead-letter stream: which reader, why, the raw stream and position, and the record as it was.
//! The lake's `dlq/` zone holds them, so a poison record is never dropped silently.

use std::sync::Arc;

use super::{
    ChangeEvent, ChangeOrigin, Column, ColumnType, Op, Seq, SourceInfo, TableId, TableSchema, Value,
};

/// The columns of every dead-letter stream (plus the change-log columns every file has).
pub(crate) fn dead_letter_schema(stream: &str) -> Arc<TableSchema> {
    let text = |name: &str, ty: ColumnType| Column {
        name: name.into(),
        source_type: match ty {
            ColumnType::Json => "json".into(),
            _ => "text".into(),
        },
        ty,
        nullable: false,
        key: false,
    };
    Arc::new(TableSchema {
        id: TableId {
            source: "sluice".into(),
            namespace: "dlq".into(),
            table: stream.into(),
        },
        stream: stream.into(),
        columns: vec![
            text("transform", ColumnType::Text),
            text("error", ColumnType::Text),
            text("raw_stream", ColumnType::Text),
            text("raw_position", ColumnType::Text),
            text("record", ColumnType::Json),
        ],
        version: 1,
        source_info: SourceInfo {
            connector: "sluice",
            db: String::new(),
            documents: false,
        },
    })
}

/// A row of a dead-letter stream, stamped now.
pub(crate) fn dead_letter_row(
    schema: &Arc<TableSchema>,
    transform: &str,
    error: &str,
    raw_stream: &str,
    raw_position: &str,
    record: String,
) -> ChangeEvent {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now_us = chrono::Utc::now().timestamp_micros();
    ChangeEvent {
        table: schema.clone(),
        op: Op::Create,
        before: None,
        after: Some(vec![
            Value::Text(transform.to_string()),
            Value::Text(error.to_string()),
            Value::Text(raw_stream.to_string()),
            Value::Text(raw_position.to_string()),
            Value::Text(record),
        ]),
        partial_before: false,
        seq: Seq::new(
            now_us.max(0) as u64,
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ),
        commit_ts_us: now_us,
        pos: ChangeOrigin::PgLsn {
            lsn: 0,
            commit_lsn: 0,
        },
        tx_id: None,
        snapshot: false,
    }
}

/// A dead letter, for the dead-letter stream `dlq`, of a record that could not be decoded
/// (Kafka mode: a topic's record) by `reader` (a transform, or the sink): why, where it was
/// (`topic:partition:offset`), and the record as it was.
pub(crate) fn undecodable_dead_letter(
    dlq: &str,
    reader: &str,
    raw_stream: &str,
    error: &str,
    at: &str,
    record: &str,
) -> ChangeEvent {
    dead_letter_row(
        &dead_letter_schema(dlq),
        reader,
        error,
        raw_stream,
        at,
        record.to_string(),
    )
}
