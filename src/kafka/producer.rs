//! Transactional producers: a fresh transactional id for every process start, after fencing
//! the previous one.
//!
//! On start a role instance reads which transactional id its previous incarnation used (the
//! offsets topic keeps it under `producer/<role>/<instance>`), initialises transactions with that
//! id once (so the broker aborts the transaction a killed process left open, at once, and a
//! zombie still running can no longer commit), records a new id, and works under it.
//!
//! A new id per start means a producer id is never reused after a crash. That matters beyond
//! tidiness: some Kafka-protocol brokers (noida-db, the test stand-in here) keep reporting an
//! aborted transaction of a producer id to consumers that start reading after its abort marker,
//! and those consumers then skip every later record of that producer id.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, Producer, ThreadedProducer,
};

use super::{CompactedReader, KafkaError, KafkaSettings, wait_delivered};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The offsets-topic key naming a role instance's current transactional id.
fn registry_key(settings: &KafkaSettings, role: &str) -> String {
    format!("producer/{role}/{}", settings.instance)
}

/// Whether an offsets-topic key is a producer registration (not a source position).
pub(crate) fn is_registry_key(key: &str) -> bool {
    key.starts_with("producer/")
}

/// A role's transactional producer and the offsets topic's records (key to value).
pub(crate) struct Started {
    pub(crate) producer: ThreadedProducer<DefaultProducerContext>,
    pub(crate) offsets: BTreeMap<String, Vec<u8>>,
    /// The reader of the offsets topic, idle: keep it as long as the producer (see
    /// [`CompactedReader::finish`]).
    pub(crate) reader: CompactedReader,
}

/// Fence the previous incarnation of `role` and start a producer under a new transactional id.
/// Returns it with the offsets topic as it stands once every transaction that was open in it
/// has ended (so the positions read are the last committed ones). Blocking.
///
/// The order matters. The new id is recorded (with a plain, non-transactional write) before it
/// begins any transaction: killed at any point, the process leaves behind either no transaction
/// under the new id or a record naming it, so its next incarnation always knows whom to fence.
/// Recording it inside a transaction would leave, when killed before the commit, an open
/// transaction nobody knows about, and readers of the offsets topic would wait on it.
pub(crate) fn start(settings: &KafkaSettings, role: &str) -> Result<Started, KafkaError> {
    let started = std::time::Instant::now();
    let step =
        |what: &str| tracing::debug!(role, elapsed = ?started.elapsed(), "producer start: {what}");
    let topic = settings.offsets_topic();
    let key = registry_key(settings, role);
    let mut reader = CompactedReader::open(settings, &topic)?;
    let previous = reader.read_on(None)?.get(&key).cloned();
    step("offsets topic read");
    if let Some(previous) = previous {
        fence(settings, &String::from_utf8_lossy(&previous))?;
        step("previous producer fenced");
    }
    let id = format!(
        "{}-{}",
        settings.transactional_id(role),
        chrono::Utc::now().timestamp_millis()
    );
    record_id(settings, &topic, &key, &id)?;
    step("new transactional id recorded");
    // Read on to the record just written: every transaction open before it has ended by then
    // (our predecessor's was aborted by the fence), so the positions read are the last ones.
    reader.read_on(Some((&key, &id)))?;
    let offsets = reader.finish()?;
    step("offsets topic read to the new id");
    let producer: ThreadedProducer<DefaultProducerContext> = settings
        .producer_config(&id)
        .create()
        .map_err(KafkaError::client("creating the producer"))?;
    producer
        .init_transactions(TIMEOUT)
        .map_err(KafkaError::client(format!(
            "initialising transactions as `{id}`"
        )))?;
    step("transactions initialised");
    Ok(Started {
        producer,
        offsets,
        reader,
    })
}

/// Initialise transactions once under a previous id: the broker aborts the transaction it left
/// open, and a zombie still holding it can no longer commit.
///
/// A `BaseProducer`, which needs no polling for this: dropping a `ThreadedProducer` joins its
/// polling thread, which sleeps in 100 ms steps, and that was a tenth of a second of every
/// role's start.
fn fence(settings: &KafkaSettings, previous: &str) -> Result<(), KafkaError> {
    let fence: BaseProducer =
        settings
            .producer_config(previous)
            .create()
            .map_err(KafkaError::client(
                "creating a producer to fence the previous one",
            ))?;
    fence
        .init_transactions(TIMEOUT)
        .map_err(KafkaError::client(format!(
            "fencing transactional id `{previous}`"
        )))?;
    tracing::info!(transactional_id = %previous, "fenced the previous incarnation's producer");
    Ok(())
}

/// Write `key` → `id` to the offsets topic outside any transaction, acknowledged by all
/// in-sync replicas.
///
/// Not idempotent, on purpose: an idempotent producer first acquires a producer id, which took
/// 0.5-1 s against the test broker (librdkafka waits on a timer), and that was most of every
/// role's start. A retried send can only write the same key and value twice into a compacted
/// topic, where readers keep the last one: nothing to deduplicate.
fn record_id(settings: &KafkaSettings, topic: &str, key: &str, id: &str) -> Result<(), KafkaError> {
    let mut config = settings.client_config();
    config.set("enable.idempotence", "false").set("acks", "all");
    let producer: BaseProducer = config
        .create()
        .map_err(KafkaError::client("creating the id recorder"))?;
    producer
        .send(
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(id.as_bytes()),
        )
        .map_err(|(e, _)| KafkaError::client(format!("recording transactional id `{id}`"))(e))?;
    // Not `flush`, which polls in 100 ms steps (see `wait_delivered`).
    let delivered = wait_delivered(
        || producer.in_flight_count(),
        |step| {
            producer.poll(step);
        },
        TIMEOUT,
    );
    if !delivered {
        return Err(KafkaError::Setup(format!(
            "recording transactional id `{id}` in `{topic}`: not acknowledged within {TIMEOUT:?}"
        )));
    }
    Ok(())
}
