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
//! One process at a time writes a commit log (see `lease.rs`). Commit records are created only if
//! absent, so of two processes that both think they are at commit `n`, one fails ("fenced") before
//! it moves a file. A new holder's recovery first creates a commit record of its own epoch (the
//! *fence*), and only then deletes leftovers in `tmp/`: nothing the old holder staged can be
//! committed after that.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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
}

impl Classify for CommitError {
    fn is_transient(&self) -> bool {
        matches!(self, CommitError::Io(_))
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
        })
    }

    /// This writer's `tmp/` folder (relative to the root), which recovery empties.
    pub(crate) fn tmp_dir(&self) -> &str {
        &self.tmp
    }

    /// The newest commit of every writer of the lake (the embedded log's included).
    pub(crate) fn latest_commits_of_all_writers(&self) -> io::Result<Vec<Commit>> {
        let mut logs = vec![COMMITS.to_string()];
        for f in self.store.list_files(WRITERS).unwrap_or_default() {
            // `_sluice/writers/<w>/commits/<id>.json`
            if let Some(rest) = f.strip_prefix(&format!("{WRITERS}/"))
                && let Some((w, tail)) = rest.split_once('/')
                && tail.starts_with("commits/")
            {
                let log = format!("{WRITERS}/{w}/commits");
                if !logs.contains(&log) {
                    logs.push(log);
                }
            }
        }
        let mut commits = Vec::new();
        for log in logs {
            if let Some(c) = latest_commit_in(&self.store, &log)? {
                commits.push(c);
            }
        }
        Ok(commits)
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

    /// Publish a staged file straight to `path` (relative to the root), replacing what is there.
    pub(crate) fn replace(&self, staged: &Path, path: &str) -> io::Result<()> {
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

    /// Fail if another process took the lake over (as the lease's heartbeat last saw it).
    pub(crate) fn check_claim(&self) -> Result<(), CommitError> {
        match self.claim.as_ref().and_then(Claim::fenced_by) {
            Some(holder) => Err(CommitError::Fenced { holder }),
            None => Ok(()),
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

    /// Make `commit` durable (the commit point), then move its files into place.
    pub fn commit(&self, commit: &Commit) -> Result<(), CommitError> {
        crash_point!("lake.before_commit_record");
        self.check_claim()?;
        debug_assert_eq!(
            commit.epoch,
            self.epoch(),
            "a commit carries its writer's epoch"
        );
        match self.create_record(commit) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(self.fenced()),
            other => other?,
        }
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
        let scratch = format!(
            "{}/commit-{}-{:016x}.json",
            self.tmp,
            commit.id,
            rand::random::<u64>()
        );
        let bytes = serde_json::to_vec_pretty(commit).map_err(io::Error::other)?;
        self.store
            .create_new(&self.commit_path(commit.id), &scratch, &bytes)
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
        format!("{}/{id:020}.json", self.commits)
    }
}

/// The ids of the commit records in the commit log folder `log`, oldest first.
fn commit_ids_in(store: &Store, log: &str) -> io::Result<Vec<u64>> {
    store.numbered_records(log)
}

fn read_commit(store: &Store, log: &str, id: u64) -> io::Result<Commit> {
    let text = store.get(&format!("{log}/{id:020}.json"))?;
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
        let c1 = commit_with_file(&lake, 1, "a.parquet");
        lake.commit(&c1).unwrap();
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
        let c1 = Commit {
            epoch: 1,
            ..commit_with_file(&old, 2, "a.parquet")
        };
        old.commit(&c1).unwrap();
        // The old holder stages its next file, then a new holder takes the lake over.
        let staged = Commit {
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
        let refused = old.commit(&staged).unwrap_err();
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
}
