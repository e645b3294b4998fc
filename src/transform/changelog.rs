//! Running a compiled transform over raw change events: the change log of a SQL view.
//!
//! The filter and projection apply to the before and the after image; the output operation
//! follows from which images pass (both → u, only after → c, only before → d, neither → nothing),
//! so the cleansed stream's replica always equals the view over the raw table's replica.
//!
//! Sources do not always send a full before image (Postgres with REPLICA IDENTITY DEFAULT sends
//! none for updates and only the key for deletes). Then whether the old row was in the view is
//! unknown, and the output is what keeps the replica right either way: an update whose after
//! image passes is an upsert (u), one whose after image fails deletes the key (deleting a key the
//! replica does not hold changes nothing), and a delete always deletes the key.
//!
//! Evaluation is vectorised on one record batch of every image; when it fails (a failed cast, a
//! function error), the rows are evaluated one by one so that only the rows at fault go to the
//! dead-letter queue, with the error.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::physical_expr::PhysicalExpr;

use super::plan::{Compiled, clean_message};
use super::values::{for_each_value, rows_to_batch};
use crate::event::{ChangeEvent, Op, Row, Value};

/// What one run of raw events became.
#[derive(Debug, Default)]
pub struct Outcome {
    pub cleansed: Vec<ChangeEvent>,
    /// Raw events the transform could not process, with the error.
    pub dead: Vec<(ChangeEvent, String)>,
    /// Raw events that produced nothing (filtered out on both sides).
    pub filtered: u64,
}

/// Which image of an event a batch row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// Per image: did it pass the filter, and its projected row (projected when it passed, or when
/// the output needs its key regardless).
#[derive(Debug, Default, Clone)]
struct Image {
    passes: bool,
    row: Option<Row>,
}

impl Compiled {
    /// Transform raw events (all of this compiled schema's table, in log order).
    pub fn apply(&self, events: &[ChangeEvent]) -> Outcome {
        let mut images: Vec<(usize, Side, &Row)> = Vec::with_capacity(events.len() * 2);
        for (i, e) in events.iter().enumerate() {
            if let Some(b) = &e.before
                && matches!(e.op, Op::Update | Op::Delete)
            {
                images.push((i, Side::Before, b));
            }
            if let Some(a) = &e.after {
                images.push((i, Side::After, a));
            }
        }
        let rows: Vec<&Row> = images.iter().map(|(_, _, r)| *r).collect();
        let mut errors: Vec<Option<String>> = vec![None; events.len()];
        let evaluated = match rows_to_batch(&self.input, &self.raw, &rows, &self.reads) {
            Ok(batch) => self.evaluate(&batch, &images, events),
            Err(e) => Err(e.to_string()),
        };
        let results = match evaluated {
            Ok(results) => results,
            Err(e) => {
                // The batch itself could not be built: every event of it is dead.
                return Outcome {
                    dead: events.iter().map(|ev| (ev.clone(), e.clone())).collect(),
                    ..Outcome::default()
                };
            }
        };
        let mut per_event: Vec<(Option<Image>, Option<Image>)> = vec![(None, None); events.len()];
        for ((event, side, _), result) in images.iter().zip(results) {
            match result {
                Ok(image) => match side {
                    Side::Before => per_event[*event].0 = Some(image),
                    Side::After => per_event[*event].1 = Some(image),
                },
                Err(e) => errors[*event] = Some(e),
            }
        }
        let mut out = Outcome::default();
        for ((event, (before, after)), error) in events.iter().zip(per_event).zip(errors) {
            if let Some(error) = error {
                out.dead.push((event.clone(), error));
                continue;
            }
            let produced = self.derive(event, before, after, &mut out.cleansed);
            if produced == 0 {
                out.filtered += 1;
            }
        }
        out
    }

    /// Filter and project every image; per image, its result or its error.
    fn evaluate(
        &self,
        batch: &RecordBatch,
        images: &[(usize, Side, &Row)],
        events: &[ChangeEvent],
    ) -> Result<Vec<Result<Image, String>>, String> {
        let passes: Vec<Result<bool, String>> = match &self.filter {
            None => vec![Ok(true); batch.num_rows()],
            Some(filter) => per_row(batch, |b| {
                let mask = evaluate_array(filter, b)?;
                let mask = mask.as_boolean();
                Ok((0..b.num_rows())
                    .map(|i| mask.is_valid(i) && mask.value(i))
                    .collect())
            }),
        };
        // Project what passed, and images whose key the output needs even when they fail.
        let wanted: Vec<bool> = images
            .iter()
            .zip(&passes)
            .map(|((event, side, _), pass)| match pass {
                Ok(true) => true,
                Ok(false) => needs_key_regardless(&events[*event], *side),
                Err(_) => false,
            })
            .collect();
        let selected = filter_record_batch(batch, &BooleanArray::from(wanted.clone()))
            .map_err(|e| e.to_string())?;
        let projected: Vec<Result<Row, String>> = per_row(&selected, |b| self.project(b));
        let mut projected = projected.into_iter();
        Ok(passes
            .into_iter()
            .zip(wanted)
            .map(|(pass, wanted)| {
                let passes = pass?;
                let row = if wanted {
                    Some(projected.next().expect("one projection per wanted row")?)
                } else {
                    None
                };
                Ok(Image { passes, row })
            })
            .collect())
    }

    /// The projection of every row of `batch`.
    fn project(&self, batch: &RecordBatch) -> Result<Vec<Row>, String> {
        // Each row with room for every column (`vec![row; n]` would clone away the capacity).
        let mut rows: Vec<Row> = (0..batch.num_rows())
            .map(|_| Vec::with_capacity(self.projection.len()))
            .collect();
        for (expr, column) in self.projection.iter().zip(&self.output.columns) {
            let array = evaluate_array(expr, batch)?;
            let mut next_row = rows.iter_mut();
            for_each_value(&array, &column.ty, |v| {
                if let Some(row) = next_row.next() {
                    row.push(v);
                }
            })
            .map_err(|e| e.to_string())?;
        }
        Ok(rows)
    }

    /// The output events of one raw event; returns how many.
    fn derive(
        &self,
        event: &ChangeEvent,
        before: Option<Image>,
        after: Option<Image>,
        out: &mut Vec<ChangeEvent>,
    ) -> usize {
        let start = out.len();
        let emit = |op: Op, before: Option<Row>, after: Option<Row>| ChangeEvent {
            table: self.output.clone(),
            op,
            before,
            after,
            seq: event.seq,
            commit_ts_us: event.commit_ts_us,
            pos: event.pos.clone(),
            tx_id: event.tx_id,
            snapshot: event.snapshot,
            partial_before: false,
        };
        let passing = |image: Option<Image>| image.filter(|i| i.passes).and_then(|i| i.row);
        match event.op {
            Op::Read | Op::Create => {
                if let Some(a) = passing(after) {
                    out.push(emit(event.op, None, Some(a)));
                }
            }
            Op::Truncate => out.push(emit(Op::Truncate, None, None)),
            Op::Delete if event.partial_before => {
                if let Some(b) = before.and_then(|i| i.row) {
                    out.push(emit(Op::Delete, Some(self.key_only(b)), None));
                }
            }
            Op::Delete => {
                if let Some(b) = passing(before) {
                    out.push(emit(Op::Delete, Some(b), None));
                }
            }
            Op::Update if event.before.is_some() && !event.partial_before => {
                match (passing(before), passing(after)) {
                    (Some(b), Some(a)) if self.key_of(&b) != self.key_of(&a) => {
                        out.push(emit(Op::Delete, Some(b), None));
                        out.push(emit(Op::Create, None, Some(a)));
                    }
                    (Some(b), Some(a)) => out.push(emit(Op::Update, Some(b), Some(a))),
                    (None, Some(a)) => out.push(emit(Op::Create, None, Some(a))),
                    (Some(b), None) => out.push(emit(Op::Delete, Some(b), None)),
                    (None, None) => {}
                }
            }
            Op::Update => {
                // No full before image: whether the old row was in the view is unknown.
                let old_key = before.and_then(|i| i.row).map(|b| self.key_only(b));
                let Some(Image {
                    passes,
                    row: new_row,
                }) = after
                else {
                    return 0;
                };
                if let (Some(old), Some(new)) = (old_key, &new_row)
                    && self.key_of(&old) != self.key_of(new)
                {
                    out.push(emit(Op::Delete, Some(old), None));
                }
                match (passes, new_row) {
                    (true, Some(a)) => out.push(emit(Op::Update, None, Some(a))),
                    // A delete of the old key above is of another key, so this one is needed.
                    (false, Some(a)) => out.push(emit(Op::Delete, Some(self.key_only(a)), None)),
                    (_, None) => {}
                }
            }
        }
        out.len() - start
    }

    fn key_of<'r>(&self, row: &'r Row) -> Vec<&'r Value> {
        self.key
            .iter()
            .map(|&i| row.get(i).unwrap_or(&Value::Null))
            .collect()
    }

    /// The row with every non-key column null: a delete's key, as Postgres sends it.
    fn key_only(&self, mut row: Row) -> Row {
        for (i, v) in row.iter_mut().enumerate() {
            if !self.key.contains(&i) {
                *v = Value::Null;
            }
        }
        row
    }
}

/// Images whose projected key the output needs even when they fail the filter: the before
/// image of a delete or an update that is only the key, and the after image of an update without
/// a full before image (to delete its key).
fn needs_key_regardless(event: &ChangeEvent, side: Side) -> bool {
    let before_unknown = event.before.is_none() || event.partial_before;
    match (event.op, side) {
        (Op::Delete | Op::Update, Side::Before) => event.partial_before,
        (Op::Update, Side::After) => before_unknown,
        _ => false,
    }
}

fn evaluate_array(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef, String> {
    expr.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| clean_message(&e.to_string()))
}

/// Run `f` on the whole batch; if it fails, on each row alone, so one bad row does not take
/// the others with it.
fn per_row<T: Clone>(
    batch: &RecordBatch,
    f: impl Fn(&RecordBatch) -> Result<Vec<T>, String>,
) -> Vec<Result<T, String>> {
    if batch.num_rows() == 0 {
        return Vec::new();
    }
    match f(batch) {
        Ok(values) => values.into_iter().map(Ok).collect(),
        Err(_) if batch.num_rows() > 1 => (0..batch.num_rows())
            .map(|i| match f(&batch.slice(i, 1)) {
                Ok(mut v) => Ok(v.pop().expect("one row in, one out")),
                Err(e) => Err(e),
            })
            .collect(),
        Err(e) => vec![Err(e)],
    }
}
