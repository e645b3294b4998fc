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
//!
//! The output images stay in the projection's Arrow arrays ([`CleansedRun`]): the lake file takes
//! them as they are, which spared a tenth of a catch-up's CPU against turning them into rows and
//! back. Kafka mode turns them into rows for its encoders.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DynComparator, RecordBatch, RecordBatchOptions,
    UInt32Array, make_comparator,
};
use arrow::compute::{SortOptions, cast, concat_batches, filter_record_batch, nullif, take};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use datafusion::physical_expr::PhysicalExpr;

use super::plan::{Compiled, clean_message};
use super::values::{for_each_value, rows_to_batch};
use crate::event::{ChangeEvent, Op, Row, TableSchema, Value};
use crate::lake::parquet::{WriteError, arrow_type, change_log_columns};

/// What one run of raw events became.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) cleansed: CleansedRun,
    /// Raw events the transform could not process, with the error.
    pub(crate) dead: Vec<(ChangeEvent, String)>,
    /// Raw events that produced nothing (filtered out on both sides).
    pub(crate) filtered: u64,
}

/// A transform's output events for one run of raw events. Their images stay in the Arrow arrays
/// the projection computed: the lake writes them as they are ([`CleansedRun::to_record_batch`]),
/// and only Kafka mode and `sluice transform test` turn them into rows.
#[derive(Debug, Clone)]
pub struct CleansedRun {
    pub table: Arc<TableSchema>,
    /// The projected images, one column per output column, in its lake type.
    projected: RecordBatch,
    pub events: Vec<CleansedEvent>,
}

/// One output event: its change-log fields, and its images as rows of the run's projection.
#[derive(Debug, Clone)]
pub struct CleansedEvent {
    /// Everything but the images (its `before` and `after` are `None`).
    pub event: ChangeEvent,
    pub(crate) before: Option<ImageRow>,
    pub(crate) after: Option<ImageRow>,
}

/// A row of a run's projection, and whether only its key counts (its other columns are null: a
/// delete's key, as Postgres sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageRow {
    pub(crate) row: u32,
    pub(crate) key_only: bool,
}

impl CleansedRun {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The output events with their images as rows (Kafka mode, `sluice transform test`).
    pub(crate) fn to_events(&self) -> Result<Vec<ChangeEvent>, WriteError> {
        let mut rows: Vec<Row> = (0..self.projected.num_rows())
            .map(|_| Vec::with_capacity(self.table.columns.len()))
            .collect();
        for (array, column) in self.projected.columns().iter().zip(&self.table.columns) {
            let mut next_row = rows.iter_mut();
            for_each_value(array, &column.ty, |v| {
                if let Some(row) = next_row.next() {
                    row.push(v);
                }
            })?;
        }
        let image = |i: Option<ImageRow>| {
            i.and_then(|i| {
                let mut row = rows.get(i.row as usize)?.clone();
                if i.key_only {
                    for (v, column) in row.iter_mut().zip(&self.table.columns) {
                        if !column.key {
                            *v = Value::Null;
                        }
                    }
                }
                Some(row)
            })
        };
        Ok(self
            .events
            .iter()
            .map(|e| ChangeEvent {
                before: image(e.before),
                after: image(e.after),
                ..e.event.clone()
            })
            .collect())
    }

    /// The change-log record batch of the lake file schema `schema` (the output table's): each
    /// event's row image (after; the before image for deletes) and its change-log columns.
    pub fn to_record_batch(&self, schema: &SchemaRef) -> Result<RecordBatch, WriteError> {
        let images: Vec<Option<ImageRow>> =
            self.events.iter().map(|e| e.after.or(e.before)).collect();
        let indices: UInt32Array = images.iter().map(|i| i.map(|i| i.row)).collect();
        let key_only =
            images
                .iter()
                .any(|i| i.is_some_and(|i| i.key_only))
                .then(|| -> BooleanArray {
                    images
                        .iter()
                        .map(|i| Some(i.is_some_and(|i| i.key_only)))
                        .collect()
                });
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (array, column) in self.projected.columns().iter().zip(&self.table.columns) {
            let taken = take(array, &indices, None)?;
            columns.push(match &key_only {
                Some(mask) if !column.key => nullif(&taken, mask)?,
                _ => taken,
            });
        }
        columns.extend(change_log_columns(self.events.iter().map(|e| &e.event)));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Which image of an event a batch row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// Per image: did it pass the filter, and its row in the projection (projected when it passed,
/// or when the output needs its key regardless).
#[derive(Debug, Default, Clone, Copy)]
struct Image {
    passes: bool,
    row: Option<u32>,
}

/// Whether two rows of a projection have the same key.
struct SameKey(Vec<DynComparator>);

impl SameKey {
    fn new(projected: &RecordBatch, key: &[usize]) -> Result<SameKey, ArrowError> {
        key.iter()
            .map(|&i| {
                let column = projected.column(i);
                make_comparator(column, column, SortOptions::default())
            })
            .collect::<Result<_, _>>()
            .map(SameKey)
    }

    fn test(&self, a: u32, b: u32) -> bool {
        self.0
            .iter()
            .all(|cmp| cmp(a as usize, b as usize) == Ordering::Equal)
    }
}

impl Compiled {
    /// Transform raw events (all of this compiled schema's table, in log order).
    pub(crate) fn apply(&self, events: &[ChangeEvent]) -> Outcome {
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
        let evaluated = rows_to_batch(&self.input, &self.raw, &rows, &self.reads)
            .map_err(|e| e.to_string())
            .and_then(|batch| self.evaluate(&batch, &images, events))
            .and_then(|(projected, results)| {
                let same_key = SameKey::new(&projected, &self.key).map_err(|e| e.to_string())?;
                Ok((projected, results, same_key))
            });
        let (projected, results, same_key) = match evaluated {
            Ok(evaluated) => evaluated,
            Err(e) => {
                // The batch itself could not be built: every event of it is dead.
                return Outcome {
                    cleansed: self.cleansed(self.project_none()),
                    dead: events.iter().map(|ev| (ev.clone(), e.clone())).collect(),
                    filtered: 0,
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
        let mut out = Outcome {
            cleansed: self.cleansed(projected),
            dead: Vec::new(),
            filtered: 0,
        };
        for ((event, (before, after)), error) in events.iter().zip(per_event).zip(errors) {
            if let Some(error) = error {
                out.dead.push((event.clone(), error));
                continue;
            }
            let produced = self.derive(event, before, after, &same_key, &mut out.cleansed.events);
            if produced == 0 {
                out.filtered += 1;
            }
        }
        out
    }

    fn cleansed(&self, projected: RecordBatch) -> CleansedRun {
        CleansedRun {
            table: self.output.clone(),
            projected,
            events: Vec::new(),
        }
    }

    /// Filter and project every image: the projection, and per image its result or its error.
    fn evaluate(
        &self,
        batch: &RecordBatch,
        images: &[(usize, Side, &Row)],
        events: &[ChangeEvent],
    ) -> Result<(RecordBatch, Vec<Result<Image, String>>), String> {
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
        let (projected, rows) = self.project_each(&selected)?;
        let mut rows = rows.into_iter();
        let images = passes
            .into_iter()
            .zip(wanted)
            .map(|(pass, wanted)| {
                let passes = pass?;
                let row = if wanted {
                    Some(rows.next().expect("one projection per wanted row")?)
                } else {
                    None
                };
                Ok(Image { passes, row })
            })
            .collect();
        Ok((projected, images))
    }

    /// The projection of `batch`, and per row its row in it or its error: when the batch fails
    /// (a failed cast, a function error), its rows are projected one by one so that only the
    /// rows at fault fail.
    #[allow(clippy::type_complexity)]
    fn project_each(
        &self,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, Vec<Result<u32, String>>), String> {
        let n = batch.num_rows();
        match self.project(batch) {
            Ok(projected) => return Ok((projected, (0..n as u32).map(Ok).collect())),
            Err(e) if n <= 1 => {
                return Ok((self.project_none(), vec![Err(e)]));
            }
            Err(_) => {}
        }
        let (mut parts, mut rows) = (Vec::new(), Vec::with_capacity(n));
        for i in 0..n {
            match self.project(&batch.slice(i, 1)) {
                Ok(part) => {
                    rows.push(Ok(parts.len() as u32));
                    parts.push(part);
                }
                Err(e) => rows.push(Err(e)),
            }
        }
        let projected = concat_batches(&self.output_schema, &parts).map_err(|e| e.to_string())?;
        Ok((projected, rows))
    }

    fn project_none(&self) -> RecordBatch {
        RecordBatch::new_empty(self.output_schema.clone())
    }

    /// The projection of every row of `batch`, each column in its lake type.
    fn project(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let columns = self
            .projection
            .iter()
            .zip(&self.output.columns)
            .map(|(expr, column)| {
                let array = evaluate_array(expr, batch)?;
                let target = arrow_type(&column.ty);
                if array.data_type() == &target {
                    Ok(array)
                } else {
                    cast(&array, &target).map_err(|e| clean_message(&e.to_string()))
                }
            })
            .collect::<Result<Vec<ArrayRef>, String>>()?;
        RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| e.to_string())
    }

    /// The output events of one raw event; returns how many.
    fn derive(
        &self,
        event: &ChangeEvent,
        before: Option<Image>,
        after: Option<Image>,
        same_key: &SameKey,
        out: &mut Vec<CleansedEvent>,
    ) -> usize {
        let start = out.len();
        let emit = |op: Op, before: Option<ImageRow>, after: Option<ImageRow>| CleansedEvent {
            event: ChangeEvent {
                table: self.output.clone(),
                op,
                before: None,
                after: None,
                seq: event.seq,
                commit_ts_us: event.commit_ts_us,
                pos: event.pos.clone(),
                tx_id: event.tx_id,
                snapshot: event.snapshot,
                partial_before: false,
            },
            before,
            after,
        };
        let whole = |row: u32| ImageRow {
            row,
            key_only: false,
        };
        let key_only = |row: u32| ImageRow {
            row,
            key_only: true,
        };
        let passing = |image: Option<Image>| image.filter(|i| i.passes).and_then(|i| i.row);
        match event.op {
            Op::Read | Op::Create => {
                if let Some(a) = passing(after) {
                    out.push(emit(event.op, None, Some(whole(a))));
                }
            }
            Op::Truncate => out.push(emit(Op::Truncate, None, None)),
            Op::Delete if event.partial_before => {
                if let Some(b) = before.and_then(|i| i.row) {
                    out.push(emit(Op::Delete, Some(key_only(b)), None));
                }
            }
            Op::Delete => {
                if let Some(b) = passing(before) {
                    out.push(emit(Op::Delete, Some(whole(b)), None));
                }
            }
            Op::Update if event.before.is_some() && !event.partial_before => {
                match (passing(before), passing(after)) {
                    (Some(b), Some(a)) if !same_key.test(b, a) => {
                        out.push(emit(Op::Delete, Some(whole(b)), None));
                        out.push(emit(Op::Create, None, Some(whole(a))));
                    }
                    (Some(b), Some(a)) => {
                        out.push(emit(Op::Update, Some(whole(b)), Some(whole(a))))
                    }
                    (None, Some(a)) => out.push(emit(Op::Create, None, Some(whole(a)))),
                    (Some(b), None) => out.push(emit(Op::Delete, Some(whole(b)), None)),
                    (None, None) => {}
                }
            }
            Op::Update => {
                // No full before image: whether the old row was in the view is unknown.
                let old_key = before.and_then(|i| i.row);
                let Some(Image {
                    passes,
                    row: new_row,
                }) = after
                else {
                    return 0;
                };
                if let (Some(old), Some(new)) = (old_key, new_row)
                    && !same_key.test(old, new)
                {
                    out.push(emit(Op::Delete, Some(key_only(old)), None));
                }
                match (passes, new_row) {
                    (true, Some(a)) => out.push(emit(Op::Update, None, Some(whole(a)))),
                    // A delete of the old key above is of another key, so this one is needed.
                    (false, Some(a)) => out.push(emit(Op::Delete, Some(key_only(a)), None)),
                    (_, None) => {}
                }
            }
        }
        out.len() - start
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
