//! Sink workers: cleansed (and raw, and dead-letter) topics into the lake, exactly once.
//!
//! A worker is one member of the `<pipeline>-sinks` consumer group and one *writer* of the lake
//! (its own commit log, see lake/commit.rs). Each partition's next offset is recorded in the lake
//! commit that holds its records, never auto-committed: on assignment a worker starts every
//! partition at the highest offset any writer committed for it, so each record is in the lake
//! once. When partitions are revoked the worker commits what it holds first, so their next
//! owner starts exactly where it stopped. The group's offsets are only mirrored from the lake
//! (for lag tools).
//!
//! A worker can also lose partitions without hearing of it in time: it stalled past
//! `max.poll.interval.ms`, or its session expired. So on assignment a worker first revokes its
//! partitions in every other worker's commit log (stamped with the group generation), and only
//! then reads their offsets: a worker from an older generation cannot commit them any more, and
//! restarts (lake/commit.rs, "revocation").
//!
//! The ODS and compaction of a stream are kept by the owner of its topic's partition 0, so
//! two workers never rewrite the same files; they follow the partition when it moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{Config, Zone};
use crate::contract::batch::SourceBatch;
use crate::contract::position::ResumePosition;
use crate::event::ChangeEvent;
use crate::failpoint::stall_point;
use crate::kafka::codec::{RecordDecoder, undecodable_dead_letter};
use crate::kafka::{KafkaError, KafkaSettings};
use crate::lake::lease::Claim;
use crate::sink::{ParquetSink, SinkSettings};
use crate::status::SharedStatus;
use crate::topology::PipelineError;
use crate::transform::{TransformDef, TransformSet};

const MAX_PENDING: usize = 4096;
const LINGER: Duration = Duration::from_millis(50);

/// The position key of a topic partition in the lake's commits.
fn position_key(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// Which topics a sink reads, and the zone each goes to.
#[derive(Debug, Clone)]
struct Routes {
    exact: HashMap<String, Zone>,
    /// Raw topics (every table of a source, so named by prefix).
    raw_prefixes: Vec<String>,
}

impl Routes {
    fn new(settings: &KafkaSettings, config: &Config, transforms: &[TransformDef]) -> Routes {
        let mut exact = HashMap::new();
        for t in transforms {
            exact.insert(settings.topic(&t.name), Zone::Cleansed);
            exact.insert(settings.topic(&t.dlq), Zone::Dlq);
        }
        let raw_prefixes = if config.daemon.sink.zones.contains(&Zone::Raw) {
            config
                .sources
                .iter()
                .map(|s| settings.topic(&format!("{}.", s.name)))
                .collect()
        } else {
            Vec::new()
        };
        Routes {
            exact,
            raw_prefixes,
        }
    }

    /// librdkafka subscriptions: names, and `^regex` patterns for the raw topics.
    fn subscriptions(&self) -> Vec<String> {
        let mut subs: Vec<String> = self.exact.keys().cloned().collect();
        for prefix in &self.raw_prefixes {
            subs.push(format!("^{}[^.]+\\.[^.]+$", regex_escape(prefix)));
        }
        subs.sort();
        subs
    }

    fn zone(&self, topic: &str) -> Option<Zone> {
        if let Some(z) = self.exact.get(topic) {
            return Some(*z);
        }
        self.raw_prefixes
            .iter()
            .any(|p| topic.starts_with(p.as_str()))
            .then_some(Zone::Raw)
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Records taken from one partition and not yet handed to the sink.
struct Pending {
    zone: Zone,
    events: Vec<ChangeEvent>,
    next_offset: i64,
}

/// The worker's state, shared with the rebalance callbacks (which run inside `poll`, on the
/// worker's own thread).
struct State {
    sink: ParquetSink,
    pending: BTreeMap<(String, i32), Pending>,
    pending_count: usize,
    pending_since: Option<Instant>,
    /// The first offset still to take per assigned partition: anything below is in the lake.
    floor: HashMap<(String, i32), i64>,
    decoder: RecordDecoder,
    routes: Routes,
    settings: KafkaSettings,
    /// An error inside a callback, for the loop to return.
    failed: Option<PipelineError>,
}

impl State {
    fn take(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        let key = (msg.topic().to_string(), msg.partition());
        if self
            .floor
            .get(&key)
            .is_some_and(|floor| msg.offset() < *floor)
        {
            return Ok(()); // already in the lake
        }
        let Some(zone) = self.routes.zone(msg.topic()) else {
            return Ok(());
        };
        let stream = self.settings.stream(msg.topic()).to_string();
        let (event, zone) = match self.decoder.decode(&stream, msg)? {
            Ok(e) => (e, zone),
            Err(e) => {
                metrics::counter!(crate::metrics::KAFKA_UNDECODABLE, "topic" => msg.topic().to_string()).increment(1);
                let letter = undecodable_dead_letter(msg, &stream, "sink", &stream, &e);
                (letter, Zone::Dlq)
            }
        };
        if self.pending.get(&key).is_some_and(|p| p.zone != zone) {
            // A dead letter in a data partition (or back): hand over what came before, in order.
            let before = self.pending.remove(&key).expect("just seen");
            self.pending_count -= before.events.len();
            self.hand_over(
                &key.0,
                key.1,
                before.zone,
                before.events,
                before.next_offset,
            )?;
        }
        let pending = self.pending.entry(key).or_insert_with(|| Pending {
            zone,
            events: Vec::new(),
            next_offset: 0,
        });
        pending.events.push(event);
        pending.next_offset = msg.offset() + 1;
        self.pending_count += 1;
        self.pending_since.get_or_insert_with(Instant::now);
        if self.pending_count >= MAX_PENDING {
            self.flush()?;
        }
        Ok(())
    }

    fn hand_over(
        &mut self,
        topic: &str,
        partition: i32,
        zone: Zone,
        events: Vec<ChangeEvent>,
        next_offset: i64,
    ) -> Result<(), PipelineError> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = SourceBatch {
            source: position_key(topic, partition).into(),
            events,
            resume: Some(ResumePosition::Kafka {
                topic: topic.to_string(),
                partition,
                next_offset,
            }),
            zone: Some(zone),
        };
        if self.sink.accept(batch)? {
            self.sink.seal_and_commit()?;
        }
        Ok(())
    }

    /// Hand every pending record to the sink.
    fn flush(&mut self) -> Result<(), PipelineError> {
        for ((topic, partition), p) in std::mem::take(&mut self.pending) {
            self.hand_over(&topic, partition, p.zone, p.events, p.next_offset)?;
        }
        self.pending_count = 0;
        self.pending_since = None;
        Ok(())
    }

    /// Everything taken into the lake now.
    fn commit_all(&mut self) -> Result<(), PipelineError> {
        self.flush()?;
        stall_point!("sinks.before_commit");
        self.sink.seal_and_commit()?;
        Ok(())
    }
}

struct SinkContext {
    state: Arc<Mutex<State>>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(
            partitions = tpl.count(),
            "sinks: partitions revoked; committing what they brought"
        );
        if let Err(e) = state.commit_all() {
            state.failed.get_or_insert(e);
        }
        state.floor.clear();
        // Nothing is ours until the next assignment: no ODS merge or compaction either.
        state.sink.release_partitions();
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = start_at_lake_offsets(&mut state, consumer, tpl) {
            state.failed.get_or_insert(e);
        }
    }
}

/// Own the assigned partitions, then point them at the offsets the lake has (of any writer).
fn start_at_lake_offsets(
    state: &mut State,
    consumer: &BaseConsumer<SinkContext>,
    tpl: &TopicPartitionList,
) -> Result<(), PipelineError> {
    let generation = crate::kafka::group_generation(consumer);
    if generation < 0 && tpl.count() > 0 {
        // The membership was reset since this assignment was made (a poll interval overrun):
        // a newer one may have given the partitions away already.
        return Err(KafkaError::Rejoin(
            "partitions were assigned to a consumer that is no longer a group member".into(),
        )
        .into());
    }
    let partitions = tpl
        .elements()
        .iter()
        .map(|el| position_key(el.topic(), el.partition()))
        .collect();
    state.sink.take_partitions(generation, partitions)?;
    if tpl.count() == 0 {
        return Ok(());
    }
    let commits = state.sink.latest_commits_of_all_writers()?;
    let mut committed: HashMap<String, i64> = HashMap::new();
    for commit in &commits {
        for (key, pos) in &commit.positions {
            if let ResumePosition::Kafka { next_offset, .. } = pos {
                let best = committed.entry(key.clone()).or_insert(*next_offset);
                *best = (*best).max(*next_offset);
            }
        }
    }
    let mut start = TopicPartitionList::new();
    let mut owned = BTreeSet::new();
    for el in tpl.elements() {
        let offset = committed
            .get(&position_key(el.topic(), el.partition()))
            .copied();
        if let Some(offset) = offset {
            check_still_held(consumer, el.topic(), el.partition(), offset)?;
        }
        start
            .add_partition_offset(
                el.topic(),
                el.partition(),
                offset.map_or(Offset::Beginning, Offset::Offset),
            )
            .map_err(KafkaError::client("listing assigned partitions"))?;
        state.floor.insert(
            (el.topic().to_string(), el.partition()),
            offset.unwrap_or(0),
        );
        if el.partition() == 0
            && let Some(zone) = state.routes.zone(el.topic())
        {
            owned.insert(format!("{zone}/{}", state.settings.stream(el.topic())));
        }
    }
    tracing::info!(
        partitions = tpl.count(),
        generation,
        ods_streams = owned.len(),
        "sinks: partitions assigned; starting at the lake's offsets"
    );
    state.sink.set_owned_logs(owned);
    consumer.assign(&start).map_err(KafkaError::client(
        "assigning partitions at the lake's offsets",
    ))?;
    Ok(())
}

/// Fail if the topic no longer holds the record at the lake's `offset` (its log now begins
/// after it): the records between expired under retention, or were deleted, while the sinks were
/// stopped. The consumer would otherwise start at what is left (`auto.offset.reset`), silently.
fn check_still_held(
    consumer: &BaseConsumer<SinkContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), PipelineError> {
    let (low, _) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(KafkaError::client("reading a partition's first offset"))?;
    if low > offset {
        return Err(KafkaError::OffsetsLost {
            detail: format!(
                "topic {topic}, partition {partition}: the lake is at offset {offset}, the topic \
                 now begins at {low}"
            ),
        }
        .into());
    }
    Ok(())
}

/// A sink worker's commit log in the lake: one per instance.
pub(crate) fn writer_name(settings: &KafkaSettings) -> String {
    format!("sinks-{}", settings.instance)
}

/// Run one sink worker until `shutdown` (in a blocking thread).
pub(crate) fn run(
    settings: KafkaSettings,
    config: &Config,
    transforms: &[TransformDef],
    claim: Option<Claim>,
    status: SharedStatus,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let sink_cfg = &config.daemon.sink;
    let sink_settings = SinkSettings::from_config(sink_cfg);
    let writer = writer_name(&settings);
    let (mut sink, mut acks) = ParquetSink::open_writer(
        &sink_cfg.path,
        Some(&writer),
        claim,
        sink_settings,
        TransformSet::new(Vec::new()),
        status,
    )?;
    sink.release_partitions();
    let routes = Routes::new(&settings, config, transforms);
    let subscriptions = routes.subscriptions();
    let exact: Vec<String> = routes.exact.keys().cloned().collect();
    tokio::runtime::Handle::current().block_on(settings.ensure_topics(&exact, false))?;
    let state = Arc::new(Mutex::new(State {
        sink,
        pending: BTreeMap::new(),
        pending_count: 0,
        pending_since: None,
        floor: HashMap::new(),
        decoder: settings.decoder(),
        routes,
        settings: settings.clone(),
        failed: None,
    }));
    let consumer: BaseConsumer<SinkContext> = settings
        .consumer_config(&settings.group("sinks"))
        .create_with_context(SinkContext {
            state: state.clone(),
        })
        .map_err(KafkaError::client("creating the sinks consumer"))?;
    let refs: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(KafkaError::client("subscribing"))?;
    tracing::info!(topics = ?subscriptions, group = %settings.group("sinks"), writer, "sinks: consuming");
    let mut shutdown = shutdown;
    let mut lag = super::raw_to_cleansed::LagReporter::new("sinks");
    let result = (|| -> Result<(), PipelineError> {
        while !*shutdown.borrow_and_update() {
            let polled = consumer.poll(Duration::from_millis(20));
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = st.failed.take() {
                return Err(e);
            }
            match polled {
                None | Some(Err(RdError::PartitionEOF(_))) => {}
                Some(Err(e)) if crate::kafka::consumer_cannot_go_on(&e) => {
                    return Err(KafkaError::client("consuming")(e).into());
                }
                Some(Err(e)) => tracing::warn!(error = %e, "sinks: consumer error (retrying)"),
                Some(Ok(msg)) => st.take(&msg)?,
            }
            if st.pending_since.is_some_and(|t| t.elapsed() >= LINGER) {
                st.flush()?;
            }
            if st.sink.last_commit_age() >= st.sink.rotate_interval() && st.sink.has_news() {
                st.commit_all()?;
            }
            if st.sink.ods_due() {
                st.sink.merge_ods()?;
            }
            drop(st);
            if acks.has_changed().unwrap_or(false) {
                let committed = acks.borrow_and_update().clone();
                mirror_offsets(&consumer, &committed);
                lag.report(&consumer);
            }
        }
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.commit_all()?;
        st.sink.merge_ods()?;
        Ok(())
    })();
    // Leave the group now (its partitions go to the other workers at once); the revoke
    // callback finds nothing left to commit.
    consumer.unsubscribe();
    drop(consumer);
    result
}

/// Mirror the lake's offsets of the assigned partitions into the group, for lag tools.
fn mirror_offsets(
    consumer: &BaseConsumer<SinkContext>,
    committed: &BTreeMap<String, ResumePosition>,
) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for el in assigned.elements() {
        if let Some(ResumePosition::Kafka { next_offset, .. }) =
            committed.get(&position_key(el.topic(), el.partition()))
        {
            let _ =
                tpl.add_partition_offset(el.topic(), el.partition(), Offset::Offset(*next_offset));
        }
    }
    if tpl.count() > 0 {
        let _ = consumer.commit(&tpl, CommitMode::Async);
    }
}
