//! The lake on a local file system and its commit protocol.
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

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::SourcePosition;

/// How many old commit records to keep for inspection.
const KEEP_COMMITS: u64 = 50;

/// A commit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: u64,
    pub committed_at_ms: i64,
    /// Every source's position after this commit (cumulative, not only the ones that changed).
    pub positions: BTreeMap<String, SourcePosition>,
    /// Highest sequence in the lake per `<zone>/<stream>` (cumulative): replays are cut here.
    pub high_seq: BTreeMap<String, String>,
    /// Files this commit moved into place (relative to the root).
    pub files: Vec<CommittedFile>,
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

#[derive(Debug, Clone)]
pub struct LakeRoot {
    root: PathBuf,
}

impl LakeRoot {
    /// `file:///abs/path` or a plain path.
    pub fn open(path: &str) -> io::Result<LakeRoot> {
        let local = path.strip_prefix("file://").unwrap_or(path);
        if local.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty sink path",
            ));
        }
        Ok(LakeRoot {
            root: PathBuf::from(local),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("_sluice").join("tmp")
    }

    fn commits_dir(&self) -> PathBuf {
        self.root.join("_sluice").join("commits")
    }

    pub fn check_writable(&self) -> io::Result<()> {
        fs::create_dir_all(self.tmp_dir())?;
        let probe = self.tmp_dir().join(".write-probe");
        fs::write(&probe, b"ok")?;
        fs::remove_file(probe)
    }

    /// A fresh temporary file name for a data file.
    pub fn new_tmp_path(&self) -> PathBuf {
        self.tmp_dir().join(format!(
            "{:016x}{:016x}.parquet",
            rand::random::<u64>(),
            rand::random::<u64>()
        ))
    }

    /// Bring the lake to the state of its last commit and return that commit.
    pub fn recover(&self) -> io::Result<Commit> {
        fs::create_dir_all(self.tmp_dir())?;
        fs::create_dir_all(self.commits_dir())?;
        let last = self.latest_commit()?.unwrap_or_default();
        self.move_into_place(&last)?;
        let mut discarded = 0;
        for entry in fs::read_dir(self.tmp_dir())? {
            let path = entry?.path();
            if path.is_file() {
                fs::remove_file(&path)?;
                discarded += 1;
            }
        }
        if discarded > 0 {
            tracing::info!(
                files = discarded,
                "discarded uncommitted files from before the restart"
            );
        }
        Ok(last)
    }

    fn latest_commit(&self) -> io::Result<Option<Commit>> {
        let mut best: Option<u64> = None;
        for entry in fs::read_dir(self.commits_dir())? {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            best = best.max(Some(id));
        }
        let Some(id) = best else { return Ok(None) };
        let text = fs::read(self.commit_path(id))?;
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("commit record {id} is unreadable: {e}"),
            )
        })
    }

    fn commit_path(&self, id: u64) -> PathBuf {
        self.commits_dir().join(format!("{id:020}.json"))
    }

    /// Make `commit` durable (the commit point), then move its files into place.
    pub fn commit(&self, commit: &Commit) -> io::Result<()> {
        let tmp = self.tmp_dir().join(format!("commit-{}.json", commit.id));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(commit).map_err(io::Error::other)?)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.commit_path(commit.id))?;
        sync_dir(&self.commits_dir())?;
        self.move_into_place(commit)?;
        if commit.id > KEEP_COMMITS {
            let _ = fs::remove_file(self.commit_path(commit.id - KEEP_COMMITS));
        }
        Ok(())
    }

    fn move_into_place(&self, commit: &Commit) -> io::Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for f in &commit.files {
            let from = self.tmp_dir().join(&f.tmp);
            if !from.exists() {
                continue; // moved already (before a crash, or in the commit itself)
            }
            let to = self.root.join(&f.path);
            let dir = to
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.root.clone());
            fs::create_dir_all(&dir)?;
            fs::rename(&from, &to)?;
            dirs.insert(dir);
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        sync_dir(&self.tmp_dir())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_with_file(lake: &LakeRoot, id: u64, name: &str) -> Commit {
        let tmp = lake.new_tmp_path();
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
        let stray = lake.new_tmp_path();
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
        fs::write(lake.commit_path(1), serde_json::to_vec(&c1).unwrap()).unwrap();
        lake.recover().unwrap();
        assert!(dir.path().join("raw/s/date=2024-01-01/b.parquet").exists());
    }
}
