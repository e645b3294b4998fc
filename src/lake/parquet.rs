//! Change events → Arrow record batches → one Parquet file.
//!
//! A file holds the row's own typed columns (after image; the before image for deletes) plus
//! `_op`, `_seq`, `_ts_ms` (commit time), `_source_pos` and `_tx_id`.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    DurationMicrosecondBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, ListArray, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::config::Zone;
use crate::event::{ChangeEvent, ColumnType, Seq, TableSchema, Value};

/// Rows buffered before they are encoded into the file as one record batch, or fewer when they
/// hold more than `BYTES_PER_BATCH` (wide rows).
const ROWS_PER_BATCH: usize = 8192;
const BYTES_PER_BATCH: usize = 2 << 20;
/// Rows per Parquet row group: large enough for good scans, small enough to bound memory.
const ROW_GROUP_ROWS: usize = 16_384;

pub(crate) const COL_OP: &str = "_op";
pub(crate) const COL_SEQ: &str = "_seq";
pub(crate) const COL_TS_MS: &str = "_ts_ms";
pub(crate) const COL_SOURCE_POS: &str = "_source_pos";
pub(crate) const COL_TX_ID: &str = "_tx_id";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The disk refused a write (full, read-only): the error the file itself returned, which
    /// Parquet's own error would only carry as text.
    #[error("the disk refused the write: {0}")]
    Disk(#[source] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

/// The Arrow type a column is written as.
pub(crate) fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int16 => DataType::Int16,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
        ColumnType::Text
        | ColumnType::Json
        | ColumnType::Uuid
        | ColumnType::Numeric
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Other(_) => DataType::Utf8,
        ColumnType::List(elem) => {
            DataType::List(Arc::new(Field::new("item", arrow_type(elem), true)))
        }
        ColumnType::Bytes => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
        ColumnType::Duration => DataType::Duration(TimeUnit::Microsecond),
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The change-log file schema of a table. Row columns are nullable: a delete's key-only before
/// image and a truncate have no values for them.
pub fn arrow_schema(table: &TableSchema) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(&c.ty), true))
        .collect();
    fields.push(Field::new(COL_OP, DataType::Utf8, false));
    fields.push(Field::new(COL_SEQ, DataType::Utf8, false));
    fields.push(Field::new(COL_TS_MS, DataType::Int64, false));
    fields.push(Field::new(COL_SOURCE_POS, DataType::Utf8, true));
    fields.push(Field::new(COL_TX_ID, DataType::Int64, true));
    let key: Vec<&str> = table.key_columns().map(|(_, c)| c.name.as_str()).collect();
    let metadata = [(META_KEY.to_string(), key.join(","))]
        .into_iter()
        .collect();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Parquet key-value metadata naming the primary-key columns (comma-separated), so that lake
/// maintenance (the ODS merge) knows the key of any file it reads.
pub(crate) const META_KEY: &str = "sluice.key";

/// Rows of a file's first batch that decide which of its columns get a dictionary.
const DICTIONARY_SAMPLE_ROWS: usize = 1024;
/// Fewer rows than this say nothing about a column: its dictionary stays on.
const DICTIONARY_SAMPLE_MIN: usize = 64;

/// How sluice writes every Parquet file, given the file's first record batch (if any).
///
/// A column whose sampled values are mostly distinct (keys, names, hashes, timestamps, JSON) is
/// written without a dictionary. A dictionary would hash every value of it only to be given up
/// when its page fills, and its indices compress worse with zstd than the values themselves: the
/// benchmark's raw zone took 5.2 MB with dictionaries on every column and 3.2 MB without, and the
/// catch-up with a transform needed a fifth less CPU.
fn writer_properties(first: Option<&RecordBatch>) -> Result<WriterProperties, WriteError> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        // The writer holds a row group in memory until it is full: keep that bounded.
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Columns of distinct values the sample missed give up on their dictionary after
        // 256 KiB instead of hashing a whole MiB of them per row group.
        .set_dictionary_page_size_limit(256 * 1024)
        // Each column fills a page before it is compressed: 256 KiB pages (readers are fine with
        // anything from 64 KiB up) instead of 1 MiB keep the open row group a few MB smaller.
        .set_data_page_size_limit(256 * 1024)
        .set_created_by(concat!("sluice ", env!("CARGO_PKG_VERSION")).to_string());
    if let Some(batch) = first {
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            if mostly_distinct(column) {
                let path = ColumnPath::from(field.name().as_str());
                builder = builder.set_column_dictionary_enabled(path, false);
            }
        }
    }
    Ok(builder.build())
}

/// Whether more than half of the first values of a (flat) column differ from each other.
fn mostly_distinct(column: &ArrayRef) -> bool {
    let rows = column.len().min(DICTIONARY_SAMPLE_ROWS);
    if rows < DICTIONARY_SAMPLE_MIN || column.data_type().is_nested() {
        return false;
    }
    let mut hashes = vec![0u64; rows];
    let sample = column.slice(0, rows);
    if create_hashes([&sample], &RandomState::default(), &mut hashes).is_err() {
        return false; // a type the hasher does not know: keep the default
    }
    hashes.sort_unstable();
    hashes.dedup();
    hashes.len() * 2 > rows
}

/// A Parquet writer that opens once it has a sample of the data, so that its properties can
/// follow it (see [`writer_properties`]): it holds small first batches back until they add up to
/// the sample's rows, or the file is finished.
pub(crate) struct LakeWriter {
    file: Option<DiskFile>,
    schema: SchemaRef,
    held: Vec<RecordBatch>,
    held_rows: usize,
    writer: Option<ArrowWriter<DiskFile>>,
    /// The first error the file returned, shared with it.
    refused: Refused,
}

/// The first I/O error a [`DiskFile`] returned: (kind, message).
type Refused = Arc<std::sync::Mutex<Option<(std::io::ErrorKind, String)>>>;

/// A file that remembers the first error the disk returned, so that a full disk is reported as
/// one (and retried) rather than as the text inside a Parquet error.
struct DiskFile {
    file: File,
    refused: Refused,
}

impl DiskFile {
    fn seen<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            let mut first = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert((e.kind(), e.to_string()));
        }
        result
    }
}

impl std::io::Write for DiskFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.file.write(buf);
        self.seen(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.file.flush();
        self.seen(result)
    }
}

/// A Parquet error, or the disk's own error behind it.
fn disk_or_parquet(refused: &Refused, e: ParquetError) -> WriteError {
    match &*refused.lock().unwrap_or_else(|p| p.into_inner()) {
        Some((kind, message)) => WriteError::Disk(std::io::Error::new(*kind, message.clone())),
        None => WriteError::Parquet(e),
    }
}

impl LakeWriter {
    pub(crate) fn new(file: File, schema: SchemaRef) -> LakeWriter {
        let refused = Refused::default();
        LakeWriter {
            file: Some(DiskFile {
                file,
                refused: refused.clone(),
            }),
            schema,
            held: Vec::new(),
            held_rows: 0,
            writer: None,
            refused,
        }
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let refused = self.refused.clone();
        let disk = |e| disk_or_parquet(&refused, e);
        if let Some(writer) = &mut self.writer {
            writer.write(batch).map_err(disk)?;
            return Ok(());
        }
        if self.held.is_empty() && batch.num_rows() >= DICTIONARY_SAMPLE_ROWS {
            self.open(Some(batch))?.write(batch).map_err(disk)?;
            return Ok(());
        }
        self.held.push(batch.clone());
        self.held_rows += batch.num_rows();
        if self.held_rows >= DICTIONARY_SAMPLE_ROWS {
            self.write_held()?;
        }
        Ok(())
    }

    /// Bytes written so far plus what the encoder (or the held batches) hold.
    pub(crate) fn bytes(&self) -> u64 {
        let held: usize = self.held.iter().map(|b| b.get_array_memory_size()).sum();
        held as u64
            + self
                .writer
                .as_ref()
                .map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64)
    }

    /// Finish the file (an empty one still gets its schema) and hand it back, unsynced.
    pub(crate) fn finish(mut self) -> Result<File, WriteError> {
        self.write_held()?;
        self.open(None)?;
        let writer = self.writer.take().ok_or_else(never_opened)?;
        let disk = writer
            .into_inner()
            .map_err(|e| disk_or_parquet(&self.refused, e))?;
        Ok(disk.file)
    }

    /// Open the writer on the held batches (sampled as one) and write them.
    fn write_held(&mut self) -> Result<(), WriteError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        self.held_rows = 0;
        let mut sample_parts = Vec::new();
        let mut sampled = 0;
        for batch in &held {
            let rows = batch.num_rows().min(DICTIONARY_SAMPLE_ROWS - sampled);
            sample_parts.push(batch.slice(0, rows));
            sampled += rows;
            if sampled == DICTIONARY_SAMPLE_ROWS {
                break;
            }
        }
        let sample = arrow::compute::concat_batches(&self.schema, &sample_parts)?;
        let refused = self.refused.clone();
        let writer = self.open(Some(&sample))?;
        for batch in &held {
            writer
                .write(batch)
                .map_err(|e| disk_or_parquet(&refused, e))?;
        }
        Ok(())
    }

    fn open(
        &mut self,
        first: Option<&RecordBatch>,
    ) -> Result<&mut ArrowWriter<DiskFile>, WriteError> {
        if let Some(file) = self.file.take() {
            let properties = writer_properties(first)?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(properties))
                .map_err(|e| disk_or_parquet(&self.refused, e))?;
            self.writer = Some(writer);
        }
        // Neither a file nor a writer: opening failed before (its error was returned then).
        self.writer.as_mut().ok_or_else(never_opened)
    }
}

fn never_opened() -> WriteError {
    WriteError::Parquet(ParquetError::General(
        "the file's Parquet writer failed to open".into(),
    ))
}

/// One Parquet file being written to a temporary path.
pub struct ParquetFile {
    /// The lake zone the file is for (`raw`, `cleansed`, `dlq`).
    pub(crate) zone: Zone,
    pub(crate) table: Arc<TableSchema>,
    pub(crate) tmp_path: PathBuf,
    /// Commit day (days since the epoch) of every event in the file.
    pub(crate) day: i64,
    schema: SchemaRef,
    writer: LakeWriter,
    buffered: Vec<ChangeEvent>,
    buffered_bytes: usize,
    /// What the encoder held after the last batch: asked once per batch, not once per row,
    /// because the writer sums it over every column.
    encoded_bytes: u64,
    pub(crate) rows: u64,
    pub(crate) first_seq: Option<Seq>,
    pub(crate) last_seq: Option<Seq>,
}

/// What a sealed file left behind: a complete, fsynced Parquet file at `tmp_path`.
#[derive(Debug, Clone)]
pub struct SealedFile {
    pub(crate) zone: Zone,
    pub tmp_path: PathBuf,
    pub(crate) stream: String,
    pub(crate) day: i64,
    pub(crate) rows: u64,
    pub bytes: u64,
    pub first_seq: Seq,
    pub last_seq: Seq,
}

impl ParquetFile {
    pub fn create(
        zone: Zone,
        table: Arc<TableSchema>,
        tmp_path: PathBuf,
        day: i64,
    ) -> Result<ParquetFile, WriteError> {
        let file = File::create(&tmp_path).map_err(|source| WriteError::Io {
            path: tmp_path.clone(),
            source,
        })?;
        let schema = arrow_schema(&table);
        let writer = LakeWriter::new(file, schema.clone());
        Ok(ParquetFile {
            zone,
            table,
            tmp_path,
            day,
            schema,
            writer,
            buffered: Vec::with_capacity(ROWS_PER_BATCH),
            buffered_bytes: 0,
            encoded_bytes: 0,
            rows: 0,
            first_seq: None,
            last_seq: None,
        })
    }

    pub fn push(&mut self, event: ChangeEvent) -> Result<(), WriteError> {
        self.first_seq.get_or_insert(event.seq);
        self.last_seq = Some(event.seq);
        self.rows += 1;
        self.buffered_bytes += event.approx_bytes();
        self.buffered.push(event);
        if self.buffered.len() >= ROWS_PER_BATCH || self.buffered_bytes >= BYTES_PER_BATCH {
            self.encode_buffered()?;
        }
        Ok(())
    }

    /// Append rows already in Arrow, in this file's schema (a transform's output), with the
    /// sequences of their first and last rows.
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        first_seq: Seq,
        last_seq: Seq,
    ) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.encode_buffered()?; // rows keep their order
        self.first_seq.get_or_insert(first_seq);
        self.last_seq = Some(last_seq);
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch)?;
        self.encoded_bytes = self.writer.bytes();
        Ok(())
    }

    /// Bytes this file will take, roughly: what is written plus what is buffered in the encoder.
    pub(crate) fn estimated_bytes(&self) -> u64 {
        self.encoded_bytes
    }

    fn encode_buffered(&mut self) -> Result<(), WriteError> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let batch = to_record_batch(&self.schema, &self.table, &self.buffered)?;
        self.writer.write(&batch)?;
        self.buffered.clear();
        self.buffered_bytes = 0;
        self.encoded_bytes = self.writer.bytes();
        Ok(())
    }

    /// Finish the file and make it durable at its temporary path.
    pub fn seal(mut self) -> Result<SealedFile, WriteError> {
        self.encode_buffered()?;
        let file = self.writer.finish()?;
        file.sync_all().map_err(|source| WriteError::Io {
            path: self.tmp_path.clone(),
            source,
        })?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(SealedFile {
            zone: self.zone,
            tmp_path: self.tmp_path,
            stream: self.table.stream.clone(),
            day: self.day,
            rows: self.rows,
            bytes,
            first_seq: self.first_seq.unwrap_or(Seq(0)),
            last_seq: self.last_seq.unwrap_or(Seq(0)),
        })
    }
}

/// Build one record batch from events, column by column.
pub(crate) fn to_record_batch(
    schema: &SchemaRef,
    table: &TableSchema,
    events: &[ChangeEvent],
) -> Result<RecordBatch, WriteError> {
    let n = events.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, col) in table.columns.iter().enumerate() {
        let values = events
            .iter()
            .map(|e| e.row_image().and_then(|r| r.get(i)).unwrap_or(&Value::Null));
        columns.push(column_array(&col.ty, values, n)?);
    }
    columns.extend(change_log_columns(events.iter()));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The change-log columns of events: `_op`, `_seq`, `_ts_ms`, `_source_pos`, `_tx_id`.
pub(crate) fn change_log_columns<'a>(
    events: impl ExactSizeIterator<Item = &'a ChangeEvent>,
) -> [ArrayRef; 5] {
    let n = events.len();
    let mut op = StringBuilder::with_capacity(n, n);
    let mut seq = StringBuilder::with_capacity(n, n * 32);
    let mut ts = Int64Builder::with_capacity(n);
    let mut pos = StringBuilder::with_capacity(n, n * 12);
    let mut tx = Int64Builder::with_capacity(n);
    let (mut hex, mut text) = ([0u8; 32], String::with_capacity(32));
    for e in events {
        op.append_value(e.op.code());
        seq.append_value(e.seq.fixed_hex(&mut hex));
        ts.append_value(e.commit_ts_us.div_euclid(1000));
        text.clear();
        e.pos.render_into(&mut text);
        pos.append_value(&text);
        tx.append_option(e.tx_id.map(|t| t as i64));
    }
    [
        Arc::new(op.finish()),
        Arc::new(seq.finish()),
        Arc::new(ts.finish()),
        Arc::new(pos.finish()),
        Arc::new(tx.finish()),
    ]
}

/// Append values of one column to the builder of its type. A value that does not fit its column
/// type (a source bug) is written as null rather than stopping the sink, and counted.
pub(crate) fn column_array<'a>(
    ty: &ColumnType,
    values: impl Iterator<Item = &'a Value> + Clone,
    n: usize,
) -> Result<ArrayRef, WriteError> {
    macro_rules! build {
        ($builder:expr, $pat:pat => $val:expr) => {{
            let mut b = $builder;
            for v in values {
                match v {
                    $pat => b.append_value($val),
                    Value::Null => b.append_null(),
                    _ => {
                        metrics::counter!(crate::metrics::SINK_TYPE_MISMATCH).increment(1);
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match ty {
        ColumnType::Bool => build!(BooleanBuilder::with_capacity(n), Value::Bool(x) => *x),
        ColumnType::Int16 => build!(Int16Builder::with_capacity(n), Value::Int(x) => *x as i16),
        ColumnType::Int32 => build!(Int32Builder::with_capacity(n), Value::Int(x) => *x as i32),
        ColumnType::Int64 => build!(Int64Builder::with_capacity(n), Value::Int(x) => *x),
        ColumnType::Float32 => {
            build!(Float32Builder::with_capacity(n), Value::Float(x) => *x as f32)
        }
        ColumnType::Float64 => build!(Float64Builder::with_capacity(n), Value::Float(x) => *x),
        ColumnType::Decimal { precision, scale } => {
            let b =
                Decimal128Builder::with_capacity(n).with_precision_and_scale(*precision, *scale)?;
            build!(b, Value::Decimal(x) => *x)
        }
        ColumnType::Text
        | ColumnType::Json
        | ColumnType::Uuid
        | ColumnType::Numeric
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Other(_) => {
            let b = StringBuilder::with_capacity(n, byte_len(values.clone()));
            build!(b, Value::Text(x) => x.as_str())
        }
        ColumnType::List(elem) => list_array(elem, values, n)?,
        ColumnType::Bytes => {
            let b = BinaryBuilder::with_capacity(n, byte_len(values.clone()));
            build!(b, Value::Bytes(x) => x.as_slice())
        }
        ColumnType::Date => {
            build!(Date32Builder::with_capacity(n), Value::Temporal(x) => *x as i32)
        }
        ColumnType::Time => {
            build!(Time64MicrosecondBuilder::with_capacity(n), Value::Temporal(x) => *x)
        }
        ColumnType::Duration => {
            build!(DurationMicrosecondBuilder::with_capacity(n), Value::Temporal(x) => *x)
        }
        ColumnType::Timestamp => {
            build!(TimestampMicrosecondBuilder::with_capacity(n), Value::Temporal(x) => *x)
        }
        ColumnType::TimestampTz => {
            let b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            build!(b, Value::Temporal(x) => *x)
        }
    })
}

/// The bytes of a text or binary column's values: its builder is sized once, not grown (and
/// copied) a few times per batch.
fn byte_len<'a>(values: impl Iterator<Item = &'a Value>) -> usize {
    values
        .map(|v| match v {
            Value::Text(x) => x.len(),
            Value::Bytes(x) => x.len(),
            _ => 0,
        })
        .sum()
}

/// A List column: the elements of every row flattened into one child array, plus offsets.
fn list_array<'a>(
    elem: &ColumnType,
    values: impl Iterator<Item = &'a Value> + Clone,
    n: usize,
) -> Result<ArrayRef, WriteError> {
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0i32);
    let mut valid = Vec::with_capacity(n);
    let mut flat: Vec<&Value> = Vec::new();
    for v in values {
        match v {
            Value::List(items) => {
                flat.extend(items.iter());
                valid.push(true);
            }
            Value::Null => valid.push(false),
            _ => {
                metrics::counter!(crate::metrics::SINK_TYPE_MISMATCH).increment(1);
                valid.push(false);
            }
        }
        offsets.push(
            i32::try_from(flat.len())
                .map_err(|_| ArrowError::ComputeError("list column over 2^31 elements".into()))?,
        );
    }
    let child = column_array(elem, flat.iter().copied(), flat.len())?;
    let field = Arc::new(Field::new("item", arrow_type(elem), true));
    Ok(Arc::new(ListArray::try_new(
        field,
        OffsetBuffer::new(offsets.into()),
        child,
        Some(NullBuffer::from(valid)),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Write `batches` through a `LakeWriter`: the file's rows, its schema's columns and, per
    /// column of its first row group, whether the chunk has a dictionary page.
    fn dictionaries(
        batches: &[RecordBatch],
        schema: SchemaRef,
    ) -> (u64, usize, Vec<(String, bool)>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let mut writer = LakeWriter::new(File::create(&path).unwrap(), schema);
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        let rows = meta.file_metadata().num_rows() as u64;
        let schema_columns = meta.file_metadata().schema_descr().num_columns();
        let columns = match meta.row_groups().first() {
            None => Vec::new(),
            Some(group) => group
                .columns()
                .iter()
                .map(|c| {
                    (
                        c.column_path().string(),
                        c.dictionary_page_offset().is_some(),
                    )
                })
                .collect(),
        };
        (rows, schema_columns, columns)
    }

    fn batch(rows: i64) -> RecordBatch {
        batch_of(0, rows)
    }

    /// Rows `first..first + rows`: distinct ids and names, a status of two values.
    fn batch_of(first: i64, rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("status", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let range = first..first + rows;
        let ids = Int64Array::from_iter_values(range.clone());
        let status =
            StringArray::from_iter_values(range.clone().map(|i| ["new", "paid"][i as usize % 2]));
        let names = StringArray::from_iter_values(range.map(|i| format!("name-{i}")));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(ids), Arc::new(status), Arc::new(names)],
        )
        .unwrap()
    }

    /// The dictionaries of `batch_of`'s columns: ids and names are distinct, status repeats.
    fn only_status_keeps_its_dictionary() -> Vec<(String, bool)> {
        vec![
            ("id".to_string(), false),
            ("status".to_string(), true),
            ("name".to_string(), false),
        ]
    }

    #[test]
    fn columns_of_distinct_values_are_written_without_a_dictionary() {
        let b = batch(2000);
        let (rows, _, columns) = dictionaries(&[b.clone(), b.clone()], b.schema());
        assert_eq!(rows, 4000);
        assert_eq!(columns, only_status_keeps_its_dictionary());
    }

    #[test]
    fn small_first_batches_are_sampled_together() {
        // A live stream's batches are small (here 40 rows, too few to tell alone): held back
        // until they make a sample, the distinct ids and names still lose their dictionary, and
        // no row is lost on the way.
        let batches: Vec<RecordBatch> = (0..30).map(|i| batch_of(i * 40, 40)).collect();
        let (rows, _, columns) = dictionaries(&batches, batches[0].schema());
        assert_eq!(rows, 1200);
        assert_eq!(columns, only_status_keeps_its_dictionary());
    }

    #[test]
    fn a_sample_too_small_to_tell_keeps_every_dictionary() {
        let b = batch(10);
        let (_, _, columns) = dictionaries(std::slice::from_ref(&b), b.schema());
        assert!(
            columns.iter().all(|(_, dictionary)| *dictionary),
            "{columns:?}"
        );
    }

    #[test]
    fn a_file_without_rows_still_has_its_schema() {
        let b = batch(1);
        let (rows, schema_columns, _) = dictionaries(&[], b.schema());
        assert_eq!((rows, schema_columns), (0, 3));
    }
}
