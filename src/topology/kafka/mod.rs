//! Kafka mode: the pipeline's stages joined by Kafka topics, each stage exactly once.
//!
//! ```text
//!  sources ──▶ sources_to_raw ──txn──▶ <stream> topics + _sluice.<pipeline>.offsets
//!                                         │ read_committed, group <pipeline>-transforms
//!                                         ▼
//!                              raw_to_cleansed ──txn (+ consumer offsets)──▶ cleansed, DLQ topics
//!                                                                              │ group <pipeline>-sinks
//!                                                                              ▼
//!                                                 topics_to_lake ──▶ lake commit (+ topic offsets)
//! ```
//!
//! - [`sources_to_raw`]: a source's changes go to its raw topics in Kafka transactions that also
//!   write the source position to a compacted offsets topic, so a restart resumes from the last
//!   committed transaction and its replay is cut by sequence: each change is in the topic once.
//! - [`raw_to_cleansed`]: consume-transform-produce, the consumed offsets committed in the same
//!   transaction (`send_offsets_to_transaction`).
//! - [`topics_to_lake`]: the topic offsets are recorded in the lake's commit, not in Kafka, so the
//!   lake has each record once whatever crashes.
//!
//! Every stage reads with `isolation.level=read_committed`: an aborted transaction (a killed
//! process) is never seen downstream. The Kafka client they share (settings, producers, the
//! record codec, Avro and the schema registry) is [`crate::kafka`].

pub(crate) mod raw_to_cleansed;
pub(crate) mod sources_to_raw;
pub(crate) mod topics_to_lake;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{PipelineError, Role, RunOptions, spawn_sources, supervise};
use crate::config::Config;
use crate::kafka::KafkaSettings;
use crate::lake::lease::Claim;
use crate::status::SharedStatus;
use crate::transform::TransformDef;

/// The name of this process's commit log in the lake, as a sink worker.
pub(super) fn lake_writer(config: &Config, options: &RunOptions) -> String {
    let settings = KafkaSettings::new(
        config.daemon.log.kafka_config(),
        &config.daemon.pipeline,
        options.instance.clone(),
    );
    topics_to_lake::writer_name(&settings)
}

/// Kafka mode: the roles this process runs, each a stage of its own.
pub(super) async fn run(
    config: &Config,
    transforms: &[TransformDef],
    options: &RunOptions,
    claim: Option<Claim>,
    shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    status: SharedStatus,
) -> Result<(), PipelineError> {
    let settings = KafkaSettings::new(
        config.daemon.log.kafka_config(),
        &config.daemon.pipeline,
        options.instance.clone(),
    );
    let runs = |role| options.only.is_none_or(|only| only == role);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stages = JoinSet::new();
    if runs(Role::Sinks) {
        let (settings, config, defs, status, stop) = (
            settings.clone(),
            config.clone(),
            transforms.to_vec(),
            status.clone(),
            stop_rx.clone(),
        );
        stages.spawn_blocking(move || {
            topics_to_lake::run(settings, &config, &defs, claim, status, stop)
        });
    }
    if runs(Role::Transforms) {
        let (settings, defs, stop) = (settings.clone(), transforms.to_vec(), stop_rx.clone());
        stages.spawn_blocking(move || raw_to_cleansed::run(settings, defs, stop));
    }
    let mut sources = JoinSet::new();
    if runs(Role::Sources) {
        let (writer, acks) = sources_to_raw::RawTopicWriter::open(settings.clone()).await?;
        let committed = writer.committed_positions();
        let (tx, rx) = mpsc::channel(config.daemon.channel_batches);
        stages.spawn(async move { writer.run(rx).await.map_err(PipelineError::from) });
        sources = spawn_sources(config, tx, acks, &committed, stop_rx, &status);
    }
    supervise(sources, stages, stop_tx, shutdown, healthy).await
}
