//! The Parquet sink: change events into the lake's zones, committed exactly once.
//!
//! Events are cut by sequence (anything at or below the raw stream's high-water mark is a replay
//! and is skipped), written to the `raw/` zone, passed through the transforms into the
//! `cleansed/` zone (and their dead letters into `dlq/`), routed to one open file per stream and
//! commit date, and committed together with the source positions they cover (see `lake.rs` for
//! the commit protocol). Cleansed rows carry their raw event's sequence, so one cut serves all
//! zones: a replayed raw event is skipped before it reaches a transform. After a commit
//! the positions are published to the sources, which only then acknowledge them to the database.
//!
//! A commit always includes every accepted event (all open files are sealed first), so the
//! positions and sequence marks in a commit never run ahead of the data in it.
//!
//! The files are encoded on two threads (see `files.rs`), the raw zone's and the transforms'
//! zones', while this one cuts and transforms the next batch.

pub(crate) mod files;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::{RotateConfig, Zone};
use crate::contract::ack::CommittedPositions;
use crate::contract::batch::SourceBatch;
use crate::contract::cut::SeqCut;
use crate::contract::position::ResumePosition;
use crate::event::{ChangeEvent, Seq};
use crate::failpoint::crash_point;
use crate::lake::commit::{Commit, CommitError, CommittedFile, LakeRoot};
use crate::lake::lease::Claim;
use crate::lake::parquet::{SealedFile, WriteError};
use crate::lake::{compact, ods};
use crate::metrics as m;
use crate::status::SharedStatus;
use crate::transform::TransformSet;
use files::{FileSet, ZoneWriter};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("lake I/O at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the lake at {path}: {source}")]
    Lake {
        path: String,
        #[source]
        source: crate::lake::commit::CommitError,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl crate::error::Classify for SinkError {
    fn is_transient(&self) -> bool {
        match self {
            SinkError::Io { .. } => true,
            SinkError::Lake { source, .. } => source.is_transient(),
            // A file that could not be written (a full disk): retry. Arrow or Parquet refusing
            // the rows is a bug, not the disk.
            SinkError::Write(e) => crate::error::io_error_in(e).is_some(),
        }
    }
}

/// Days since the epoch → `YYYY-MM-DD`.
fn date_of_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// How the sink writes: from `sink:` in sluice.yaml.
#[derive(Debug, Clone)]
pub(crate) struct SinkSettings {
    pub(crate) rotate: RotateConfig,
    pub(crate) zones: Vec<Zone>,
    /// Merge the ODS zone this often (None: no ODS zone).
    pub(crate) ods_every: Option<Duration>,
    pub(crate) compaction: crate::config::CompactConfig,
}

impl SinkSettings {
    /// The settings `sink:` in sluice.yaml gives.
    pub(crate) fn from_config(sink: &crate::config::SinkConfig) -> Self {
        SinkSettings {
            rotate: sink.rotate.clone(),
            zones: sink.zones.clone(),
            ods_every: sink
                .zones
                .contains(&Zone::Ods)
                .then_some(sink.ods_interval.0),
            compaction: sink.compaction.clone(),
        }
    }
}

pub(crate) struct ParquetSink {
    lake: LakeRoot,
    rotate: RotateConfig,
    /// Whether raw events are written (`raw` in sink.zones); transforms run either way.
    write_raw: bool,
    transforms: TransformSet,
    /// The raw zone's files, written on their own thread.
    raw: ZoneWriter,
    /// The other zones' files (cleansed, dlq), written on another thread.
    derived: ZoneWriter,
    /// Files sealed and published, for the next commit.
    sealed: Vec<SealedFile>,
    /// The latest resumable position of each source (not yet committed, possibly).
    positions: BTreeMap<String, ResumePosition>,
    /// Sources that handed over events with no resume position since their last one.
    awaiting_position: BTreeSet<String>,
    /// Highest sequence accepted per raw stream, committed or not.
    high_seq: SeqCut,
    /// Kafka mode with several sink processes: the change logs whose ODS and compaction this
    /// process keeps (the owner of the topic's partition 0). `None`: all of them.
    owned_logs: Option<BTreeSet<String>>,
    last: Commit,
    last_commit_at: Instant,
    acks: watch::Sender<CommittedPositions>,
    status: SharedStatus,
    compaction: crate::config::CompactConfig,
    /// Change logs (`<zone>/<stream>`) that got files since the last compaction round.
    compact_streams: BTreeSet<String>,

    last_compaction_at: Instant,
    /// Merge the ODS zone this often (None: no ODS zone).
    ods_every: Option<Duration>,
    /// Change logs (`<zone>/<stream>`) with files the ODS may not have merged yet.
    ods_pending: BTreeSet<String>,
    last_ods_at: Instant,
}

impl ParquetSink {
    /// Recover the lake and return the sink with the last commit's state.
    /// `claim` is this process's lease on the lake (None only in tests).
    pub(crate) fn open(
        path: &str,
        claim: Option<Claim>,
        settings: SinkSettings,
        transforms: TransformSet,
        status: SharedStatus,
    ) -> Result<(ParquetSink, watch::Receiver<CommittedPositions>), SinkError> {
        Self::open_writer(path, None, claim, settings, transforms, status)
    }

    /// `open` as one of several writers of the lake (see lake.rs).
    pub(crate) fn open_writer(
        path: &str,
        writer: Option<&str>,
        claim: Option<Claim>,
        settings: SinkSettings,
        transforms: TransformSet,
        status: SharedStatus,
    ) -> Result<(ParquetSink, watch::Receiver<CommittedPositions>), SinkError> {
        let lake = LakeRoot::open_writer(path, writer, claim).map_err(|source| SinkError::Io {
            path: path.into(),
            source,
        })?;
        let last = lake.recover().map_err(|source| SinkError::Lake {
            path: path.into(),
            source,
        })?;
        let high_seq = SeqCut::new(
            last.high_seq
                .iter()
                .filter_map(|(k, v)| {
                    Some((k.split_once('/')?.1.to_string(), Seq::from_fixed_hex(v)?))
                })
                .collect(),
        );
        let ods_pending: BTreeSet<String> = ods::streams(&lake).into_iter().collect();
        let SinkSettings {
            rotate,
            zones,
            ods_every,
            compaction,
        } = settings;
        let (acks, acks_rx) = watch::channel(Arc::new(last.positions.clone()));
        let raw = ZoneWriter::start("raw-zone", FileSet::new(lake.staging(), rotate.clone()))?;
        let derived = ZoneWriter::start(
            "derived-zones",
            FileSet::new(lake.staging(), rotate.clone()),
        )?;
        Ok((
            ParquetSink {
                lake,
                rotate,
                write_raw: zones.contains(&Zone::Raw),
                transforms,
                raw,
                derived,
                sealed: Vec::new(),
                positions: last.positions.clone(),
                awaiting_position: BTreeSet::new(),
                high_seq,
                owned_logs: None,
                last,
                last_commit_at: Instant::now(),
                compact_streams: ods_pending.clone(),

                last_compaction_at: Instant::now(),
                compaction,
                ods_pending,
                acks,
                status,
                ods_every,
                last_ods_at: Instant::now(),
            },
            acks_rx,
        ))
    }

    /// Positions of the last commit, per source: where sources resume.
    pub(crate) fn committed_positions(&self) -> BTreeMap<String, ResumePosition> {
        self.last.positions.clone()
    }

    /// Consume batches until every sender is gone, committing as rotation demands; commit what
    /// can be committed at the end.
    pub(crate) async fn run(
        mut self,
        mut input: mpsc::Receiver<SourceBatch>,
    ) -> Result<(), SinkError> {
        // A file falls due at most a tenth of the interval before it is committed: the lake's
        // freshness is the rotation interval plus that and the commit itself.
        let tick =
            (self.rotate.interval.0 / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => {
                        metrics::gauge!(m::QUEUE_DEPTH, "queue" => "sink").set((input.max_capacity() - input.capacity()) as f64);
                        let rotate_now = tokio::task::block_in_place(|| self.accept(batch))?;
                        if rotate_now {
                            tokio::task::block_in_place(|| self.seal_and_commit())?;
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if self.last_commit_at.elapsed() >= self.rotate.interval.0 && self.has_news() {
                        tokio::task::block_in_place(|| self.seal_and_commit())?;
                    }
                    // A quiet stream's last commits reach the ODS too, not only at the next commit.
                    if self.ods_due() {
                        tokio::task::block_in_place(|| self.merge_ods())?;
                    }
                    metrics::gauge!(m::SINK_SECONDS_SINCE_COMMIT).set(self.last_commit_at.elapsed().as_secs_f64());
                }
            }
        }
        tokio::task::block_in_place(|| self.seal_and_commit())?;
        tokio::task::block_in_place(|| self.merge_ods())?;
        if !self.awaiting_position.is_empty() {
            tracing::info!(sources = ?self.awaiting_position, "stopping with an unfinished snapshot: its rows are discarded and it starts over next time");
        }
        Ok(())
    }

    /// Hand a batch to the file writers; returns whether a commit is due because a file reached
    /// its rotation size (sealed, so that no file exceeds it) since the last call.
    pub(crate) fn accept(&mut self, batch: SourceBatch) -> Result<bool, SinkError> {
        if !batch.events.is_empty() && batch.resume.is_none() {
            self.awaiting_position.insert(batch.source.to_string());
        }
        match batch.zone {
            Some(Zone::Raw) => self.raw.write(Zone::Raw, batch.events)?,
            Some(zone) => self.derived.write(zone, batch.events)?,
            None => self.accept_raw(&batch.source, batch.events)?,
        };
        if let Some(pos) = batch.resume {
            self.awaiting_position.remove(&*batch.source);
            self.positions.insert(batch.source.to_string(), pos);
        }
        // Both, so that neither's flag lingers into a later commit.
        let raw_due = self.raw.take_due();
        let derived_due = self.derived.take_due();
        Ok(raw_due || derived_due)
    }

    /// Raw events from a source: cut by sequence, transformed, written to the raw zone.
    fn accept_raw(&mut self, source: &str, events: Vec<ChangeEvent>) -> Result<(), SinkError> {
        let mut skipped = 0u64;
        let mut accepted = Vec::with_capacity(events.len());
        for event in events {
            if !self.high_seq.admit(&event) {
                skipped += 1;
                continue;
            }
            accepted.push(event);
        }
        if !self.transforms.is_empty() {
            // The writer threads are still writing the previous batch meanwhile.
            let out = self.transforms.apply(&accepted);
            self.derived.write_runs(Zone::Cleansed, out.cleansed)?;
            self.derived.write(Zone::Dlq, out.dead_letters)?;
        }
        if self.write_raw {
            self.raw.write(Zone::Raw, accepted)?;
        }
        if skipped > 0 {
            metrics::counter!(m::SINK_REPLAYED_SKIPPED, "source" => source.to_string())
                .increment(skipped);
        }
        Ok(())
    }

    /// A sealed file joins the next commit once it is published to the lake's tmp/.
    fn push_sealed(&mut self, file: SealedFile) -> Result<(), SinkError> {
        self.lake
            .publish(&file.tmp_path)
            .map_err(|source| SinkError::Io {
                path: self.lake.store().location(),
                source,
            })?;
        self.sealed.push(file);
        Ok(())
    }

    fn lake_error(&self, source: CommitError) -> SinkError {
        SinkError::Lake {
            path: self.lake.store().location(),
            source,
        }
    }

    /// Kafka mode: keep the ODS and compaction of these change logs only (see `owned_logs`).
    pub(crate) fn set_owned_logs(&mut self, logs: BTreeSet<String>) {
        self.owned_logs = Some(logs);
    }

    /// Kafka mode: own the assigned `partitions` (position keys) from group generation
    /// `generation` on, taking them from every other writer first (lake/commit.rs).
    pub(crate) fn take_partitions(
        &mut self,
        generation: i32,
        partitions: BTreeSet<String>,
    ) -> Result<(), SinkError> {
        self.lake
            .take_partitions(generation, partitions)
            .map_err(|e| self.lake_error(e))
    }

    /// Kafka mode: own no partition, and keep no ODS or compaction, until the next assignment.
    pub(crate) fn release_partitions(&mut self) {
        self.lake.release_partitions();
        self.owned_logs = Some(BTreeSet::new());
    }

    /// The newest commit of every writer of the lake.
    pub(crate) fn latest_commits_of_all_writers(&self) -> Result<Vec<Commit>, SinkError> {
        self.lake
            .latest_commits_of_all_writers()
            .map_err(|source| SinkError::Io {
                path: self.lake.store().location(),
                source,
            })
    }

    fn owns(&self, log: &str) -> bool {
        self.owned_logs
            .as_ref()
            .is_none_or(|owned| owned.contains(log))
    }

    pub(crate) fn last_commit_age(&self) -> Duration {
        self.last_commit_at.elapsed()
    }

    pub(crate) fn rotate_interval(&self) -> Duration {
        self.rotate.interval.0
    }

    pub(crate) fn has_news(&self) -> bool {
        self.raw.has_pending()
            || self.derived.has_pending()
            || !self.sealed.is_empty()
            || self.positions != self.last.positions
    }

    /// Seal every open file and, if every source's data is covered by a position, commit.
    pub(crate) fn seal_and_commit(&mut self) -> Result<(), SinkError> {
        let raw = self.raw.seal()?;
        let derived = self.derived.seal()?;
        for file in raw.into_iter().chain(derived) {
            self.push_sealed(file)?;
        }
        if !self.awaiting_position.is_empty() {
            return Ok(()); // a snapshot in progress: its files wait in tmp/ for its end
        }
        if self.sealed.is_empty() && self.positions == self.last.positions {
            return Ok(());
        }
        self.commit()
    }

    fn commit(&mut self) -> Result<(), SinkError> {
        let started = Instant::now();
        let files = self
            .sealed
            .iter()
            .map(|f| CommittedFile {
                tmp: f
                    .tmp_path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string(),
                path: final_path(f),
                rows: f.rows,
                bytes: f.bytes,
            })
            .collect();
        let mut high_seq = self.last.high_seq.clone();
        for (stream, seq) in self.high_seq.iter() {
            high_seq.insert(format!("raw/{stream}"), seq.to_fixed_hex());
        }
        let mut commit = Commit {
            id: self.last.id + 1,
            epoch: self.lake.epoch(),
            committed_at_ms: chrono::Utc::now().timestamp_millis(),
            positions: self.positions.clone(),
            high_seq,
            files,
            ..Commit::default()
        };
        self.lake
            .commit(&mut commit)
            .map_err(|e| self.lake_error(e))?;
        for f in &self.sealed {
            let labels = [("zone", f.zone.to_string()), ("stream", f.stream.clone())];
            metrics::counter!(m::SINK_ROWS, &labels).increment(f.rows);
            metrics::counter!(m::SINK_FILES, &labels).increment(1);
            metrics::counter!(m::SINK_BYTES, &labels).increment(f.bytes);
        }
        self.status.update(|board| {
            for f in &self.sealed {
                let stream = board.streams.entry(f.stream.clone()).or_default();
                stream.zone = f.zone.to_string();
                stream.rows += f.rows;
                stream.files += 1;
                stream.last_commit_ms = commit.committed_at_ms;
            }
        });
        metrics::counter!(m::SINK_COMMITS).increment(1);
        metrics::gauge!(m::LAKE_WRITABLE).set(1.0);
        metrics::histogram!(m::SINK_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::gauge!(m::SINK_LAST_COMMIT_TIMESTAMP).set(commit.committed_at_ms as f64 / 1000.0);
        tracing::debug!(commit = commit.id, files = commit.files.len(), "committed");
        let commit_logs: Vec<String> = self
            .sealed
            .iter()
            .map(|f| format!("{}/{}", f.zone, f.stream))
            .collect();

        self.sealed.clear();
        self.last = commit;
        self.last_commit_at = Instant::now();
        crash_point!("sink.before_ack");
        self.acks
            .send_replace(Arc::new(self.last.positions.clone()));
        self.ods_pending.extend(
            commit_logs
                .iter()
                .filter(|log| !log.starts_with(Zone::Dlq.as_str()))
                .cloned(),
        );
        self.compact_streams.extend(commit_logs);
        if self.ods_due() {
            self.merge_ods()?;
        }

        if self.last_compaction_at.elapsed() >= self.compaction.interval.0 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrite partitions full of small files as one file each, one commit per partition.
    fn compact(&mut self) -> Result<(), SinkError> {
        self.last_compaction_at = Instant::now();
        self.lake.check_claim().map_err(|e| self.lake_error(e))?;
        let (min_files, small) = (self.compaction.min_files, self.compaction.small_bytes.0);
        let (mine, others): (BTreeSet<String>, BTreeSet<String>) =
            std::mem::take(&mut self.compact_streams)
                .into_iter()
                .partition(|log| self.owns(log));
        self.compact_streams = others;
        for log in mine {
            for plan in compact::plan(&self.lake, &log, min_files, small, self.rotate.bytes.0)? {
                let Some((file, removed)) = compact::rewrite(&self.lake, &plan)? else {
                    continue;
                };
                let mut commit = Commit {
                    id: self.last.id + 1,
                    epoch: self.lake.epoch(),
                    committed_at_ms: chrono::Utc::now().timestamp_millis(),
                    positions: self.last.positions.clone(),
                    high_seq: self.last.high_seq.clone(),
                    files: vec![file],
                    removed,
                    revokes: None,
                };
                self.lake
                    .commit(&mut commit)
                    .map_err(|e| self.lake_error(e))?;
                metrics::counter!(m::SINK_COMPACTIONS, "stream" => log.clone()).increment(1);
                metrics::counter!(m::SINK_FILES_COMPACTED, "stream" => log.clone())
                    .increment(commit.removed.len() as u64);
                tracing::debug!(log, partition = %plan.partition, files = commit.removed.len(), "compacted");
                self.last = commit;
            }
        }
        Ok(())
    }

    /// Whether committed change-log files wait for the ODS and its interval has passed.
    pub(crate) fn ods_due(&self) -> bool {
        !self.ods_pending.is_empty()
            && self
                .ods_every
                .is_some_and(|every| self.last_ods_at.elapsed() >= every)
    }

    /// Merge the ODS zone of every stream with new change-log files.
    pub(crate) fn merge_ods(&mut self) -> Result<(), SinkError> {
        if self.ods_every.is_none() {
            return Ok(());
        }
        // ODS files are replaced in place, outside the commit log: never by a fenced process.
        self.lake.check_claim().map_err(|e| self.lake_error(e))?;
        let (mine, others): (BTreeSet<String>, BTreeSet<String>) =
            std::mem::take(&mut self.ods_pending)
                .into_iter()
                .partition(|log| self.owns(log));
        self.ods_pending = others;
        for log in mine {
            let started = Instant::now();
            let Some(merged) = ods::merge_stream(&self.lake, &log)? else {
                continue;
            };
            // A merge can take long: the partitions may have gone to another worker meanwhile.
            self.lake.check_claim().map_err(|e| self.lake_error(e))?;
            let report = ods::publish(&self.lake, merged)?;
            let (_, stream) = ods::split_log(&log);
            if report.files_merged > 0 {
                metrics::histogram!(m::ODS_MERGE_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::gauge!(m::ODS_ROWS, "stream" => stream.to_string())
                    .set(report.rows_out as f64);
                tracing::debug!(
                    stream,
                    files = report.files_merged,
                    rows = report.rows_out,
                    "ODS merged"
                );
            }
        }
        self.last_ods_at = Instant::now();
        Ok(())
    }
}

/// `<zone>/<stream>/date=YYYY-MM-DD/part-<first seq>-<last seq>.parquet`. The date is the commit
/// date of the file's events (files never span days).
fn final_path(f: &SealedFile) -> String {
    format!(
        "{}/{}/date={}/part-{}-{}.parquet",
        f.zone,
        f.stream,
        date_of_day(f.day),
        f.first_seq.to_fixed_hex(),
        f.last_seq.to_fixed_hex()
    )
}
