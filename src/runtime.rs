//! The embedded topology and its supervision.
//!
//! ```text
//!   source task ─┐  bounded mpsc (channel_batches)
//!   source task ─┼──────────────────────────────▶ sink task ──▶ lake commit
//!                └◀───────── watch: committed positions ◀───────────┘
//! ```
//!
//! Backpressure: the channel is small, so a slow sink makes sources wait in `send`, which stops
//! them reading the replication stream, which leaves the changes in the database's log.
//!
//! Supervision: a transient error (network, restarting server) restarts the whole pipeline from
//! the lake's last commit after a backoff. That is the same path as a crash recovery, so a
//! restart can never lose or duplicate anything that a crash would not. A definite error (bad
//! setup, undecodable data, lost slot) stops the daemon with the message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, SourceKind};
use crate::metrics as m;
use crate::sink::{ParquetSink, SinkError};
use crate::source::mongodb::MongoSource;
use crate::source::mysql::MysqlSource;
use crate::source::postgres::PostgresSource;
use crate::source::{Classify, SourceContext, SourceError};
use crate::status::SharedStatus;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source `{source_name}`: {error}")]
    Source {
        source_name: String,
        error: SourceError,
    },
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Setup(String),
}

impl Classify for PipelineError {
    fn is_transient(&self) -> bool {
        match self {
            PipelineError::Source { error, .. } => error.is_transient(),
            PipelineError::Sink(SinkError::Io { .. }) => true,
            PipelineError::Sink(_) | PipelineError::Setup(_) => false,
        }
    }
}

/// Run the pipeline until `shutdown` turns true (drain, commit, Ok) or a definite error.
pub async fn run(
    config: &Config,
    shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    status: SharedStatus,
) -> Result<(), PipelineError> {
    let mut delay = Duration::from_millis(500);
    loop {
        status.update(|s| s.state = "running".into());
        let started = std::time::Instant::now();
        let result = run_once(config, shutdown.clone(), healthy.clone(), status.clone()).await;
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_millis(500); // it ran well for a while: a fresh failure
        }
        healthy.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => {
                status.update(|s| s.state = "stopped".into());
                return Ok(());
            }
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                let chain = error_chain(&e);
                tracing::warn!(error = %chain, retry_in = ?delay, "transient error: restarting the pipeline from the last commit");
                metrics::counter!(m::PIPELINE_RESTARTS).increment(1);
                status.update(|s| {
                    s.state = "restarting".into();
                    s.restarts += 1;
                    s.last_error = Some(chain);
                });
                let mut sd = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sd.wait_for(|stop| *stop) => return Ok(()),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                status.update(|s| {
                    s.state = "failed".into();
                    s.last_error = Some(error_chain(&e));
                });
                return Err(e);
            }
        }
    }
}

/// The error with its causes, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

async fn run_once(
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    status: SharedStatus,
) -> Result<(), PipelineError> {
    let sink_cfg = &config.daemon.sink;
    let ods_every = sink_cfg
        .zones
        .contains(&crate::config::Zone::Ods)
        .then_some(sink_cfg.ods_interval.0);
    let settings = crate::sink::SinkSettings {
        rotate: sink_cfg.rotate.clone(),
        zones: sink_cfg.zones.clone(),
        ods_every,
        compaction: sink_cfg.compaction.clone(),
    };
    let transforms = crate::transform::TransformSet::new(config.transforms.clone());
    let (sink, acks) = ParquetSink::open(&sink_cfg.path, settings, transforms, status.clone())?;
    let committed = sink.committed_positions();
    status.update(|s| s.committed = committed.clone());
    let (tx, rx) = mpsc::channel(config.daemon.channel_batches);
    let mut sink_task = tokio::spawn(sink.run(rx));

    // Sources stop on the daemon's shutdown or when a sibling fails.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sources = JoinSet::new();
    for source in &config.sources {
        let ctx = SourceContext {
            status: status.clone(),
            config: source.clone(),
            out: tx.clone(),
            acks: acks.clone(),
            shutdown: stop_rx.clone(),
            committed: committed.get(&source.name).cloned(),
            lake_path: sink_cfg.path.clone(),
        };
        let name = source.name.clone();
        let status = status.clone();
        let kind = source.kind;
        sources.spawn(async move {
            let up = metrics::gauge!(m::SOURCE_UP, "source" => name.clone());
            status.source(&name, |s| s.state = "connecting".into());
            let result: Result<(), SourceError> = async {
                match kind {
                    SourceKind::Mysql => {
                        let source = MysqlSource::connect(ctx).await?;
                        up.set(1.0);
                        source.run().await?;
                    }
                    SourceKind::Mongodb => {
                        let source = MongoSource::connect(ctx).await?;
                        up.set(1.0);
                        source.run().await?;
                    }
                    SourceKind::Postgres => {
                        let source = PostgresSource::connect(ctx).await?;
                        up.set(1.0);
                        source.run().await?;
                    }
                }
                Ok(())
            }
            .await;
            up.set(0.0);
            status.source(&name, |s| s.state = "down".into());
            if let Err(error) = &result {
                let kind = if error.is_transient() {
                    "transient"
                } else {
                    "definite"
                };
                metrics::counter!(m::SOURCE_ERRORS, "source" => name.clone(), "kind" => kind)
                    .increment(1);
                if error.is_position_lost() {
                    metrics::gauge!(m::SOURCE_POSITION_LOST, "source" => name.clone()).set(1.0);
                }
            }
            result.map_err(|error| PipelineError::Source {
                source_name: name,
                error,
            })
        });
    }
    drop(tx);
    healthy.store(true, Ordering::Relaxed);

    // Mirror commits into /status.
    let mut acks_watch = acks.clone();
    let status_for_acks = status.clone();
    let mirror = tokio::spawn(async move {
        while acks_watch.changed().await.is_ok() {
            let committed = (**acks_watch.borrow_and_update()).clone();
            status_for_acks.update(|s| s.committed = committed);
        }
    });

    let mut first_error: Option<PipelineError> = None;
    let mut sink_result = None;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s), if !*stop_tx.borrow() => {
                tracing::info!("shutting down: draining and committing");
                stop_tx.send_replace(true);
            }
            joined = sources.join_next(), if !sources.is_empty() => {
                match joined {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        first_error.get_or_insert(e);
                        stop_tx.send_replace(true);
                    }
                    Some(Err(join)) => {
                        first_error.get_or_insert(PipelineError::Setup(format!("a source task failed: {join}")));
                        stop_tx.send_replace(true);
                    }
                    None => {}
                }
            }
            result = &mut sink_task, if sink_result.is_none() => {
                let result = result.unwrap_or_else(|join| Err(SinkError::Io {
                    path: String::new(),
                    source: std::io::Error::other(format!("sink task failed: {join}")),
                }));
                if let Err(e) = &result {
                    tracing::error!(error = %error_chain(e), "sink failed");
                }
                sink_result = Some(result);
                stop_tx.send_replace(true);
            }
        }
        if sources.is_empty() && sink_result.is_some() {
            break;
        }
    }
    mirror.abort();
    if let Some(Err(e)) = sink_result {
        return Err(e.into());
    }
    match first_error {
        // A source that failed only because the sink went away reports the sink's error above.
        Some(e) => Err(e),
        None => Ok(()),
    }
}
