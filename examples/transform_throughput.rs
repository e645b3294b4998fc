//! Transform throughput without a database: synthetic change events of the benchmark table go
//! through a typical cleansing transform (a 6-column projection with a filter and a sha256) in
//! batches as the sink hands them over, and, for the overhead, the same events are written to
//! Parquet with and without the transform. Prints events/s.
//!
//!     cargo run --release --example transform_throughput -- [events]

use std::time::Instant;

#[path = "common/bench_table.rs"]
mod bench_table;

use bench_table::{event, schema};
use sluice::lake::parquet::{ParquetFile, arrow_schema};
use sluice::transform::{TransformSet, definition};

/// What the sink hands a transform at a time (a source batch).
const BATCH: u64 = 4096;

const TRANSFORM: &str = "CREATE STREAM clean.bench AS
SELECT id, i32, upper(name) AS name, encode(sha256(descr), 'hex') AS descr_sha256,
       CAST(price AS DECIMAL(12, 2)) AS price, created_at
FROM bench.public.bench
WHERE flag";

fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let table = schema();
    let def = definition::parse(std::path::Path::new("bench.sql"), TRANSFORM)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let dir = tempfile::tempdir()?;
    let day = 20_000;

    // The transform alone.
    let mut set = TransformSet::new(vec![def.clone()]);
    let (mut out, mut dead) = (0usize, 0usize);
    let started = Instant::now();
    for start in (0..events).step_by(BATCH as usize) {
        let batch: Vec<_> = (start..(start + BATCH).min(events))
            .map(|i| event(&table, i))
            .collect();
        let result = set.apply(&batch);
        out += result.cleansed.iter().map(|run| run.len()).sum::<usize>();
        dead += result.dead_letters.len();
    }
    let transform_secs = started.elapsed().as_secs_f64();
    let generate_started = Instant::now();
    for start in (0..events).step_by(BATCH as usize) {
        let batch: Vec<_> = (start..(start + BATCH).min(events))
            .map(|i| event(&table, i))
            .collect();
        std::hint::black_box(batch);
    }
    let generate_secs = generate_started.elapsed().as_secs_f64();
    let net = (transform_secs - generate_secs).max(f64::EPSILON);
    println!(
        "transform: {events} events in {net:.2} s = {:.0} events/s ({out} cleansed, {dead} dead letters; event generation excluded)",
        events as f64 / net
    );

    // Writing raw to Parquet, without and with the transform's output also written.
    for with_transform in [false, true] {
        let mut set = TransformSet::new(vec![def.clone()]);
        let started = Instant::now();
        let mut raw = ParquetFile::create(
            sluice::config::Zone::Raw,
            table.clone(),
            dir.path().join("raw.parquet"),
            day,
        )?;
        let mut cleansed = None;
        for start in (0..events).step_by(BATCH as usize) {
            let batch: Vec<_> = (start..(start + BATCH).min(events))
                .map(|i| event(&table, i))
                .collect();
            if with_transform {
                for run in set.apply(&batch).cleansed {
                    let (Some(first), Some(last)) = (run.events.first(), run.events.last()) else {
                        continue;
                    };
                    let (first, last) = (first.event.seq, last.event.seq);
                    let file = match &mut cleansed {
                        Some(f) => f,
                        None => cleansed.insert(ParquetFile::create(
                            sluice::config::Zone::Cleansed,
                            run.table.clone(),
                            dir.path().join("cleansed.parquet"),
                            day,
                        )?),
                    };
                    file.push_batch(
                        &run.to_record_batch(&arrow_schema(&run.table))?,
                        first,
                        last,
                    )?;
                }
            }
            for e in batch {
                raw.push(e)?;
            }
        }
        raw.seal()?;
        if let Some(f) = cleansed {
            f.seal()?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "sink write {}: {:.0} events/s",
            if with_transform {
                "raw + cleansed"
            } else {
                "raw only     "
            },
            events as f64 / secs
        );
    }
    Ok(())
}
