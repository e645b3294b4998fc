//! The initial snapshot: each collection read in `_id` order, a chunk at a time, committed
//! chunk by chunk and resumable after a crash.
//!
//! Streaming starts at T0, the cluster time taken before the first chunk (change streams'
//! `startAtOperationTime` is inclusive). Each chunk is a snapshot read that started after
//! cluster time L and saw everything up to the time H the server reports. The changes in
//! `(L, H]` to the chunk's `_id`s are read from the change stream (window.rs), and the chunk
//! emits each such document as it was at L (the pre-image of its first change then), so the
//! chunk is exactly the state at L; streamed changes at or before L are dropped for those
//! `_id`s ([`SnapshotFilter`]), every later change applies on top. Snapshot rows have sequences
//! `(T0 - 1, ordinal)`, so they sort before every streamed change: "last row per key by `_seq`"
//! is the current state, with no gap and no duplicate.
//!
//! Chunks are read with `min` on the `_id` index rather than `$gt`, because `$gt` only matches
//! `_id`s of the bound's own type: `min` walks the index in BSON order across types, as the
//! index holds them.

use std::cmp::Ordering;
use std::collections::HashMap;

use mongodb::bson::{Bson, Document, doc};

use super::documents::{self, ID};
use super::window::{FirstChange, Range, WindowWatch};
use super::{MongoError, MongoSource, StreamFrom, cluster_time};
use crate::contract::position::ResumePosition;
use crate::contract::position::mongodb::{Chunk, Cursor, MongoSnapshot};
use crate::event::{ChangeEvent, ChangeOrigin, Op, Seq};
use crate::metrics as m;

impl MongoSnapshot {
    /// The cluster time up to which streamed changes may still be dropped for some `_id`s.
    pub(crate) fn filter_until(&self) -> u64 {
        self.chunks.iter().map(|c| c.read_at).max().unwrap_or(0)
    }
}

/// `_id` as canonical extended JSON text (the cursor's form).
pub(crate) fn id_key(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// The `_id` a cursor's text names.
pub fn parse_id(text: &str) -> Result<Bson, MongoError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| MongoError::Setup(format!("a snapshot cursor that is not JSON: {e}")))?;
    Bson::try_from(json)
        .map_err(|e| MongoError::Setup(format!("a snapshot cursor that is not extended JSON: {e}")))
}

/// The snapshot's chunks, parsed, for the streamed changes that follow.
#[derive(Debug, Default)]
pub(crate) struct SnapshotFilter {
    until: u64,
    /// Per collection, each chunk's lower bound (exclusive; `None`: the start) and cluster time.
    chunks: HashMap<String, Vec<(Option<Bson>, u64)>>,
    /// Per collection, the cluster time before its first chunk was read.
    started: HashMap<String, u64>,
}

impl SnapshotFilter {
    pub(crate) fn new(state: &MongoSnapshot) -> Result<SnapshotFilter, MongoError> {
        let mut chunks: HashMap<String, Vec<(Option<Bson>, u64)>> = HashMap::new();
        let mut started: HashMap<String, u64> = HashMap::new();
        for c in &state.chunks {
            started
                .entry(c.table.clone())
                .or_insert(c.started.unwrap_or(c.read_at));
            let after = c.after.as_deref().map(parse_id).transpose()?;
            chunks
                .entry(c.table.clone())
                .or_default()
                .push((after, c.read_at));
        }
        Ok(SnapshotFilter {
            until: state.filter_until(),
            chunks,
            started,
        })
    }

    pub(crate) fn until(&self) -> u64 {
        self.until
    }

    /// The cluster time before the snapshot began reading `table`, if it read it: a drop or
    /// rename of `table` at or before it is in the snapshot already (the read found what came
    /// after it).
    pub(crate) fn collection_read_from(&self, table: &str) -> Option<u64> {
        self.started.get(table).copied()
    }

    /// Whether a change of `_id` `id` in `table` at cluster time `at` is already in the
    /// snapshot: the chunk that covers the `_id` was read at or after it.
    pub(crate) fn already_read(&self, table: &str, id: &Bson, at: u64) -> bool {
        let Some(chunks) = self.chunks.get(table) else {
            return false;
        };
        // Chunks ascend by bound: the covering one is the last whose bound is below the id.
        let n = chunks.partition_point(|(after, _)| {
            after
                .as_ref()
                .is_none_or(|a| documents::compare(a, id) == Ordering::Less)
        });
        n.checked_sub(1).is_some_and(|i| at <= chunks[i].1)
    }
}

/// Documents per `getMore`: bounds the reply held in memory.
const BATCH_DOCS: i32 = 1000;

/// How far below the time before a chunk read its window starts: one second of cluster time.
pub(super) const WINDOW_MARGIN: u64 = 1 << 32;

impl MongoSource {
    /// Read the collections from `state.cursor` on; streaming starts at `t0`. Hands rows
    /// downstream with a position to resume from after every chunk.
    pub(super) async fn read_snapshot(
        &mut self,
        t0: u64,
        mut state: MongoSnapshot,
    ) -> Result<MongoSnapshot, MongoError> {
        let running =
            metrics::gauge!(m::SOURCE_SNAPSHOT_RUNNING, "source" => self.name.to_string());
        running.set(1.0);
        self.ctx.status.source(&self.name, |s| {
            s.state = crate::status::SourceState::Snapshotting
        });
        let mut collections = self.collections.clone();
        if let Some(cursor) = &state.cursor {
            collections.retain(|c| *c >= cursor.table);
            tracing::info!(source = %self.name, collection = %cursor.table, "resuming the snapshot");
        }
        if state.estimated_rows == 0 {
            for c in &collections {
                state.estimated_rows += self.estimated_rows(c).await;
            }
        }
        // Opened at the first chunk's window: a resumed snapshot need not read the changes
        // since T0 again.
        let mut watch = None;
        for (i, name) in collections.iter().enumerate() {
            let estimate = self.estimated_rows(name).await;
            metrics::gauge!(m::SOURCE_SNAPSHOT_ROWS_ESTIMATED, "source" => self.name.to_string(), "table" => self.stream_name(name))
                .set(estimate as f64);
            if state.cursor.as_ref().is_none_or(|c| c.table != *name) {
                state.cursor = Some(Cursor {
                    table: name.clone(),
                    after: None,
                });
            }
            while self.read_chunk(t0, name, &mut state, &mut watch).await? {}
            state.cursor = collections.get(i + 1).map(|next| Cursor {
                table: next.clone(),
                after: None,
            });
            state.complete = state.cursor.is_none();
            tracing::info!(source = %self.name, collection = %name, "snapshot of collection done");
            self.send_snapshot_position(t0, &state).await?;
        }
        running.set(0.0);
        if !state.complete {
            // Nothing left to read (a resumed snapshot whose last collection was done).
            state.complete = true;
            state.cursor = None;
            self.send_snapshot_position(t0, &state).await?;
        }
        Ok(state)
    }

    async fn estimated_rows(&self, name: &str) -> u64 {
        let (db, coll) = name.split_once('.').unwrap_or(("", name));
        self.client
            .database(db)
            .collection::<Document>(coll)
            .estimated_document_count()
            .await
            .unwrap_or(0)
    }

    /// One chunk of `name` after the cursor, as one snapshot read, with the changes made while
    /// it was read resolved (window.rs). Returns whether the collection has more.
    async fn read_chunk(
        &mut self,
        t0: u64,
        name: &str,
        state: &mut MongoSnapshot,
        watch: &mut Option<WindowWatch>,
    ) -> Result<bool, MongoError> {
        let chunk = self
            .ctx
            .config
            .snapshot_chunk_rows
            .clamp(1, i64::MAX as u64 - 1) as i64;
        let after = state
            .cursor
            .as_ref()
            .and_then(|c| c.after.as_deref())
            .map(parse_id)
            .transpose()?;
        // A margin below the time before the read: a write whose cluster time was handed out
        // just before may still be committing while the read starts.
        let started = self.cluster_time_now().await?;
        let low = started
            .saturating_sub(WINDOW_MARGIN)
            .max(t0.saturating_sub(1));
        let watch = match watch {
            Some(w) => w,
            None => watch.insert(self.watch_windows(low + 1).await?),
        };
        let (docs, high) = self.read_chunk_docs(name, after.as_ref(), chunk).await?;
        let more = docs.len() as i64 >= chunk;
        let last_id = docs.last().and_then(|d| d.get(ID)).cloned();
        let range = Range {
            after: after.as_ref(),
            upto: if more { last_id.as_ref() } else { None },
        };
        let mut window = watch.changes(name, &range, low, high).await?;
        tracing::debug!(source = %self.name, collection = name, rows = docs.len(), low = %super::render_time(low), high = %super::render_time(high), changed = window.len(), "snapshot chunk read");
        state.chunks.push(Chunk {
            table: name.to_string(),
            after: state.cursor.as_ref().and_then(|c| c.after.clone()),
            read_at: low,
            started: Some(started),
        });
        if let (Some(c), Some(id)) = (state.cursor.as_mut(), &last_id) {
            c.after = Some(id_key(id));
        }
        let mut emitted = 0u64;
        let gone_before_read: Vec<Document> = {
            let read: std::collections::HashSet<String> =
                docs.iter().filter_map(|d| d.get(ID).map(id_key)).collect();
            let keys: Vec<String> = window
                .keys()
                .filter(|k| !read.contains(*k))
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| match window.remove(k) {
                    Some(FirstChange::Changed(Some(before))) => Some(before),
                    _ => None,
                })
                .collect()
        };
        for d in docs.into_iter().chain(gone_before_read) {
            let key = d.get(ID).map(id_key).unwrap_or_default();
            // The state at `low`: what the document was before its first change in the
            // window; not there if it was inserted since; unknown without pre-images, when the
            // stream's first change for it carries the whole document instead.
            let at_low = match window.remove(&key) {
                None => Some(d),
                Some(FirstChange::Changed(before)) => before,
                Some(FirstChange::Inserted) => None,
            };
            let Some(d) = at_low else { continue };
            self.push_snapshot_doc(name, &d, t0, low, state);
            emitted += 1;
            if self.batch.is_full() {
                // Not a place to resume: the chunk's rows commit with its end.
                self.send(None).await?;
            }
        }
        self.ctx
            .status
            .source(&self.name, |s| s.snapshot_rows += emitted);
        metrics::counter!(m::SOURCE_SNAPSHOT_ROWS, "source" => self.name.to_string(), "table" => self.stream_name(name))
            .increment(emitted);
        if more {
            self.send_snapshot_position(t0, state).await?;
        }
        Ok(more)
    }

    /// Up to `chunk` documents of `name` after `after` in `_id` order, and the cluster time the
    /// server says the read was at.
    async fn read_chunk_docs(
        &self,
        name: &str,
        after: Option<&Bson>,
        chunk: i64,
    ) -> Result<(Vec<Document>, u64), MongoError> {
        let (db_name, coll) = name.split_once('.').unwrap_or(("", name));
        let db = self.client.database(db_name);
        let mut find = doc! {
            "find": coll,
            "filter": {},
            "sort": { ID: 1 },
            "hint": { ID: 1 },
            "batchSize": BATCH_DOCS,
            "readConcern": { "level": "snapshot" },
        };
        match after {
            // `min` is inclusive: one more, and the bound itself skipped.
            Some(a) => {
                find.insert("min", doc! { ID: a.clone() });
                find.insert("limit", chunk + 1);
            }
            None => {
                find.insert("limit", chunk);
            }
        }
        let reply = db
            .run_command(find)
            .await
            .map_err(MongoError::driver("reading a collection for the snapshot"))?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|_| MongoError::Setup("a find reply without a cursor".into()))?;
        let read_at = match cursor.get("atClusterTime").or(reply.get("operationTime")) {
            Some(Bson::Timestamp(t)) => cluster_time(*t),
            _ => {
                return Err(MongoError::Setup(
                    "the server did not say at which cluster time the snapshot read was: \
                     snapshot reads need MongoDB 5.0 or later"
                        .into(),
                ));
            }
        };
        let mut cursor_id = cursor.get_i64("id").unwrap_or(0);
        let mut batch = take_batch(cursor, "firstBatch");
        let mut docs = Vec::new();
        loop {
            docs.extend(batch.into_iter().filter(|d| {
                d.get(ID).is_some_and(|id| {
                    // the bound itself, read by the chunk before
                    after.is_none_or(|a| documents::compare(id, a) == Ordering::Greater)
                })
            }));
            if cursor_id == 0 {
                break;
            }
            let more = db
                .run_command(
                    doc! { "getMore": cursor_id, "collection": coll, "batchSize": BATCH_DOCS },
                )
                .await
                .map_err(MongoError::driver("reading snapshot documents"))?;
            let cursor = more
                .get_document("cursor")
                .map_err(|_| MongoError::Setup("a getMore reply without a cursor".into()))?;
            cursor_id = cursor.get_i64("id").unwrap_or(0);
            batch = take_batch(cursor, "nextBatch");
        }
        Ok((docs, read_at))
    }

    fn push_snapshot_doc(
        &mut self,
        name: &str,
        d: &Document,
        t0: u64,
        read_at: u64,
        state: &mut MongoSnapshot,
    ) {
        let table = self.table(name, Some(d));
        let id = d.get(ID).map(documents::extjson).unwrap_or_default();
        let commit_ts_us = *self
            .snapshot_taken_at
            .get_or_insert_with(crate::event::now_us);
        self.batch.push(ChangeEvent {
            table,
            op: Op::Read,
            before: None,
            after: Some(self.row(name, d)),
            partial_before: false,
            seq: Seq::new(t0.saturating_sub(1), state.next_ordinal),
            commit_ts_us,
            pos: ChangeOrigin::Mongo {
                time: read_at,
                txn_number: None,
                id: id.into(),
            },
            tx_id: None,
            snapshot: true,
        });
        state.next_ordinal += 1;
    }

    async fn send_snapshot_position(
        &mut self,
        t0: u64,
        state: &MongoSnapshot,
    ) -> Result<(), MongoError> {
        let mut position = self.position(&StreamFrom::Time(t0), t0)?;
        if let ResumePosition::Mongo(p) = &mut position {
            p.snapshot = Some(state.clone());
        }
        self.send(Some(position)).await
    }
}

/// The documents of a cursor reply's batch.
fn take_batch(cursor: &Document, field: &str) -> Vec<Document> {
    cursor
        .get_array(field)
        .map(|items| {
            items
                .iter()
                .filter_map(|b| b.as_document().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> MongoSnapshot {
        let chunk = |table: &str, after: Option<Bson>, read_at| Chunk {
            table: table.into(),
            after: after.as_ref().map(id_key),
            read_at,
            started: None,
        };
        MongoSnapshot {
            complete: true,
            chunks: vec![
                chunk("shop.a", None, 100),
                chunk("shop.a", Some(Bson::Int32(10)), 200),
                chunk("shop.a", Some(Bson::String("m".into())), 300),
                chunk("shop.b", None, 400),
            ],
            ..MongoSnapshot::default()
        }
    }

    #[test]
    fn the_chunk_that_read_an_id_decides() {
        let f = SnapshotFilter::new(&state()).unwrap();
        assert_eq!(f.until(), 400);
        // (start, 10] at 100; (10, "m"] at 200; ("m", end) at 300.
        assert!(f.already_read("shop.a", &Bson::Int32(10), 100));
        assert!(!f.already_read("shop.a", &Bson::Int32(10), 101));
        assert!(f.already_read("shop.a", &Bson::Int64(11), 200));
        assert!(
            f.already_read("shop.a", &Bson::String("a".into()), 200),
            "strings sort after numbers"
        );
        assert!(!f.already_read("shop.a", &Bson::String("a".into()), 201));
        assert!(f.already_read("shop.a", &Bson::String("z".into()), 300));
        let oid = Bson::ObjectId(mongodb::bson::oid::ObjectId::new());
        assert!(
            f.already_read("shop.a", &oid, 250),
            "ObjectIds sort after strings"
        );
        assert!(
            !f.already_read("shop.c", &oid, 1),
            "a collection the snapshot did not read"
        );
    }

    #[test]
    fn cursors_keep_the_bson_type() {
        for id in [
            Bson::Int32(7),
            Bson::Int64(7),
            Bson::Double(7.5),
            Bson::String("7".into()),
            Bson::ObjectId(mongodb::bson::oid::ObjectId::new()),
        ] {
            assert_eq!(parse_id(&id_key(&id)).unwrap(), id);
        }
        assert!(parse_id("{not json").is_err());
    }
}
