//! Embedded mode: sources and the sink in one process, joined by a bounded channel; the
//! database's own log is the durable buffer.
//!
//! ```text
//!   source task ─┐  bounded mpsc (channel_batches)
//!   source task ─┼──────────────────────────────▶ sink task ──▶ lake commit
//!                └◀───────── watch: committed positions ◀───────────┘
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{PipelineError, spawn_sources, supervise};
use crate::config::Config;
use crate::lake::lease::Claim;
use crate::sink::ParquetSink;
use crate::status::SharedStatus;
use crate::transform::{TransformDef, TransformSet};

pub(super) async fn run(
    config: &Config,
    transforms: &[TransformDef],
    claim: Option<Claim>,
    shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    status: SharedStatus,
) -> Result<(), PipelineError> {
    let sink_cfg = &config.daemon.sink;
    let settings = crate::sink::SinkSettings::from_config(sink_cfg);
    let transforms = TransformSet::new(transforms.to_vec());
    let (sink, acks) =
        ParquetSink::open(&sink_cfg.path, claim, settings, transforms, status.clone())?;
    let committed = sink.committed_positions();
    let (tx, rx) = mpsc::channel(config.daemon.channel_batches);
    let mut stages = JoinSet::new();
    stages.spawn(async move { sink.run(rx).await.map_err(PipelineError::from) });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources = spawn_sources(config, tx, acks, &committed, stop_rx, &status);
    supervise(sources, stages, stop_tx, shutdown, healthy).await
}
