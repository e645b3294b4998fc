//! Parquet write throughput of the lake sink, without a database: synthetic rows of the
//! benchmark table's shape are written, rotated and committed exactly as the sink does, to a
//! local folder or HDFS/S3. Prints rows/s and MB/s.
//!
//!     cargo run --release --example sink_write -- file:///tmp/lake-bench [rows]
//!     cargo run --release --example sink_write -- hdfs://127.0.0.1:9000/lake-bench [rows]

use std::time::Instant;

#[path = "common/bench_table.rs"]
mod bench_table;

use bench_table::{event, schema};
use sluice::lake::commit::{Commit, CommittedFile, LakeRoot};
use sluice::lake::parquet::ParquetFile;

const ROWS_PER_FILE: u64 = 1_000_000;

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
            let mut file = ParquetFile::create(
                sluice::config::Zone::Raw,
                table.clone(),
                lake.staging_path()?,
                day,
            )?;
            for i in written..written + n {
                file.push(event(&table, i))?;
            }
            let sealed = file.seal()?;
            bytes += sealed.bytes;
            let tmp = lake.publish(&sealed.tmp_path)?;
            let mut commit = Commit {
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
            lake.commit(&mut commit)?;
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
