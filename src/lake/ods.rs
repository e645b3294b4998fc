//! The ODS zone: per stream, the current state of the table (one row per live key, no deletes),
//! merged from the committed change log.
//!
//! `ods/<stream>/part-0.parquet` holds the rows with their `_seq` and `_ts_ms`; a merge reads the
//! previous version and the change-log files not merged yet, keeps the last row per key by
//! `_seq` (a delete removes the key, a truncate every key before it), and writes the next version
//! to a temporary file that is fsynced and renamed over the old one: readers see the old version
//! or the new one, never a half. The list of merged files is saved after the rename; a crash in
//! between merges some files again, which changes nothing, because a row only replaces a row with
//! a lower `_seq`. The output has the stream's newest schema: added columns are null in older
//! rows, dropped columns are gone, widened columns are cast.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::{cast, interleave};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::commit::LakeRoot;
use super::parquet::{
    COL_OP, COL_SEQ, COL_SOURCE_POS, COL_TX_ID, LakeWriter, META_KEY, WriteError,
};
use crate::failpoint::crash_point;

const ODS_FILE: &str = "part-0.parquet";
const OUTPUT_ROWS: usize = 8192;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct MergeState {
    /// Change-log files (relative to the lake root) already in the ODS version.
    merged: BTreeSet<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MergeReport {
    pub(crate) files_merged: usize,
    pub(crate) rows_out: usize,
}

/// An I/O error at `what` (a lake path, or "staging").
fn io(what: &str) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = PathBuf::from(what);
    move |source| WriteError::Io { path, source }
}

/// A merged ODS version, staged and not yet in place.
pub(crate) struct MergedVersion {
    staged: PathBuf,
    ods_path: String,
    state_path: String,
    state_tmp: String,
    state: MergeState,
    report: MergeReport,
}

/// Merge `ods/<stream>` with the committed files of the change log `log` (`raw/<stream>` or
/// `cleansed/<stream>`) into a staged version (None: nothing new). The caller checks that it
/// may still write the stream (a merge can take long) and [`publish`]es it.
pub(crate) fn merge_stream(
    lake: &LakeRoot,
    log: &str,
) -> Result<Option<MergedVersion>, WriteError> {
    let (_, stream) = split_log(log);
    let store = lake.store();
    let state_path = format!("_sluice/ods/{stream}.json");
    let mut state: MergeState = match store.get(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(_) => MergeState::default(),
    };
    let new_files: Vec<String> = store
        .list_files(log)
        .map_err(io(log))?
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !state.merged.contains(f))
        .collect();
    if new_files.is_empty() {
        return Ok(None);
    }
    let ods_path = format!("ods/{stream}/{ODS_FILE}");
    let mut inputs: Vec<RecordBatch> = Vec::new();
    let mut key_columns: Option<Vec<String>> = None;
    // The newest change-log schema decides the output columns.
    let mut newest: Option<(String, SchemaRef)> = None;
    for rel in &new_files {
        let (batches, schema) = read_all(store.get(rel).map_err(io(rel))?)?;
        if let Some(k) = schema.metadata().get(META_KEY) {
            key_columns = Some(
                k.split(',')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
        if newest
            .as_ref()
            .is_none_or(|(r, _)| last_seq_of(rel) > last_seq_of(r))
        {
            newest = Some((rel.clone(), schema));
        }
        inputs.extend(batches);
    }
    let keys = key_columns.unwrap_or_default();
    let target = ods_schema(&newest.expect("new files exist").1);
    let mut previous = Vec::new();
    if store.exists(&ods_path).map_err(io(&ods_path))? {
        previous = read_all(store.get(&ods_path).map_err(io(&ods_path))?)?.0;
    }
    let previous_count = previous.len();
    let all: Vec<RecordBatch> = previous
        .into_iter()
        .chain(inputs)
        .map(|b| project(&b, &target))
        .collect::<Result<_, _>>()?;

    // Last row per key by _seq; deletes and truncates remove.
    let mut latest: HashMap<String, (String, usize, usize, bool)> = HashMap::new();
    let mut truncated_before: Option<String> = None;
    for (b, batch) in all.iter().enumerate() {
        let seq = batch
            .column_by_name(COL_SEQ)
            .expect("projected")
            .as_string::<i32>();
        let op = (b >= previous_count)
            .then(|| batch.column_by_name(COL_OP))
            .flatten();
        let key_text = key_strings(batch, &keys)?;
        for (row, key) in key_text.into_iter().enumerate() {
            let s = seq.value(row).to_string();
            let op = op.map(|o| o.as_string::<i32>().value(row)).unwrap_or("r");
            if op == "t" {
                if truncated_before.as_ref().is_none_or(|t| &s > t) {
                    truncated_before = Some(s);
                }
                continue;
            }
            let live = op != "d";
            match latest.get(&key) {
                Some((existing, ..)) if *existing >= s => {}
                _ => {
                    latest.insert(key, (s, b, row, live));
                }
            }
        }
    }
    let mut picks: Vec<(usize, usize)> = latest
        .into_values()
        .filter(|(seq, _, _, live)| *live && truncated_before.as_ref().is_none_or(|t| seq > t))
        .map(|(_, b, r, _)| (b, r))
        .collect();
    picks.sort_unstable();

    // Written to a staging file, published to the lake's tmp/ (which recovery empties), and
    // renamed over the previous version: readers see one version or the other.
    let staged = lake.staging_path().map_err(io("staging"))?;
    let file = fs::File::create(&staged).map_err(io("staging"))?;
    let mut writer = LakeWriter::new(file, target.clone());
    for chunk in picks.chunks(OUTPUT_ROWS) {
        let columns = (0..target.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = all.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, chunk)
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        writer.write(&RecordBatch::try_new(target.clone(), columns)?)?;
    }
    writer.finish()?.sync_all().map_err(io("staging"))?;
    state.merged.extend(new_files.iter().cloned());
    Ok(Some(MergedVersion {
        staged,
        ods_path,
        state_path,
        state_tmp: format!("{}/ods-{stream}.json", lake.tmp_dir()),
        state,
        report: MergeReport {
            files_merged: new_files.len(),
            rows_out: picks.len(),
        },
    }))
}

/// Put a merged version in place of the previous one, then save which files it holds.
pub(crate) fn publish(lake: &LakeRoot, merged: MergedVersion) -> Result<MergeReport, WriteError> {
    let MergedVersion {
        staged,
        ods_path,
        state_path,
        state_tmp,
        state,
        report,
    } = merged;
    let store = lake.store();
    lake.replace(&staged, &ods_path).map_err(io(&ods_path))?;
    crash_point!("ods.before_state");
    store.mkdirs("_sluice/ods").map_err(io("_sluice/ods"))?;
    store
        .put(&state_tmp, &serde_json::to_vec(&state).unwrap_or_default())
        .map_err(io(&state_tmp))?;
    store
        .rename(&state_tmp, &state_path)
        .map_err(io(&state_path))?;
    Ok(report)
}

/// `part-<first>-<last>.parquet` → `<last>`, for ordering files by their newest sequence.
fn last_seq_of(rel: &str) -> &str {
    rel.rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".parquet"))
        .and_then(|n| n.rsplit('-').next())
        .unwrap_or("")
}

/// The ODS keeps the row, its `_seq` and `_ts_ms`; change-log bookkeeping goes.
fn ods_schema(changelog: &Schema) -> SchemaRef {
    let fields: Vec<Field> = changelog
        .fields()
        .iter()
        .filter(|f| ![COL_OP, COL_SOURCE_POS, COL_TX_ID].contains(&f.name().as_str()))
        .map(|f| f.as_ref().clone())
        .collect();
    Arc::new(Schema::new_with_metadata(
        fields,
        changelog.metadata().clone(),
    ))
}

/// A batch in the target schema: missing columns null, others cast; `_op` kept alongside (last)
/// for change-log rows so the merge can see deletes.
fn project(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, WriteError> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len() + 1);
    for field in target.fields() {
        columns.push(match batch.column_by_name(field.name()) {
            Some(col) if col.data_type() == field.data_type() => col.clone(),
            Some(col) => cast(col, field.data_type())?,
            None => new_null_array(field.data_type(), n),
        });
    }
    let mut fields: Vec<Field> = target.fields().iter().map(|f| f.as_ref().clone()).collect();
    let op = match batch.column_by_name(COL_OP) {
        Some(op) => op.clone(),
        None => new_null_array(&DataType::Utf8, n),
    };
    columns.push(op);
    fields.push(Field::new(COL_OP, DataType::Utf8, true));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The key of every row as text (key columns joined by a separator that cannot occur in the
/// rendered values' positions: each part is length-prefixed).
fn key_strings(batch: &RecordBatch, keys: &[String]) -> Result<Vec<String>, WriteError> {
    let n = batch.num_rows();
    let mut out = vec![String::new(); n];
    let columns: Vec<ArrayRef> = if keys.is_empty() {
        // No key recorded: the whole row is the key (a keyless table's current state is a set).
        batch.columns()[..batch.num_columns().saturating_sub(3)].to_vec()
    } else {
        keys.iter()
            .filter_map(|k| batch.column_by_name(k).cloned())
            .collect()
    };
    for col in columns {
        let text = cast(&col, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        for (row, key) in out.iter_mut().enumerate() {
            let part = if text.is_null(row) {
                "\u{0}"
            } else {
                text.value(row)
            };
            key.push_str(&format!("{}:{part}|", part.len()));
        }
    }
    Ok(out)
}

fn read_all(bytes: bytes::Bytes) -> Result<(Vec<RecordBatch>, SchemaRef), WriteError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let schema = builder.schema().clone();
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    Ok((batches, schema))
}

/// A change log's zone and stream: `cleansed/clean.orders` → (`cleansed`, `clean.orders`); a
/// bare stream name is a raw one.
pub(crate) fn split_log(log: &str) -> (&str, &str) {
    log.split_once('/').unwrap_or(("raw", log))
}

/// The change logs in the lake that have a current state: `raw/<stream>` and
/// `cleansed/<stream>` (dead letters have no key, so no ODS).
pub(crate) fn streams(lake: &LakeRoot) -> Vec<String> {
    ["raw", "cleansed"]
        .iter()
        .flat_map(|zone| {
            let streams = lake.store().list_dirs(zone).unwrap_or_default();
            streams.into_iter().map(move |s| format!("{zone}/{s}"))
        })
        .collect()
}
