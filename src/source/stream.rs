//! The streaming loop every source shares, written once: read the log, batch, send, acknowledge.
//!
//! One `select!`, `biased` so its branches are tried in this order:
//! 1. shutdown: send what is batched, with its position, and stop;
//! 2. a commit of the sink: acknowledge its position to the database;
//! 3. the health check (slot, binlog) at the source's heartbeat;
//! 4. the batch's linger ran out: send it;
//! 5. the next item of the log: take it, and send the batch if it is full;
//! 6. polled last, so only when nothing else is ready: a batch that ends on a whole transaction
//!    goes at once instead of after the linger, which would be all latency in Kafka mode. A
//!    catch-up, whose items are always ready, still fills its batches.
//!
//! A source says what each step means for it by implementing [`LogStream`].

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::contract::ack::Acks;
use crate::contract::batch::{Batcher, sleep_until};
use crate::contract::position::ResumePosition;

/// What the log said after an item.
pub(crate) enum Flow {
    Continue,
    /// The log ends here (Postgres's `StoppedAt`): stop as after a shutdown, without a flush.
    Stop,
}

/// A source's log as the shared loop drives it.
pub(crate) trait LogStream {
    type Item;
    type Error;

    /// The next item of the log; `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Result<Self::Item, Self::Error>>;
    /// Take one item into the batch.
    async fn take(&mut self, item: Self::Item) -> Result<Flow, Self::Error>;
    /// Send the batch downstream with the position a restart would resume from.
    async fn flush(&mut self) -> Result<(), Self::Error>;
    /// The sink committed `position` (this source's): acknowledge it to the database.
    fn committed(&mut self, position: &ResumePosition);
    /// The periodic check, for sources with a heartbeat.
    async fn check_health(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The batch being built.
    fn batch(&self) -> &Batcher;
    /// When the batch (or a position that moved) must go, if anything waits.
    fn deadline(&self) -> Option<Instant> {
        self.batch().deadline()
    }
    /// The batch is not empty and ends on a whole transaction: it may go at once.
    fn whole(&self) -> bool;
    /// The error for a log the server ended.
    fn ended(&self) -> Self::Error;
    /// The error for a pipeline that went away downstream.
    fn downstream_gone(&self) -> Self::Error;
}

/// What the loop needs from the source's context.
pub(crate) struct Control<'a> {
    pub(crate) name: &'a str,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) acks: Acks,
    /// How often to check the source's health (`None`: no check).
    pub(crate) heartbeat: Option<Duration>,
}

/// Drive `log` until shutdown (Ok, after a last flush), the log's end, or an error.
pub(crate) async fn run<L: LogStream>(log: &mut L, control: Control<'_>) -> Result<(), L::Error> {
    let Control {
        name,
        mut shutdown,
        mut acks,
        heartbeat,
    } = control;
    let mut health = heartbeat.map(|every| {
        let mut health = tokio::time::interval(every);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health
    });
    loop {
        let linger = log.deadline();
        let whole = log.whole();
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                log.flush().await?;
                return Ok(());
            }
            changed = acks.changed() => {
                if changed.is_err() {
                    return Err(log.downstream_gone());
                }
                let committed = acks.borrow_and_update().get(name).cloned();
                if let Some(position) = committed {
                    log.committed(&position);
                }
            }
            _ = tick(&mut health) => log.check_health().await?,
            _ = sleep_until(linger) => log.flush().await?,
            item = log.next() => {
                let item = match item {
                    Some(item) => item?,
                    None => return Err(log.ended()),
                };
                if let Flow::Stop = log.take(item).await? {
                    return Ok(());
                }
                if log.batch().is_full() {
                    // Mid-transaction, maybe: the position stays the last whole one, and the
                    // sink cuts the replayed part by sequence.
                    log.flush().await?;
                }
            }
            _ = std::future::ready(()), if whole => log.flush().await?,
        }
    }
}

/// How long a position that moved past changes of no captured table (so with nothing to batch)
/// may wait before it goes anyway: the committed position keeps up with the log.
const UNSENT_POSITION_WAIT: Duration = Duration::from_secs(1);

/// The batch's linger, or else a second after the position moved unsent (`unsent_since`).
pub(crate) fn deadline_with_unsent(
    batch: &Batcher,
    unsent_since: Option<Instant>,
) -> Option<Instant> {
    batch
        .deadline()
        .or(unsent_since.map(|t| t + UNSENT_POSITION_WAIT))
}

/// The next health tick, or never without a heartbeat.
async fn tick(health: &mut Option<tokio::time::Interval>) {
    match health {
        Some(health) => {
            health.tick().await;
        }
        None => std::future::pending().await,
    }
}
