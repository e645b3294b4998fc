//! Planning a transform against the raw stream's schema with DataFusion.
//!
//! The `SELECT` is planned by DataFusion's SQL planner over an empty table with the raw
//! stream's columns (registered as `<source>.<schema>.<table>`, so the FROM name resolves
//! as written). The plan must be `Projection ← [Filter ←] [alias ←] TableScan`; anything else
//! (aggregates, windows, joins the load-time checks missed) is refused. The projection and filter
//! become physical expressions, type-coerced and ready to evaluate on Arrow record batches of
//! row images, which is all a stateless transform needs.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use super::definition::TransformDef;
use super::values::{column_type_of, row_schema};
use crate::event::{Column, TableSchema};

/// A transform ready to run on one version of its raw stream's schema.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// The raw table (version) this was planned for.
    pub(crate) raw: Arc<TableSchema>,
    /// Arrow schema of the raw row images the expressions read.
    pub(crate) input: SchemaRef,
    pub(crate) filter: Option<Arc<dyn PhysicalExpr>>,
    pub(crate) projection: Vec<Arc<dyn PhysicalExpr>>,
    /// The cleansed stream's schema: its columns, key flags and name.
    pub(crate) output: Arc<TableSchema>,
    /// Arrow schema of the projection (the output's columns in their lake types).
    pub(crate) output_schema: SchemaRef,
    /// Positions of the output's key columns.
    pub(crate) key: Vec<usize>,
    /// Per raw column: whether the filter or the projection reads it. Only those are turned
    /// into Arrow arrays (the others are all-null arrays), so wide tables do not pay for the
    /// columns a transform drops.
    pub(crate) reads: Vec<bool>,
}

/// Why a transform cannot run on a schema: unknown columns, type errors, refused plan shapes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub(crate) struct PlanError {
    pub(crate) file: String,
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// A DataFusion session with sluice's function library: DataFusion's built-ins plus the JSON
/// functions (`json_get_str`, `->>`, …).
pub(crate) fn session() -> SessionContext {
    let mut state = SessionStateBuilder::new().with_default_features().build();
    // Registration only fails on a name clash, which would be a build-time mistake.
    if let Err(e) = datafusion_functions_json::register_all(&mut state) {
        tracing::warn!(error = %e, "JSON functions not registered");
    }
    SessionContext::new_with_state(state)
}

/// Plan `def` against `raw`.
pub(crate) fn compile(def: &TransformDef, raw: &Arc<TableSchema>) -> Result<Compiled, PlanError> {
    let fail = |message: String| PlanError {
        file: def.file.display().to_string(),
        line: def.select_line,
        message,
    };
    let df = |e: datafusion::error::DataFusionError| fail(clean_message(&e.to_string()));
    let ctx = session();
    let input = row_schema(raw);
    register_raw_table(&ctx, raw, &input).map_err(df)?;
    let plan = futures::executor::block_on(ctx.state().create_logical_plan(&def.select_sql))
        .map_err(df)?;
    let LogicalPlan::Projection(projection) = &plan else {
        return Err(fail(refused_shape(&plan)));
    };
    let mut filter = None;
    let mut below = projection.input.as_ref();
    loop {
        match below {
            LogicalPlan::Filter(f) => {
                filter = Some((f.predicate.clone(), f.input.schema().clone()));
                below = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => below = a.input.as_ref(),
            LogicalPlan::TableScan(_) => break,
            other => return Err(fail(refused_shape(other))),
        }
    }
    let state = ctx.state();
    let filter = match filter {
        Some((predicate, schema)) => {
            refuse_subqueries(&predicate).map_err(&fail)?;
            Some(state.create_physical_expr(predicate, &schema).map_err(df)?)
        }
        None => None,
    };
    let input_df: &DFSchema = projection.input.schema();
    let mut exprs = Vec::with_capacity(projection.expr.len());
    let mut columns = Vec::with_capacity(projection.expr.len());
    let mut passthroughs = Vec::with_capacity(projection.expr.len());
    for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
        refuse_subqueries(expr).map_err(&fail)?;
        let physical = state
            .create_physical_expr(expr.clone(), input_df)
            .map_err(df)?;
        let name = field.name().clone();
        if columns.iter().any(|c: &Column| c.name == name) {
            return Err(fail(format!(
                "two output columns are named `{name}`: give one an alias (… AS other_name)"
            )));
        }
        let passthrough = match expr.clone().unalias() {
            Expr::Column(c) => input_df.index_of_column(&c).ok(),
            _ => None,
        };
        let column = match passthrough {
            // A column passed through keeps its type and key role from the source.
            Some(i) => Column {
                name,
                ..raw.columns[i].clone()
            },
            None => {
                let dt = physical.data_type(&input).map_err(df)?;
                let ty = column_type_of(&dt).ok_or_else(|| {
                    fail(format!(
                        "column `{name}` is of type {dt}, which the lake cannot store: convert it (for JSON, json_get_str / json_get_int / json_as_text)"
                    ))
                })?;
                Column {
                    name,
                    ty,
                    nullable: true,
                    key: false,
                    source_type: dt.to_string(),
                }
            }
        };
        columns.push(column);
        passthroughs.push(passthrough);
        exprs.push(physical);
    }
    let key = choose_key(def, raw, &mut columns, &passthroughs).map_err(fail)?;
    let reads = columns_read(raw.columns.len(), filter.iter().chain(&exprs));
    let output = Arc::new(TableSchema {
        id: raw.id.clone(),
        stream: def.name.clone(),
        columns,
        version: raw.version,
        // A cleansed stream's rows are typed columns, whatever the raw stream carried.
        source_info: crate::event::SourceInfo {
            documents: false,
            ..raw.source_info.clone()
        },
    });
    Ok(Compiled {
        raw: raw.clone(),
        input,
        filter,
        projection: exprs,
        output_schema: super::values::row_schema(&output),
        output,
        key,
        reads,
    })
}

/// Which of `width` input columns the expressions read.
fn columns_read<'e>(
    width: usize,
    exprs: impl Iterator<Item = &'e Arc<dyn PhysicalExpr>>,
) -> Vec<bool> {
    let mut reads = vec![false; width];
    for expr in exprs {
        for column in datafusion::physical_expr::utils::collect_columns(expr) {
            if let Some(r) = reads.get_mut(column.index()) {
                *r = true;
            }
        }
    }
    reads
}

/// Mark the output's key columns: the `key` option, else the raw primary key passed through
/// (`passthrough[j]` is the raw column output column `j` copies, if it only copies one).
fn choose_key(
    def: &TransformDef,
    raw: &TableSchema,
    columns: &mut [Column],
    passthrough: &[Option<usize>],
) -> Result<Vec<usize>, String> {
    let key: Vec<usize> = match &def.key {
        Some(names) => names
            .iter()
            .map(|name| {
                columns.iter().position(|c| &c.name == name).ok_or_else(|| {
                    format!(
                        "key column `{name}` is not a column of the SELECT (its columns: {})",
                        columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        None => raw
            .key_columns()
            .map(|(k, raw_key)| {
                passthrough.iter().position(|p| *p == Some(k)).ok_or_else(|| {
                    format!(
                        "the SELECT drops key column `{}` of {}: select it, or name the cleansed stream's key with WITH (key = 'column, …')",
                        raw_key.name, def.from
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    for (j, c) in columns.iter_mut().enumerate() {
        c.key = key.contains(&j);
    }
    Ok(key)
}

/// Register an empty table with the raw stream's columns as `<source>.<schema>.<table>`.
fn register_raw_table(
    ctx: &SessionContext,
    raw: &TableSchema,
    input: &SchemaRef,
) -> datafusion::error::Result<()> {
    let catalog = Arc::new(MemoryCatalogProvider::new());
    catalog.register_schema(&raw.id.namespace, Arc::new(MemorySchemaProvider::new()))?;
    ctx.register_catalog(&raw.id.source, catalog);
    let table = MemTable::try_new(input.clone(), vec![vec![]])?;
    ctx.register_table(
        TableReference::full(
            raw.id.source.as_str(),
            raw.id.namespace.as_str(),
            raw.id.table.as_str(),
        ),
        Arc::new(table),
    )?;
    Ok(())
}

fn refused_shape(plan: &LogicalPlan) -> String {
    let what = match plan {
        LogicalPlan::Aggregate(_) => "an aggregate",
        LogicalPlan::Window(_) => "a window function",
        LogicalPlan::Join(_) => "a join",
        LogicalPlan::Distinct(_) => "DISTINCT",
        LogicalPlan::Sort(_) => "ORDER BY",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::Unnest(_) => "UNNEST",
        _ => "this query form",
    };
    format!(
        "{what} is not allowed: a transform is a stateless SELECT … FROM <one raw stream> [WHERE …]"
    )
}

fn refuse_subqueries(expr: &Expr) -> Result<(), String> {
    let found = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ))
        })
        .unwrap_or(false);
    if found {
        return Err("a subquery is not allowed: a transform reads one raw stream".into());
    }
    Ok(())
}

/// DataFusion's messages (planning and evaluation) without its layer prefixes, e.g.
/// "Schema error: No field named x", "Cast error: Cannot cast string …".
pub(crate) fn clean_message(message: &str) -> String {
    message
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Arrow error: ")
        .trim_start_matches("Execution error: ")
        .replace("\nValid fields are", ". Valid fields are")
}
