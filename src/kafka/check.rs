//! `sluice check` for Kafka mode: the brokers answer, the topics exist or can be created, this
//! principal may read and write them, and the brokers support transactions.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

use super::KafkaSettings;
use crate::finding::Finding;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Every topic the pipeline reads or writes, as far as the config names them (raw topics are
/// named by the tables the sources capture; the check of each source lists those).
fn named_topics(settings: &KafkaSettings, streams: &[String]) -> Vec<String> {
    let mut topics = vec![settings.offsets_topic()];
    for stream in streams {
        topics.push(settings.topic(stream));
    }
    topics.sort();
    topics.dedup();
    topics
}

/// `streams`: the streams the config names (the transforms' inputs, outputs and dead letters).
pub(crate) async fn check(settings: &KafkaSettings, streams: &[String]) -> Vec<Finding> {
    let settings = settings.clone();
    let topics = named_topics(&settings, streams);
    let (mut findings, missing, replication) = tokio::task::spawn_blocking({
        let settings = settings.clone();
        move || check_blocking(&settings, &topics)
    })
    .await
    .unwrap_or_else(|e| {
        let failed = Finding::problem(
            "kafka",
            format!("the check failed: {e}"),
            "report this".into(),
        );
        (vec![failed], Vec::new(), 1)
    });
    if findings.iter().any(|f| f.subject == "kafka" && !f.warning) {
        return findings; // brokers unreachable: the rest would only repeat it
    }
    findings.extend(check_creatable(&settings, &missing, replication).await);
    if let Some(registry) = settings.registry.clone() {
        let answer = tokio::task::spawn_blocking(move || {
            registry
                .subjects()
                .map_err(|e| (registry.url().to_string(), e))
        })
        .await;
        if let Ok(Err((url, e))) = answer {
            findings.push(Finding::problem(
                "schema registry",
                e.to_string(),
                format!("start the registry at {url}, or fix log.kafka.schema_registry (url, username, password)"),
            ));
        }
    }
    findings
}

/// The brokers, the named topics' metadata and transaction support; also returns the named
/// topics that do not exist yet, and the replication factor new topics get.
fn check_blocking(settings: &KafkaSettings, topics: &[String]) -> (Vec<Finding>, Vec<String>, i32) {
    let mut findings = Vec::new();
    let mut missing = Vec::new();
    let brokers = &settings.config.brokers;
    let consumer: BaseConsumer = match settings.consumer_config(&settings.group("check")).create() {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding::problem(
                "kafka",
                format!("cannot create a client: {e}"),
                "fix log.kafka (brokers, security) in sluice.yaml".into(),
            ));
            return (findings, missing, 1);
        }
    };
    let metadata = match consumer.fetch_metadata(None, TIMEOUT) {
        Ok(m) => m,
        Err(e) => {
            findings.push(Finding::problem(
                "kafka",
                format!("brokers `{brokers}` did not answer: {e}"),
                "start Kafka, or fix log.kafka.brokers and log.kafka.security".into(),
            ));
            return (findings, missing, 1);
        }
    };
    let replication = settings
        .config
        .replication_factor
        .unwrap_or_else(|| super::default_replication(metadata.brokers().len()));
    if replication < 3 {
        findings.push(Finding::warning(
            "kafka replication",
            format!(
                "topics sluice creates get {replication} replica(s): losing a broker loses the \
                 changes in its topics that the lake does not have yet"
            ),
            "run at least three brokers, or set log.kafka.replication_factor: 3".into(),
        ));
    }
    for topic in topics {
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_some() => findings.push(Finding::problem(
                &format!("kafka topic `{topic}`"),
                format!("the broker refuses it: {:?}", t.error()),
                "grant this principal Describe, Read and Write on the topic (ACLs)".into(),
            )),
            Some(_) => {}
            None => missing.push(topic.clone()), // created when first needed
        }
    }
    // Transactions: initialise a producer with a probe transactional id.
    let probe = format!("{}-check", settings.pipeline);
    match settings
        .producer_config(&probe)
        .create::<ThreadedProducer<DefaultProducerContext>>()
    {
        Ok(p) => {
            if let Err(e) = p.init_transactions(TIMEOUT) {
                findings.push(Finding::problem(
                    "kafka transactions",
                    format!("the brokers cannot run transactions for `{probe}`: {e}"),
                    "use Kafka 2.5 or later with transaction.state.log settings that fit the cluster, and grant Write and Describe on transactional ids `<pipeline>-*`".into(),
                ));
            }
        }
        Err(e) => findings.push(Finding::problem(
            "kafka transactions",
            format!("cannot create a transactional producer: {e}"),
            "fix log.kafka.producer overrides".into(),
        )),
    }
    (findings, missing, replication)
}

/// Topics that do not exist yet must be creatable: ask the broker to validate creating them.
async fn check_creatable(
    settings: &KafkaSettings,
    missing: &[String],
    replication: i32,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if missing.is_empty() {
        return findings;
    }
    let admin: AdminClient<DefaultClientContext> = match settings.client_config().create() {
        Ok(a) => a,
        Err(e) => {
            findings.push(Finding::problem(
                "kafka",
                format!("cannot create an admin client: {e}"),
                "fix log.kafka".into(),
            ));
            return findings;
        }
    };
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                settings.config.partitions,
                TopicReplication::Fixed(replication),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .validate_only(true)
        .operation_timeout(Some(TIMEOUT));
    match admin.create_topics(new.iter(), &opts).await {
        Ok(results) => {
            for r in results {
                if let Err((topic, code)) = r
                    && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                {
                    findings.push(Finding::problem(
                        &format!("kafka topic `{topic}`"),
                        format!("does not exist and cannot be created: {code}"),
                        "create it, or grant this principal Create on the cluster (and check partitions and replication_factor in log.kafka)".into(),
                    ));
                }
            }
        }
        Err(e) => findings.push(Finding::problem(
            "kafka topics",
            format!(
                "cannot ask the broker to create {} topics: {e}",
                missing.len()
            ),
            "grant this principal Create on the cluster, or create the topics".into(),
        )),
    }
    findings
}
