//! Small-file compaction: the change-log files of a partition that are small, and share a schema,
//! are rewritten as one file, on a schedule.
//!
//! The rewrite is a lake commit like any other: the new file is published to `_sluice/tmp/`, and
//! a commit record lists it (to move into place) and the files it replaces (to delete after).
//! Recovery redoes both from the record, so a crash leaves the partition before or after, never
//! with rows missing; positions and sequence marks do not change. The compacted file keeps the
//! naming rule: `part-<first seq>-<last seq>.parquet` of the rows it holds.

use std::fs;

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::commit::{CommittedFile, LakeRoot};
use super::parquet::{LakeWriter, WriteError};

/// One partition's files to merge into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) partition: String,
    pub(crate) inputs: Vec<String>,
}

/// Partitions of the change log `stream` (`<zone>/<stream>`) with at least `min_files` files under
/// `small_bytes` each, in runs of at most `max_bytes` together (a merged file stays below the
/// rotation size, and so below the 5 GiB an S3 copy can move).
pub(crate) fn plan(
    lake: &LakeRoot,
    stream: &str,
    min_files: usize,
    small_bytes: u64,
    max_bytes: u64,
) -> Result<Vec<Plan>, WriteError> {
    let io = |source| WriteError::Io {
        path: stream.into(),
        source,
    };
    let mut by_partition: std::collections::BTreeMap<String, Vec<(String, u64)>> =
        Default::default();
    for (path, size) in lake.store().list_files_sized(stream).map_err(io)? {
        let Some((partition, name)) = path.rsplit_once('/') else {
            continue;
        };
        if size < small_bytes && name.starts_with("part-") && name.ends_with(".parquet") {
            by_partition
                .entry(partition.to_string())
                .or_default()
                .push((path, size));
        }
    }
    let mut plans = Vec::new();
    for (partition, mut files) in by_partition {
        files.sort(); // names sort by first sequence: commit order
        let mut runs: Vec<Vec<String>> = Vec::new();
        let mut run_bytes = 0u64;
        for (path, size) in files {
            match runs.last_mut() {
                Some(run) if run_bytes + size <= max_bytes => run.push(path),
                _ => {
                    runs.push(vec![path]);
                    run_bytes = 0;
                }
            }
            run_bytes += size;
        }
        plans.extend(
            runs.into_iter()
                .filter(|inputs| inputs.len() >= min_files.max(2))
                .map(|inputs| Plan {
                    partition: partition.clone(),
                    inputs,
                }),
        );
    }
    Ok(plans)
}

/// Rewrite the longest run of same-schema files of a plan as one staged file; returns the file
/// to commit and the inputs it replaces (None if no two neighbours share a schema).
pub(crate) fn rewrite(
    lake: &LakeRoot,
    plan: &Plan,
) -> Result<Option<(CommittedFile, Vec<String>)>, WriteError> {
    let io = |what: &str| {
        let path = std::path::PathBuf::from(what);
        move |source| WriteError::Io { path, source }
    };
    // Read every input; keep the first run of files whose schema equals the first one's.
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    let mut schema = None;
    for path in &plan.inputs {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(lake.store().get(path).map_err(io(path))?)?;
        let file_schema = builder.schema().clone();
        match &schema {
            None => schema = Some(file_schema),
            Some(s) if *s == file_schema => {}
            Some(_) => break,
        }
        batches.extend(builder.build()?.collect::<Result<Vec<_>, _>>()?);
        used.push(path.clone());
    }
    let (Some(schema), true) = (schema, used.len() >= 2) else {
        return Ok(None);
    };
    let first = seq_range(&used[0]).0;
    let last = seq_range(&used[used.len() - 1]).1;
    let staged = lake.staging_path().map_err(io("staging"))?;
    let file = fs::File::create(&staged).map_err(io("staging"))?;
    let mut writer = LakeWriter::new(file, schema);
    let mut rows = 0u64;
    for batch in &batches {
        rows += batch.num_rows() as u64;
        writer.write(batch)?;
    }
    writer.finish()?.sync_all().map_err(io("staging"))?;
    let bytes = fs::metadata(&staged).map(|m| m.len()).unwrap_or(0);
    let tmp = lake.publish(&staged).map_err(io("publish"))?;
    let path = format!("{}/part-{first}-{last}.parquet", plan.partition);
    Ok(Some((
        CommittedFile {
            tmp,
            path,
            rows,
            bytes,
        },
        used,
    )))
}

/// `…/part-<first>-<last>.parquet` → (first, last).
fn seq_range(path: &str) -> (String, String) {
    let name = path.rsplit('/').next().unwrap_or("");
    let body = name
        .strip_prefix("part-")
        .and_then(|n| n.strip_suffix(".parquet"))
        .unwrap_or("");
    match body.split_once('-') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (String::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_ranges_from_names() {
        assert_eq!(
            seq_range("raw/s/date=2024-01-01/part-0A-0F.parquet"),
            ("0A".into(), "0F".into())
        );
    }

    #[test]
    fn a_merged_file_stays_below_the_size_cap() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("raw/s/date=2024-01-01");
        fs::create_dir_all(&part).unwrap();
        for i in 0..7 {
            fs::write(part.join(format!("part-{i:02}-{i:02}.parquet")), [0u8; 100]).unwrap();
        }
        let lake = LakeRoot::open(dir.path().to_str().unwrap()).unwrap();
        let plans = plan(&lake, "raw/s", 2, 1_000, 300).unwrap();
        let runs: Vec<usize> = plans.iter().map(|p| p.inputs.len()).collect();
        // Three files of 100 bytes fit under 300; the seventh file alone is no run.
        assert_eq!(runs, vec![3, 3]);
        assert!(plans[0].inputs[0].ends_with("part-00-00.parquet"));
        assert!(plans[1].inputs[0].ends_with("part-03-03.parquet"));
    }
}
