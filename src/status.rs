//! What `/status` (and so `sluice status`) shows: the state of each source and stream, updated
//! by the components as they work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::source::SourcePosition;

#[derive(Debug, Default, Clone, Serialize)]
pub struct StatusBoard {
    /// The pipeline: running, restarting, failed, stopped.
    pub state: String,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// Positions of the last lake commit, per source.
    pub committed: BTreeMap<String, SourcePosition>,
    pub sources: BTreeMap<String, SourceStatus>,
    pub streams: BTreeMap<String, StreamStatus>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SourceStatus {
    /// connecting, snapshotting, streaming, down.
    pub state: String,
    /// Now minus the commit time of the last transaction read, when streaming.
    pub lag_seconds: Option<f64>,
    pub snapshot_rows: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct StreamStatus {
    pub zone: String,
    pub rows: u64,
    pub files: u64,
    pub last_commit_ms: i64,
}

#[derive(Debug, Default, Clone)]
pub struct SharedStatus(Arc<Mutex<StatusBoard>>);

impl SharedStatus {
    pub fn update(&self, f: impl FnOnce(&mut StatusBoard)) {
        if let Ok(mut board) = self.0.lock() {
            f(&mut board);
        }
    }

    pub fn source(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        self.update(|b| f(b.sources.entry(name.to_string()).or_default()));
    }

    pub fn snapshot(&self) -> StatusBoard {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}
