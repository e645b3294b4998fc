//! Transform workers: raw topics → cleansed and dead-letter topics, exactly once.
//!
//! A worker is one member of the `<pipeline>-transforms` consumer group. It collects a batch of
//! committed raw records, runs the transforms on it, and in one transaction produces the
//! cleansed and dead-letter records and commits the consumed offsets
//! (`send_offsets_to_transaction`). A crash aborts the open transaction; the next owner of the
//! partitions starts from the committed offsets, so each raw record is transformed once.
//!
//! A rebalance can only happen inside `poll`: when one did, the records collected before it are
//! dropped (their partitions restart from the committed offsets under their new owner) and
//! nothing of them was produced yet.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::kafka::codec::{RecordDecoder, RecordEncoder, undecodable_dead_letter};
use crate::kafka::{KafkaError, KafkaSettings, commit_transaction, produce};
use crate::metrics as m;
use crate::topology::PipelineError;
use crate::transform::{TransformDef, TransformSet};

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RECORDS: usize = 4096;
const LINGER: Duration = Duration::from_millis(50);

/// Notes that a rebalance happened, for the worker's loop.
#[derive(Default)]
pub(super) struct RebalanceFlag(pub(super) AtomicBool);

impl ClientContext for RebalanceFlag {}
impl ConsumerContext for RebalanceFlag {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "transforms: partitions revoked")
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "transforms: partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "transforms: rebalance failed"),
        }
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Run one transform worker until `shutdown` (in a blocking thread).
pub(crate) fn run(
    settings: KafkaSettings,
    defs: Vec<TransformDef>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let inputs: Vec<String> = defs
        .iter()
        .map(|d| settings.topic(&d.from))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if inputs.is_empty() {
        tracing::info!("transforms: no transform files, nothing to do");
        let mut shutdown = shutdown;
        while !*shutdown.borrow_and_update() {
            std::thread::sleep(Duration::from_millis(200));
        }
        return Ok(());
    }
    let mut outputs: Vec<String> = defs
        .iter()
        .flat_map(|d| [settings.topic(&d.name), settings.topic(&d.dlq)])
        .collect();
    outputs.extend(inputs.iter().cloned());
    let runtime = tokio::runtime::Handle::current();
    runtime.block_on(settings.ensure_topics(&outputs, false))?;

    let consumer: BaseConsumer<RebalanceFlag> = settings
        .consumer_config(&settings.group("transforms"))
        .create_with_context(RebalanceFlag::default())
        .map_err(KafkaError::client("creating the transforms consumer"))?;
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(KafkaError::client("subscribing to the raw topics"))?;
    let offsets_topic = settings.offsets_topic();
    runtime.block_on(settings.ensure_topics(std::slice::from_ref(&offsets_topic), true))?;
    let started = crate::kafka::producer::start(&settings, "transforms")?;
    tracing::info!(topics = ?inputs, group = %settings.group("transforms"), "transforms: consuming");

    let mut worker = Worker {
        encoder: settings.encoder(),
        decoder: settings.decoder(),
        settings,
        transforms: TransformSet::new(defs.clone()),
        defs,
        producer: started.producer,
        _offsets_reader: started.reader,
        lag: LagReporter::new("transforms"),
    };
    let mut shutdown = shutdown;
    while !*shutdown.borrow_and_update() {
        let batch = collect(&consumer)?;
        if batch.is_empty() {
            continue;
        }
        worker.process(&consumer, batch)?;
    }
    Ok(())
}

/// Records polled for up to [`LINGER`] (or [`MAX_RECORDS`]), all after the last rebalance.
fn collect(consumer: &BaseConsumer<RebalanceFlag>) -> Result<Vec<OwnedMessage>, KafkaError> {
    let mut out = Vec::new();
    let deadline = Instant::now() + LINGER;
    while out.len() < MAX_RECORDS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() && !out.is_empty() {
            break;
        }
        let polled = consumer.poll(left.max(Duration::from_millis(1)));
        if consumer.context().0.swap(false, Ordering::SeqCst) {
            out.clear(); // from before the rebalance: their partitions restart from the commits
        }
        match polled {
            None => {
                if Instant::now() >= deadline {
                    break;
                }
            }
            Some(Err(RdError::PartitionEOF(_))) => {}
            Some(Err(e)) if crate::kafka::consumer_cannot_go_on(&e) => {
                return Err(KafkaError::client("consuming raw topics")(e));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "transforms: consumer error (retrying)");
            }
            Some(Ok(msg)) => out.push(msg.detach()),
        }
    }
    Ok(out)
}

struct Worker {
    settings: KafkaSettings,
    defs: Vec<TransformDef>,
    transforms: TransformSet,
    decoder: RecordDecoder,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// Idle; kept as long as the producer (see `CompactedReader::finish`).
    _offsets_reader: crate::kafka::CompactedReader,
    encoder: RecordEncoder,
    lag: LagReporter,
}

impl Worker {
    fn process(
        &mut self,
        consumer: &BaseConsumer<RebalanceFlag>,
        batch: Vec<OwnedMessage>,
    ) -> Result<(), PipelineError> {
        let t0 = Instant::now();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut events = Vec::with_capacity(batch.len());
        let mut undecodable = Vec::new();
        for msg in batch {
            next.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
            let stream = self.settings.stream(msg.topic()).to_string();
            match self.decoder.decode(&stream, &msg)? {
                Ok(e) => events.push(e),
                Err(e) => undecodable.push((stream, msg, e)),
            }
        }
        let decoded = t0.elapsed();
        let mut out = self.transforms.apply(&events);
        let transformed = t0.elapsed();
        for (stream, msg, error) in undecodable {
            for def in self.defs.iter().filter(|d| d.from == stream) {
                out.dead_letters.push(undecodable_dead_letter(
                    &msg, &def.dlq, &def.name, &stream, &error,
                ));
            }
        }
        self.producer
            .begin_transaction()
            .map_err(KafkaError::client("beginning a transaction"))?;
        let mut produced = 0u64;
        let mut cleansed = Vec::new();
        for run in &out.cleansed {
            cleansed.extend(run.to_events().map_err(crate::sink::SinkError::from)?);
        }
        for event in cleansed.iter().chain(&out.dead_letters) {
            let topic = self.settings.topic(&event.table.stream);
            produce(&self.producer, &topic, self.encoder.encode(&topic, event)?)?;
            produced += 1;
        }
        let produced_at = t0.elapsed();
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(KafkaError::client("listing consumed offsets"))?;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            KafkaError::Setup("the transforms consumer has no group metadata".into())
        })?;
        let started = Instant::now();
        let committed = self
            .producer
            .send_offsets_to_transaction(&offsets, &group, TIMEOUT)
            .and_then(|()| commit_transaction(&self.producer, TIMEOUT));
        if let Err(e) = committed {
            metrics::counter!(m::KAFKA_TRANSACTIONS, "stage" => "transforms", "outcome" => "failed").increment(1);
            let _ = self.producer.abort_transaction(TIMEOUT);
            return Err(KafkaError::client("committing a transforms transaction")(e).into());
        }
        metrics::counter!(m::KAFKA_TRANSACTIONS, "stage" => "transforms", "outcome" => "committed")
            .increment(1);
        tracing::debug!(
            partitions = next.len(),
            produced,
            decode_ms = decoded.as_millis() as u64,
            transform_ms = (transformed - decoded).as_millis() as u64,
            produce_ms = (produced_at - transformed).as_millis() as u64,
            commit_ms = started.elapsed().as_millis() as u64,
            "transforms: committed a transaction"
        );
        metrics::counter!(m::KAFKA_PRODUCED, "stage" => "transforms").increment(produced);
        metrics::gauge!(m::KAFKA_IN_FLIGHT, "stage" => "transforms")
            .set(self.producer.in_flight_count() as f64);
        metrics::histogram!(m::KAFKA_COMMIT_SECONDS, "stage" => "transforms")
            .record(started.elapsed().as_secs_f64());
        self.lag.report(consumer);
        Ok(())
    }
}

/// `sluice_kafka_consumer_lag_records` per assigned partition (high watermark minus position),
/// at most every [`LagReporter::EVERY`]: asking for the watermarks is a request to the broker.
pub(super) struct LagReporter {
    stage: &'static str,
    last: Option<Instant>,
}

impl LagReporter {
    const EVERY: Duration = Duration::from_secs(5);

    pub(super) fn new(stage: &'static str) -> Self {
        LagReporter { stage, last: None }
    }

    pub(super) fn report<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let Ok(position) = consumer.position() else {
            return;
        };
        for el in position.elements() {
            let Offset::Offset(pos) = el.offset() else {
                continue;
            };
            if let Ok((_, high)) =
                consumer.fetch_watermarks(el.topic(), el.partition(), Duration::from_millis(500))
            {
                metrics::gauge!(m::KAFKA_CONSUMER_LAG, "stage" => self.stage, "topic" => el.topic().to_string(), "partition" => el.partition().to_string())
                    .set((high - pos).max(0) as f64);
            }
        }
    }
}
