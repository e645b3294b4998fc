//! The topologies and their supervision.
//!
//! Embedded mode:
//! ```text
//!   source task ─┐  bounded mpsc (channel_batches)
//!   source task ─┼──────────────────────────────▶ sink task ──▶ lake commit
//!                └◀───────── watch: committed positions ◀───────────┘
//! ```
//!
//! Backpressure: the channel is small, so a slow sink makes sources wait in `send`, which stops
//! them reading the replication stream, which leaves the changes in the database's log.
//!
//! Kafka mode (see [`crate::kafka`]): the same source tasks feed a transactional producer
//! instead of the sink; transform and sink workers run beside them, or alone with `--only`.
//!
//! Supervision: a transient error (network, restarting server) restarts the whole pipeline from
//! the lake's last commit after a backoff. That is the same path as a crash recovery, so a
//! restart can never lose or duplicate anything that a crash would not. A definite error (bad
//! setup, undecodable data, lost slot) stops the daemon with the message.

mod embedded;
pub(crate) mod kafka;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, LogKind};
use crate::error::{Classify, error_chain};
use crate::kafka::KafkaError;
use crate::lake::commit::LakeRoot;
use crate::lake::lease::{Acquired, Claim, Lease};
use crate::metrics as m;
use crate::sink::SinkError;
use crate::source::{SourceContext, SourceError};
use crate::status::SharedStatus;
use crate::transform::TransformDef;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source `{source_name}`: {error}")]
    Source {
        source_name: String,
        // The chain (down to the server's own message) is walked by `error_chain`.
        #[source]
        error: SourceError,
    },
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Setup(String),
}

impl Classify for PipelineError {
    fn is_transient(&self) -> bool {
        match self {
            PipelineError::Source { error, .. } => error.is_transient(),
            PipelineError::Sink(e) => e.is_transient(),
            PipelineError::Kafka(e) => e.is_transient(),
            PipelineError::Setup(_) => false,
        }
    }
}

impl PipelineError {
    /// Whether the lake refuses writes (full, read-only, no permission): the pipeline waits in
    /// the "lake not writable" state and retries, instead of stopping.
    fn lake_not_writable(&self) -> bool {
        matches!(self, PipelineError::Sink(_))
            && crate::error::io_error_in(self).is_some_and(crate::error::is_unwritable)
    }
}

/// A stage of Kafka mode, run alone with `sluice run --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sources,
    Transforms,
    Sinks,
}

/// How this process runs the pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Kafka mode: run one stage only (None: all of them).
    pub only: Option<Role>,
    /// Kafka mode: this process among its role's processes (transactional id, lake writer).
    pub instance: Option<String>,
}

/// Run the pipeline until `shutdown` turns true (drain, commit, Ok) or a definite error. A
/// process that writes the lake first takes its lease (waiting while another process holds it)
/// and keeps it across restarts; it releases it when it stops.
pub async fn run(
    config: &Config,
    transforms: &[TransformDef],
    options: &RunOptions,
    shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    status: SharedStatus,
) -> Result<(), PipelineError> {
    let lease = match lake_writer(config, options) {
        Some(writer) => match take_the_lake(config, writer.as_deref(), &shutdown, &status).await {
            Acquired::Held(lease) => Some(lease),
            Acquired::ShutDown => return Ok(()),
        },
        None => None,
    };
    let claim = lease.as_ref().map(Lease::claim);
    let result = run_holding(
        config, transforms, options, claim, shutdown, healthy, status,
    )
    .await;
    if let Some(lease) = lease {
        tokio::task::block_in_place(|| lease.release());
    }
    result
}

/// Which commit log of the lake this process writes: `Some(None)` the lake's own (embedded),
/// `Some(Some(writer))` a sink worker's (Kafka mode), `None` if it writes no lake.
fn lake_writer(config: &Config, options: &RunOptions) -> Option<Option<String>> {
    match config.daemon.log.kind {
        LogKind::Embedded => Some(None),
        LogKind::Kafka if options.only.is_none_or(|role| role == Role::Sinks) => {
            Some(Some(kafka::lake_writer(config, options)))
        }
        LogKind::Kafka => None,
    }
}

/// Wait for the lake's lease, showing the holder in `/status` meanwhile. A lake that cannot be
/// read yet (unreachable, not writable) is retried with a backoff, as the restart loop would.
async fn take_the_lake(
    config: &Config,
    writer: Option<&str>,
    shutdown: &watch::Receiver<bool>,
    status: &SharedStatus,
) -> Acquired {
    let path = &config.daemon.sink.path;
    let mut delay = Duration::from_millis(500);
    loop {
        let acquired = LakeRoot::acquire(path, writer, shutdown.clone(), |holder| {
            status.update(|s| {
                s.state = crate::status::PipelineState::Waiting;
                s.lake_holder = Some(holder.to_string());
            })
        })
        .await;
        let error = match acquired {
            Ok(acquired) => return acquired,
            Err(source) => PipelineError::Sink(SinkError::Io {
                path: path.clone(),
                source,
            }),
        };
        let chain = error_chain(&error);
        tracing::warn!(error = %chain, retry_in = ?delay, "cannot read the lake's lease: trying again");
        status.update(|s| {
            s.state = crate::status::PipelineState::Restarting;
            s.last_error = Some(chain);
        });
        let mut sd = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sd.wait_for(|stop| *stop) => return Acquired::ShutDown,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The restart loop, under the lake's lease.
async fn run_holding(
    config: &Config,
    transforms: &[TransformDef],
    options: &RunOptions,
    claim: Option<Claim>,
    shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    status: SharedStatus,
) -> Result<(), PipelineError> {
    let mut delay = Duration::from_millis(500);
    loop {
        status.update(|s| {
            s.state = crate::status::PipelineState::Running;
            s.lake_holder = None;
        });
        let started = std::time::Instant::now();
        let result = match config.daemon.log.kind {
            LogKind::Embedded => {
                embedded::run(
                    config,
                    transforms,
                    claim.clone(),
                    shutdown.clone(),
                    healthy.clone(),
                    status.clone(),
                )
                .await
            }
            LogKind::Kafka => {
                kafka::run(
                    config,
                    transforms,
                    options,
                    claim.clone(),
                    shutdown.clone(),
                    healthy.clone(),
                    status.clone(),
                )
                .await
            }
        };
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_millis(500); // it ran well for a while: a fresh failure
        }
        healthy.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => {
                status.update(|s| s.state = crate::status::PipelineState::Stopped);
                return Ok(());
            }
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                let chain = error_chain(&e);
                let state = if e.lake_not_writable() {
                    metrics::gauge!(m::LAKE_WRITABLE).set(0.0);
                    tracing::error!(error = %chain, retry_in = ?delay, "the lake refuses writes (full, read-only or no permission): nothing is lost, the pipeline retries from the last commit until it can write");
                    crate::status::PipelineState::LakeNotWritable
                } else {
                    tracing::warn!(error = %chain, retry_in = ?delay, "transient error: restarting the pipeline from the last commit");
                    crate::status::PipelineState::Restarting
                };
                metrics::counter!(m::PIPELINE_RESTARTS).increment(1);
                status.update(|s| {
                    s.state = state;
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
                    s.state = crate::status::PipelineState::Failed;
                    s.last_error = Some(error_chain(&e));
                });
                return Err(e);
            }
        }
    }
}

/// Start every source, sending into `out` and acknowledging what `acks` reports committed.
/// Sources stop when `stop` turns true.
pub(crate) fn spawn_sources(
    config: &Config,
    out: mpsc::Sender<crate::contract::batch::SourceBatch>,
    acks: crate::contract::ack::Acks,
    committed: &std::collections::BTreeMap<String, crate::contract::position::ResumePosition>,
    stop: watch::Receiver<bool>,
    status: &SharedStatus,
) -> JoinSet<Result<(), PipelineError>> {
    status.update(|s| s.committed = committed.clone());
    let mut sources = JoinSet::new();
    for source in &config.sources {
        let ctx = SourceContext {
            status: status.clone(),
            config: source.clone(),
            out: out.clone(),
            acks: acks.clone(),
            shutdown: stop.clone(),
            committed: committed.get(&source.name).cloned(),
            lake_path: config.daemon.sink.path.clone(),
        };
        let name = source.name.clone();
        let status = status.clone();
        sources.spawn(async move {
            let up = metrics::gauge!(m::SOURCE_UP, "source" => name.clone());
            status.source(&name, |s| s.state = crate::status::SourceState::Connecting);
            let result = crate::source::run(ctx, || up.set(1.0)).await;
            up.set(0.0);
            status.source(&name, |s| s.state = crate::status::SourceState::Down);
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
    // Mirror commits into /status.
    let mut acks_watch = acks;
    let status_for_acks = status.clone();
    let mut stop_mirror = stop;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = acks_watch.changed() => {
                    if changed.is_err() { break; }
                    let committed = (**acks_watch.borrow_and_update()).clone();
                    status_for_acks.update(|s| s.committed = committed);
                }
                _ = stop_mirror.wait_for(|s| *s) => break,
            }
        }
    });
    sources
}

/// Wait for the sources and the stages downstream of them (sink, producer, workers) to end:
/// on the daemon's shutdown every source stops, then the stages drain; any error stops all.
/// A stage's error is reported before a source's (a source that failed because its stage went
/// away reports that).
pub(crate) async fn supervise(
    mut sources: JoinSet<Result<(), PipelineError>>,
    mut stages: JoinSet<Result<(), PipelineError>>,
    stop_tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
) -> Result<(), PipelineError> {
    healthy.store(true, Ordering::Relaxed);
    let joined = |j: Option<Result<Result<(), PipelineError>, tokio::task::JoinError>>,
                  what: &str| match j {
        Some(Ok(Ok(()))) | None => None,
        Some(Ok(Err(e))) => Some(e),
        Some(Err(join)) => Some(PipelineError::Setup(format!(
            "a {what} task failed: {join}"
        ))),
    };
    let mut source_error: Option<PipelineError> = None;
    let mut stage_error: Option<PipelineError> = None;
    while !sources.is_empty() || !stages.is_empty() {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s), if !*stop_tx.borrow() => {
                tracing::info!("shutting down: draining and committing");
                stop_tx.send_replace(true);
            }
            j = sources.join_next(), if !sources.is_empty() => {
                if let Some(e) = joined(j, "source") {
                    source_error.get_or_insert(e);
                    stop_tx.send_replace(true);
                }
            }
            j = stages.join_next(), if !stages.is_empty() => {
                if let Some(e) = joined(j, "stage") {
                    tracing::error!(error = %error_chain(&e), "stage failed");
                    stage_error.get_or_insert(e);
                    stop_tx.send_replace(true);
                }
            }
        }
    }
    match stage_error.or(source_error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::commit::CommitError;
    use crate::source::postgres::PgError;

    fn source(error: PgError) -> PipelineError {
        PipelineError::Source {
            source_name: "s".into(),
            error: error.into(),
        }
    }

    fn lake(source: CommitError) -> PipelineError {
        PipelineError::Sink(SinkError::Lake {
            path: "file:///lake".into(),
            source,
        })
    }

    fn kafka(code: rdkafka::types::RDKafkaErrorCode) -> PipelineError {
        PipelineError::Kafka(KafkaError::Client {
            what: "test".into(),
            source: rdkafka::error::KafkaError::MessageConsumption(code),
        })
    }

    /// What the restart loop retries (the network, a busy or restarting server, a lake that
    /// cannot be reached) and what stops the daemon with the fix (setup, credentials, another
    /// holder of the lake or slot, a lost position).
    #[test]
    fn every_error_class_either_retries_or_stops() {
        use rdkafka::types::RDKafkaErrorCode as K;
        let io = |kind| std::io::Error::new(kind, "test");
        let cases: Vec<(&str, PipelineError, bool)> = vec![
            (
                "a full lake",
                PipelineError::Sink(SinkError::Io {
                    path: "l".into(),
                    source: io(std::io::ErrorKind::StorageFull),
                }),
                true,
            ),
            (
                "a lake commit that cannot be written",
                lake(CommitError::Io(io(std::io::ErrorKind::PermissionDenied))),
                true,
            ),
            (
                "another process took the lake",
                lake(CommitError::Fenced { holder: "h".into() }),
                false,
            ),
            (
                "a rebalance gave a stalled sink worker's partitions to another",
                lake(CommitError::PartitionsRevoked {
                    by: "sinks-b".into(),
                    generation: 7,
                    partitions: "kafka:t:0".into(),
                }),
                true,
            ),
            (
                "a committed file removed by hand",
                lake(CommitError::FileLost {
                    commit: 1,
                    file: "f".into(),
                    tmp: "t".into(),
                }),
                false,
            ),
            (
                "a slot busy with a dying connection",
                source(PgError::Replication(
                    pgwire_replication::PgWireError::Server(
                        "replication slot \"s\" is active for PID 1 (SQLSTATE 55006)".into(),
                    ),
                )),
                true,
            ),
            (
                "a slot made by a start that died",
                source(PgError::SlotRaced { slot: "s".into() }),
                true,
            ),
            (
                "the lake's slot claim unreadable for now",
                source(PgError::Lake(io(std::io::ErrorKind::TimedOut))),
                true,
            ),
            (
                "a dropped slot",
                source(PgError::SlotLost {
                    slot: "s".into(),
                    source_name: "s".into(),
                }),
                false,
            ),
            (
                "another pipeline's slot",
                source(PgError::SlotNotOurs {
                    slot: "s".into(),
                    source_name: "s".into(),
                    lake: "l".into(),
                }),
                false,
            ),
            (
                "a slot ahead of the lake",
                source(PgError::LakeBehindSlot {
                    slot: "s".into(),
                    source_name: "s".into(),
                    lake_lsn: "0/1".into(),
                    slot_lsn: "0/2".into(),
                }),
                false,
            ),
            ("a broker going away", kafka(K::AllBrokersDown), true),
            (
                "an assignment to a consumer whose membership was reset",
                PipelineError::Kafka(crate::kafka::KafkaError::Rejoin("r".into())),
                true,
            ),
            (
                "a fenced transactional producer",
                kafka(K::ProducerFenced),
                false,
            ),
            (
                "bad Kafka credentials",
                kafka(K::SaslAuthenticationFailed),
                false,
            ),
            (
                "an expired raw topic",
                PipelineError::Kafka(KafkaError::OffsetsLost { detail: "d".into() }),
                false,
            ),
            ("a setup mistake", PipelineError::Setup("x".into()), false),
        ];
        for (what, error, retries) in cases {
            assert_eq!(error.is_transient(), retries, "{what}: {error}");
        }
        // A full or read-only lake is told apart, for its state and alert.
        let full = PipelineError::Sink(SinkError::Io {
            path: "l".into(),
            source: io(std::io::ErrorKind::StorageFull),
        });
        assert!(full.lake_not_writable());
        let unreachable = PipelineError::Sink(SinkError::Io {
            path: "l".into(),
            source: io(std::io::ErrorKind::ConnectionRefused),
        });
        assert!(!unreachable.lake_not_writable());
        // Postgres's own answers: a wrong password (28P01) or database (3D000) stops.
        use crate::source::postgres::sqlstate_is_transient;
        for (code, retries) in [
            ("28P01", false),
            ("3D000", false),
            ("08006", true),
            ("57P03", true),
            ("53300", true),
        ] {
            assert_eq!(sqlstate_is_transient(code), retries, "SQLSTATE {code}");
        }
    }
}
