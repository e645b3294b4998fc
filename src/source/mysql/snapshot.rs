//! The initial snapshot: a consistent read view at a known binlog point, read in primary-key
//! chunks, committed as it goes and resumable after a crash.
//!
//! The phases, the cursor and the phase filter are the Postgres source's (source/snapshot.rs),
//! with binlog coordinates for WAL positions: phase 0 is at the point streaming starts from; a
//! phase that resumes after a crash reads the remaining tables at a newer point, and streamed
//! changes a later phase already contains are dropped for the keys it read.
//!
//! Consistent point: MariaDB keeps `binlog_snapshot_file/position` consistent with a
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` read view, without any lock. MySQL has no such
//! status, so the view is opened under `FLUSH TABLES WITH READ LOCK`, held only for the moment
//! it takes to start the transaction and read `SHOW MASTER STATUS` (RELOAD privilege).

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow, Value as MyValue};

use super::catalog::{self, Flavor, quote_ident, quote_table};
use super::rows::{self, Lossy};
use super::schema::Tracked;
use super::types::{Charset, Kind};
use super::{BinlogPoint, MyError, MysqlSource};
use crate::contract::position::ResumePosition;
use crate::contract::position::SnapshotState;
use crate::contract::position::snapshot::{Cursor, Phase};
use crate::event::{ChangeEvent, ChangeOrigin, Op, Row, Seq, TableSchema, Value};
use crate::metrics as m;
use crate::source::snapshot::chunk_key;

/// Open a consistent read view on `conn` and return its binlog point.
pub(crate) async fn open_consistent_view(
    conn: &mut Conn,
    flavor: Flavor,
) -> Result<BinlogPoint, MyError> {
    let q = |what| MyError::query(what);
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(q("setting the snapshot's isolation level"))?;
    match flavor {
        Flavor::MariaDb => {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(q("opening the snapshot's read view"))?;
            let status: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(q("reading the snapshot's binlog position"))?;
            let get = |name: &str| {
                status
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let file = get("binlog_snapshot_file")
                .filter(|f| !f.is_empty())
                .ok_or_else(|| {
                    MyError::Setup(
                        "the server reports no binlog_snapshot_file: is log_bin on?".into(),
                    )
                })?;
            let pos: u64 = get("binlog_snapshot_position")
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| MyError::Setup("no binlog_snapshot_position".into()))?;
            let gtid: Option<Option<String>> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.as_str(), pos))
                .await
                .map_err(q("reading the snapshot's GTID position"))?;
            Ok(BinlogPoint {
                file,
                pos,
                gtid: gtid.flatten(),
            })
        }
        Flavor::Mysql => {
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(q(
                    "locking tables for the snapshot's binlog position (needs RELOAD)",
                ))?;
            let result = async {
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await
                    .map_err(q("opening the snapshot's read view"))?;
                master_status(conn).await
            }
            .await;
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(q("unlocking tables"))?;
            result
        }
    }
}

/// `SHOW BINARY LOG STATUS` (MySQL 8.4) or `SHOW MASTER STATUS`: file, position, GTID set.
pub(crate) async fn master_status(conn: &mut Conn) -> Result<BinlogPoint, MyError> {
    let mut row: Option<MyRow> = conn
        .query_first("SHOW BINARY LOG STATUS")
        .await
        .ok()
        .flatten();
    if row.is_none() {
        row = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(MyError::query("reading the binlog position"))?;
    }
    let mut row = row.ok_or_else(|| {
        MyError::Setup("SHOW MASTER STATUS is empty: the binlog is off (log_bin)".into())
    })?;
    let file: String = row.take(0).unwrap_or_default();
    let pos: u64 = row.take(1).unwrap_or(4);
    let gtid: Option<String> = row.take::<Option<String>, _>(4).flatten();
    Ok(BinlogPoint {
        file,
        pos,
        gtid: gtid
            .map(|g| g.replace(['\n', ' '], ""))
            .filter(|g| !g.is_empty()),
    })
}

/// End a read view that read nothing.
pub(crate) async fn close_view(mut conn: Conn) {
    let _ = conn.query_drop("COMMIT").await;
    let _ = conn.disconnect().await;
}

impl MysqlSource {
    /// Read the tables from `state.cursor` on in the read view `view`, which is at `phase`;
    /// streaming will start at `stream_from`. Hands rows downstream with positions to resume.
    pub(super) async fn read_snapshot(
        &mut self,
        view: &mut Conn,
        stream_from: &BinlogPoint,
        phase: &BinlogPoint,
        mut state: SnapshotState,
    ) -> Result<SnapshotState, MyError> {
        state.phases.push(Phase {
            lsn: phase.coord(self.epoch),
            from: state.cursor.clone(),
        });
        let running =
            metrics::gauge!(m::SOURCE_SNAPSHOT_RUNNING, "source" => self.name.to_string());
        running.set(1.0);
        self.ctx.status.source(&self.name, |s| {
            s.state = crate::status::SourceState::Snapshotting
        });
        let mut tables = self.tables.clone();
        tables.sort();
        if let Some(cursor) = &state.cursor {
            tables.retain(|t| *t >= cursor.table);
            tracing::info!(source = %self.name, table = %cursor.table, after_key = ?cursor.after_key, "resuming the snapshot");
        }
        // Phase 0's definitions are the history's; a later phase reads the tables as they are
        // at its own point, which may be newer.
        let first_phase = state.phases.len() == 1;
        let defs = catalog::table_defs(view, &tables).await?;
        if state.estimated_rows == 0 {
            for t in &tables {
                state.estimated_rows += catalog::estimated_rows(view, t).await;
            }
        }
        for (i, name) in tables.iter().enumerate() {
            let Some(def) = defs.get(name) else {
                continue; // dropped since the list was made
            };
            let tracked = match self.history.get(name) {
                Some(t) if first_phase => t.clone(),
                _ => self.history.derive(name, def.clone()),
            };
            let estimate = catalog::estimated_rows(view, name).await;
            metrics::gauge!(m::SOURCE_SNAPSHOT_ROWS_ESTIMATED, "source" => self.name.to_string(), "table" => tracked.schema.stream.clone())
                .set(estimate as f64);
            let after = state
                .cursor
                .as_ref()
                .filter(|c| c.table == *name)
                .and_then(|c| c.after_key);
            state.cursor = Some(Cursor {
                table: name.clone(),
                after_key: after,
            });
            self.read_table(view, &tracked, phase, stream_from, &mut state)
                .await?;
            state.cursor = tables.get(i + 1).map(|next| Cursor {
                table: next.clone(),
                after_key: None,
            });
            state.complete = state.cursor.is_none();
            tracing::info!(source = %self.name, table = %name, "snapshot of table done");
            let position = self.snapshot_position(stream_from, &state)?;
            self.send(Some(position)).await?;
        }
        let _ = view.query_drop("COMMIT").await;
        running.set(0.0);
        if !state.complete {
            // No table left to read (a resumed snapshot whose last table was done).
            state.complete = true;
            state.cursor = None;
            let position = self.snapshot_position(stream_from, &state)?;
            self.send(Some(position)).await?;
        }
        Ok(state)
    }

    /// One table: in key order with a resumable cursor when it has a single integer key, else
    /// in one piece (committed only when complete).
    async fn read_table(
        &mut self,
        view: &mut Conn,
        tracked: &Tracked,
        phase: &BinlogPoint,
        stream_from: &BinlogPoint,
        state: &mut SnapshotState,
    ) -> Result<(), MyError> {
        let schema = &tracked.schema;
        let columns = schema
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let table = quote_table(&format!("{}.{}", schema.id.namespace, schema.id.table));
        let key = chunk_key(schema);
        let chunk = self.ctx.config.snapshot_chunk_rows.max(1);
        loop {
            let after = state.cursor.as_ref().and_then(|c| c.after_key);
            // Prepared (the binary protocol types the values); the key bound as a parameter,
            // so each table prepares at most two statements.
            let (sql, params) = match (key, after) {
                (Some(k), Some(a)) => {
                    let key_col = quote_ident(&schema.columns[k].name);
                    (
                        format!(
                            "SELECT {columns} FROM {table} WHERE {key_col} > ? ORDER BY {key_col} LIMIT {chunk}"
                        ),
                        mysql_async::Params::Positional(vec![a.into()]),
                    )
                }
                (Some(k), None) => {
                    let key_col = quote_ident(&schema.columns[k].name);
                    (
                        format!("SELECT {columns} FROM {table} ORDER BY {key_col} LIMIT {chunk}"),
                        mysql_async::Params::Empty,
                    )
                }
                (None, _) => (
                    format!("SELECT {columns} FROM {table}"),
                    mysql_async::Params::Empty,
                ),
            };
            let mut result = view
                .exec_iter(sql.as_str(), params)
                .await
                .map_err(MyError::query("reading a table for the snapshot"))?;
            let mut read = 0u64;
            let mut lossy = Lossy::default();
            while let Some(row) = result
                .next()
                .await
                .map_err(MyError::query("reading snapshot rows"))?
            {
                let values = snapshot_row(row, &tracked.kinds, &mut lossy).map_err(|message| {
                    MyError::Setup(format!("snapshot of {}: {message}", schema.stream))
                })?;
                if let Some(k) = key {
                    match values.get(k) {
                        Some(Value::Int(v)) => {
                            if let Some(c) = state.cursor.as_mut() {
                                c.after_key = Some(*v);
                            }
                        }
                        _ => {
                            return Err(MyError::Setup(format!(
                                "{}: a primary key that is not an integer in the snapshot",
                                schema.stream
                            )));
                        }
                    }
                }
                self.push_snapshot_row(schema, values, phase, state);
                read += 1;
                if self.batch.is_full() {
                    // Resumable only at a key boundary of a chunked table.
                    let position = key
                        .map(|_| self.snapshot_position(stream_from, state))
                        .transpose()?;
                    self.send(position).await?;
                }
            }
            drop(result);
            self.report_lossy(&schema.stream, lossy);
            self.ctx
                .status
                .source(&self.name, |s| s.snapshot_rows += read);
            metrics::counter!(m::SOURCE_SNAPSHOT_ROWS, "source" => self.name.to_string(), "table" => schema.stream.clone())
                .increment(read);
            if key.is_none() || read < chunk {
                return Ok(());
            }
        }
    }

    fn push_snapshot_row(
        &mut self,
        schema: &Arc<TableSchema>,
        row: Row,
        phase: &BinlogPoint,
        state: &mut SnapshotState,
    ) {
        let consistent_point = state.phases[0].lsn;
        self.batch.push(ChangeEvent {
            table: schema.clone(),
            op: Op::Read,
            before: None,
            after: Some(row),
            partial_before: false,
            seq: Seq::new(consistent_point.saturating_sub(1), state.next_ordinal),
            commit_ts_us: *self
                .snapshot_taken_at
                .get_or_insert_with(crate::event::now_us),
            pos: ChangeOrigin::Binlog {
                file: Arc::from(phase.file.as_str()),
                pos: phase.pos,
                row: 0,
                server_id: self.server.server_id,
                gtid: None,
            },
            tx_id: None,
            snapshot: true,
        });
        state.next_ordinal += 1;
    }

    fn snapshot_position(
        &mut self,
        stream_from: &BinlogPoint,
        state: &SnapshotState,
    ) -> Result<ResumePosition, MyError> {
        let mut position = self.position(stream_from)?;
        if let ResumePosition::Mysql(p) = &mut position {
            p.snapshot = Some(state.clone());
        }
        Ok(position)
    }
}

/// One snapshot row (binary protocol values) → typed values.
fn snapshot_row(row: MyRow, kinds: &[Kind], lossy: &mut Lossy) -> Result<Row, String> {
    let values = row.unwrap();
    if values.len() != kinds.len() {
        return Err(format!(
            "{} values for {} columns",
            values.len(),
            kinds.len()
        ));
    }
    values
        .into_iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (v, kind))| {
            snapshot_value(v, kind, lossy).map_err(|e| format!("column {i}: {e}"))
        })
        .collect()
}

/// A value as the binary protocol returns it, typed as the column's kind. Text arrives in the
/// connection's utf8mb4, TIMESTAMPs in the session's UTC.
pub(crate) fn snapshot_value(v: MyValue, kind: &Kind, lossy: &mut Lossy) -> Result<Value, String> {
    use MyValue as V;
    Ok(match (kind, v) {
        (_, V::NULL) => Value::Null,
        (
            Kind::Int {
                bytes: 8,
                unsigned: true,
            },
            V::UInt(u),
        ) => Value::Decimal(u as i128),
        (
            Kind::Int {
                bytes: 8,
                unsigned: true,
            },
            V::Int(i),
        ) => Value::Decimal(i as i128),
        (Kind::Int { .. } | Kind::Year, V::Int(i)) => Value::Int(i),
        (Kind::Int { .. } | Kind::Year, V::UInt(u)) => {
            Value::Int(i64::try_from(u).map_err(|_| "integer out of range".to_string())?)
        }
        (Kind::Float | Kind::Double, V::Float(f)) => Value::Float(f as f64),
        (Kind::Float | Kind::Double, V::Double(f)) => Value::Float(f),
        (Kind::Decimal { precision, scale }, V::Bytes(b)) => {
            let text = std::str::from_utf8(&b).map_err(|_| "decimal is not text".to_string())?;
            decimal_from_text(text, *precision, *scale)?
        }
        (Kind::Text(_) | Kind::Json | Kind::Enum(_) | Kind::Set(_), V::Bytes(b)) => {
            Value::Text(rows::decode_text(&b, Charset::Utf8, lossy))
        }
        (Kind::Bytes | Kind::FixedBinary(_), V::Bytes(b)) => Value::Bytes(b),
        (Kind::Geometry, V::Bytes(b)) => Value::Bytes(b.get(4..).unwrap_or_default().to_vec()),
        (Kind::Bit { bits: 1 }, V::Bytes(b)) => Value::Bool(b.iter().any(|x| *x != 0)),
        (Kind::Bit { .. }, V::Bytes(b)) => Value::Bytes(b),
        (Kind::Bit { bits: 1 }, V::Int(i)) => Value::Bool(i != 0),
        (Kind::Other(_), V::Bytes(b)) => Value::Text(match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => e.as_bytes().iter().map(|x| format!("{x:02x}")).collect(),
        }),
        (Kind::Date | Kind::DateTime | Kind::Timestamp, V::Date(y, mo, d, h, mi, s, us)) => {
            let Some(date) = chrono::NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32) else {
                lossy.zero_dates += 1;
                return Ok(Value::Null);
            };
            let days = date
                .signed_duration_since(chrono::NaiveDate::default())
                .num_days();
            match kind {
                Kind::Date => Value::Temporal(days),
                _ => Value::Temporal(
                    days * 86_400_000_000
                        + (h as i64 * 3600 + mi as i64 * 60 + s as i64) * 1_000_000
                        + us as i64,
                ),
            }
        }
        (Kind::Time, V::Time(neg, days, h, mi, s, us)) => {
            let micros = ((days as i64 * 24 + h as i64) * 3600 + mi as i64 * 60 + s as i64)
                * 1_000_000
                + us as i64;
            Value::Temporal(if neg { -micros } else { micros })
        }
        (kind, v) => return Err(format!("a {} value for a {kind:?} column", value_kind(&v))),
    })
}

fn value_kind(v: &MyValue) -> &'static str {
    match v {
        MyValue::NULL => "NULL",
        MyValue::Bytes(_) => "bytes",
        MyValue::Int(_) => "integer",
        MyValue::UInt(_) => "unsigned integer",
        MyValue::Float(_) => "float",
        MyValue::Double(_) => "double",
        MyValue::Date(..) => "date",
        MyValue::Time(..) => "time",
    }
}

/// `-123.45` → the unscaled integer at `scale` (≤ 38 digits) or exact text beyond.
pub(crate) fn decimal_from_text(text: &str, precision: u8, scale: u8) -> Result<Value, String> {
    let bad = || "not a decimal".to_string();
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) || frac.len() > scale as usize {
        return Err(bad());
    }
    if precision > 38 {
        return Ok(Value::Text(text.to_string()));
    }
    let digits = format!("{int}{frac:0<width$}", width = scale as usize);
    let magnitude: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    Ok(Value::Decimal(if neg { -magnitude } else { magnitude }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_from_text_keep_their_scale() {
        assert_eq!(decimal_from_text("12.5", 12, 2), Ok(Value::Decimal(1250)));
        assert_eq!(decimal_from_text("-0.01", 12, 2), Ok(Value::Decimal(-1)));
        assert_eq!(decimal_from_text("7", 5, 0), Ok(Value::Decimal(7)));
        assert_eq!(
            decimal_from_text("1.5", 50, 1),
            Ok(Value::Text("1.5".into()))
        );
        assert!(decimal_from_text("1.234", 12, 2).is_err());
        assert!(decimal_from_text("x", 12, 2).is_err());
    }

    #[test]
    fn binary_protocol_values_are_typed_by_kind() {
        let mut lossy = Lossy::default();
        let v = snapshot_value(
            MyValue::UInt(u64::MAX),
            &Kind::Int {
                bytes: 8,
                unsigned: true,
            },
            &mut lossy,
        );
        assert_eq!(v, Ok(Value::Decimal(u64::MAX as i128)));
        let v = snapshot_value(
            MyValue::Date(0, 0, 0, 0, 0, 0, 0),
            &Kind::DateTime,
            &mut lossy,
        );
        assert_eq!(v, Ok(Value::Null));
        assert_eq!(lossy.zero_dates, 1);
        let v = snapshot_value(MyValue::Time(true, 1, 2, 0, 0, 5), &Kind::Time, &mut lossy);
        assert_eq!(v, Ok(Value::Temporal(-(26 * 3600 * 1_000_000 + 5))));
        let v = snapshot_value(
            MyValue::Date(1970, 1, 2, 0, 0, 1, 0),
            &Kind::Timestamp,
            &mut lossy,
        );
        assert_eq!(v, Ok(Value::Temporal(86_401_000_000)));
        assert!(snapshot_value(MyValue::Double(1.0), &Kind::Date, &mut lossy).is_err());
    }
}
