//! The lake's commit protocol, on a local disk or HDFS (see store.rs).
//!
//! ```text
//! <root>/_sluice/tmp/                 files being written, and sealed files not yet committed
//! <root>/_sluice/commits/<id>.json    commit records: positions + sequence marks + files moved
//! <root>/raw/<stream>/date=…/part-<first seq>-<last seq>.parquet
//! ```
//!
//! A commit is: (1) every data file complete and fsynced in `tmp/`; (2) the commit record written
//! to a temporary name, fsynced, renamed to `commits/<id>.json` and the folder fsynced: this
//! rename is the commit point; (3) data files renamed into place. Recovery takes the newest
//! commit record, redoes step (3) for any file still in `tmp/` (roll forward), and deletes
//! everything else in `tmp/` (data from after the last commit, which the source replays).
//!
//! Several sink processes (Kafka mode, one consumer group) share one lake: each is a *writer*
//! with its own `tmp/` and commit log under `_sluice/writers/<writer>/`, and commits only the
//! partitions it owns. A partition's committed offset is the highest any writer recorded
//! ([`LakeRoot::latest_commits_of_all_writers`]), because offsets only grow.
//!
//! A rebalance can leave a worker holding records of partitions that the group has given to
//! another (it stalled past `max.poll.interval.ms`, or its session expired). So the worker that
//! is assigned partitions first puts a *revocation* into every other writer's log (a record of
//! the next id, created only if absent, naming the partitions and the group generation), and
//! only then reads the lake's offsets. A writer whose next commit meets a revocation of a newer
//! generation for partitions it believes it owns is [`CommitError::PartitionsRevoked`]: what it
//! held is discarded and it rejoins. Either its commit came first (and the new owner's offsets
//! include it) or the revocation did (and the commit never happens): never both.
//!
//! One process at a time writes a commit log (see `lease.rs`). Commit records are created only if
//! absent, so of two processes that both think they are at commit `n`, one fails ("fenced") before
//! it moves a file. A new holder's recovery first creates a commit record of its own epoch (the
//! *fence*), and only then deletes leftovers in `tmp/`: nothing the old holder staged can be
//! committed after that.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::lease::{self, Claim};
use super::store::Store;
use crate::contract::position::ResumePosition;
use crate::error::Classify;
use crate::failpoint::crash_point;

/// How many old commit records to keep for inspection.
const KEEP_COMMITS: u64 = 50;

/// How often a new holder tries to fence an old one that keeps committing (it stops itself
/// within one lease renewal, so a few tries suffice).
const FENCE_TRIES: u32 = 20;

/// Why a commit or a recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(
        "another sluice process took this lake over ({holder}); this one stops so that only one \
         process writes it (a rolling deploy stops the old process by itself; two pipelines need \
         two sink paths)"
    )]
    Fenced { holder: String },
    #[error(
        "commit {commit} lists {file}, which is neither in {tmp} nor in its place: another \
         process or a person removed it, and its rows are not in the lake; restore the file, or \
         snapshot the source again"
    )]
    FileLost {
        commit: u64,
        file: String,
        tmp: String,
    },
    #[error(
        "a consumer-group rebalance (generation {generation}) gave partitions this sink worker \
         held to {by} ({partitions}); what it held is discarded and it rejoins the group"
    )]
    PartitionsRevoked {
        by: String,
        generation: i32,
        partitions: String,
    },
}

impl Classify for CommitError {
    fn is_transient(&self) -> bool {
        // A revoked worker restarts from the lake: its partitions' new owner has the records.
        matches!(
            self,
            CommitError::Io(_) | CommitError::PartitionsRevoked { .. }
        )
    }
}

/// A commit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: u64,
    /// The lease epoch of the process that wrote it (0: written without a lease, before leases).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    pub committed_at_ms: i64,
    /// Every source's position after this commit (cumulative, not only the ones that changed).
    pub positions: BTreeMap<String, ResumePosition>,
    /// Highest sequence in the lake per `<zone>/<stream>` (cumulative): replays are cut here.
    pub high_seq: BTreeMap<String, String>,
    /// Files this commit moved into place (relative to the root).
    pub files: Vec<CommittedFile>,
    /// Files this commit removed (relative to the root): the inputs of a compaction, whose rows
    /// are in `files` now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Set on a record that another writer put into this log: partitions this writer may no
    /// longer commit (see the module's notes). Its other fields repeat the previous record's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revokes: Option<Revocation>,
}

/// Partitions a consumer-group rebalance assigned to another writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The writer they were assigned to.
    pub by: String,
    /// The consumer group's generation of that assignment.
    pub generation: i32,
    /// Their position keys (`kafka:<topic>:<partition>`).
    pub partitions: BTreeSet<String>,
}

/// The partitions a Kafka sink worker was assigned, and in which group generation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ownership {
    /// -1: unknown (the consumer is not a member of the group).
    generation: i32,
    partitions: BTreeSet<String>,
}

impl Ownership {
    /// Whether `revocation` takes partitions of ours that a newer assignment gave to another.
    fn revoked_by(&self, revocation: &Revocation) -> bool {
        (revocation.generation > self.generation || self.generation < 0)
            && !self.partitions.is_disjoint(&revocation.partitions)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// Name in `_sluice/tmp/`.
    pub tmp: String,
    /// Final path relative to the lake root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The lake and its commit protocol, on any [`Store`].
pub struct LakeRoot {
    store: Store,
    /// Where data files are written before they are published to `_sluice/tmp/`: inside the lake
    /// for a local lake (publishing is free), a local staging folder for HDFS.
    staging: PathBuf,
    /// This writer's folder, `tmp/` and commit log (relative to the root).
    base: String,
    tmp: String,
    commits: String,
    /// The lease this process holds on the commit log (None: reading, or a test).
    claim: Option<Claim>,
    /// The writer's name in a lake of several (Kafka mode), which revocations carry.
    writer: Option<String>,
    /// Kafka mode: the partitions this writer owns; revocations of others are checked against it.
    ownership: Option<Ownership>,
    /// The newest record of this writer's log that it wrote or examined: revocations are looked
    /// for above it.
    seen: AtomicU64,
}

/// The local folder where data files are written before they are published.
#[derive(Debug, Clone)]
pub(crate) struct Staging(PathBuf);

impl Staging {
    #[cfg(test)]
    pub(crate) fn new(dir: PathBuf) -> Staging {
        Staging(dir)
    }

    /// A fresh path in it.
    pub(crate) fn new_path(&self) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.0)?;
        Ok(self.0.join(format!(
            "{:016x}{:016x}.parquet",
            rand::random::<u64>(),
            rand::random::<u64>()
        )))
    }
}

/// The embedded pipeline's (the only writer's) folders.
const BASE: &str = "_sluice";
const COMMITS: &str = "_sluice/commits";
/// Where the writers of a shared lake keep theirs.
const WRITERS: &str = "_sluice/writers";

/// The folder of a writer's lease, `tmp/` and commit log: the lake's own, or one writer's of a
/// lake shared by several (Kafka mode).
pub(crate) fn writer_base(writer: Option<&str>) -> String {
    match writer {
        Some(w) => format!("{WRITERS}/{w}"),
        None => BASE.to_string(),
    }
}

impl LakeRoot {
    /// `file:///abs/path`, a plain path, or `hdfs://namenode:port/path`.
    pub fn open(path: &str) -> io::Result<LakeRoot> {
        Self::open_writer(path, None, None)
    }

    /// The lake as one of several writers (`Some(name)`), or as its only writer, holding `claim`
    /// on that writer's commit log.
    pub(crate) fn open_writer(
        path: &str,
        writer: Option<&str>,
        claim: Option<Claim>,
    ) -> io::Result<LakeRoot> {
        let store = Store::open(path)?;
        let base = writer_base(writer);
        let (tmp, commits) = (format!("{base}/tmp"), format!("{base}/commits"));
        let staging = match store.local_root() {
            Some(root) => root.join(&tmp),
            None => std::env::temp_dir().join(format!("sluice-staging-{}", std::process::id())),
        };
        Ok(LakeRoot {
            store,
            staging,
            base,
            tmp,
            commits,
            claim,
            writer: writer.map(String::from),
            ownership: None,
            seen: AtomicU64::new(0),
        })
    }

    /// This writer's `tmp/` folder (relative to the root), which recovery empties.
    pub(crate) fn tmp_dir(&self) -> &str {
        &self.tmp
    }

    /// The newest commit of every writer of the lake (the embedded log's included).
    pub(crate) fn latest_commits_of_all_writers(&self) -> io::Result<Vec<Commit>> {
        let logs = std::iter::once(COMMITS.to_string())
            .chain(self.writers()?.into_iter().map(|w| writer_log(&w)));
        let mut commits = Vec::new();
        for log in logs {
            if let Some(c) = latest_commit_in(&self.store, &log)? {
                commits.push(c);
            }
        }
        Ok(commits)
    }

    /// The names of the lake's writers (Kafka mode): every folder under `_sluice/writers/` with a
    /// commit log or a lease, so a writer that has not committed yet is among them.
    fn writers(&self) -> io::Result<BTreeSet<String>> {
        let files = match self.store.list_files(WRITERS) {
            Ok(files) => files,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(files
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{WRITERS}/"))?.split_once('/'))
            .filter(|(_, tail)| tail.starts_with("commits/") || tail.starts_with("leases/"))
            .map(|(w, _)| w.to_string())
            .collect())
    }

    /// Kafka mode: own `partitions` (position keys) from group generation `generation` on.
    /// They are revoked from every other writer first (see the module's notes), so call this
    /// before reading their offsets from the lake.
    pub(crate) fn take_partitions(
        &mut self,
        generation: i32,
        partitions: BTreeSet<String>,
    ) -> Result<(), CommitError> {
        if !partitions.is_empty() {
            self.revoke_from_other_writers(&Revocation {
                by: self.writer.clone().unwrap_or_default(),
                generation,
                partitions: partitions.clone(),
            })?;
        }
        self.ownership = Some(Ownership {
            generation,
            partitions,
        });
        Ok(())
    }

    /// Kafka mode: own no partition until the next assignment.
    pub(crate) fn release_partitions(&mut self) {
        let generation = self.ownership.as_ref().map_or(-1, |o| o.generation);
        self.ownership = Some(Ownership {
            generation,
            partitions: BTreeSet::new(),
        });
    }

    /// Put `revocation` (partitions just assigned to this writer) into every other writer's log,
    /// so that none of them commits those partitions from an older assignment after this
    /// returns.
    fn revoke_from_other_writers(&self, revocation: &Revocation) -> Result<(), CommitError> {
        for writer in self.writers()? {
            if Some(&writer) == self.writer.as_ref() {
                continue;
            }
            let log = writer_log(&writer);
            self.store.mkdirs(&log)?;
            loop {
                let last = latest_commit_in(&self.store, &log)?.unwrap_or_default();
                let record = Commit {
                    id: last.id + 1,
                    committed_at_ms: chrono::Utc::now().timestamp_millis(),
                    files: Vec::new(),
                    removed: Vec::new(),
                    revokes: Some(revocation.clone()),
                    ..last
                };
                match self.create_record_in(&log, &record) {
                    Ok(()) => {
                        prune_old_revocation(&self.store, &log, record.id);
                        break;
                    }
                    // The writer committed meanwhile: revoke after that commit.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn check_writable(&self) -> io::Result<()> {
        self.store.mkdirs(&self.tmp)?;
        let probe = format!("{}/.write-probe", self.tmp);
        self.store.put(&probe, b"ok")?;
        self.store.delete(&probe)
    }

    /// A fresh local path to write a data file to.
    pub fn staging_path(&self) -> io::Result<PathBuf> {
        self.staging().new_path()
    }

    /// Where data files are written before they are published (for a writer on another thread).
    pub(crate) fn staging(&self) -> Staging {
        Staging(self.staging.clone())
    }

    /// Make a complete, durable staged file available to commits: its name in `_sluice/tmp/`.
    pub fn publish(&self, staged: &Path) -> io::Result<String> {
        let name = staged
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("staged file without a name"))?
            .to_string();
        if self.store.local_root().is_none() {
            self.store
                .put_file(&format!("{}/{name}", self.tmp), staged)?;
            fs::remove_file(staged)?;
        }
        Ok(name)
    }

    /// Publish a staged file straight to `path` (relative to the root), replacing what is there
    /// atomically: readers see the old version or the new one.
    pub(crate) fn replace(&self, staged: &Path, path: &str) -> io::Result<()> {
        if self.store.uploads_replace_atomically() {
            // S3: upload in place; a copy from tmp/ could not move an ODS over 5 GiB.
            self.store.put_file(path, staged)?;
            return fs::remove_file(staged);
        }
        let name = self.publish(staged)?;
        self.store.rename(&format!("{}/{name}", self.tmp), path)
    }

    /// Take the lease on a writer's commit log (see `lease.rs`), waiting while another live
    /// process holds it; `waiting` hears the holder's name.
    pub(crate) async fn acquire(
        path: &str,
        writer: Option<&str>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        waiting: impl FnMut(&str),
    ) -> io::Result<lease::Acquired> {
        let lake = Self::open_writer(path, writer, None)?;
        // A new epoch must be above every epoch in the log, even if the leases were deleted.
        let floor = tokio::task::block_in_place(|| latest_commit_in(&lake.store, &lake.commits))?
            .map_or(0, |c| c.epoch);
        lease::acquire(lake.store, &lake.base, floor, shutdown, waiting).await
    }

    /// Bring the lake to the state of its last commit and return that commit. A holder of a new
    /// lease first fences the previous holder (see the module's notes); then every commit whose
    /// files are still in `tmp/` is rolled forward, and what is left in `tmp/` is deleted.
    pub fn recover(&self) -> Result<Commit, CommitError> {
        self.store.mkdirs(&self.tmp)?;
        self.store.mkdirs(&self.commits)?;
        let last = match &self.claim {
            Some(claim) => self.fence(claim)?,
            None => latest_commit_in(&self.store, &self.commits)?.unwrap_or_default(),
        };
        self.roll_forward_unfinished()?;
        let leftovers = self.store.list_files(&self.tmp)?;
        for file in &leftovers {
            self.store.delete(file)?;
        }
        if !leftovers.is_empty() {
            tracing::info!(
                files = leftovers.len(),
                "discarded uncommitted files from before the restart"
            );
        }
        if self.store.local_root().is_none() {
            let _ = fs::remove_dir_all(&self.staging);
        }
        self.seen.store(last.id, Ordering::Relaxed);
        Ok(last)
    }

    /// Make the commit log ours: unless its newest record is of our epoch already, create the
    /// next record with our epoch and the last one's state. Returns the newest record.
    fn fence(&self, claim: &Claim) -> Result<Commit, CommitError> {
        for _ in 0..FENCE_TRIES {
            self.check_claim()?;
            let last = latest_commit_in(&self.store, &self.commits)?.unwrap_or_default();
            if last.epoch > claim.epoch {
                return Err(self.fenced());
            }
            if last.epoch == claim.epoch {
                return Ok(last);
            }
            let fence = Commit {
                id: last.id + 1,
                epoch: claim.epoch,
                committed_at_ms: chrono::Utc::now().timestamp_millis(),
                files: Vec::new(),
                removed: Vec::new(),
                revokes: None,
                ..last
            };
            match self.create_record(&fence) {
                Ok(()) => {
                    tracing::info!(
                        commit = fence.id,
                        epoch = claim.epoch,
                        "fenced the lake's commit log"
                    );
                    return Ok(fence);
                }
                // The previous holder committed meanwhile: roll that forward and try again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(std::time::Duration::from_millis(500))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(
            io::Error::other("the lake's previous holder keeps committing: could not fence it")
                .into(),
        )
    }

    /// Fail if another process took the lake over (as the lease's heartbeat last saw it), or, in
    /// Kafka mode, if another writer was assigned partitions this one owns (a revocation in its
    /// log since it last looked).
    pub(crate) fn check_claim(&self) -> Result<(), CommitError> {
        self.check_lease()?;
        if self.ownership.is_none() {
            return Ok(());
        }
        let seen = self.seen.load(Ordering::Relaxed);
        for id in commit_ids_in(&self.store, &self.commits)? {
            if id > seen {
                self.check_foreign_record(&read_commit(&self.store, &self.commits, id)?)?;
                self.seen.store(id, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Fail if another process took the lake over (as the lease's heartbeat last saw it).
    fn check_lease(&self) -> Result<(), CommitError> {
        match self.claim.as_ref().and_then(Claim::fenced_by) {
            Some(holder) => Err(CommitError::Fenced { holder }),
            None => Ok(()),
        }
    }

    /// A record another process put into this writer's log: a revocation that leaves this
    /// writer's partitions alone is passed over; anything else stops it.
    fn check_foreign_record(&self, record: &Commit) -> Result<(), CommitError> {
        let Some(revocation) = &record.revokes else {
            return Err(self.fenced()); // a new holder's fence
        };
        match self.ownership.as_ref() {
            Some(owned) if owned.revoked_by(revocation) => Err(CommitError::PartitionsRevoked {
                by: revocation.by.clone(),
                generation: revocation.generation,
                partitions: revocation
                    .partitions
                    .intersection(&owned.partitions)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            _ => Ok(()),
        }
    }

    fn fenced(&self) -> CommitError {
        CommitError::Fenced {
            holder: lease::current_holder(&self.store, &self.base)
                .unwrap_or_else(|| "a process with a newer lease".into()),
        }
    }

    /// The epoch of this process's lease, which its commits carry (0 without a lease).
    pub fn epoch(&self) -> u64 {
        self.claim.as_ref().map_or(0, |c| c.epoch)
    }

    /// Make `commit` durable (the commit point), then move its files into place. Its id moves
    /// past revocations that leave this writer's partitions alone. (Only the lease is checked
    /// up front: any record another writer put above this writer's last one sits at the id the
    /// commit tries, and is examined there.)
    pub fn commit(&self, commit: &mut Commit) -> Result<(), CommitError> {
        crash_point!("lake.before_commit_record");
        self.check_lease()?;
        debug_assert_eq!(
            commit.epoch,
            self.epoch(),
            "a commit carries its writer's epoch"
        );
        loop {
            match self.create_record(commit) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let there = read_commit(&self.store, &self.commits, commit.id)?;
                    self.check_foreign_record(&there)?;
                    commit.id += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.seen.store(commit.id, Ordering::Relaxed);
        crash_point!("lake.after_commit_record");
        self.move_into_place(commit)?;
        if commit.id > KEEP_COMMITS {
            let _ = self
                .store
                .delete(&self.commit_path(commit.id - KEEP_COMMITS));
        }
        Ok(())
    }

    /// Create the commit record, only if no record of that id exists.
    fn create_record(&self, commit: &Commit) -> io::Result<()> {
        self.create_record_in(&self.commits, commit)
    }

    /// Create a record in the commit log `log` (this writer's or another's), only if no record of
    /// that id exists.
    fn create_record_in(&self, log: &str, commit: &Commit) -> io::Result<()> {
        let scratch = format!(
            "{}/commit-{}-{:016x}.json",
            self.tmp,
            commit.id,
            rand::random::<u64>()
        );
        let bytes = serde_json::to_vec_pretty(commit).map_err(io::Error::other)?;
        self.store
            .create_new(&record_path(log, commit.id), &scratch, &bytes)
    }

    /// Move a commit's files from `tmp/` into place. Each must be in one of the two: a file in
    /// neither was removed by someone else, and the commit's rows with it.
    fn move_into_place(&self, commit: &Commit) -> Result<(), CommitError> {
        for f in &commit.files {
            let from = format!("{}/{}", self.tmp, f.tmp);
            match self.store.rename(&from, &f.path) {
                Ok(()) => {}
                // Moved already: by a recovery of the next holder, racing this one.
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.store.exists(&f.path)? => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CommitError::FileLost {
                        commit: commit.id,
                        file: f.path.clone(),
                        tmp: from,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        // After the replacement is in place: a reader may see both for a moment, never neither.
        for path in &commit.removed {
            self.store.delete(path)?;
        }
        Ok(self.store.sync_dir(&self.tmp)?)
    }

    /// Roll forward every kept commit with a file still in `tmp/` (a crash while it moved them),
    /// oldest first, so that a file moved twice ends as the newer commit wants it.
    fn roll_forward_unfinished(&self) -> Result<(), CommitError> {
        let staged: std::collections::BTreeSet<String> = self
            .store
            .list_files(&self.tmp)?
            .into_iter()
            .filter_map(|f| f.rsplit('/').next().map(String::from))
            .collect();
        if staged.is_empty() {
            return Ok(());
        }
        for id in commit_ids_in(&self.store, &self.commits)? {
            let commit = read_commit(&self.store, &self.commits, id)?;
            if commit.files.iter().any(|f| staged.contains(&f.tmp)) {
                tracing::info!(commit = id, "finishing a commit interrupted by a crash");
                self.move_into_place(&commit)?;
            }
        }
        Ok(())
    }

    fn commit_path(&self, id: u64) -> String {
        record_path(&self.commits, id)
    }
}

fn record_path(log: &str, id: u64) -> String {
    format!("{log}/{id:020}.json")
}

/// The commit log of a writer of a lake of several.
fn writer_log(writer: &str) -> String {
    format!("{}/commits", writer_base(Some(writer)))
}

/// A writer that is gone for good gets a revocation at every rebalance: keep its log as short as
/// a live one's (only revocations go; a commit keeps its record for the writer's recovery).
fn prune_old_revocation(store: &Store, log: &str, newest: u64) {
    if newest <= KEEP_COMMITS {
        return;
    }
    let old = newest - KEEP_COMMITS;
    if read_commit(store, log, old).is_ok_and(|c| c.revokes.is_some() && c.files.is_empty()) {
        let _ = store.delete(&record_path(log, old));
    }
}

/// The ids of the commit records in the commit log folder `log`, oldest first.
fn commit_ids_in(store: &Store, log: &str) -> io::Result<Vec<u64>> {
    store.numbered_records(log)
}

fn read_commit(store: &Store, log: &str, id: u64) -> io::Result<Commit> {
    let text = store.get(&record_path(log, id))?;
    serde_json::from_slice(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("commit record {id} in {log} is unreadable: {e}"),
        )
    })
}

/// The newest commit record in the commit log folder `log`.
fn latest_commit_in(store: &Store, log: &str) -> io::Result<Option<Commit>> {
    match commit_ids_in(store, log)?.last() {
        Some(&id) => read_commit(store, log, id).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_with_file(lake: &LakeRoot, id: u64, name: &str) -> Commit {
        let tmp = lake.staging_path().unwrap();
        fs::write(&tmp, name).unwrap();
        Commit {
            id,
            files: vec![CommittedFile {
                tmp: tmp.file_name().unwrap().to_str().unwrap().into(),
                path: format!("raw/s/date=2024-01-01/{name}"),
                rows: 1,
                bytes: 1,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn commit_moves_files_and_recovery_discards_uncommitted() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeRoot::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(lake.recover().unwrap().id, 0);
        let mut c1 = commit_with_file(&lake, 1, "a.parquet");
        lake.commit(&mut c1).unwrap();
        let stray = lake.staging_path().unwrap();
        fs::write(&stray, "uncommitted").unwrap();
        let got = lake.recover().unwrap();
        assert_eq!(got, c1);
        assert!(dir.path().join("raw/s/date=2024-01-01/a.parquet").exists());
        assert!(!stray.exists(), "uncommitted file must be discarded");
    }

    fn holder(dir: &Path, epoch: u64) -> LakeRoot {
        LakeRoot::open_writer(dir.to_str().unwrap(), None, Some(Claim::for_test(epoch))).unwrap()
    }

    #[test]
    fn a_new_holder_fences_the_old_one_before_it_deletes_what_the_old_one_staged() {
        let dir = tempfile::tempdir().unwrap();
        let old = holder(dir.path(), 1);
        old.recover().unwrap();
        let mut c1 = Commit {
            epoch: 1,
            ..commit_with_file(&old, 2, "a.parquet")
        };
        old.commit(&mut c1).unwrap();
        // The old holder stages its next file, then a new holder takes the lake over.
        let mut staged = Commit {
            epoch: 1,
            ..commit_with_file(&old, 3, "b.parquet")
        };
        let new = holder(dir.path(), 2);
        let fence = new.recover().unwrap();
        assert_eq!(
            (fence.id, fence.epoch),
            (3, 2),
            "the fence is the next record"
        );
        assert!(fence.files.is_empty());
        assert_eq!(
            fence.positions, c1.positions,
            "the fence carries the last state"
        );
        // The old holder wakes up: its commit is refused before it moves anything.
        let refused = old.commit(&mut staged).unwrap_err();
        assert!(matches!(refused, CommitError::Fenced { .. }), "{refused}");
        assert!(dir.path().join("raw/s/date=2024-01-01/a.parquet").exists());
        assert!(!dir.path().join("raw/s/date=2024-01-01/b.parquet").exists());
        // Its own recovery cannot take the log back either.
        assert!(matches!(old.recover(), Err(CommitError::Fenced { .. })));
        // The new holder restarting (same epoch) needs no second fence.
        assert_eq!(new.recover().unwrap().id, 3);
    }

    #[test]
    fn every_unfinished_commit_is_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeRoot::open(dir.path().to_str().unwrap()).unwrap();
        lake.recover().unwrap();
        // Two commit points passed, neither commit's file moved (a crash, then another).
        for (id, name) in [(1, "c.parquet"), (2, "d.parquet")] {
            let c = commit_with_file(&lake, id, name);
            lake.create_record(&c).unwrap();
        }
        lake.recover().unwrap();
        assert!(dir.path().join("raw/s/date=2024-01-01/c.parquet").exists());
        assert!(dir.path().join("raw/s/date=2024-01-01/d.parquet").exists());
    }

    #[test]
    fn a_committed_file_in_neither_place_is_a_loud_error() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeRoot::open(dir.path().to_str().unwrap()).unwrap();
        lake.recover().unwrap();
        let mut c = commit_with_file(&lake, 1, "e.parquet");
        let other = commit_with_file(&lake, 1, "f.parquet");
        c.files.extend(other.files);
        lake.create_record(&c).unwrap();
        // Someone removes one of the two staged files before the commit finished moving them.
        fs::remove_file(dir.path().join(&lake.tmp).join(&c.files[1].tmp)).unwrap();
        let err = lake.recover().unwrap_err();
        assert!(
            matches!(err, CommitError::FileLost { commit: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("f.parquet"), "{err}");
    }

    #[test]
    fn a_crash_after_the_commit_point_rolls_forward() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeRoot::open(dir.path().to_str().unwrap()).unwrap();
        lake.recover().unwrap();
        let c1 = commit_with_file(&lake, 1, "b.parquet");
        // Simulate a crash right after the commit record's rename: files still in tmp/.
        fs::write(
            dir.path().join(lake.commit_path(1)),
            serde_json::to_vec(&c1).unwrap(),
        )
        .unwrap();
        lake.recover().unwrap();
        assert!(dir.path().join("raw/s/date=2024-01-01/b.parquet").exists());
    }

    fn worker(dir: &Path, name: &str, generation: i32, partitions: &[&str]) -> LakeRoot {
        let mut lake = LakeRoot::open_writer(dir.to_str().unwrap(), Some(name), None).unwrap();
        lake.recover().unwrap();
        lake.ownership = Some(ownership(generation, partitions));
        lake
    }

    fn ownership(generation: i32, partitions: &[&str]) -> Ownership {
        Ownership {
            generation,
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn revocation(by: &str, generation: i32, partitions: &[&str]) -> Revocation {
        Revocation {
            by: by.into(),
            generation,
            partitions: ownership(generation, partitions).partitions,
        }
    }

    fn with_offset(mut c: Commit, key: &str, next_offset: i64) -> Commit {
        c.positions.insert(
            key.into(),
            ResumePosition::Kafka {
                topic: "t".into(),
                partition: 0,
                next_offset,
            },
        );
        c
    }

    #[test]
    fn a_worker_whose_partitions_went_to_another_cannot_commit_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let a = worker(dir.path(), "sinks-a", 1, &["kafka:t:0", "kafka:t:1"]);
        let mut first = with_offset(commit_with_file(&a, 1, "a1.parquet"), "kafka:t:0", 10);
        a.commit(&mut first).unwrap();
        // a stalls holding its next file; the group gives t:1 to b (generation 2), which
        // revokes it in a's log before reading the offsets.
        let mut held = with_offset(commit_with_file(&a, 2, "a2.parquet"), "kafka:t:0", 20);
        let mut b = worker(dir.path(), "sinks-b", 2, &[]);
        b.take_partitions(2, ownership(2, &["kafka:t:1"]).partitions)
            .unwrap();
        let latest = b.latest_commits_of_all_writers().unwrap();
        let of_a = latest.iter().find(|c| c.revokes.is_some()).unwrap();
        assert_eq!(of_a.id, 2, "the revocation is a's next record");
        assert_eq!(of_a.positions, first.positions, "it repeats a's last state");

        let refused = a.commit(&mut held).unwrap_err();
        assert!(
            matches!(&refused, CommitError::PartitionsRevoked { partitions, generation: 2, .. } if partitions == "kafka:t:1"),
            "{refused}"
        );
        assert!(refused.is_transient(), "a revoked worker rejoins");
        assert!(!dir.path().join("raw/s/date=2024-01-01/a2.parquet").exists());
        // It stays refused (its ODS merges check the same), until it restarts: then it resumes
        // from the revocation, which repeats its last commit's state.
        assert!(matches!(
            a.check_claim(),
            Err(CommitError::PartitionsRevoked { .. })
        ));
        let a_again = worker(dir.path(), "sinks-a", 3, &["kafka:t:0"]);
        assert_eq!(a_again.recover().unwrap().positions, first.positions);
        assert!(a_again.check_claim().is_ok());
    }

    #[test]
    fn a_revocation_of_other_partitions_or_an_older_generation_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let a = worker(dir.path(), "sinks-a", 3, &["kafka:t:0"]);
        let mut first = commit_with_file(&a, 1, "p1.parquet");
        a.commit(&mut first).unwrap();
        let b = worker(dir.path(), "sinks-b", 3, &["kafka:t:1"]);
        // b's assignment in the same generation (partitions a does not own), and a late one from
        // an older generation for a partition a owns now.
        b.revoke_from_other_writers(&revocation("sinks-b", 3, &["kafka:t:1"]))
            .unwrap();
        b.revoke_from_other_writers(&revocation("sinks-b", 2, &["kafka:t:0"]))
            .unwrap();
        let mut next = commit_with_file(&a, 2, "p2.parquet");
        a.commit(&mut next).unwrap();
        assert_eq!(next.id, 4, "the commit goes after the two revocations");
        assert!(dir.path().join("raw/s/date=2024-01-01/p2.parquet").exists());
        // A restart of a resumes from its own commit, the newest record of its log.
        let a_again = worker(dir.path(), "sinks-a", 3, &["kafka:t:0"]);
        assert_eq!(a_again.recover().unwrap(), next);
    }

    #[test]
    fn a_revocation_found_before_an_ods_merge_stops_the_merge() {
        let dir = tempfile::tempdir().unwrap();
        let a = worker(dir.path(), "sinks-a", 1, &["kafka:t:0"]);
        let mut first = commit_with_file(&a, 1, "o1.parquet");
        a.commit(&mut first).unwrap();
        let b = worker(dir.path(), "sinks-b", 2, &["kafka:t:0"]);
        b.revoke_from_other_writers(&revocation("sinks-b", 2, &["kafka:t:0"]))
            .unwrap();
        assert!(matches!(
            a.check_claim(),
            Err(CommitError::PartitionsRevoked { .. })
        ));
    }

    #[test]
    fn revocations_in_a_log_nobody_writes_any_more_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let gone = worker(dir.path(), "sinks-gone", 1, &["kafka:t:0"]);
        let mut first = commit_with_file(&gone, 1, "g1.parquet");
        gone.commit(&mut first).unwrap();
        let b = worker(dir.path(), "sinks-b", 2, &["kafka:t:0"]);
        for generation in 2..(KEEP_COMMITS as i32 + 12) {
            b.revoke_from_other_writers(&revocation("sinks-b", generation, &["kafka:t:0"]))
                .unwrap();
        }
        let ids = commit_ids_in(b.store(), &writer_log("sinks-gone")).unwrap();
        assert!(
            ids.len() as u64 <= KEEP_COMMITS + 1,
            "{} records",
            ids.len()
        );
        assert_eq!(ids[0], 1, "the gone writer's own commit stays");
    }
}
