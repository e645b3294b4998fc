//! The changes that happened while a snapshot chunk was being read.
//!
//! A chunk read starts after cluster time `low` and has seen everything up to `high` (the
//! time the server reports for the read). On MongoDB the read is pinned at `high`, so it holds
//! exactly the changes up to `high`; a server that does not pin snapshot reads (the SecantusDB
//! stand-in, see docs/sources.md) may hold any state between the two. Either way the changes in
//! the window `(low, high]` are what make a chunk's rows ambiguous, and this module finds them
//! on the change stream: for every `_id` changed in the window, the first change and the
//! document just before it. The chunk then emits that earlier document (the state at `low`) in
//! place of what it read, and streaming replays every change after `low`, so each `_id`'s
//! history in the lake is its state at `low` followed by every change since, whatever the read
//! saw.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::FullDocumentBeforeChangeType;

use super::documents::{self, ID};
use super::snapshot::id_key;
use super::{MongoError, MongoSource, cluster_time, timestamp};

/// The first change to an `_id` in the window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FirstChange {
    /// Inserted in the window: it did not exist at `low`.
    Inserted,
    /// Changed or deleted; the document before the change if the server keeps pre-images.
    Changed(Option<Document>),
}

/// How long reading one window may take before the snapshot is retried as a transient failure.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// `_id`s a chunk covers: after `after` (exclusive) up to `upto` (inclusive; unbounded if
/// `None`).
pub(crate) struct Range<'a> {
    pub(crate) after: Option<&'a Bson>,
    pub(crate) upto: Option<&'a Bson>,
}

impl Range<'_> {
    pub(crate) fn contains(&self, id: &Bson) -> bool {
        use std::cmp::Ordering::*;
        self.after
            .is_none_or(|a| documents::compare(id, a) == Greater)
            && self
                .upto
                .is_none_or(|u| documents::compare(id, u) != Greater)
    }
}

/// The change stream watched while the snapshot is read, from the first window on (one stream for the whole
/// snapshot, as opening one can be slow). Windows overlap (each reaches a margin below its
/// read), so the changes read stay until no later window can start before them.
pub(crate) struct WindowWatch {
    stream: ChangeStream<ChangeStreamEvent<Document>>,
    /// The snapshot's collections: changes to others are not kept.
    collections: HashSet<String>,
    /// Changes read, in cluster time order.
    seen: VecDeque<Seen>,
}

/// A change to a document, as a window needs it.
struct Seen {
    at: u64,
    /// `db.collection`.
    ns: String,
    id: Bson,
    change: FirstChange,
}

impl MongoSource {
    /// Watch the deployment's changes from cluster time `from` on.
    pub(super) async fn watch_windows(&self, from: u64) -> Result<WindowWatch, MongoError> {
        let open = |pre_images: bool| {
            let mut watch = self
                .client
                .watch()
                .start_at_operation_time(timestamp(from))
                .max_await_time(Duration::from_millis(200))
                .batch_size(1000);
            if pre_images {
                watch =
                    watch.full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable);
            }
            watch
        };
        let stream = match open(true).await.map_err(MongoError::driver(WHAT)) {
            Err(e) if e.code() == Some(super::stream::PRE_IMAGES_UNKNOWN) => {
                open(false).await.map_err(MongoError::driver(WHAT))?
            }
            other => other?,
        };
        Ok(WindowWatch {
            stream,
            collections: self.collections.iter().cloned().collect(),
            seen: VecDeque::new(),
        })
    }
}

const WHAT: &str = "watching the changes during the snapshot";

impl WindowWatch {
    /// The first change per `_id` (keyed by [`id_key`]) in `range` of collection `name`
    /// (`db.collection`) with cluster time in `(low, high]`. Each window's `low` must be at or
    /// past the one before.
    pub(crate) async fn changes(
        &mut self,
        name: &str,
        range: &Range<'_>,
        low: u64,
        high: u64,
    ) -> Result<HashMap<String, FirstChange>, MongoError> {
        while self.seen.front().is_some_and(|s| s.at <= low) {
            self.seen.pop_front();
        }
        self.read_past(high).await?;
        let mut first = HashMap::new();
        for s in self.seen.iter().take_while(|s| s.at <= high) {
            if s.at > low && s.ns == name && range.contains(&s.id) {
                first
                    .entry(id_key(&s.id))
                    .or_insert_with(|| s.change.clone());
            }
        }
        Ok(first)
    }

    /// Read the stream until it is past cluster time `high`.
    async fn read_past(&mut self, high: u64) -> Result<(), MongoError> {
        let started = Instant::now();
        let mut quiet_since = None;
        while self.seen.back().is_none_or(|s| s.at <= high) {
            match self
                .stream
                .next_if_any()
                .await
                .map_err(MongoError::driver(WHAT))?
            {
                Some(event) => self
                    .seen
                    .extend(seen(event).filter(|s| self.collections.contains(&s.ns))),
                None if self.caught_up_to(high, &mut quiet_since) => return Ok(()),
                None if started.elapsed() > SCAN_TIMEOUT => {
                    return Err(MongoError::Driver {
                        what: WHAT,
                        message: format!(
                            "the change stream did not reach the chunk's cluster time within {}s",
                            SCAN_TIMEOUT.as_secs()
                        ),
                        code: None,
                        transient: true,
                    });
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl WindowWatch {
    /// After an empty batch: whether every change up to `high` has been read. MongoDB's
    /// post-batch token then stands at or past every change it will show, so its time says.
    /// SecantusDB's tokens do not tell the time, and it shows a change only once the change has
    /// committed: a write that took its cluster time before the read may still be committing,
    /// so the stream must stay quiet for a while before it is believed.
    fn caught_up_to(&self, high: u64, quiet_since: &mut Option<Instant>) -> bool {
        match self.stream.resume_token().as_ref().and_then(token_time) {
            Some(t) => t >= high,
            None => quiet_since.get_or_insert_with(Instant::now).elapsed() >= QUIET_ENOUGH,
        }
    }
}

/// How long a stream whose tokens do not tell the time must stay quiet to count as caught up.
const QUIET_ENOUGH: Duration = Duration::from_millis(300);

/// A document's insert, update, replace or delete; None for any other event.
fn seen(event: ChangeStreamEvent<Document>) -> Option<Seen> {
    let ns = event.ns.as_ref()?;
    let ns = format!("{}.{}", ns.db, ns.coll.as_deref()?);
    let id = event.document_key.as_ref()?.get(ID)?.clone();
    let change = match event.operation_type {
        OperationType::Insert => FirstChange::Inserted,
        OperationType::Update | OperationType::Replace | OperationType::Delete => {
            FirstChange::Changed(event.full_document_before_change)
        }
        _ => return None,
    };
    Some(Seen {
        at: event.cluster_time.map(cluster_time).unwrap_or(0),
        ns,
        id,
        change,
    })
}

/// The cluster time a resume token stands at: its `_data` is a KeyString whose first value is
/// the cluster time (type byte 0x82, then seconds and increment, big-endian).
pub(crate) fn token_time(token: &ResumeToken) -> Option<u64> {
    let bson = mongodb::bson::to_bson(token).ok()?;
    let data = bson.as_document()?.get_str("_data").ok()?;
    if data.len() < 18 || !data.starts_with("82") {
        return None;
    }
    u64::from_str_radix(&data[2..18], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn a_token_tells_its_cluster_time() {
        let token: ResumeToken = mongodb::bson::from_bson(Bson::Document(
            doc! { "_data": "8267A0B1C2000000052B0229296E04" },
        ))
        .unwrap();
        assert_eq!(token_time(&token), Some((0x67A0B1C2u64 << 32) | 5));
        let odd: ResumeToken =
            mongodb::bson::from_bson(Bson::Document(doc! { "_data": "zz" })).unwrap();
        assert_eq!(token_time(&odd), None);
    }

    #[test]
    fn a_range_is_open_below_and_closed_above() {
        let (a, u) = (Bson::Int32(10), Bson::Int32(20));
        let r = Range {
            after: Some(&a),
            upto: Some(&u),
        };
        assert!(!r.contains(&Bson::Int32(10)));
        assert!(r.contains(&Bson::Int64(11)));
        assert!(r.contains(&Bson::Int32(20)));
        assert!(!r.contains(&Bson::Int32(21)));
        let open = Range {
            after: None,
            upto: None,
        };
        assert!(open.contains(&Bson::String("x".into())));
    }
}
