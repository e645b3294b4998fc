//! Source positions as the on-disk checkpoint schema: what a commit record (and Kafka mode's
//! offsets topic) holds per source, so that a restart resumes exactly where the lake ends. The
//! golden test (`src/golden_tests.rs`) keeps these bytes from drifting. Only the shapes live
//! here; what a source does with its position is the source's.

pub(crate) mod mongodb;
pub(crate) mod mysql;
pub(crate) mod snapshot;

use serde::{Deserialize, Serialize};

pub(crate) use mongodb::MongoPosition;
pub(crate) use mysql::BinlogPosition;
pub(crate) use snapshot::SnapshotState;

/// Where a source resumes: its durable position, stored in the lake's commit record (and, in
/// Kafka mode, the offsets topic). Not to be confused with [`crate::event::ChangeOrigin`], where one
/// change came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResumePosition {
    /// Postgres: stream from `lsn` (the end of the last transaction wholly in the lake; during
    /// the snapshot, the slot's consistent point). `slot` names the slot the position belongs to.
    Postgres {
        lsn: u64,
        slot: String,
        /// An unfinished snapshot, or a finished one whose phase filter still applies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<SnapshotState>,
    },
    /// MySQL / MariaDB: binlog file and offset, GTID state, and the schema history there.
    Mysql(BinlogPosition),
    /// MongoDB: the change stream's resume token (or the cluster time to start at), the
    /// inferred schemas there, and an unfinished snapshot.
    Mongo(MongoPosition),
    /// Kafka mode's sinks: the next offset to read of one topic partition.
    Kafka {
        topic: String,
        partition: i32,
        next_offset: i64,
    },
}

/// How far an unfinished snapshot has come, for `sluice status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotProgress<'a> {
    /// Rows committed so far.
    pub rows: u64,
    /// The server's estimate of all captured tables' rows.
    pub estimated_rows: u64,
    /// The table being read.
    pub table: Option<&'a str>,
}

impl ResumePosition {
    /// The position as its database shows it: a Postgres LSN, a binlog `file:offset`, a MongoDB
    /// cluster time `seconds:increment`, a Kafka `topic[partition]@offset`.
    pub fn log_point(&self) -> String {
        match self {
            ResumePosition::Postgres { lsn, .. } => crate::event::format_lsn(*lsn),
            ResumePosition::Mysql(p) => format!("{}:{}", p.file, p.pos),
            ResumePosition::Mongo(p) => format!("{}:{}", p.time >> 32, p.time & 0xffff_ffff),
            ResumePosition::Kafka {
                topic,
                partition,
                next_offset,
            } => format!("{topic}[{partition}]@{next_offset}"),
        }
    }

    /// The snapshot still being read at this position, if any.
    pub fn unfinished_snapshot(&self) -> Option<SnapshotProgress<'_>> {
        let (complete, rows, estimated_rows, table) = match self {
            ResumePosition::Postgres {
                snapshot: Some(s), ..
            }
            | ResumePosition::Mysql(BinlogPosition {
                snapshot: Some(s), ..
            }) => (
                s.complete,
                s.next_ordinal,
                s.estimated_rows,
                s.cursor.as_ref().map(|c| c.table.as_str()),
            ),
            ResumePosition::Mongo(MongoPosition {
                snapshot: Some(s), ..
            }) => (
                s.complete,
                s.next_ordinal,
                s.estimated_rows,
                s.cursor.as_ref().map(|c| c.table.as_str()),
            ),
            _ => return None,
        };
        (!complete).then_some(SnapshotProgress {
            rows,
            estimated_rows,
            table,
        })
    }
}
