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

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::Store;
use crate::contract::position::ResumePosition;
use crate::failpoint::crash_point;

/// How many old commit records to keep for inspection.
const KEEP_COMMITS: u64 = 50;

/// A commit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: u64,
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
    /// This writer's `tmp/` and commit log (relative to the root).
    tmp: String,
    commits: String,
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
const TMP: &str = "_sluice/tmp";
const COMMITS: &str = "_sluice/commits";
/// Where the writers of a shared lake keep theirs.
const WRITERS: &str = "_sluice/writers";

impl LakeRoot {
    /// `file:///abs/path`, a plain path, or `hdfs://namenode:port/path`.
    pub fn open(path: &str) -> io::Result<LakeRoot> {
        Self::open_writer(path, None)
    }

    /// The lake as one of several writers (`Some(name)`), or as its only writer.
    pub(crate) fn open_writer(path: &str, writer: Option<&str>) -> io::Result<LakeRoot> {
        let store = Store::open(path)?;
        let (tmp, commits) = match writer {
            Some(w) => (
                format!("{WRITERS}/{w}/tmp"),
                format!("{WRITERS}/{w}/commits"),
            ),
            None => (TMP.to_string(), COMMITS.to_string()),
        };
        let staging = match store.local_root() {
            Some(root) => root.join(&tmp),
            None => std::env::temp_dir().join(format!("sluice-staging-{}", std::process::id())),
        };
        Ok(LakeRoot {
            store,
            staging,
            tmp,
            commits,
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

    /// Bring the lake to the state of its last commit and return that commit.
    pub fn recover(&self) -> io::Result<Commit> {
        self.store.mkdirs(&self.tmp)?;
        self.store.mkdirs(&self.commits)?;
        let last = latest_commit_in(&self.store, &self.commits)?.unwrap_or_default();
        self.move_into_place(&last)?;
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

    /// Make `commit` durable (the commit point), then move its files into place.
    pub fn commit(&self, commit: &Commit) -> io::Result<()> {
        crash_point!("lake.before_commit_record");
        let tmp = format!("{}/commit-{}.json", self.tmp, commit.id);
        self.store.put(
            &tmp,
            &serde_json::to_vec_pretty(commit).map_err(io::Error::other)?,
        )?;
        self.store.rename(&tmp, &self.commit_path(commit.id))?;
        crash_point!("lake.after_commit_record");
        self.move_into_place(commit)?;
        if commit.id > KEEP_COMMITS {
            let _ = self
                .store
                .delete(&self.commit_path(commit.id - KEEP_COMMITS));
        }
        Ok(())
    }

    fn move_into_place(&self, commit: &Commit) -> io::Result<()> {
        for f in &commit.files {
            let from = format!("{}/{}", self.tmp, f.tmp);
            if !self.store.exists(&from)? {
                continue; // moved already (before a crash, or in the commit itself)
            }
            self.store.rename(&from, &f.path)?;
        }
        // After the replacement is in place: a reader may see both for a moment, never neither.
        for path in &commit.removed {
            self.store.delete(path)?;
        }
        self.store.sync_dir(&self.tmp)
    }

    fn commit_path(&self, id: u64) -> String {
        format!("{}/{id:020}.json", self.commits)
    }
}

/// The newest commit record in the commit log folder `log`.
fn latest_commit_in(store: &Store, log: &str) -> io::Result<Option<Commit>> {
    let best = store
        .list_files(log)?
        .iter()
        .filter_map(|f| {
            f.rsplit('/')
                .next()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max();
    let Some(id) = best else { return Ok(None) };
    let text = store.get(&format!("{log}/{id:020}.json"))?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("commit record {id} in {log} is unreadable: {e}"),
        )
    })
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
