//! Cleansing transforms: declarative SQL from raw streams to cleansed streams, with a
//! dead-letter queue.
//!
//! - [`definition`]: the `transforms/*.sql` files, parsed and checked without a database.
//! - [`plan`]: a transform planned by DataFusion against its raw stream's schema.
//! - [`changelog`]: running it on change events (the change log of a SQL view).
//! - [`values`]: rows ↔ Arrow arrays.
//!
//! A [`TransformSet`] routes raw events to every transform that reads their stream, plans each
//! transform again when its raw stream's schema changes, and turns rows it cannot process into
//! dead letters. In the embedded mode it runs inside the sink, so cleansed rows and dead letters
//! are committed in the same lake commit as the raw rows and source positions they come from.

pub(crate) mod changelog;
pub mod definition;
pub mod load;
pub(crate) mod plan;
pub(crate) mod values;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::event::dead_letter::{dead_letter_row, dead_letter_schema};
use crate::event::debezium::envelope_json;
use crate::event::{ChangeEvent, Op, TableSchema, Value};
use crate::metrics as m;
pub(crate) use changelog::CleansedRun;
pub use definition::TransformDef;
pub(crate) use plan::{Compiled, PlanError};

/// What a batch of raw events became.
#[derive(Debug, Default)]
pub struct TransformOutput {
    /// For the lake's `cleansed/` zone (or the cleansed topics): per run of raw events and
    /// transform, its output.
    pub cleansed: Vec<CleansedRun>,
    /// For the lake's `dlq/` zone: rows of the dead-letter streams.
    pub dead_letters: Vec<ChangeEvent>,
}

struct Running {
    def: TransformDef,
    /// The latest raw schema seen, and its plan (or why it could not be planned).
    compiled: Option<(Arc<TableSchema>, Result<Compiled, PlanError>)>,
    dlq_schema: Arc<TableSchema>,
}

/// Every transform of the pipeline, by the raw stream it reads.
pub struct TransformSet {
    transforms: Vec<Running>,
    by_stream: HashMap<String, Vec<usize>>,
}

impl TransformSet {
    pub fn new(defs: Vec<TransformDef>) -> Self {
        let mut by_stream: HashMap<String, Vec<usize>> = HashMap::new();
        let transforms = defs
            .into_iter()
            .enumerate()
            .map(|(i, def)| {
                by_stream.entry(def.from.clone()).or_default().push(i);
                Running {
                    dlq_schema: dead_letter_schema(&def.dlq),
                    def,
                    compiled: None,
                }
            })
            .collect();
        TransformSet {
            transforms,
            by_stream,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    /// Transform raw events (in log order), by runs of one table schema.
    pub fn apply(&mut self, events: &[ChangeEvent]) -> TransformOutput {
        let mut out = TransformOutput::default();
        let mut start = 0;
        while start < events.len() {
            let table = &events[start].table;
            let len = events[start..]
                .iter()
                .take_while(|e| Arc::ptr_eq(&e.table, table))
                .count();
            let run = &events[start..start + len];
            start += len;
            let Some(readers) = self.by_stream.get(&table.stream) else {
                continue;
            };
            for &i in readers {
                self.transforms[i].apply(run, &mut out);
            }
        }
        out
    }
}

impl Running {
    fn apply(&mut self, run: &[ChangeEvent], out: &mut TransformOutput) {
        let started = Instant::now();
        let name = self.def.name.clone();
        let raw = &run[0].table;
        // Plan again only when the raw stream's columns changed.
        let stale = match &self.compiled {
            Some((seen, _)) => !Arc::ptr_eq(seen, raw) && !seen.same_shape(raw),
            None => true,
        };
        if stale {
            let compiled = plan::compile(&self.def, raw);
            if let Err(e) = &compiled {
                metrics::counter!(m::TRANSFORM_ERRORS, "transform" => name.clone()).increment(1);
                tracing::error!(transform = %name, error = %e, "transform cannot run on its raw stream's schema; its events go to the dead-letter stream");
            }
            self.compiled = Some((raw.clone(), compiled));
        }
        metrics::counter!(m::TRANSFORM_EVENTS_IN, "transform" => name.clone())
            .increment(run.len() as u64);
        let compiled = match &self.compiled.as_ref().expect("set above").1 {
            Ok(c) => c,
            Err(e) => {
                let reason = e.to_string();
                for event in run {
                    out.dead_letters.push(self.dead_letter(event, &reason));
                }
                metrics::counter!(m::TRANSFORM_DEAD_LETTERS, "transform" => name.clone())
                    .increment(run.len() as u64);
                return;
            }
        };
        let outcome = compiled.apply(run);
        let mut by_op: HashMap<Op, u64> = HashMap::new();
        for e in &outcome.cleansed.events {
            *by_op.entry(e.event.op).or_default() += 1;
        }
        for (op, n) in by_op {
            metrics::counter!(m::TRANSFORM_EVENTS_OUT, "transform" => name.clone(), "op" => op.code()).increment(n);
        }
        metrics::counter!(m::TRANSFORM_FILTERED, "transform" => name.clone())
            .increment(outcome.filtered);
        if !outcome.dead.is_empty() {
            metrics::counter!(m::TRANSFORM_DEAD_LETTERS, "transform" => name.clone())
                .increment(outcome.dead.len() as u64);
            // The count only: the errors can quote row values, which are never logged.
            tracing::warn!(transform = %name, rows = outcome.dead.len(), dlq = %self.def.dlq, "rows dead-lettered");
        }
        for (event, error) in &outcome.dead {
            out.dead_letters.push(self.dead_letter(event, error));
        }
        if !outcome.cleansed.is_empty() {
            out.cleansed.push(outcome.cleansed);
        }
        metrics::histogram!(m::TRANSFORM_BATCH_SECONDS, "transform" => name)
            .record(started.elapsed().as_secs_f64());
    }

    /// A dead-letter row: which transform, why, the raw stream and position, and the original
    /// record as its Debezium envelope.
    fn dead_letter(&self, event: &ChangeEvent, error: &str) -> ChangeEvent {
        let record = envelope_json(event, event.commit_ts_us).to_string();
        ChangeEvent {
            seq: event.seq,
            commit_ts_us: event.commit_ts_us,
            pos: event.pos.clone(),
            tx_id: event.tx_id,
            snapshot: event.snapshot,
            ..dead_letter_row(
                &self.dlq_schema,
                &self.def.name,
                error,
                &event.table.stream,
                &event.pos.render(),
                record,
            )
        }
    }
}

/// `sluice transform test`: run one transform on recorded Debezium records (one per line) and
/// return what it writes, one JSON object per output: cleansed events as
/// `{"stream", "op", "key", "value": <Debezium envelope>}`, dead letters as
/// `{"stream": <dlq>, "error", "raw_stream", "record"}`. A line that cannot be decoded is a dead
/// letter too.
pub fn run_offline(
    def: &TransformDef,
    lines: impl Iterator<Item = String>,
    key: Vec<String>,
) -> Vec<serde_json::Value> {
    use crate::event::debezium::decode::Decoder;
    use crate::event::debezium::key_json;
    let mut decoder = Decoder::with_key(key);
    let mut set = TransformSet::new(vec![def.clone()]);
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = match decoder.decode(&line) {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!(m::TRANSFORM_DEAD_LETTERS, "transform" => def.name.clone())
                    .increment(1);
                out.push(serde_json::json!({
                    "stream": def.dlq,
                    "error": format!("line {}: cannot decode the record: {e}", n + 1),
                    "raw_stream": serde_json::Value::Null,
                    "record": line,
                }));
                continue;
            }
        };
        let result = set.apply(std::slice::from_ref(&event));
        for run in &result.cleansed {
            match run.to_events() {
                Ok(events) => out.extend(events.iter().map(|e| {
                    serde_json::json!({
                        "stream": e.table.stream,
                        "op": e.op.code(),
                        "key": key_json(e),
                        "value": envelope_json(e, e.commit_ts_us),
                    })
                })),
                // The projection's arrays always convert to rows; said, not dropped, if not.
                Err(e) => out.push(serde_json::json!({
                    "stream": run.table.stream,
                    "error": format!("line {}: cannot turn the output into records: {e}", n + 1),
                })),
            }
        }
        for d in &result.dead_letters {
            let text = |i: usize| match d.after.as_ref().and_then(|r| r.get(i)) {
                Some(Value::Text(s)) => s.clone(),
                _ => String::new(),
            };
            out.push(serde_json::json!({
                "stream": d.table.stream,
                "error": text(1),
                "raw_stream": text(2),
                "record": serde_json::from_str::<serde_json::Value>(&text(4)).unwrap_or_default(),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests;
