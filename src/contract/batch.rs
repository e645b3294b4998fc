//! What a source hands downstream: batches of change events, each with the position a restart
//! would resume from, built by a [`Batcher`] that bounds their size and latency.

use std::sync::Arc;

use super::position::ResumePosition;
use crate::config::Zone;
use crate::event::{ChangeEvent, Seq};

/// A group of events from one source, in log order.
#[derive(Debug)]
pub(crate) struct SourceBatch {
    pub(crate) source: Arc<str>,
    pub(crate) events: Vec<ChangeEvent>,
    /// Where to restart so that, with the sink's sequence cut, nothing is lost. `None` while
    /// nothing resumable exists yet (during the initial snapshot), so such data is committed only
    /// together with a later batch that has a position.
    pub(crate) resume: Option<ResumePosition>,
    /// `None`: raw events from a source, cut by sequence, transformed, and written to the raw
    /// zone. `Some(zone)`: events read back from a Kafka topic of that zone, written as they are
    /// (their offsets, in `resume`, are the cut).
    pub(crate) zone: Option<Zone>,
}

impl SourceBatch {
    /// A batch of raw events from a source.
    pub(crate) fn raw(
        source: Arc<str>,
        events: Vec<ChangeEvent>,
        resume: Option<ResumePosition>,
    ) -> Self {
        SourceBatch {
            source,
            events,
            resume,
            zone: None,
        }
    }
}

/// The batch a source is building. It goes downstream when it holds [`Batcher::MAX_EVENTS`]
/// events or [`Batcher::MAX_BYTES`] bytes, whichever comes first (so the memory in flight, a
/// few batches, is bounded whatever the row width), or when it has waited [`Batcher::LINGER`]
/// (so a quiet stream still reaches the lake).
#[derive(Debug, Default)]
pub(crate) struct Batcher {
    events: Vec<ChangeEvent>,
    bytes: usize,
    started: Option<std::time::Instant>,
}

impl Batcher {
    pub(crate) const MAX_EVENTS: usize = 4096;
    pub(crate) const MAX_BYTES: usize = 1 << 20;
    /// Short, because it is all latency in Kafka mode (a 10 ms transaction interval commits each
    /// batch as it comes: at 10k changes/s the commit-to-topic median was 54 ms with 50 ms here).
    /// A busy stream fills its batches long before it; a quiet one sends small ones. The
    /// Postgres and MySQL streams do not wait it out once a whole transaction is in and nothing
    /// more is ready: it bounds a transaction whose changes arrive slowly.
    pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

    pub(crate) fn push(&mut self, event: ChangeEvent) {
        self.start();
        self.bytes += event.approx_bytes();
        self.events.push(event);
    }

    /// Push a streamed change whose sequence is (its major, `*index`), advancing `*index`. An
    /// update that changed the key goes as a delete of the old key, then a create of the new
    /// one, with consecutive sequences: a change log holds rows by key.
    pub(crate) fn push_change(&mut self, event: ChangeEvent, index: &mut u64) {
        let major = event.seq.major();
        let (delete, mut event) = event.split_key_change();
        if let Some(mut delete) = delete {
            delete.seq = Seq::new(major, *index);
            self.push(delete);
            *index += 1;
        }
        event.seq = Seq::new(major, *index);
        self.push(event);
        *index += 1;
    }

    /// Start the linger clock without an event (a position moved past changes of no captured
    /// table: it should reach the lake too).
    pub(crate) fn start(&mut self) {
        self.started.get_or_insert_with(std::time::Instant::now);
    }

    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= Self::MAX_EVENTS || self.bytes >= Self::MAX_BYTES
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// When the batch must go, if it has been started.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.started.map(|t| t + Self::LINGER)
    }

    /// The events, leaving an empty batch sized like this one (so the next does not grow by
    /// reallocating and copying).
    pub(crate) fn take(&mut self) -> Vec<ChangeEvent> {
        self.started = None;
        self.bytes = 0;
        let size = self.events.len();
        std::mem::replace(&mut self.events, Vec::with_capacity(size))
    }
}

/// Sleep until `deadline`, or for ever without one: a `select!` branch for a timer that may not
/// be running (a batch's linger, a transaction's interval).
pub(crate) async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
