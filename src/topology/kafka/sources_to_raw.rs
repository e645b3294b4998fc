//! The sources' side of Kafka mode: changes into raw topics, exactly once.
//!
//! Batches from the sources go into a Kafka transaction. The transaction commits at most every
//! `transaction_interval`, and with it a record per source in the compacted offsets topic: the
//! source position after the batches in it, and the highest sequence written per raw stream.
//! Only after the commit is the position acknowledged to the database. On restart the writer
//! reads the offsets topic, fences its previous incarnation (its open transaction is aborted;
//! see producer.rs), and the sources resume from there; what they replay is cut by
//! sequence, so no change is in a raw topic twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::contract::ack::CommittedPositions;
use crate::contract::batch::SourceBatch;
use crate::contract::cut::SeqCut;
use crate::contract::position::ResumePosition;
use crate::event::Seq;
use crate::failpoint::crash_point;
use crate::kafka::codec::RecordEncoder;
use crate::kafka::{KafkaError, KafkaSettings, commit_transaction, produce, send};
use crate::metrics as m;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A source's record in the offsets topic (keyed by the source's name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OffsetRecord {
    position: ResumePosition,
    /// Highest sequence in the raw topics, per stream of this source (fixed hex).
    high_seq: BTreeMap<String, String>,
}

pub(crate) struct RawTopicWriter {
    settings: KafkaSettings,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// Idle; kept as long as the producer (see `CompactedReader::finish`).
    _offsets_reader: crate::kafka::CompactedReader,
    cut: SeqCut,
    /// The latest resumable position of each source (in the open transaction, possibly).
    positions: BTreeMap<String, ResumePosition>,
    committed: BTreeMap<String, ResumePosition>,
    /// Sources with events in the open transaction but no position after them yet.
    awaiting_position: BTreeSet<String>,
    /// When the open transaction began (None: no transaction open).
    open_since: Option<Instant>,
    /// Sources whose position the open transaction moves.
    dirty: BTreeSet<String>,
    known_topics: HashSet<String>,
    acks: watch::Sender<CommittedPositions>,
    encoder: RecordEncoder,
}

impl RawTopicWriter {
    /// Fence the previous incarnation, then read back what it committed.
    pub(crate) async fn open(
        settings: KafkaSettings,
    ) -> Result<(RawTopicWriter, watch::Receiver<CommittedPositions>), KafkaError> {
        let offsets_topic = settings.offsets_topic();
        settings
            .ensure_topics(std::slice::from_ref(&offsets_topic), true)
            .await?;
        let started = tokio::task::spawn_blocking({
            let settings = settings.clone();
            move || -> Result<_, KafkaError> { crate::kafka::producer::start(&settings, "sources") }
        })
        .await
        .map_err(|e| KafkaError::Setup(format!("reading the offsets topic: {e}")))??;
        let mut positions = BTreeMap::new();
        let mut high = HashMap::new();
        for (source, value) in started.offsets {
            if crate::kafka::producer::is_registry_key(&source) {
                continue;
            }
            let record: OffsetRecord = serde_json::from_slice(&value).map_err(|e| {
                KafkaError::Setup(format!(
                    "the position of source `{source}` in `{offsets_topic}` is unreadable: {e}"
                ))
            })?;
            for (stream, seq) in &record.high_seq {
                if let Some(seq) = Seq::from_fixed_hex(seq) {
                    high.insert(stream.clone(), seq);
                }
            }
            positions.insert(source, record.position);
        }
        tracing::info!(topic = %offsets_topic, sources = positions.len(), "raw topics: resuming from the offsets topic");
        let (acks, acks_rx) = watch::channel(Arc::new(positions.clone()));
        Ok((
            RawTopicWriter {
                encoder: settings.encoder(),
                settings,
                producer: started.producer,
                _offsets_reader: started.reader,
                cut: SeqCut::new(high),
                committed: positions.clone(),
                positions,
                awaiting_position: BTreeSet::new(),
                open_since: None,
                dirty: BTreeSet::new(),
                known_topics: HashSet::new(),
                acks,
            },
            acks_rx,
        ))
    }

    /// Where each source resumes.
    pub(crate) fn committed_positions(&self) -> BTreeMap<String, ResumePosition> {
        self.committed.clone()
    }

    /// Produce batches until every sender is gone, then commit what can be committed.
    pub(crate) async fn run(
        mut self,
        mut input: mpsc::Receiver<SourceBatch>,
    ) -> Result<(), KafkaError> {
        let interval = self.settings.config.transaction_interval.0;
        // A commit costs a round of broker requests, and nothing is produced meanwhile. While
        // a backlog waits (the channel from the sources at least half full) the transaction
        // stays open longer (up to ten intervals, at least a second), so catching up pays for
        // few commits; a live stream commits every interval, however busy, because its latency
        // is the interval plus the commit.
        let backlog_limit = (interval * 10).max(Duration::from_secs(1));
        let hold = |input: &mpsc::Receiver<SourceBatch>| {
            let backlog = input.len() * 2 >= input.max_capacity();
            if backlog { backlog_limit } else { interval }
        };
        loop {
            // Woken at the moment the transaction is due, not on a ticker's next beat.
            let due_at = self.open_since.map(|t| t + hold(&input));
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => {
                        metrics::gauge!(m::QUEUE_DEPTH, "queue" => "raw_topics").set((input.max_capacity() - input.capacity()) as f64);
                        self.create_topics_of(&batch).await?;
                        tokio::task::block_in_place(|| self.produce(batch))?;
                    }
                    None => break,
                },
                _ = crate::contract::batch::sleep_until(due_at) => {}
            }
            // The channel as it is now: a batch just taken may have ended the backlog.
            if self.open_since.is_some_and(|t| t.elapsed() >= hold(&input)) {
                tokio::task::block_in_place(|| self.commit())?;
            }
        }
        tokio::task::block_in_place(|| self.commit())?;
        if !self.awaiting_position.is_empty() {
            tracing::info!(sources = ?self.awaiting_position, "stopping with an unfinished snapshot: it starts over next time");
        }
        Ok(())
    }

    async fn create_topics_of(&mut self, batch: &SourceBatch) -> Result<(), KafkaError> {
        let mut missing: Vec<String> = Vec::new();
        for e in &batch.events {
            let topic = self.settings.topic(&e.table.stream);
            if !self.known_topics.contains(&topic) && !missing.contains(&topic) {
                missing.push(topic);
            }
        }
        self.settings.ensure_topics(&missing, false).await?;
        self.known_topics.extend(missing);
        Ok(())
    }

    fn produce(&mut self, batch: SourceBatch) -> Result<(), KafkaError> {
        if self.open_since.is_none() {
            self.producer
                .begin_transaction()
                .map_err(KafkaError::client("beginning a transaction"))?;
            self.open_since = Some(Instant::now());
        }
        let source = batch.source.to_string();
        if !batch.events.is_empty() && batch.resume.is_none() {
            self.awaiting_position.insert(source.clone());
        }
        let mut produced = 0u64;
        for event in &batch.events {
            if !self.cut.admit(event) {
                continue;
            }
            let topic = self.settings.topic(&event.table.stream);
            produce(&self.producer, &topic, self.encoder.encode(&topic, event)?)?;
            produced += 1;
        }
        metrics::counter!(m::KAFKA_PRODUCED, "stage" => "sources").increment(produced);
        metrics::gauge!(m::KAFKA_IN_FLIGHT, "stage" => "sources")
            .set(self.producer.in_flight_count() as f64);
        if let Some(pos) = batch.resume {
            self.awaiting_position.remove(&source);
            self.positions.insert(source.clone(), pos);
            self.dirty.insert(source);
        }
        Ok(())
    }

    /// Commit the open transaction with the positions it covers, unless a source is inside a
    /// snapshot stretch with no position yet (then it waits for one).
    fn commit(&mut self) -> Result<(), KafkaError> {
        let Some(started) = self.open_since else {
            return Ok(());
        };
        if !self.awaiting_position.is_empty() {
            return Ok(());
        }
        let offsets_topic = self.settings.offsets_topic();
        for source in std::mem::take(&mut self.dirty) {
            let Some(position) = self.positions.get(&source) else {
                continue;
            };
            let prefix = format!("{source}.");
            let record = OffsetRecord {
                position: position.clone(),
                high_seq: self
                    .cut
                    .iter()
                    .filter(|(stream, _)| stream.starts_with(&prefix))
                    .map(|(stream, seq)| (stream.clone(), seq.to_fixed_hex()))
                    .collect(),
            };
            let value =
                serde_json::to_vec(&record).map_err(|e| KafkaError::Setup(e.to_string()))?;
            send(
                &self.producer,
                BaseRecord::to(&offsets_topic)
                    .key(&source.clone().into_bytes())
                    .payload(&value),
            )?;
        }
        crash_point!("kafka.inside_transaction");
        let commit_started = Instant::now();
        let result = commit_transaction(&self.producer, TIMEOUT);
        self.open_since = None;
        if let Err(e) = result {
            metrics::counter!(m::KAFKA_TRANSACTIONS, "stage" => "sources", "outcome" => "failed")
                .increment(1);
            let _ = self.producer.abort_transaction(TIMEOUT);
            return Err(KafkaError::client("committing a transaction")(e));
        }
        metrics::counter!(m::KAFKA_TRANSACTIONS, "stage" => "sources", "outcome" => "committed")
            .increment(1);
        metrics::histogram!(m::KAFKA_COMMIT_SECONDS, "stage" => "sources")
            .record(commit_started.elapsed().as_secs_f64());
        metrics::histogram!(m::KAFKA_TRANSACTION_SECONDS, "stage" => "sources")
            .record(started.elapsed().as_secs_f64());
        self.committed = self.positions.clone();
        self.acks.send_replace(Arc::new(self.committed.clone()));
        Ok(())
    }
}
