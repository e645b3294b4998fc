//! Snapshot phases, shared by the sources whose snapshots resume after a crash (Postgres,
//! MySQL/MariaDB).
//!
//! Every phase of a snapshot reads at a point of the log that is known exactly (Postgres: an
//! exported snapshot's WAL position; MySQL: a consistent read view's binlog coordinate): the
//! first phase at the point streaming starts from, C; a phase that resumes after a crash at a
//! newer point C1. Tables are read in name order; a table with a single integer primary key is
//! read in key order, and every row boundary is a place to resume (the cursor). A table with any
//! other key is read in one piece and committed when it is complete.
//!
//! Streaming then starts at C for every key. A key read by a later phase already reflects every
//! change committed before that phase's point, so those changes are dropped for it (the phase
//! filter); all later changes apply on top. Snapshot rows of every phase have sequences
//! `(C - 1, ordinal)`, so they sort before every streamed change: "last row per key by `_seq`"
//! stays the current state, with no gap and no duplicate.

#[cfg(test)]
use crate::contract::position::snapshot::Phase;
use crate::contract::position::snapshot::{Cursor, SnapshotState};
use crate::event::{ColumnType, Row, TableSchema, Value};

/// Order of keys across tables: (table name, key). A table's start sorts before all its keys;
/// keys that are not single integers sort at their table's start (such tables are read whole).
type KeyPos = (String, i128);

fn boundary(cursor: &Option<Cursor>) -> Option<KeyPos> {
    cursor.as_ref().map(|c| {
        (
            c.table.clone(),
            c.after_key.map_or(i128::MIN, |k| k as i128 + 1),
        )
    })
}

impl SnapshotState {
    /// The position up to which streamed changes may still be dropped for some keys.
    pub(crate) fn filter_until(&self) -> u64 {
        self.phases.iter().skip(1).map(|p| p.lsn).max().unwrap_or(0)
    }

    /// Whether a streamed change of `table` with integer key `key` committed at `commit_lsn` is
    /// already in the snapshot (read by a phase that started after that commit).
    pub(crate) fn already_read(&self, table: &str, key: Option<i64>, commit_lsn: u64) -> bool {
        let pos: KeyPos = (table.to_string(), key.map_or(i128::MIN, |k| k as i128));
        let phase = self
            .phases
            .iter()
            .rev()
            .find(|p| boundary(&p.from).is_none_or(|b| b <= pos));
        phase.is_some_and(|p| commit_lsn < p.lsn)
    }
}

/// The single integer primary-key column a table can be chunked by.
pub(crate) fn chunk_key(schema: &TableSchema) -> Option<usize> {
    let mut keys = schema.key_columns();
    let (i, col) = keys.next()?;
    if keys.next().is_some() {
        return None;
    }
    matches!(
        col.ty,
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64
    )
    .then_some(i)
}

/// The integer key of a row, for the phase filter.
pub(crate) fn int_key(schema: &TableSchema, row: &Row) -> Option<i64> {
    match row.get(chunk_key(schema)?) {
        Some(Value::Int(k)) => Some(*k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SnapshotState {
        SnapshotState {
            complete: true,
            next_ordinal: 0,
            cursor: None,
            estimated_rows: 0,
            phases: vec![
                Phase {
                    lsn: 100,
                    from: None,
                },
                Phase {
                    lsn: 500,
                    from: Some(Cursor {
                        table: "public.b".into(),
                        after_key: Some(41),
                    }),
                },
                Phase {
                    lsn: 900,
                    from: Some(Cursor {
                        table: "public.c".into(),
                        after_key: None,
                    }),
                },
            ],
        }
    }

    #[test]
    fn the_phase_that_read_a_key_decides() {
        let s = state();
        // public.a and public.b up to key 41 were read at 100: nothing streamed is dropped.
        assert!(!s.already_read("public.a", Some(7), 150));
        assert!(!s.already_read("public.b", Some(41), 150));
        // public.b after 41 was read at 500: earlier commits are in the snapshot already.
        assert!(s.already_read("public.b", Some(42), 150));
        assert!(!s.already_read("public.b", Some(42), 500));
        // public.c (any key, or a non-integer key) was read at 900.
        assert!(s.already_read("public.c", None, 899));
        assert!(s.already_read("public.d", Some(1), 600));
        assert!(!s.already_read("public.d", Some(1), 950));
        assert_eq!(s.filter_until(), 900);
    }
}
