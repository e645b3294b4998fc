//! `log.kafka` in sluice.yaml: the schema of Kafka mode's settings (the client that uses them is
//! `crate::kafka`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// `log.kafka` in sluice.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaConfig {
    /// `host:port[,host:port…]`.
    #[serde(default = "default_brokers")]
    pub(crate) brokers: String,
    /// How records are encoded: `json` (Debezium's JsonConverter) or `avro`.
    #[serde(default)]
    pub(crate) format: Format,
    /// JSON only: embed the Connect schema in every key and value (JsonConverter's
    /// `schemas.enable`, its default too). Downstream stages then know every column's exact
    /// type; without it they infer types from the values.
    #[serde(default = "default_true")]
    pub(crate) schemas: bool,
    /// The Confluent-compatible schema registry, for `format: avro`: its URL, or
    /// `{url, username, password}` for HTTP basic authentication.
    #[serde(default)]
    pub(crate) schema_registry: Option<RegistryConfig>,
    /// Put before every topic name sluice reads or writes.
    #[serde(default)]
    pub(crate) topic_prefix: String,
    /// For topics sluice creates.
    #[serde(default = "default_partitions")]
    pub(crate) partitions: i32,
    /// None: min(3, the brokers the cluster has), as Kafka's own default.replication.factor
    /// advice; `sluice check` warns below 3.
    #[serde(default)]
    pub(crate) replication_factor: Option<i32>,
    #[serde(default)]
    pub(crate) security: Security,
    /// librdkafka properties for producers and consumers, applied last.
    #[serde(default)]
    pub(crate) producer: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) consumer: BTreeMap<String, String>,
    /// How long a source's transaction collects changes before it commits (the raw topics'
    /// latency against the per-transaction cost). 10 ms: about a batch of a live stream, like
    /// Kafka Connect's transaction per poll; while a backlog waits a transaction stays open up
    /// to ten intervals, at least a second (see `RawTopicWriter::run`).
    #[serde(default = "default_transaction_interval")]
    pub(crate) transaction_interval: HumanDuration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Json,
    Avro,
}

/// TLS and SASL: librdkafka's `security.protocol`, `sasl.mechanism` and credentials.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Security {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub(crate) sasl_mechanism: Option<String>,
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) password: Option<String>,
    /// PEM files: the CA to trust, and a client certificate and key for mutual TLS.
    #[serde(default)]
    pub(crate) ca_file: Option<String>,
    #[serde(default)]
    pub(crate) cert_file: Option<String>,
    #[serde(default)]
    pub(crate) key_file: Option<String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    3
}
fn default_transaction_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(10))
}

/// `log.kafka.schema_registry`: the registry's URL, or the URL with HTTP basic credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RegistryConfig {
    Url(String),
    WithCredentials(RegistryCredentials),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryCredentials {
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) password: Option<String>,
}

impl RegistryConfig {
    pub(crate) fn url(&self) -> &str {
        match self {
            RegistryConfig::Url(url) => url,
            RegistryConfig::WithCredentials(c) => &c.url,
        }
    }
}
