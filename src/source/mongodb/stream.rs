//! Streaming: the deployment's change stream, resumed after the last committed token, into
//! change events.
//!
//! Events of one cluster time (a multi-document transaction's) form a group; only after a whole
//! group is the position a place to resume, so a batch sent mid-group carries the last whole
//! group's token and the sink cuts the replayed part by sequence `(cluster time, index in the
//! group)`. An empty `getMore` reply means every event before its post-batch token has arrived:
//! that token is a place to resume too, and the source is caught up.
//!
//! The change stream is read by its own task (a `getMore` must not be cancelled halfway), which
//! hands events over a bounded channel.

use std::time::{Duration, Instant};

use futures::FutureExt;
use mongodb::bson::{Bson, Document};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use tokio::sync::mpsc;

use super::documents::{self, ID, apply_update};
use super::error::code_is_position_lost;
use super::{MongoError, MongoSource, StreamFrom, cluster_time, timestamp};
use crate::contract::batch::Batcher;
use crate::contract::position::ResumePosition;
use crate::event::{ChangeEvent, ChangeOrigin, Op, Row, Seq};
use crate::metrics as m;
use crate::source::stream;

/// What the reader task hands over.
enum Item {
    Event(Box<ChangeStreamEvent<Document>>),
    /// An empty batch: caught up; resume after this token.
    Idle(Option<ResumeToken>),
}

/// Events buffered between the reader task and the source.
const CHANNEL_EVENTS: usize = 2048;

/// Where the stream stands.
struct Cursor {
    /// The last whole group's end: where a restart reads on.
    resume: StreamFrom,
    /// The cluster time `resume` covers.
    resume_time: u64,
    /// The group being read: its cluster time, the next event's index in it, and the token of
    /// its last event.
    group: Option<(u64, u64, ResumeToken)>,
    /// When `resume` moved last without being sent downstream.
    unsent_since: Option<Instant>,
    /// Approximate bytes of events read, cumulative; and per sent position (token text), the
    /// count when it was sent, until the lake commits it (for the lag in bytes).
    read_bytes: u64,
    sent: Vec<(String, u64)>,
    committed_bytes: u64,
}

/// A token as the text kept in positions (canonical extended JSON of its document).
pub(crate) fn token_text(token: &ResumeToken) -> Result<String, MongoError> {
    mongodb::bson::to_bson(token)
        .map(|b| b.into_canonical_extjson().to_string())
        .map_err(|e| MongoError::Setup(format!("a resume token that cannot be kept: {e}")))
}

/// A position's token back into the driver's form.
pub fn parse_token(text: &str) -> Result<ResumeToken, MongoError> {
    let bson = super::snapshot::parse_id(text)?;
    mongodb::bson::from_bson(bson)
        .map_err(|e| MongoError::Setup(format!("a stored resume token that is not one: {e}")))
}

impl MongoSource {
    pub(super) async fn stream(&mut self, from: StreamFrom) -> Result<(), MongoError> {
        let time = match &from {
            StreamFrom::Time(t) => *t,
            StreamFrom::Token(_) => self.committed_time(),
        };
        let events = self.open_stream(&from).await?;
        self.ctx.status.source(&self.name, |s| {
            s.state = crate::status::SourceState::Streaming
        });
        tracing::info!(source = %self.name, "streaming");
        let cur = Cursor {
            resume: from,
            resume_time: time,
            group: None,
            unsent_since: None,
            read_bytes: 0,
            sent: Vec::new(),
            committed_bytes: 0,
        };
        let name = self.name.clone();
        let control = stream::Control {
            name: &name,
            shutdown: self.ctx.shutdown.clone(),
            acks: self.ctx.acks.clone(),
            heartbeat: None,
        };
        let mut log = MongoLog {
            source: self,
            events,
            cur,
        };
        stream::run(&mut log, control).await
    }

    fn committed_time(&self) -> u64 {
        match &self.ctx.committed {
            Some(ResumePosition::Mongo(p)) => p.time,
            _ => 0,
        }
    }

    /// Open the change stream at `from` and start its reader task.
    async fn open_stream(
        &mut self,
        from: &StreamFrom,
    ) -> Result<mpsc::Receiver<Result<Item, mongodb::error::Error>>, MongoError> {
        let stream = match self.watch(from, true).await {
            Err(e) if e.code() == Some(PRE_IMAGES_UNKNOWN) => {
                tracing::warn!(source = %self.name, "the server has no pre-images (MongoDB < 6.0): updates carry the document as looked up");
                self.watch(from, false).await?
            }
            other => other?,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_EVENTS);
        tokio::spawn(read_stream(stream, tx));
        Ok(rx)
    }

    async fn watch(
        &self,
        from: &StreamFrom,
        pre_images: bool,
    ) -> Result<ChangeStream<ChangeStreamEvent<Document>>, MongoError> {
        let mut watch = self
            .client
            .watch()
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(Duration::from_millis(500))
            .batch_size(1000);
        if pre_images {
            watch = watch.full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable);
        }
        watch = match from {
            StreamFrom::Token(t) => {
                let token = parse_token(t)?;
                if self.invalidated {
                    watch.start_after(token)
                } else {
                    watch.resume_after(token)
                }
            }
            StreamFrom::Time(t) => watch.start_at_operation_time(timestamp(*t)),
        };
        watch.await.map_err(|e| self.stream_error(e))
    }

    /// A change stream error; one that says the position is gone stops the source.
    fn stream_error(&self, e: mongodb::error::Error) -> MongoError {
        let error = MongoError::driver("reading the change stream")(e);
        match error.code() {
            Some(code) if code_is_position_lost(code) => MongoError::PositionLost {
                source_name: self.name.to_string(),
                detail: error.to_string(),
            },
            _ => error,
        }
    }

    /// Send the batch with the last whole group's position.
    async fn flush_at(&mut self, cur: &mut Cursor) -> Result<(), MongoError> {
        let resume = cur.resume.clone();
        let position = self.position(&resume, cur.resume_time)?;
        if let StreamFrom::Token(t) = &resume
            && cur.sent.last().is_none_or(|(last, _)| last != t)
        {
            cur.sent.push((t.clone(), cur.read_bytes));
        }
        self.send(Some(position)).await
    }

    fn on_commit(&mut self, p: &crate::contract::position::MongoPosition, cur: &mut Cursor) {
        metrics::gauge!(m::SOURCE_COMMITTED_POSITION, "source" => self.name.to_string())
            .set((p.time >> 32) as f64);
        if let Some(token) = &p.token
            && let Some(i) = cur.sent.iter().position(|(t, _)| t == token)
        {
            cur.committed_bytes = cur.sent[i].1;
            cur.sent.drain(..=i);
        }
        self.report_lag_bytes(cur);
    }

    /// Bytes of change events read past the committed position (0: caught up and committed).
    fn report_lag_bytes(&self, cur: &Cursor) {
        metrics::gauge!(m::SOURCE_LAG_BYTES, "source" => self.name.to_string())
            .set(cur.read_bytes.saturating_sub(cur.committed_bytes) as f64);
    }

    /// Caught up: the post-batch token is a place to resume.
    fn on_idle(&mut self, token: Option<ResumeToken>, cur: &mut Cursor) -> Result<(), MongoError> {
        self.end_group(cur);
        if let Some(token) = token {
            let text = token_text(&token)?;
            if cur.resume != StreamFrom::Token(text.clone()) {
                cur.resume = StreamFrom::Token(text);
                cur.unsent_since.get_or_insert_with(Instant::now);
            }
        }
        metrics::gauge!(m::SOURCE_LAG_SECONDS, "source" => self.name.to_string()).set(0.0);
        self.ctx
            .status
            .source(&self.name, |s| s.lag_seconds = Some(0.0));
        self.report_lag_bytes(cur);
        Ok(())
    }

    /// The group being read is whole: resume after its last event.
    fn end_group(&mut self, cur: &mut Cursor) {
        if let Some((time, _, token)) = cur.group.take() {
            if let Ok(text) = token_text(&token) {
                cur.resume = StreamFrom::Token(text);
                cur.resume_time = time;
                cur.unsent_since.get_or_insert_with(Instant::now);
            }
            if self
                .snapshot_filter
                .as_ref()
                .is_some_and(|(_, f)| time >= f.until())
            {
                self.snapshot_filter = None;
            }
        }
    }

    /// One change stream event. Returns the token to start after when it was an invalidate.
    async fn on_event(
        &mut self,
        ev: ChangeStreamEvent<Document>,
        cur: &mut Cursor,
    ) -> Result<Option<String>, MongoError> {
        let Some(time) = ev.cluster_time.map(cluster_time) else {
            return Err(MongoError::Setup(
                "a change event without a clusterTime".into(),
            ));
        };
        if cur.group.as_ref().is_some_and(|(t, _, _)| *t != time) {
            self.end_group(cur);
        }
        let index = cur.group.as_ref().map_or(0, |(_, i, _)| *i);
        cur.group = Some((time, index + 1, ev.id.clone()));
        self.invalidated = false;
        let wall_us = ev
            .wall_time
            .map(|w| w.timestamp_millis().saturating_mul(1000))
            .unwrap_or(((time >> 32) as i64).saturating_mul(1_000_000));
        let lag = (crate::event::now_us() - wall_us) as f64 / 1e6;
        metrics::gauge!(m::SOURCE_LAG_SECONDS, "source" => self.name.to_string()).set(lag.max(0.0));
        let name = ev
            .ns
            .as_ref()
            .map(|ns| format!("{}.{}", ns.db, ns.coll.as_deref().unwrap_or("")));
        let ctx = EventContext {
            time,
            index,
            wall_us,
            txn_number: ev.txn_number,
        };
        match ev.operation_type {
            OperationType::Invalidate => {
                tracing::info!(source = %self.name, "change stream invalidated; starting a new one after it");
                cur.group = None;
                self.invalidated = true;
                return Ok(Some(token_text(&ev.id)?));
            }
            OperationType::Insert
            | OperationType::Update
            | OperationType::Replace
            | OperationType::Delete => {
                let Some(name) = name.filter(|n| self.captured(n)) else {
                    return Ok(None);
                };
                self.on_document(&name, ev, &ctx, cur)?;
            }
            OperationType::Drop => {
                if let Some(name) = name.filter(|n| self.captured(n) && !self.in_snapshot(n, time))
                {
                    tracing::info!(source = %self.name, collection = %name, "collection dropped");
                    self.push_truncate(&name, &ctx);
                }
            }
            OperationType::Rename => {
                let to = ev
                    .to
                    .as_ref()
                    .map(|ns| format!("{}.{}", ns.db, ns.coll.as_deref().unwrap_or("")));
                if let Some(name) = name.filter(|n| self.captured(n) && !self.in_snapshot(n, time))
                {
                    tracing::info!(source = %self.name, collection = %name, "collection renamed away");
                    self.push_truncate(&name, &ctx);
                }
                if let Some(to) = to.filter(|n| self.captured(n) && !self.in_snapshot(n, time)) {
                    self.read_renamed(&to, &ctx, cur).await?;
                }
            }
            OperationType::DropDatabase => {
                // Its collections' drop events came first.
                tracing::info!(source = %self.name, db = ?ev.ns.as_ref().map(|n| &n.db), "database dropped");
            }
            _ => {}
        }
        Ok(None)
    }

    /// Whether the snapshot began reading collection `name` after cluster time `time`, so that
    /// a drop or rename then is already in it (streaming starts a margin before the snapshot).
    fn in_snapshot(&self, name: &str, time: u64) -> bool {
        self.snapshot_filter
            .as_ref()
            .and_then(|(_, f)| f.collection_read_from(name))
            .is_some_and(|started| time <= started)
    }

    /// Insert, update, replace or delete of one document.
    fn on_document(
        &mut self,
        name: &str,
        ev: ChangeStreamEvent<Document>,
        ctx: &EventContext,
        cur: &mut Cursor,
    ) -> Result<(), MongoError> {
        let id = ev
            .document_key
            .as_ref()
            .and_then(|k| k.get(ID))
            .or_else(|| ev.full_document.as_ref().and_then(|d| d.get(ID)))
            .cloned()
            .ok_or_else(|| {
                MongoError::Setup(format!("a change to {name} without a document key"))
            })?;
        if self
            .snapshot_filter
            .as_ref()
            .is_some_and(|(_, f)| f.already_read(name, &id, ctx.time))
        {
            return Ok(());
        }
        let pre = ev.full_document_before_change;
        let (op, after) = match ev.operation_type {
            OperationType::Insert => (Op::Create, ev.full_document),
            OperationType::Replace => (Op::Update, ev.full_document),
            OperationType::Update => {
                // The pre-image with the update applied is this event's document exactly; the
                // looked-up one may be a later version, or gone.
                let exact = match (&pre, &ev.update_description) {
                    (Some(pre), Some(u)) => {
                        let truncated: Vec<(String, usize)> = u
                            .truncated_arrays
                            .iter()
                            .flatten()
                            .map(|t| (t.field.clone(), t.new_size.max(0) as usize))
                            .collect();
                        apply_update(pre, &u.updated_fields, &u.removed_fields, &truncated).ok()
                    }
                    _ => None,
                };
                (Op::Update, exact.or(ev.full_document))
            }
            _ => (Op::Delete, None),
        };
        if op != Op::Delete && after.is_none() {
            // Deleted before the lookup: its delete follows in the stream.
            metrics::counter!(m::SOURCE_LOSSY_VALUES, "reason" => "update_of_deleted_document")
                .increment(1);
            return Ok(());
        }
        let table = self.table(name, after.as_ref().or(pre.as_ref()));
        let before: Option<Row> = pre.as_ref().map(|d| self.row(name, d));
        let partial_before = op == Op::Delete && before.is_none();
        let before = match (before, partial_before) {
            (None, true) => self.schemas.get(name).map(|s| s.key_row(&id)),
            (before, _) => before,
        };
        let after = after.as_ref().map(|d| self.row(name, d));
        let event = ChangeEvent {
            table,
            op,
            before,
            after,
            partial_before,
            seq: Seq::new(ctx.time, ctx.index),
            commit_ts_us: ctx.wall_us,
            pos: ctx.pos(&id),
            tx_id: ctx.txn_number.map(|t| t as u64),
            snapshot: false,
        };
        let bytes = event.approx_bytes() as u64;
        cur.read_bytes += bytes;
        self.batch.push(event);
        Ok(())
    }

    fn push_truncate(&mut self, name: &str, ctx: &EventContext) {
        let table = self.table(name, None);
        self.batch.push(ChangeEvent {
            table,
            op: Op::Truncate,
            before: None,
            after: None,
            partial_before: false,
            seq: Seq::new(ctx.time, ctx.index),
            commit_ts_us: ctx.wall_us,
            pos: ctx.pos(&Bson::Null),
            tx_id: None,
            snapshot: false,
        });
    }

    /// A collection renamed into the captured set: its documents as of the rename, as creates
    /// of the rename's group (their sequences follow the rename's).
    async fn read_renamed(
        &mut self,
        name: &str,
        ctx: &EventContext,
        cur: &mut Cursor,
    ) -> Result<(), MongoError> {
        tracing::info!(source = %self.name, collection = %name, "collection renamed into the captured set: reading its documents");
        let (db, coll) = name.split_once('.').unwrap_or(("", name));
        let find = |read_concern: Document| {
            mongodb::bson::doc! {
                "find": coll,
                "filter": {},
                "sort": { ID: 1 },
                "batchSize": 1000,
                "readConcern": read_concern,
            }
        };
        let database = self.client.database(db);
        let at = Bson::Timestamp(timestamp(ctx.time));
        let reply = match database
            .run_command(find(
                mongodb::bson::doc! { "level": "snapshot", "atClusterTime": at },
            ))
            .await
        {
            Ok(reply) => reply,
            // The rename is older than the server's snapshot history: the current documents
            // (changes since the rename follow in the stream and apply on top).
            Err(_) => database
                .run_command(find(mongodb::bson::doc! { "level": "majority" }))
                .await
                .map_err(MongoError::driver("reading a renamed collection"))?,
        };
        let mut cursor = reply.get_document("cursor").cloned().unwrap_or_default();
        let mut field = "firstBatch";
        let mut index = ctx.index + 1;
        loop {
            let docs: Vec<Document> = cursor
                .get_array(field)
                .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
                .unwrap_or_default();
            for d in docs {
                let Some(id) = d.get(ID).cloned() else {
                    continue;
                };
                let table = self.table(name, Some(&d));
                let row = self.row(name, &d);
                self.batch.push(ChangeEvent {
                    table,
                    op: Op::Create,
                    before: None,
                    after: Some(row),
                    partial_before: false,
                    seq: Seq::new(ctx.time, index),
                    commit_ts_us: ctx.wall_us,
                    pos: ctx.pos(&id),
                    tx_id: None,
                    snapshot: false,
                });
                index += 1;
            }
            let id = cursor.get_i64("id").unwrap_or(0);
            if id == 0 {
                break;
            }
            let more = database
                .run_command(
                    mongodb::bson::doc! { "getMore": id, "collection": coll, "batchSize": 1000 },
                )
                .await
                .map_err(MongoError::driver("reading a renamed collection"))?;
            cursor = more.get_document("cursor").cloned().unwrap_or_default();
            field = "nextBatch";
        }
        if let Some(group) = cur.group.as_mut() {
            group.1 = index;
        }
        Ok(())
    }
}

/// The server rejects `fullDocumentBeforeChange` (MongoDB < 6.0: unknown field).
pub(super) const PRE_IMAGES_UNKNOWN: i32 = 40415;

/// What every event of one change stream event shares.
struct EventContext {
    time: u64,
    index: u64,
    wall_us: i64,
    txn_number: Option<i64>,
}

impl EventContext {
    fn pos(&self, id: &Bson) -> ChangeOrigin {
        ChangeOrigin::Mongo {
            time: self.time,
            txn_number: self.txn_number,
            id: documents::extjson(id).into(),
        }
    }
}

/// The reader task: every event, and an `Idle` after each empty batch, until the stream or the
/// receiver ends.
async fn read_stream(
    mut stream: ChangeStream<ChangeStreamEvent<Document>>,
    tx: mpsc::Sender<Result<Item, mongodb::error::Error>>,
) {
    loop {
        let next = tokio::select! {
            next = stream.next_if_any() => next,
            _ = tx.closed().fuse() => return,
        };
        let item = match next {
            Ok(Some(ev)) => Ok(Item::Event(Box::new(ev))),
            Ok(None) => Ok(Item::Idle(stream.resume_token())),
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed || !stream.is_alive() {
            return;
        }
    }
}

/// The change stream as the shared loop (`source::stream`) drives it.
struct MongoLog<'a> {
    source: &'a mut MongoSource,
    events: mpsc::Receiver<Result<Item, mongodb::error::Error>>,
    cur: Cursor,
}

impl stream::LogStream for MongoLog<'_> {
    type Item = Item;
    type Error = MongoError;

    async fn next(&mut self) -> Option<Result<Item, MongoError>> {
        let next = self.events.recv().await?;
        Some(next.map_err(|e| self.source.stream_error(e)))
    }

    async fn take(&mut self, item: Item) -> Result<stream::Flow, MongoError> {
        match item {
            Item::Event(event) => {
                if let Some(token) = self.source.on_event(*event, &mut self.cur).await? {
                    // Invalidated: the stream ended; a new one starts after it.
                    self.events = self.source.open_stream(&StreamFrom::Token(token)).await?;
                }
            }
            Item::Idle(token) => self.source.on_idle(token, &mut self.cur)?,
        }
        Ok(stream::Flow::Continue)
    }

    async fn flush(&mut self) -> Result<(), MongoError> {
        self.cur.unsent_since = None;
        self.source.flush_at(&mut self.cur).await
    }

    fn committed(&mut self, position: &ResumePosition) {
        if let ResumePosition::Mongo(p) = position {
            self.source.on_commit(p, &mut self.cur);
        }
    }

    /// A batch goes out soon; a position that moved goes out within a second.
    fn deadline(&self) -> Option<Instant> {
        stream::deadline_with_unsent(&self.source.batch, self.cur.unsent_since)
    }

    fn batch(&self) -> &Batcher {
        &self.source.batch
    }

    /// A change stream has no transaction boundary to send at: batches go full or lingered.
    fn whole(&self) -> bool {
        false
    }

    fn ended(&self) -> MongoError {
        MongoError::Driver {
            what: "reading the change stream",
            message: "the change stream ended".into(),
            code: None,
            transient: true,
        }
    }

    fn downstream_gone(&self) -> MongoError {
        MongoError::Downstream
    }
}
