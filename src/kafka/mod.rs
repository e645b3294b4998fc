//! The Kafka client every Kafka-mode stage shares: settings ([`KafkaSettings`]), topics and their
//! creation, transactional producers ([`producer`]), the compacted offsets topic reader, change
//! events as records ([`codec`], in JSON or [`avro`] with a [`registry`]), and `sluice check` for
//! the brokers ([`check`]). The stages themselves are `crate::topology::kafka`.

pub(crate) mod avro;
pub(crate) mod check;
pub(crate) mod codec;
pub(crate) mod producer;
pub(crate) mod registry;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::kafka::{Format, KafkaConfig};
use crate::error::Classify;

/// Kafka mode's errors. Definite: the broker refuses what sluice does (fenced by a newer
/// instance, not authorised, transactions unsupported). Transient: everything else.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {what}: {source}")]
    Client {
        what: String,
        #[source]
        source: RdError,
    },
    #[error("kafka: {0}")]
    Setup(String),
    /// The consumer must leave and join its group again (transient).
    #[error("kafka: {0}")]
    Rejoin(String),
    #[error(
        "kafka: a topic no longer holds the records after the lake's position ({detail}): they \
         expired under the topic's retention, or were deleted, while the sinks were stopped, and \
         those changes are in neither the topic nor the lake. Choose one: snapshot the sources \
         again into a new sink path; or keep raw topics longer than the sinks can be down \
         (retention.ms) and restore the lake from before the gap"
    )]
    OffsetsLost { detail: String },
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A change that does not fit the Avro schema derived for it: a bug, not bad input.
    #[error("kafka: encoding a record: {0}")]
    Encode(#[from] avro::AvroError),
}

impl KafkaError {
    pub(crate) fn client(what: impl Into<String>) -> impl FnOnce(RdError) -> KafkaError {
        let what = what.into();
        move |source| KafkaError::Client { what, source }
    }
}

impl Classify for KafkaError {
    fn is_transient(&self) -> bool {
        match self {
            KafkaError::Client { source, .. } => !definite(source),
            KafkaError::Rejoin(_) => true,
            KafkaError::Setup(_) | KafkaError::OffsetsLost { .. } => false,
            KafkaError::Registry(e) => e.is_transient(),
            KafkaError::Encode(_) => false,
        }
    }
}

fn definite(e: &RdError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::UnsupportedVersion
                | C::UnsupportedForMessageFormat
                | C::InvalidConfig
                | C::InvalidReplicationFactor
                | C::InvalidPartitions
                | C::PolicyViolation
                // Another process with this transactional id took over: this one must stop.
                | C::ProducerFenced
                | C::Fenced
                | C::InvalidProducerEpoch
        )
    )
}

/// A consumer error that polling again cannot get past: the broker refuses (definite), or
/// librdkafka's client is in a fatal state. Any other consumer error is retried by polling on.
pub(crate) fn consumer_cannot_go_on(e: &RdError) -> bool {
    definite(e) || matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal))
}

/// The consumer group generation `consumer` is a member of now (-1: none, between a rebalance
/// and the next assignment). rust-rdkafka keeps the group metadata's fields to itself, so this
/// asks librdkafka, as its own transactional producers do.
pub(crate) fn group_generation<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> i32 {
    use rdkafka::bindings as rd;
    // SAFETY: the client pointer is valid while `consumer` lives. The metadata librdkafka
    // returns is a copy owned by the caller: it is read once, then destroyed exactly once.
    unsafe {
        let metadata = rd::rd_kafka_consumer_group_metadata(consumer.client().native_ptr());
        if metadata.is_null() {
            return -1;
        }
        let generation = rd::rd_kafka_consumer_group_metadata_generation_id(metadata);
        rd::rd_kafka_consumer_group_metadata_destroy(metadata);
        generation
    }
}

/// The replication factor of the topics sluice creates when none is configured: three copies,
/// or as many as the cluster has brokers.
pub(crate) fn default_replication(brokers: usize) -> i32 {
    brokers.clamp(1, 3) as i32
}

/// Send, waiting while the producer's bounded queue is full (backpressure on the stage).
pub(crate) fn send<K, P>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, record)) => {
                return Err(KafkaError::client(format!(
                    "producing to `{}`",
                    record.topic
                ))(e));
            }
        }
    }
}

/// Wait until every record `in_flight` counts is delivered (or failed), checking every 2 ms.
///
/// Used instead of rdkafka's `flush`, which polls the producer's event queue in steps of 100
/// ms: on a `ThreadedProducer` its own polling thread serves the deliveries, so `flush` sleeps
/// out the whole step every time anything was in flight. That was the 100 ms every transaction
/// commit took (the commit flushes first).
pub(crate) fn wait_delivered(
    in_flight: impl Fn() -> i32,
    mut step: impl FnMut(Duration),
    timeout: Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while in_flight() > 0 {
        if std::time::Instant::now() > deadline {
            return false;
        }
        step(Duration::from_millis(2));
    }
    true
}

/// Commit the producer's open transaction, without rdkafka's 100 ms flush steps (see
/// `wait_delivered`): what is still in flight is waited for first, so the commit's own flush
/// finds nothing to wait for.
pub(crate) fn commit_transaction(
    producer: &ThreadedProducer<DefaultProducerContext>,
    timeout: Duration,
) -> KafkaResult<()> {
    // Not delivered in time: the commit's own flush waits on, and reports the failure.
    wait_delivered(
        || producer.in_flight_count(),
        |step| send_lingering(producer, step),
        timeout,
    );
    producer.commit_transaction(timeout)
}

/// Send what waits out `linger.ms` at once, and wait up to `step` for deliveries.
///
/// librdkafka ignores the linger only while a `rd_kafka_flush` call lasts: rdkafka's `flush`
/// calls it with no wait (over before the broker threads look) and then polls in 100 ms steps.
/// Without this a record produced just before a commit sat out the linger (5 ms) first, which
/// was that much of every commit and of Kafka mode's latency.
fn send_lingering(producer: &ThreadedProducer<DefaultProducerContext>, step: Duration) {
    let millis = i32::try_from(step.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: the handle is the live producer's, which outlives the call; librdkafka's flush
    // may be called from any thread, alongside the producer's polling thread. Its result (timed
    // out, or not) is read from `in_flight_count` by the caller.
    unsafe {
        rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), millis);
    }
}

/// Send an encoded event to `topic`, keyed (a keyless truncate goes to partition 0).
pub(crate) fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    record: codec::EncodedRecord<'_>,
) -> Result<(), KafkaError> {
    let mut base = BaseRecord::to(topic)
        .payload(record.value)
        .headers(record.headers);
    base = match record.key {
        Some(key) => base.key(key),
        None => base.partition(0),
    };
    send(producer, base)
}

/// A reader of a one-partition compacted topic (the offsets topic): the last committed value
/// of every key, read to the end, and on. Blocking.
pub(crate) struct CompactedReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    assigned: bool,
    records: BTreeMap<String, Vec<u8>>,
}

impl CompactedReader {
    pub(crate) fn open(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        let mut config = settings.consumer_config(&settings.group("offsets-reader"));
        // At the end of the partition a fetch waits up to fetch.wait.max.ms (500 ms by default)
        // for more; this reader wants to know it reached the end, at every role's start.
        config
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10");
        let consumer = config
            .create_with_context(ReaderContext)
            .map_err(KafkaError::client("creating the offsets reader"))?;
        Ok(CompactedReader {
            consumer,
            topic: topic.to_string(),
            assigned: false,
            records: BTreeMap::new(),
        })
    }

    /// Read on to the end of the partition, and further until `wait_for` (a key and value
    /// written outside any transaction) has been read: a read_committed reader stops short of
    /// the oldest transaction still open, so reading a record means every transaction open
    /// before it has ended. Returns every key's last value read so far.
    pub(crate) fn read_on(
        &mut self,
        wait_for: Option<(&str, &str)>,
    ) -> Result<&BTreeMap<String, Vec<u8>>, KafkaError> {
        let (topic, consumer) = (&self.topic, &self.consumer);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let waited = |records: &BTreeMap<String, Vec<u8>>| {
            wait_for.is_none_or(|(key, value)| {
                records.get(key).map(Vec::as_slice) == Some(value.as_bytes())
            })
        };
        if !self.assigned {
            // An empty partition reports no end (no fetch reaches it), so its watermarks come
            // first; and before the assignment, which has the consumer look up the partition's
            // start (asked after that, the watermarks took half a second).
            let (low, high) = consumer
                .fetch_watermarks(topic, 0, Duration::from_secs(30))
                .map_err(KafkaError::client(format!(
                    "reading the watermarks of `{topic}`"
                )))?;
            if high <= low && wait_for.is_none() {
                return Ok(&self.records);
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, 0, Offset::Beginning)
                .map_err(KafkaError::client("assigning the offsets topic"))?;
            consumer
                .assign(&tpl)
                .map_err(KafkaError::client("assigning the offsets topic"))?;
            self.assigned = true;
        }
        let mut at_end = false;
        while !(at_end && waited(&self.records)) {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::Setup(format!(
                    "reading `{topic}` to its end took over two minutes: a transaction in it stays \
                     open (a process killed inside one, whose instance has not started again, \
                     until the brokers' transaction timeout aborts it)"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(RdError::PartitionEOF(_))) => at_end = true,
                Some(Err(e)) => return Err(KafkaError::client(format!("reading `{topic}`"))(e)),
                Some(Ok(msg)) => {
                    if let (Some(key), Some(value)) = (msg.key(), msg.payload()) {
                        self.records
                            .insert(String::from_utf8_lossy(key).to_string(), value.to_vec());
                    }
                }
            }
        }
        Ok(&self.records)
    }

    /// Stop fetching, and hand over what was read. The reader itself is kept until its role
    /// ends: rdkafka closes a consumer by polling its closed queue in a loop, a core busy for
    /// a tenth of a second or more, which a starting role should not pay.
    pub(crate) fn finish(&mut self) -> Result<BTreeMap<String, Vec<u8>>, KafkaError> {
        self.consumer
            .unassign()
            .map_err(KafkaError::client("releasing the offsets topic"))?;
        Ok(std::mem::take(&mut self.records))
    }
}

/// The offsets reader's client context. librdkafka reports the end of the partition, which the
/// reader asks for (`enable.partition.eof`) and gets from `poll`, on the client's error path
/// too, where the default context logs it as an error at every start (rust-rdkafka#820).
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: RdError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            DefaultClientContext.error(error, reason);
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// What every stage shares: the config, the topic names, and client settings.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSettings {
    pub(crate) config: KafkaConfig,
    pub(crate) pipeline: String,
    /// This process among the processes of its role: part of its transactional id and, for
    /// sinks, its lake writer name. Stable across restarts, unique among running processes.
    pub(crate) instance: String,
    /// The schema registry client, shared by the stage's encoders and decoders.
    pub(crate) registry: Option<std::sync::Arc<registry::SchemaRegistry>>,
    admin: SharedAdmin,
}

/// One admin client for the process, made on first use. Kept, not made per call: dropping one
/// joins its polling thread, which sleeps in 100 ms steps, and topics are created at every
/// role's start and whenever a source meets a new table.
#[derive(Clone, Default)]
struct SharedAdmin(std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Admin>>>>);

type Admin = AdminClient<DefaultClientContext>;

impl std::fmt::Debug for SharedAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedAdmin")
    }
}

impl KafkaSettings {
    pub(crate) fn new(config: KafkaConfig, pipeline: &str, instance: Option<String>) -> Self {
        let instance = instance
            .or_else(|| std::env::var("SLUICE_INSTANCE").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "0".into());
        let registry = config
            .schema_registry
            .as_ref()
            .map(|r| std::sync::Arc::new(registry::SchemaRegistry::new(r)));
        KafkaSettings {
            config,
            pipeline: pipeline.into(),
            instance,
            registry,
            admin: SharedAdmin::default(),
        }
    }

    /// An encoder in the configured format.
    pub(crate) fn encoder(&self) -> codec::RecordEncoder {
        let encoding = match (&self.config.format, &self.registry) {
            (Format::Avro, Some(registry)) => codec::Encoding::Avro(registry.clone()),
            // Config validation refuses avro without a registry.
            _ => codec::Encoding::Json {
                schemas: self.config.schemas,
            },
        };
        codec::RecordEncoder::new(encoding)
    }

    /// A decoder of either format (Avro needs the registry).
    pub(crate) fn decoder(&self) -> codec::RecordDecoder {
        codec::RecordDecoder::new(self.registry.clone())
    }

    /// The topic of a stream.
    pub(crate) fn topic(&self, stream: &str) -> String {
        format!("{}{stream}", self.config.topic_prefix)
    }

    /// The stream of a topic.
    pub(crate) fn stream<'t>(&self, topic: &'t str) -> &'t str {
        topic
            .strip_prefix(&self.config.topic_prefix)
            .unwrap_or(topic)
    }

    /// The compacted topic holding each source's committed position.
    pub(crate) fn offsets_topic(&self) -> String {
        format!(
            "{}_sluice.{}.offsets",
            self.config.topic_prefix, self.pipeline
        )
    }

    pub(crate) fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.pipeline)
    }

    pub(crate) fn transactional_id(&self, role: &str) -> String {
        format!("{}-{role}-{}", self.pipeline, self.instance)
    }

    /// Connection and security settings every client gets.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.config.brokers);
        c.set("client.id", format!("sluice-{}", self.pipeline));
        let sec = &self.config.security;
        let set = |c: &mut ClientConfig, key: &str, v: &Option<String>| {
            if let Some(v) = v {
                c.set(key, v);
            }
        };
        set(&mut c, "security.protocol", &sec.protocol);
        set(&mut c, "sasl.mechanism", &sec.sasl_mechanism);
        set(&mut c, "sasl.username", &sec.username);
        set(&mut c, "sasl.password", &sec.password);
        set(&mut c, "ssl.ca.location", &sec.ca_file);
        set(&mut c, "ssl.certificate.location", &sec.cert_file);
        set(&mut c, "ssl.key.location", &sec.key_file);
        c
    }

    /// A transactional producer's settings. Its queue is bounded (so a slow or absent broker
    /// pushes back on the sources instead of growing memory), keys are partitioned with
    /// murmur2 like the Java client (so sluice and Debezium put a key in the same partition),
    /// and batches are lz4-compressed: Debezium records with their schema compress about
    /// tenfold, which is that much less for brokers to store and consumers to fetch. Only
    /// failed deliveries are reported: sluice learns that its records arrived from the
    /// transaction's commit, and a report per record cost a thread of its own 7% of the
    /// producer's CPU.
    pub(crate) fn producer_config(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("queue.buffering.max.kbytes", "32768")
            .set("queue.buffering.max.messages", "100000")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("delivery.report.only.error", "true")
            .set("transaction.timeout.ms", "60000");
        for (k, v) in &self.config.producer {
            c.set(k, v);
        }
        c
    }

    /// A consumer of committed records only, which never commits on its own. It is a static
    /// member of its group (`group.instance.id`: the role and instance), so a restarted process
    /// takes its place at once instead of waiting out the dead one's session.
    pub(crate) fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group)
            .set("group.instance.id", format!("{group}-{}", self.instance))
            .set("max.poll.interval.ms", "60000")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "16384")
            .set("fetch.max.bytes", "16777216")
            .set("max.partition.fetch.bytes", "1048576")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "5000");
        for (k, v) in &self.config.consumer {
            c.set(k, v);
        }
        // `group.instance.id: ""` asks for dynamic membership: a worker that leaves (stops, or
        // stalls past max.poll.interval.ms) is replaced at once instead of after its session.
        if c.get("group.instance.id") == Some("") {
            c.remove("group.instance.id");
        }
        c
    }

    /// The process's admin client.
    fn admin(&self) -> Result<std::sync::Arc<Admin>, KafkaError> {
        let mut shared = self.admin.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(admin) = &*shared {
            return Ok(admin.clone());
        }
        let admin: Admin = self
            .client_config()
            .create()
            .map_err(KafkaError::client("creating the admin client"))?;
        Ok(shared.insert(std::sync::Arc::new(admin)).clone())
    }

    /// Create the topics that are missing (a topic that exists is left as it is).
    pub(crate) async fn ensure_topics(
        &self,
        topics: &[String],
        compacted: bool,
    ) -> Result<(), KafkaError> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin = self.admin()?;
        let replication = match self.config.replication_factor {
            Some(factor) => factor,
            None => {
                let metadata = tokio::task::block_in_place(|| {
                    admin
                        .inner()
                        .fetch_metadata(None, std::time::Duration::from_secs(10))
                })
                .map_err(KafkaError::client("counting the brokers"))?;
                default_replication(metadata.brokers().len())
            }
        };
        let partitions = if compacted { 1 } else { self.config.partitions };
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(replication));
                if compacted {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(KafkaError::client("creating topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::Client {
                        what: format!("creating topic `{topic}`"),
                        source: RdError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }
}
