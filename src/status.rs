//! What `/status` (and so `sluice status`) shows: the state of each source and stream, updated
//! by the components as they work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::contract::position::ResumePosition;

/// The pipeline's state (`state` in `/status`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// The daemon is up; the pipeline has not started yet.
    #[default]
    Starting,
    /// Another process holds the lake (`lake_holder` names it): waiting for it to stop.
    Waiting,
    Running,
    /// A transient error: restarting from the last commit after a backoff.
    Restarting,
    /// The lake refuses writes (full, read-only, no permission): retrying, losing nothing.
    LakeNotWritable,
    /// A definite error stopped it (`last_error` says which).
    Failed,
    Stopped,
}

/// A source's state (`sources.<name>.state` in `/status`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    #[default]
    Connecting,
    Snapshotting,
    Streaming,
    Down,
}

impl PipelineState {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Starting => "starting",
            PipelineState::Waiting => "waiting",
            PipelineState::Running => "running",
            PipelineState::Restarting => "restarting",
            PipelineState::LakeNotWritable => "lake_not_writable",
            PipelineState::Failed => "failed",
            PipelineState::Stopped => "stopped",
        }
    }
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Connecting => "connecting",
            SourceState::Snapshotting => "snapshotting",
            SourceState::Streaming => "streaming",
            SourceState::Down => "down",
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StatusBoard {
    pub state: PipelineState,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// While `state` is `waiting`: the process that holds the lake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lake_holder: Option<String>,
    /// Positions of the last lake commit, per source.
    pub committed: BTreeMap<String, ResumePosition>,
    pub sources: BTreeMap<String, SourceStatus>,
    pub streams: BTreeMap<String, StreamStatus>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SourceStatus {
    pub state: SourceState,
    /// Now minus the commit time of the last transaction read, when streaming.
    pub lag_seconds: Option<f64>,
    pub snapshot_rows: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StreamStatus {
    pub zone: String,
    pub rows: u64,
    pub files: u64,
    pub last_commit_ms: i64,
}

#[derive(Debug, Default, Clone)]
pub struct SharedStatus(Arc<Mutex<StatusBoard>>);

impl SharedStatus {
    pub(crate) fn update(&self, f: impl FnOnce(&mut StatusBoard)) {
        if let Ok(mut board) = self.0.lock() {
            f(&mut board);
        }
    }

    pub(crate) fn source(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        self.update(|b| f(b.sources.entry(name.to_string()).or_default()));
    }

    pub fn snapshot(&self) -> StatusBoard {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states are enums inside and the same words on the wire (`/status`, `sluice status`).
    #[test]
    fn states_are_written_and_read_as_their_words() {
        let pipeline = [
            PipelineState::Starting,
            PipelineState::Running,
            PipelineState::Restarting,
            PipelineState::Failed,
            PipelineState::Stopped,
        ];
        for state in pipeline {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<PipelineState>(&json).unwrap(), state);
        }
        let source = [
            SourceState::Connecting,
            SourceState::Snapshotting,
            SourceState::Streaming,
            SourceState::Down,
        ];
        for state in source {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<SourceState>(&json).unwrap(), state);
        }
    }
}
