//! The initial snapshot: chunked, committed as it goes, and resumable after a crash.
//!
//! The first phase reads at the main slot's exported snapshot (its consistent point C), a phase
//! that resumes after a crash at a temporary slot's exported snapshot (C1 > C); the phases, the
//! cursor and the phase filter are shared with the MySQL source (source/snapshot.rs).

use std::sync::Arc;

use super::catalog::{self, PgTable};
use super::{PgError, PostgresSource, copy_row};
pub(crate) use crate::contract::position::SnapshotState;
pub(crate) use crate::contract::position::snapshot::{Cursor, Phase};
use crate::event::now_us;
use crate::event::{ChangeEvent, ChangeOrigin, Op, Row, Seq, TableSchema, Value};
use crate::metrics as m;
pub(crate) use crate::source::snapshot::{chunk_key, int_key};
use bytes::BytesMut;
use futures::StreamExt;

impl PostgresSource {
    /// Read the tables from `state.cursor` on at the exported snapshot `snapshot_name`, which is
    /// at WAL position `phase_lsn`, handing rows downstream with positions to resume from.
    pub(super) async fn read_snapshot(
        &mut self,
        slot: &str,
        snapshot_name: &str,
        phase_lsn: u64,
        mut state: SnapshotState,
    ) -> Result<SnapshotState, PgError> {
        state.phases.push(Phase {
            lsn: phase_lsn,
            from: state.cursor.clone(),
        });
        let stream_lsn = state.phases[0].lsn;
        let running =
            metrics::gauge!(m::SOURCE_SNAPSHOT_RUNNING, "source" => self.name.to_string());
        running.set(1.0);
        self.ctx.status.source(&self.name, |s| {
            s.state = crate::status::SourceState::Snapshotting
        });
        // A connection of its own: the transaction holds the imported snapshot while rows stream.
        let (mut snapshot_client, _) = super::connect_sql(&self.ctx.config).await?;
        let tx = snapshot_client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(PgError::query("beginning the snapshot transaction"))?;
        tx.batch_execute(&catalog::set_snapshot_sql(snapshot_name))
            .await
            .map_err(PgError::query("importing the slot's snapshot"))?;
        let mut tables = self.tables.clone();
        tables.sort_by_key(PgTable::display);
        if state.estimated_rows == 0 {
            let relids: Vec<u32> = tables.iter().map(|t| t.relid).collect();
            if let Ok(row) = tx
                .query_one("SELECT COALESCE(sum(GREATEST(reltuples, 0)), 0)::float8 FROM pg_class WHERE oid = ANY($1)", &[&relids])
                .await
            {
                state.estimated_rows = row.get::<_, f64>(0) as u64;
            }
        }
        if let Some(cursor) = &state.cursor {
            tables.retain(|t| t.display() >= cursor.table);
            tracing::info!(source = %self.name, table = %cursor.table, after_key = ?cursor.after_key, "resuming the snapshot");
        }
        for (i, table) in tables.iter().enumerate() {
            // The schema as of the snapshot, so columns match the rows exactly.
            let (schema, _) = catalog::table_schema(&tx, &self.name, &self.db, table, 1).await?;
            let schema = Arc::new(schema);
            self.schemas.insert(table.relid, schema.clone());
            self.report_estimate(&tx, table, &schema).await;
            let after = state
                .cursor
                .as_ref()
                .filter(|c| c.table == table.display())
                .and_then(|c| c.after_key);
            state.cursor = Some(Cursor {
                table: table.display(),
                after_key: after,
            });
            match chunk_key(&schema) {
                Some(key) => {
                    self.read_chunked(&tx, slot, table, &schema, key, &mut state)
                        .await?
                }
                None => {
                    self.read_whole(&tx, slot, table, &schema, &mut state)
                        .await?
                }
            }
            // The position after a table names the next one, or says the snapshot is complete:
            // a cursor of None means "from the first table", never "after the last".
            state.cursor = tables.get(i + 1).map(|next| Cursor {
                table: next.display(),
                after_key: None,
            });
            state.complete = state.cursor.is_none();
            tracing::info!(source = %self.name, table = %table.display(), "snapshot of table done");
            let position = self.snapshot_position(slot, stream_lsn, &state);
            self.flush(Some(position)).await?;
        }
        tx.commit()
            .await
            .map_err(PgError::query("ending the snapshot transaction"))?;
        running.set(0.0);
        if !state.complete {
            // No table left to read (a resumed snapshot whose last table was done).
            state.complete = true;
            state.cursor = None;
            let position = self.snapshot_position(slot, stream_lsn, &state);
            self.flush(Some(position)).await?;
        }
        Ok(state)
    }

    /// Key order, `chunk` rows per COPY; every batch carries the cursor of its last row.
    async fn read_chunked(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        slot: &str,
        table: &PgTable,
        schema: &Arc<TableSchema>,
        key: usize,
        state: &mut SnapshotState,
    ) -> Result<(), PgError> {
        let chunk = self.ctx.config.snapshot_chunk_rows.max(1);
        let key_col = catalog::quote_ident(&schema.columns[key].name);
        loop {
            let after = state.cursor.as_ref().and_then(|c| c.after_key);
            let filter = after
                .map(|k| format!("WHERE {key_col} > {k}"))
                .unwrap_or_default();
            let sql = catalog::copy_query_sql(
                table,
                schema,
                &format!("{filter} ORDER BY {key_col} LIMIT {chunk}"),
            );
            let mut read = 0u64;
            let stream_lsn = state.phases[0].lsn;
            let mut rows = copy_rows(tx, &sql, schema).await?;
            while let Some(row) = rows.next_row(schema).await? {
                let Some(Value::Int(k)) = row.get(key).cloned() else {
                    return Err(PgError::Setup(format!(
                        "{}: a NULL primary key in the snapshot",
                        schema.stream
                    )));
                };
                self.push_snapshot_row(schema, row, state);
                if let Some(c) = state.cursor.as_mut() {
                    c.after_key = Some(k);
                }
                read += 1;
                if self.batch.is_full() {
                    let position = self.snapshot_position(slot, stream_lsn, state);
                    self.flush(Some(position)).await?;
                }
            }
            self.count_snapshot_rows(schema, read);
            if read < chunk {
                return Ok(());
            }
        }
    }

    /// One COPY; the table is committed only once complete (it has no cursor to resume at).
    async fn read_whole(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        _slot: &str,
        table: &PgTable,
        schema: &Arc<TableSchema>,
        state: &mut SnapshotState,
    ) -> Result<(), PgError> {
        let sql = catalog::copy_query_sql(table, schema, "");
        let mut rows = copy_rows(tx, &sql, schema).await?;
        let mut read = 0u64;
        while let Some(row) = rows.next_row(schema).await? {
            self.push_snapshot_row(schema, row, state);
            read += 1;
            if self.batch.is_full() {
                self.flush(None).await?;
            }
        }
        self.count_snapshot_rows(schema, read);
        Ok(())
    }

    fn push_snapshot_row(
        &mut self,
        schema: &Arc<TableSchema>,
        row: Row,
        state: &mut SnapshotState,
    ) {
        let consistent_point = state.phases[0].lsn;
        let phase_lsn = state.phases.last().map_or(consistent_point, |p| p.lsn);
        self.batch.push(ChangeEvent {
            table: schema.clone(),
            op: Op::Read,
            before: None,
            after: Some(row),
            seq: Seq::new(consistent_point.saturating_sub(1), state.next_ordinal),
            commit_ts_us: self.snapshot_taken_at.get_or_insert_with(now_us).to_owned(),
            pos: ChangeOrigin::PgLsn {
                lsn: phase_lsn,
                commit_lsn: phase_lsn,
            },
            tx_id: None,
            snapshot: true,
            partial_before: false,
        });
        state.next_ordinal += 1;
    }

    fn count_snapshot_rows(&self, schema: &TableSchema, rows: u64) {
        self.ctx
            .status
            .source(&self.name, |s| s.snapshot_rows += rows);
        metrics::counter!(m::SOURCE_SNAPSHOT_ROWS, "source" => self.name.to_string(), "table" => schema.stream.clone())
            .increment(rows);
    }

    async fn report_estimate(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        table: &PgTable,
        schema: &TableSchema,
    ) {
        if let Ok(row) = tx
            .query_one(
                "SELECT reltuples::float8 FROM pg_class WHERE oid = $1",
                &[&table.relid],
            )
            .await
        {
            let estimate: f64 = row.get(0);
            metrics::gauge!(m::SOURCE_SNAPSHOT_ROWS_ESTIMATED, "source" => self.name.to_string(), "table" => schema.stream.clone())
                .set(estimate.max(0.0));
        }
    }

    fn snapshot_position(
        &self,
        slot: &str,
        stream_lsn: u64,
        state: &SnapshotState,
    ) -> crate::contract::position::ResumePosition {
        crate::contract::position::ResumePosition::Postgres {
            lsn: stream_lsn,
            slot: slot.to_string(),
            snapshot: Some(state.clone()),
        }
    }
}

/// Rows of one `COPY … TO STDOUT`, parsed as they arrive.
struct CopyRows<S> {
    stream: std::pin::Pin<Box<S>>,
    buf: BytesMut,
    fields: Vec<Option<Vec<u8>>>,
}

async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    _schema: &TableSchema,
) -> Result<CopyRows<tokio_postgres::CopyOutStream>, PgError> {
    let stream = tx
        .copy_out(sql)
        .await
        .map_err(PgError::query("starting COPY for the snapshot"))?;
    Ok(CopyRows {
        stream: Box::pin(stream),
        buf: BytesMut::with_capacity(1 << 16),
        fields: Vec::new(),
    })
}

impl CopyRows<tokio_postgres::CopyOutStream> {
    async fn next_row(&mut self, schema: &TableSchema) -> Result<Option<Row>, PgError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                return copy_row(schema, &line[..nl], &mut self.fields).map(Some);
            }
            match self.stream.next().await {
                Some(chunk) => self
                    .buf
                    .extend_from_slice(&chunk.map_err(PgError::query("reading COPY data"))?),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(PgError::Setup(format!(
                        "{}: COPY data ends inside a row",
                        schema.stream
                    )));
                }
            }
        }
    }
}
