//! MongoDB: where in the change stream a source resumes, and its unfinished snapshot.

use serde::{Deserialize, Serialize};

/// A MongoDB source position, stored in the lake's commit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MongoPosition {
    /// Resume after this change stream token (its relaxed extended JSON); None before the first
    /// event, when the stream starts at `start_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    /// The cluster time (seconds << 32 | increment) streaming starts at without a token: the
    /// snapshot's T0.
    #[serde(default)]
    pub(crate) start_at: u64,
    /// The cluster time the position covers (the last whole group's; `start_at` before any).
    #[serde(default)]
    pub(crate) time: u64,
    /// The inferred schemas valid here (`_sluice/schemas/<source>/<id>.json`).
    pub(crate) schemas: String,
    /// An unfinished snapshot, or a finished one whose filter still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<MongoSnapshot>,
}

/// Where a snapshot stands; part of the committed source position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MongoSnapshot {
    /// Every collection has been read.
    pub(crate) complete: bool,
    /// Ordinal of the next snapshot row (the minor part of its sequence).
    pub(crate) next_ordinal: u64,
    /// Where reading goes on; `None` before the first collection (or when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cursor: Option<Cursor>,
    /// The chunks read, in order: each covers its collection's `_id`s after `after` up to the
    /// next chunk's `after`.
    #[serde(default)]
    pub(crate) chunks: Vec<Chunk>,
    /// The server's estimate of all captured collections' documents, for progress.
    #[serde(default)]
    pub(crate) estimated_rows: u64,
}

/// Reading continues in `table` (`db.collection`) after the `_id` `after` (canonical extended
/// JSON, so its BSON type survives), from its start if `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    pub(crate) table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<String>,
    /// The cluster time the chunk holds the state at (L).
    pub(crate) read_at: u64,
    /// The cluster time before the read began (L plus the margin, unless T0 bounds L).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started: Option<u64>,
}
