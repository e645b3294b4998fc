//! Parquet write throughput of the lake sink, without a database: synthetic rows of the
//! benchmark table's shape are written, rotated and committed exactly as the sink does, to a
//! local folder or HDFS/S3. Prints rows/s and MB/s.
//!
//!     cargo run --release --example sink_write -- file:///tmp/lake-bench [rows]
//!     cargo run --release --example sink_write -- hdfs://127.0.0.1:9000/lake-bench [rows]

use std::sync::Arc;
use std::time::Instant;

use sluice::event::{
    ChangeEvent, Column, ColumnType, Op, Seq, SourceInfo, SourcePos, TableId, TableSchema, Value,
};
use sluice::sink::lake::{Commit, CommittedFile, LakeRoot};
use sluice::sink::parquet::ParquetFile;

const ROWS_PER_FILE: u64 = 1_000_000;

fn schema() -> Arc<TableSchema> {
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
        },
    ))
}

fn event(table: &Arc<TableSchema>, i: u64) -> ChangeEvent {
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
        pos: SourcePos::PgLsn {
            lsn: i,
            commit_lsn: i,
        },
        tx_id: Some(1),
        snapshot: false,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "file:///tmp/sluice-sink-bench".into());
    let rows: u64 = args
        .get(2)
        .and_then(|r| r.parse().ok())
        .unwrap_or(2_000_000);
    let table = schema();
    let day = 1_795_000_000_000_000i64.div_euclid(86_400_000_000);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let lake = LakeRoot::open(&path)?;
        let mut last = lake.recover()?;
        let started = Instant::now();
        let (mut written, mut bytes) = (0u64, 0u64);
        while written < rows {
            let n = ROWS_PER_FILE.min(rows - written);
            let mut file = ParquetFile::create(table.clone(), lake.staging_path()?, day)?;
            for i in written..written + n {
                file.push(event(&table, i))?;
            }
            let sealed = file.seal()?;
            bytes += sealed.bytes;
            let tmp = lake.publish(&sealed.tmp_path)?;
            let commit = Commit {
                id: last.id + 1,
                files: vec![CommittedFile {
                    tmp,
                    path: format!(
                        "raw/bench.public.bench/date=2026-11-19/part-{}-{}.parquet",
                        sealed.first_seq, sealed.last_seq
                    ),
                    rows: n,
                    bytes: sealed.bytes,
                }],
                ..last.clone()
            };
            lake.commit(&commit)?;
            last = commit;
            written += n;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{path}: {rows} rows in {secs:.2} s: {:.0} rows/s, {:.1} MB/s of Parquet ({:.1} MB)",
            rows as f64 / secs,
            bytes as f64 / secs / 1e6,
            bytes as f64 / 1e6
        );
        Ok(())
    })
}
