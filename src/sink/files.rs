//! The sink's open files, and the threads that write them.
//!
//! A [`FileSet`] routes events to one open file per stream and commit day, seals a file when it
//! reaches its rotation size or its table's schema changes, and keeps the sealed files until the
//! sink takes them into a commit. The sink keeps two, each on a [`ZoneWriter`] thread: one for
//! the raw zone, one for the zones the transforms write (cleansed, dlq). The sink hands them a
//! batch's events and goes on with the next batch's transforms while they are encoded: encoding
//! and compressing the files is most of a catch-up's work, and the two cores share it. A commit
//! asks both threads to seal everything they were handed before, so positions never run ahead of
//! the data.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::SinkError;
use crate::config::{RotateConfig, Zone};
use crate::event::{ChangeEvent, TableSchema};
use crate::lake::commit::Staging;
use crate::lake::parquet::{ParquetFile, SealedFile, arrow_schema};
use crate::transform::changelog::CleansedRun;

/// Open change-log files by stream and commit day, and the files sealed since they were last
/// taken.
pub(crate) struct FileSet {
    staging: Staging,
    rotate: RotateConfig,
    open: HashMap<String, HashMap<i64, ParquetFile>>,
    sealed: Vec<SealedFile>,
}

impl FileSet {
    pub(crate) fn new(staging: Staging, rotate: RotateConfig) -> FileSet {
        FileSet {
            staging,
            rotate,
            open: HashMap::new(),
            sealed: Vec::new(),
        }
    }

    /// Write one event to its file; returns whether a file reached its rotation size (and was
    /// sealed, so that no file exceeds the limit: its commit is due).
    pub(crate) fn write(&mut self, zone: Zone, event: ChangeEvent) -> Result<bool, SinkError> {
        let day = day_of(&event);
        let table = event.table.clone();
        self.file(zone, &table, day)?.push(event)?;
        self.seal_if_full(&table.stream, day)
    }

    /// Write a transform's output (rows already in Arrow) to its files; returns whether a file
    /// reached its rotation size.
    pub(crate) fn write_run(&mut self, zone: Zone, run: CleansedRun) -> Result<bool, SinkError> {
        if run.is_empty() {
            return Ok(false);
        }
        let table = run.table.clone();
        let batch = run.to_record_batch(&arrow_schema(&table))?;
        let (mut full, mut start) = (false, 0);
        let rotate_rows = self.rotate.rows;
        // Runs of rows of one commit day (rows are in commit order), cut where a file fills up.
        while start < run.events.len() {
            let day = day_of(&run.events[start].event);
            let file = self.file(zone, &table, day)?;
            let room = rotate_rows.saturating_sub(file.rows).max(1) as usize;
            let len = run.events[start..]
                .iter()
                .take(room)
                .take_while(|e| day_of(&e.event) == day)
                .count();
            let end = start + len;
            file.push_batch(
                &batch.slice(start, len),
                run.events[start].event.seq,
                run.events[end - 1].event.seq,
            )?;
            full |= self.seal_if_full(&table.stream, day)?;
            start = end;
        }
        Ok(full)
    }

    /// The open file of a stream and day, opened if needed (and the old one sealed if the
    /// table's schema changed, so a file has one schema).
    fn file(
        &mut self,
        zone: Zone,
        table: &Arc<TableSchema>,
        day: i64,
    ) -> Result<&mut ParquetFile, SinkError> {
        let stream = table.stream.as_str();
        let stale = self
            .open
            .get(stream)
            .and_then(|days| days.get(&day))
            .is_some_and(|f| f.table.version != table.version);
        if stale {
            let file = self
                .open
                .get_mut(stream)
                .and_then(|d| d.remove(&day))
                .expect("checked above");
            self.sealed.push(file.seal()?);
        }
        if !self.open.contains_key(stream) {
            // Only a new stream pays for its name's copy, not every row.
            self.open.insert(stream.to_string(), HashMap::new());
        }
        let days = self.open.get_mut(stream).expect("inserted above");
        Ok(match days.entry(day) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let path = self.staging.new_path().map_err(|source| SinkError::Io {
                    path: "staging".into(),
                    source,
                })?;
                v.insert(ParquetFile::create(zone, table.clone(), path, day)?)
            }
        })
    }

    /// Seal the stream's file of `day` if it reached its rotation size; returns whether it did.
    fn seal_if_full(&mut self, stream: &str, day: i64) -> Result<bool, SinkError> {
        let Some(days) = self.open.get_mut(stream) else {
            return Ok(false);
        };
        let full = days.get(&day).is_some_and(|f| {
            f.rows >= self.rotate.rows || f.estimated_bytes() >= self.rotate.bytes.0
        });
        if full {
            let file = days.remove(&day).expect("checked above");
            self.sealed.push(file.seal()?);
        }
        Ok(full)
    }

    /// The files sealed since the last call (full, or cut by a schema change).
    fn take_sealed(&mut self) -> Vec<SealedFile> {
        std::mem::take(&mut self.sealed)
    }

    /// Seal every open file; return every file sealed since the last call.
    pub(crate) fn seal_all(&mut self) -> Result<Vec<SealedFile>, SinkError> {
        for (_, days) in self.open.drain() {
            for (_, file) in days {
                self.sealed.push(file.seal()?);
            }
        }
        Ok(self.take_sealed())
    }
}

enum Work {
    Write(Zone, Vec<ChangeEvent>),
    WriteRuns(Zone, Vec<CleansedRun>),
    Seal,
}

/// A [`FileSet`] on a thread of its own.
pub(crate) struct ZoneWriter {
    work: Option<SyncSender<Work>>,
    sealed: Receiver<Result<Vec<SealedFile>, SinkError>>,
    /// Set by the thread when a file reached its rotation size (or writing failed): a commit is
    /// due, to take the file (or to report the error).
    due: Arc<AtomicBool>,
    /// Events were handed over since the last seal.
    pending: bool,
    thread: Option<JoinHandle<()>>,
}

impl ZoneWriter {
    /// `name` names the thread (`sluice-<name>`).
    pub(crate) fn start(name: &str, mut files: FileSet) -> Result<ZoneWriter, SinkError> {
        // One batch queued while one is written: the sink runs at most a batch ahead.
        let (work_tx, work_rx) = sync_channel::<Work>(1);
        let (sealed_tx, sealed_rx) = sync_channel(1);
        let due = Arc::new(AtomicBool::new(false));
        let thread_due = due.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-{name}"))
            .spawn(move || {
                let mut failed = None;
                while let Ok(work) = work_rx.recv() {
                    match work {
                        Work::Write(..) | Work::WriteRuns(..) if failed.is_some() => {}
                        Work::Write(..) | Work::WriteRuns(..) => {
                            match write_all(&mut files, work) {
                                Ok(false) => {}
                                Ok(true) => thread_due.store(true, Ordering::Release),
                                Err(e) => {
                                    failed = Some(e);
                                    thread_due.store(true, Ordering::Release);
                                }
                            }
                        }
                        Work::Seal => {
                            let reply = match failed.take() {
                                Some(e) => Err(e),
                                None => files.seal_all(),
                            };
                            let stop = reply.is_err();
                            // After an error the thread stops, so that every later call fails
                            // too: the events it could not write must not be committed past.
                            if sealed_tx.send(reply).is_err() || stop {
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|source| SinkError::Io {
                path: format!("{name} writer thread"),
                source,
            })?;
        Ok(ZoneWriter {
            work: Some(work_tx),
            sealed: sealed_rx,
            due,
            pending: false,
            thread: Some(thread),
        })
    }

    /// Hand events of `zone` over to be written.
    pub(crate) fn write(&mut self, zone: Zone, events: Vec<ChangeEvent>) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        self.pending = true;
        self.send(Work::Write(zone, events))
    }

    /// Hand a transform's output runs for `zone` over to be written.
    pub(crate) fn write_runs(
        &mut self,
        zone: Zone,
        runs: Vec<CleansedRun>,
    ) -> Result<(), SinkError> {
        if runs.iter().all(CleansedRun::is_empty) {
            return Ok(());
        }
        self.pending = true;
        self.send(Work::WriteRuns(zone, runs))
    }

    /// Whether a commit is due since the last call (a file filled up, or writing failed).
    pub(crate) fn take_due(&self) -> bool {
        self.due.swap(false, Ordering::AcqRel)
    }

    /// Whether events were handed over since the last seal.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending
    }

    /// Seal every file once everything handed over before is written; the sealed files.
    pub(crate) fn seal(&mut self) -> Result<Vec<SealedFile>, SinkError> {
        self.send(Work::Seal)?;
        let sealed = self.sealed.recv().map_err(|_| stopped())??;
        self.pending = false;
        Ok(sealed)
    }

    fn send(&self, work: Work) -> Result<(), SinkError> {
        self.work
            .as_ref()
            .ok_or_else(stopped)?
            .send(work)
            .map_err(|_| stopped())
    }
}

impl Drop for ZoneWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread; files it had open stay in staging, uncommitted.
        self.work.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Write what `work` hands over; returns whether a file filled up.
fn write_all(files: &mut FileSet, work: Work) -> Result<bool, SinkError> {
    let mut full = false;
    match work {
        Work::Write(zone, events) => {
            for event in events {
                full |= files.write(zone, event)?;
            }
        }
        Work::WriteRuns(zone, runs) => {
            for run in runs {
                full |= files.write_run(zone, run)?;
            }
        }
        Work::Seal => {}
    }
    Ok(full)
}

fn day_of(event: &ChangeEvent) -> i64 {
    event.commit_ts_us.div_euclid(86_400_000_000)
}

fn stopped() -> SinkError {
    SinkError::Io {
        path: "lake".into(),
        source: std::io::Error::other("a file writer thread stopped after an error"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::event::{ChangeOrigin, ColumnType, Op, Seq, Value};
    use crate::transform::{TransformSet, definition};

    const DAY_US: i64 = 86_400_000_000;

    fn table() -> Arc<TableSchema> {
        crate::event::test_table(
            ("s", "p", "t"),
            &[
                ("id", ColumnType::Int64, true),
                ("name", ColumnType::Text, false),
            ],
        )
    }

    fn insert(table: &Arc<TableSchema>, id: i64, day: i64) -> ChangeEvent {
        ChangeEvent {
            table: table.clone(),
            op: Op::Create,
            before: None,
            after: Some(vec![Value::Int(id), Value::Text(format!("n{id}"))]),
            partial_before: false,
            seq: Seq::new(id as u64, 0),
            commit_ts_us: day * DAY_US + id,
            pos: ChangeOrigin::PgLsn {
                lsn: id as u64,
                commit_lsn: id as u64,
            },
            tx_id: None,
            snapshot: false,
        }
    }

    fn ids(file: &SealedFile) -> Vec<i64> {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file.tmp_path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn a_transform_run_is_cut_where_a_file_fills_up_and_where_the_day_changes() {
        let dir = tempfile::tempdir().unwrap();
        let rotate = RotateConfig {
            rows: 3,
            ..RotateConfig::default()
        };
        let mut files = FileSet::new(Staging::new(dir.path().to_path_buf()), rotate);
        let def = definition::parse(
            Path::new("t.sql"),
            "CREATE STREAM clean.t AS SELECT id, upper(name) AS name FROM s.p.t",
        )
        .unwrap();
        let raw = table();
        let events: Vec<ChangeEvent> = (0..7)
            .map(|id| insert(&raw, id, if id < 5 { 20_000 } else { 20_001 }))
            .collect();
        let mut runs = TransformSet::new(vec![def]).apply(&events).cleansed;
        assert_eq!(runs.len(), 1);
        assert!(
            files.write_run(Zone::Cleansed, runs.remove(0)).unwrap(),
            "a file filled up"
        );
        let mut sealed = files.seal_all().unwrap();
        sealed.sort_by_key(|f| f.first_seq);
        let summary: Vec<(i64, u64, Seq, Seq, Vec<i64>)> = sealed
            .iter()
            .map(|f| (f.day, f.rows, f.first_seq, f.last_seq, ids(f)))
            .collect();
        let seq = |id| Seq::new(id, 0);
        assert_eq!(
            summary,
            vec![
                (20_000, 3, seq(0), seq(2), vec![0, 1, 2]),
                (20_000, 2, seq(3), seq(4), vec![3, 4]),
                (20_001, 2, seq(5), seq(6), vec![5, 6]),
            ]
        );
        assert!(
            sealed
                .iter()
                .all(|f| f.stream == "clean.t" && f.zone == Zone::Cleansed)
        );
    }

    #[test]
    fn a_writer_thread_seals_what_it_was_handed_before() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileSet::new(
            Staging::new(dir.path().to_path_buf()),
            RotateConfig::default(),
        );
        let mut writer = ZoneWriter::start("test", files).unwrap();
        let raw = table();
        for start in [0, 100, 200] {
            let events = (start..start + 100)
                .map(|id| insert(&raw, id, 20_000))
                .collect();
            writer.write(Zone::Raw, events).unwrap();
        }
        assert!(writer.has_pending());
        let sealed = writer.seal().unwrap();
        assert!(!writer.has_pending());
        assert_eq!(sealed.len(), 1);
        assert_eq!(ids(&sealed[0]), (0..300).collect::<Vec<i64>>());
        assert!(
            writer.seal().unwrap().is_empty(),
            "nothing new, nothing sealed"
        );
    }

    #[test]
    fn a_writer_thread_that_failed_fails_every_later_seal() {
        let dir = tempfile::tempdir().unwrap();
        // Staging under a file: the first file cannot be created.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let files = FileSet::new(
            Staging::new(blocker.join("staging")),
            RotateConfig::default(),
        );
        let mut writer = ZoneWriter::start("test", files).unwrap();
        writer
            .write(Zone::Raw, vec![insert(&table(), 1, 20_000)])
            .unwrap();
        assert!(writer.seal().is_err());
        // The events it could not write must never be committed past.
        let _ = writer.write(Zone::Raw, vec![insert(&table(), 2, 20_000)]);
        assert!(writer.seal().is_err());
    }
}
