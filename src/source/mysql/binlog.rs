//! Streaming: the binlog from a position, as a replica would read it, into change events.
//!
//! A transaction (an "event group") starts with a GTID event (MariaDB's own, MySQL's GTID or
//! anonymous GTID) or a `BEGIN` query and ends with XID, `COMMIT`, or, for a standalone DDL
//! statement, with that statement. Only at an end is the position after it a place to resume;
//! a batch sent mid-transaction carries the last such place, and the sink cuts the part it
//! replays by sequence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use mysql_common::binlog::events::Event;

use super::ddl::{self, DdlContext, QueryKind};
use super::events::{self, BinlogEvent};
use super::gtid::{MariaGtidPos, MysqlGtidSet, format_uuid};
use super::rows::{self, RowDecoder, RowsKind, TableMap};
use super::{BinlogPoint, MyError, MysqlSource, catalog::Flavor, coord, file_index};
use crate::config::ResumeBy;
use crate::contract::batch::Batcher;
use crate::event::{ChangeEvent, ChangeOrigin, Op, Row, Seq};
use crate::metrics as m;
use crate::source::{snapshot, stream};

/// The transaction being read.
#[derive(Debug, Default)]
struct Tx {
    /// Binlog coordinate of its first event: the major part of its rows' sequences.
    coord: u64,
    /// Position of the next row in the transaction: the minor part.
    index: u64,
    /// Commit time (event timestamp; MySQL 8's GTID event has the commit's microseconds).
    ts_us: i64,
    /// The GTID, rendered, for the Debezium `source.gtid` field.
    gtid: Option<Arc<str>>,
    mariadb_gtid: Option<super::gtid::MariaGtid>,
    mysql_gtid: Option<([u8; 16], u64)>,
    /// No BEGIN/COMMIT follows (MariaDB's standalone flag): the next statement ends it.
    standalone: bool,
    /// Binlog position of its first event, for `source.pos`.
    start_pos: u64,
}

/// Where the stream stands.
struct Cursor {
    file: Arc<str>,
    file_index: u32,
    /// The last whole transaction's end: where a restart reads on.
    resume: BinlogPoint,
    mariadb_gtids: MariaGtidPos,
    mysql_gtids: MysqlGtidSet,
    tx: Option<Tx>,
    /// The current TABLE_MAPs by table id, with the table's `db.table` and whether it is
    /// captured (worked out once per TABLE_MAP, not per rows event).
    table_maps: HashMap<u64, (TableMap, String, bool)>,
    /// When `resume` moved last without being sent downstream.
    unsent_since: Option<Instant>,
    /// The last position the lake committed (for the lag in bytes).
    committed: Option<(String, u64)>,
    /// The binlog span of the compressed transaction being read (MySQL 8
    /// `binlog_transaction_compression`), whose inner events carry no position of their own.
    payload: Option<(u64, u64)>,
    /// Whether the server named the file it streams (its first ROTATE). Until then `file` is
    /// the committed one, which after a failover by GTID is another server's name.
    file_from_server: bool,
}

impl MysqlSource {
    pub(super) async fn stream(&mut self, from: BinlogPoint) -> Result<(), MyError> {
        let stream = self.open_binlog(&from).await?;
        self.ctx.status.source(&self.name, |s| {
            s.state = crate::status::SourceState::Streaming
        });
        tracing::info!(source = %self.name, at = %from, "streaming");
        let cur = Cursor {
            file: Arc::from(from.file.as_str()),
            file_index: file_index(&from.file),
            mariadb_gtids: match self.server.flavor {
                Flavor::MariaDb => {
                    MariaGtidPos::parse(from.gtid.as_deref().unwrap_or("")).unwrap_or_default()
                }
                Flavor::Mysql => MariaGtidPos::default(),
            },
            mysql_gtids: match self.server.flavor {
                Flavor::Mysql => {
                    MysqlGtidSet::parse(from.gtid.as_deref().unwrap_or("")).unwrap_or_default()
                }
                Flavor::MariaDb => MysqlGtidSet::default(),
            },
            resume: from,
            tx: None,
            table_maps: HashMap::new(),
            unsent_since: None,
            committed: None,
            payload: None,
            file_from_server: false,
        };
        let name = self.name.clone();
        let control = stream::Control {
            name: &name,
            shutdown: self.ctx.shutdown.clone(),
            acks: self.ctx.acks.clone(),
            heartbeat: Some(self.ctx.config.heartbeat.0),
        };
        let mut log = MyLog {
            source: self,
            stream,
            cur,
        };
        stream::run(&mut log, control).await
    }

    /// Send the batch with the last whole transaction's end as its position.
    async fn flush_resume(&mut self, cur: &mut Cursor) -> Result<(), MyError> {
        cur.unsent_since = None;
        let resume = cur.resume.clone();
        self.flush(Some(&resume)).await
    }

    /// Register as a replica and ask for the binlog from `from` (by GTID where there is one).
    async fn open_binlog(&mut self, from: &BinlogPoint) -> Result<BinlogStream, MyError> {
        let mut conn = super::catalog::connect(&self.ctx.config).await?;
        let heartbeat_ns = self
            .ctx
            .config
            .heartbeat
            .0
            .as_nanos()
            .min(u32::MAX as u128 * 1_000_000_000);
        let by_gtid = self.ctx.config.resume_by == ResumeBy::Gtid
            && from.gtid.as_deref().is_some_and(|g| !g.is_empty());
        let mut setup = vec![format!("SET @master_heartbeat_period = {heartbeat_ns}")];
        if self.server.flavor == Flavor::MariaDb {
            // 4: MARIA_SLAVE_CAPABILITY_GTID, so MariaDB sends its GTID events.
            setup.push("SET @mariadb_slave_capability = 4".into());
            if by_gtid {
                let gtid = from.gtid.as_deref().unwrap_or_default();
                setup.push(format!(
                    "SET @slave_connect_state = '{}'",
                    gtid.replace('\'', "")
                ));
                setup.push("SET @slave_gtid_strict_mode = 1".into());
                setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
            }
        }
        for sql in &setup {
            conn.query_drop(sql)
                .await
                .map_err(MyError::query("preparing the binlog session"))?;
        }
        let server_id = super::server_id(&self.ctx.config);
        let mut request = BinlogStreamRequest::new(server_id);
        let sids;
        match self.server.flavor {
            Flavor::Mysql if by_gtid => {
                let set = MysqlGtidSet::parse(from.gtid.as_deref().unwrap_or_default())
                    .map_err(MyError::Setup)?;
                sids = set
                    .sets
                    .iter()
                    .filter_map(|(uuid, ranges)| {
                        let uuid = super::gtid::parse_uuid(uuid)?;
                        Some(
                            mysql_common::packets::Sid::new(uuid).with_intervals(
                                ranges
                                    .iter()
                                    .map(|(a, b)| {
                                        mysql_common::packets::GnoInterval::new(*a, b + 1)
                                    })
                                    .collect(),
                            ),
                        )
                    })
                    .collect::<Vec<_>>();
                request = request.with_gtid().with_gtid_set(sids);
            }
            // MariaDB resumes by @slave_connect_state with an empty file name.
            Flavor::MariaDb if by_gtid => {}
            _ => {
                request = request
                    .with_filename(from.file.as_bytes())
                    .with_pos(from.pos);
            }
        }
        conn.get_binlog_stream(request)
            .await
            .map_err(|e| self.dump_error(e.into(), from))
    }

    /// A binlog request the server refused: 1236 means the position is gone (purged binlog).
    fn dump_error(&self, e: super::error::DriverError, at: &BinlogPoint) -> MyError {
        // Another replica with this id: MySQL says so with 1236, MariaDB with 4052.
        if matches!(e.code, Some(1236 | 4052)) && is_server_id_clash(&e.message) {
            return MyError::ServerIdClash {
                server_id: super::server_id(&self.ctx.config),
                detail: e.message,
            };
        }
        if e.code == Some(1236) {
            return MyError::PositionLost {
                position: at.to_string(),
                source_name: self.name.to_string(),
                detail: e.message,
            };
        }
        MyError::Binlog(e)
    }

    fn stream_error(&self, e: mysql_async::Error, cur: &Cursor) -> MyError {
        self.dump_error(e.into(), &cur.resume)
    }

    async fn on_event(&mut self, event: &Event, cur: &mut Cursor) -> Result<(), MyError> {
        let header = event.header();
        let (start_pos, log_pos) = event_span(
            &mut cur.payload,
            header.event_type_raw(),
            header.log_pos() as u64,
            header.event_size() as u64,
        );
        let ts_us = header.timestamp() as i64 * 1_000_000;
        let read = events::read(event).map_err(|e| match e {
            rows::RowError::Unsupported(message) => MyError::Setup(message),
            other => self.decode_error(cur, start_pos, other),
        })?;
        match read {
            BinlogEvent::Rotate {
                file,
                position,
                artificial,
            } => {
                if *cur.file != *file {
                    cur.file = Arc::from(file.as_str());
                    cur.file_index = file_index(&file);
                    cur.table_maps.clear();
                }
                cur.file_from_server = true;
                // The artificial ROTATE a dump starts with names the file only: when resuming
                // by GTID its position is the file's start, not where reading resumes.
                if cur.tx.is_none() && !artificial {
                    cur.resume.file = file;
                    cur.resume.pos = position;
                }
            }
            BinlogEvent::TableMap(map) => {
                let name = format!("{}.{}", map.db, map.table);
                let captured = self.captured(&name);
                cur.table_maps.insert(map.table_id, (map, name, captured));
            }
            BinlogEvent::Rows(ev) => {
                self.on_rows(&ev, header.timestamp(), start_pos, cur)
                    .await?
            }
            BinlogEvent::Xid => self.end_tx(cur, log_pos, header.timestamp()),
            BinlogEvent::Query { schema, sql } => {
                self.on_query(&schema, &sql, header.timestamp(), start_pos, log_pos, cur)
                    .await?
            }
            BinlogEvent::MysqlGtid {
                sid,
                gno,
                commit_us,
            } => {
                let ts = if commit_us == 0 {
                    ts_us
                } else {
                    commit_us as i64
                };
                let mut tx = self.begin_tx(cur, start_pos, ts);
                tx.gtid = Some(Arc::from(format!("{}:{gno}", format_uuid(&sid))));
                tx.mysql_gtid = Some((sid, gno));
                cur.tx = Some(tx);
            }
            BinlogEvent::AnonymousGtid { commit_us } => {
                let ts = if commit_us == 0 {
                    ts_us
                } else {
                    commit_us as i64
                };
                cur.tx = Some(self.begin_tx(cur, start_pos, ts));
            }
            BinlogEvent::MariaGtid(g) => {
                let mut tx = self.begin_tx(cur, start_pos, ts_us);
                tx.gtid = Some(Arc::from(g.gtid.to_string()));
                tx.mariadb_gtid = Some(g.gtid);
                tx.standalone = g.standalone;
                cur.tx = Some(tx);
            }
            BinlogEvent::MariaGtidList(list) => {
                // The binlog state where this file starts: fills in domains the position lacks.
                for g in list {
                    cur.mariadb_gtids
                        .domains
                        .entry(g.domain)
                        .or_insert((g.server, g.seq));
                }
            }
            BinlogEvent::Heartbeat => {
                if cur.tx.is_none() {
                    // Idle and caught up: nothing is behind.
                    metrics::gauge!(m::SOURCE_LAG_SECONDS, "source" => self.name.to_string())
                        .set(0.0);
                    self.ctx
                        .status
                        .source(&self.name, |s| s.lag_seconds = Some(0.0));
                }
            }
            BinlogEvent::Other => {}
        }
        Ok(())
    }

    fn begin_tx(&self, cur: &Cursor, start_pos: u64, ts_us: i64) -> Tx {
        Tx {
            coord: coord(self.epoch, cur.file_index, start_pos),
            index: 0,
            ts_us,
            start_pos,
            ..Tx::default()
        }
    }

    /// The transaction ended at `end_pos`: that is a place to resume; GTIDs advance.
    fn end_tx(&mut self, cur: &mut Cursor, end_pos: u64, timestamp: u32) {
        if let Some(tx) = cur.tx.take() {
            if let Some(g) = tx.mariadb_gtid {
                cur.mariadb_gtids.advance(g);
            }
            if let Some((sid, gno)) = tx.mysql_gtid {
                cur.mysql_gtids.add(&format_uuid(&sid), gno);
            }
        }
        if end_pos == 0 {
            return; // no position (an artificial event): not a place to resume
        }
        cur.resume = BinlogPoint {
            file: cur.file.to_string(),
            pos: end_pos,
            gtid: match self.server.flavor {
                Flavor::MariaDb => Some(cur.mariadb_gtids.to_string()),
                Flavor::Mysql if self.server.gtid_mode => Some(cur.mysql_gtids.to_string()),
                Flavor::Mysql => None,
            },
        };
        cur.unsent_since.get_or_insert_with(Instant::now);
        let lag = (crate::event::now_us() - timestamp as i64 * 1_000_000) as f64 / 1e6;
        metrics::gauge!(m::SOURCE_LAG_SECONDS, "source" => self.name.to_string()).set(lag.max(0.0));
        self.ctx
            .status
            .source(&self.name, |s| s.lag_seconds = Some(lag.max(0.0)));
        if self
            .snapshot_filter
            .as_ref()
            .is_some_and(|f| cur.resume.coord(self.epoch) >= f.filter_until())
        {
            self.snapshot_filter = None;
        }
    }

    async fn on_query(
        &mut self,
        schema: &str,
        sql: &str,
        timestamp: u32,
        start_pos: u64,
        end_pos: u64,
        cur: &mut Cursor,
    ) -> Result<(), MyError> {
        match ddl::classify(sql) {
            QueryKind::Begin => {
                if cur.tx.is_none() {
                    cur.tx = Some(self.begin_tx(cur, start_pos, timestamp as i64 * 1_000_000));
                }
            }
            QueryKind::Commit | QueryKind::Rollback => self.end_tx(cur, end_pos, timestamp),
            QueryKind::TransactionControl => {}
            QueryKind::TableDdl => {
                if cur.tx.is_none() {
                    cur.tx = Some(self.begin_tx(cur, start_pos, timestamp as i64 * 1_000_000));
                }
                self.on_ddl(schema, sql, cur).await?;
                // DDL commits implicitly.
                self.end_tx(cur, end_pos, timestamp);
            }
            QueryKind::Other => {
                if cur.tx.as_ref().is_some_and(|t| t.standalone) {
                    self.end_tx(cur, end_pos, timestamp);
                }
            }
        }
        Ok(())
    }

    /// Apply a DDL statement to the schema history; empty the streams of truncated or dropped
    /// tables; re-read from the catalog what the statement leaves unclear.
    async fn on_ddl(
        &mut self,
        default_db: &str,
        sql: &str,
        cur: &mut Cursor,
    ) -> Result<(), MyError> {
        let dbs: Vec<String> = ddl::named_tables(sql, default_db)
            .iter()
            .filter_map(|t| t.split_once('.').map(|(d, _)| d.to_string()))
            .chain(std::iter::once(default_db.to_string()))
            .collect();
        for db in dbs {
            if !self.db_charsets.contains_key(&db) {
                let cs = super::catalog::db_charset(&mut self.conn, &db).await?;
                self.db_charsets.insert(db, cs);
            }
        }
        let outcome = {
            let patterns = &self.patterns;
            let charsets = &self.db_charsets;
            let captured = |name: &str| patterns.iter().any(|p| p.matches(name));
            let db_charset = |db: &str| {
                charsets
                    .get(db)
                    .cloned()
                    .unwrap_or_else(|| "utf8mb4".into())
            };
            let ctx = DdlContext {
                default_db,
                captured: &captured,
                db_charset: &db_charset,
            };
            self.history.edit(|tables| ddl::apply(tables, sql, &ctx))
        };
        let (effects, unparsed) = match outcome {
            Ok(fx) => (fx, None),
            Err(u) => (ddl::DdlEffects::default(), Some(u)),
        };
        self.history_id = None;
        let mut reread = effects.reread.clone();
        if let Some(u) = unparsed {
            metrics::counter!(m::SOURCE_DDL_UNPARSED, "source" => self.name.to_string())
                .increment(1);
            // The statement is schema, not row data: it is logged so an operator can check it.
            tracing::warn!(source = %self.name, statement = %sql, reason = %u.reason,
                "DDL not understood; re-reading the tables it names from the catalog");
            reread = if u.tables.is_empty() {
                self.history.tables().keys().cloned().collect()
            } else {
                u.tables
            };
        }
        for name in &effects.emptied {
            self.push_truncate(name, cur);
        }
        let reread: Vec<String> = reread.into_iter().filter(|n| self.captured(n)).collect();
        for name in &reread {
            match super::catalog::table_def(&mut self.conn, name).await? {
                Some(def) => self.history.edit(|t| t.insert(name.clone(), def)),
                None => {
                    if self.history.def(name).is_some() {
                        self.push_truncate(name, cur);
                    }
                    self.history.edit(|t| t.remove(name))
                }
            };
        }
        for name in &effects.unsnapshotted {
            tracing::warn!(source = %self.name, table = %name,
                "a table was renamed into a captured name: its existing rows are not in the stream; re-snapshot to have them");
        }
        for name in effects.changed.iter().chain(&reread) {
            if let Some(t) = self.history.get(name) {
                tracing::info!(source = %self.name, table = %name, version = t.schema.version, "table schema changed");
            }
        }
        Ok(())
    }

    fn push_truncate(&mut self, name: &str, cur: &mut Cursor) {
        let Some(tracked) = self.history.get(name).cloned() else {
            return;
        };
        let mut tx = cur.tx.take().unwrap_or_default();
        self.push(&mut tx, cur, &tracked.schema, Op::Truncate, None, None, 0);
        cur.tx = Some(tx);
    }

    async fn on_rows(
        &mut self,
        ev: &rows::RowsEvent<'_>,
        timestamp: u32,
        start_pos: u64,
        cur: &mut Cursor,
    ) -> Result<(), MyError> {
        let Some((map, name, captured)) = cur.table_maps.get(&ev.table_id) else {
            return Err(self.decode_error(
                cur,
                start_pos,
                rows::RowError::Malformed(format!(
                    "rows event for unknown table id {}",
                    ev.table_id
                )),
            ));
        };
        if !captured {
            return Ok(());
        }
        let name = name.clone();
        if self.history.get(&name).is_none() || !self.fits(&name, map) {
            self.refresh_table(&name, map, cur, start_pos).await?;
        }
        let Some(tracked) = self.history.get(&name).cloned() else {
            return Ok(()); // gone from the catalog already and unknown: nothing to decode with
        };
        if cur.tx.is_none() {
            cur.tx = Some(self.begin_tx(cur, start_pos, timestamp as i64 * 1_000_000));
        }
        let (map, _, _) = cur.table_maps.get(&ev.table_id).expect("looked up above");
        let mut decoder =
            RowDecoder::new(map, &tracked.kinds).map_err(|source| MyError::Schema {
                table: name.clone(),
                position: format!("{}:{start_pos}", cur.file),
                source,
            })?;
        let mut images: Vec<(Option<Row>, Option<Row>)> = Vec::new();
        decoder
            .rows(ev, |before, after| images.push((before, after)))
            .map_err(|source| MyError::Schema {
                table: name.clone(),
                position: format!("{}:{start_pos}", cur.file),
                source,
            })?;
        let lossy = decoder.lossy;
        self.report_lossy(&tracked.schema.stream, lossy);
        let op = match ev.kind {
            RowsKind::Write => Op::Create,
            RowsKind::Update => Op::Update,
            RowsKind::Delete => Op::Delete,
        };
        let mut tx = cur.tx.take().unwrap_or_default();
        for (row, (before, after)) in images.into_iter().enumerate() {
            if let Some(filter) = &self.snapshot_filter {
                let key = after
                    .as_ref()
                    .or(before.as_ref())
                    .and_then(|r| snapshot::int_key(&tracked.schema, r));
                if filter.already_read(&name, key, tx.coord) {
                    tx.index += 1;
                    continue; // the resumed snapshot read this key after this change
                }
            }
            self.push(&mut tx, cur, &tracked.schema, op, before, after, row as u32);
        }
        cur.tx = Some(tx);
        Ok(())
    }

    /// Whether the tracked definition can decode the table map's rows (same column count).
    fn fits(&self, name: &str, map: &TableMap) -> bool {
        let Some(t) = self.history.get(name) else {
            return false;
        };
        t.kinds.len() == map.columns.len()
            && map.names.as_ref().is_none_or(|names| {
                names
                    .iter()
                    .zip(&t.schema.columns)
                    .all(|(a, b)| a.eq_ignore_ascii_case(&b.name))
            })
    }

    /// The history has no (fitting) definition for a captured table's rows: a table created
    /// while sluice could not see the DDL, or a history out of step. Read the catalog's; if that
    /// does not fit either, the binlog cannot be decoded safely.
    async fn refresh_table(
        &mut self,
        name: &str,
        map: &TableMap,
        cur: &Cursor,
        start_pos: u64,
    ) -> Result<(), MyError> {
        let def = super::catalog::table_def(&mut self.conn, name).await?;
        let Some(def) = def else {
            return Ok(());
        };
        if def.columns.len() != map.columns.len() {
            return Err(MyError::Schema {
                table: name.to_string(),
                position: format!("{}:{start_pos}", cur.file),
                source: rows::RowError::Malformed(format!(
                    "the binlog rows have {} columns, the schema history {} and the catalog {}",
                    map.columns.len(),
                    self.history.get(name).map_or(0, |t| t.kinds.len()),
                    def.columns.len()
                )),
            });
        }
        if self.history.get(name).is_some() {
            tracing::warn!(source = %self.name, table = %name, "the schema history did not fit the binlog; using the catalog's definition");
        } else {
            tracing::info!(source = %self.name, table = %name, "new table matches the configured names: capturing it");
        }
        self.history.edit(|t| t.insert(name.to_string(), def));
        self.history_id = None;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        tx: &mut Tx,
        cur: &Cursor,
        table: &Arc<crate::event::TableSchema>,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        row: u32,
    ) {
        let event = ChangeEvent {
            table: table.clone(),
            op,
            before,
            after,
            partial_before: false,
            seq: Seq::new(tx.coord, 0),
            commit_ts_us: tx.ts_us,
            pos: ChangeOrigin::Binlog {
                file: cur.file.clone(),
                pos: tx.start_pos,
                row,
                server_id: self.server.server_id,
                gtid: tx.gtid.clone(),
            },
            tx_id: None,
            snapshot: false,
        };
        self.batch.push_change(event, &mut tx.index);
    }

    fn decode_error(&self, cur: &Cursor, pos: u64, source: rows::RowError) -> MyError {
        MyError::Decode {
            position: format!("{}:{pos}", cur.file),
            source,
        }
    }

    /// Periodic: the server still has the binlog file sluice reads (else the position is gone),
    /// and how many binlog bytes the lake is behind (0 when idle and caught up).
    async fn binlog_health(&mut self, cur: &Cursor) -> Result<(), MyError> {
        let logs = super::catalog::binary_logs(&mut self.conn).await?;
        let (file, pos) = cur
            .committed
            .clone()
            .unwrap_or_else(|| (cur.resume.file.clone(), cur.resume.pos));
        if let Some(behind) = super::catalog::bytes_behind(&logs, &file, pos) {
            metrics::gauge!(m::SOURCE_LAG_BYTES, "source" => self.name.to_string())
                .set(behind as f64);
        }
        if cur.file_from_server
            && !logs.is_empty()
            && !logs.iter().any(|(l, _)| l.as_str() == &*cur.file)
        {
            return Err(MyError::PositionLost {
                position: cur.resume.to_string(),
                source_name: self.name.to_string(),
                detail: format!("binlog {} was purged while sluice read it", cur.file),
            });
        }
        Ok(())
    }
}

/// MySQL 8's TRANSACTION_PAYLOAD_EVENT: a compressed transaction.
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;

/// An event's binlog span, `(start, end)`. A compressed transaction arrives as its payload event,
/// which has a place in the binlog, then its decompressed inner events, which have none (end 0):
/// they take the payload's span, so that the transaction's COMMIT/XID ends at the payload's end
/// and the position and GTID set advance past it.
fn event_span(
    payload: &mut Option<(u64, u64)>,
    event_type: u8,
    log_pos: u64,
    size: u64,
) -> (u64, u64) {
    let own = (log_pos.saturating_sub(size), log_pos);
    if event_type == TRANSACTION_PAYLOAD_EVENT {
        *payload = Some(own);
        return own;
    }
    match *payload {
        Some(span) if log_pos == 0 => span,
        _ => {
            if log_pos != 0 {
                *payload = None;
            }
            own
        }
    }
}

/// Whether a 1236/4052 error says that another replica with the same id took the connection
/// over (MySQL: "A slave with the same server_uuid/server_id as this slave has connected to the
/// master"; MariaDB: "… is already connected"; "replica" in newer versions).
fn is_server_id_clash(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("same server_uuid/server_id") || m.contains("same server_id")
}

/// The binlog as the shared loop (`source::stream`) drives it.
struct MyLog<'a> {
    source: &'a mut MysqlSource,
    stream: BinlogStream,
    cur: Cursor,
}

impl stream::LogStream for MyLog<'_> {
    type Item = Event;
    type Error = MyError;

    async fn next(&mut self) -> Option<Result<Event, MyError>> {
        let next = self.stream.next().await?;
        Some(next.map_err(|e| self.source.stream_error(e, &self.cur)))
    }

    async fn take(&mut self, event: Event) -> Result<stream::Flow, MyError> {
        self.source.on_event(&event, &mut self.cur).await?;
        Ok(stream::Flow::Continue)
    }

    async fn flush(&mut self) -> Result<(), MyError> {
        self.source.flush_resume(&mut self.cur).await
    }

    fn committed(&mut self, position: &crate::contract::position::ResumePosition) {
        if let crate::contract::position::ResumePosition::Mysql(p) = position {
            metrics::gauge!(m::SOURCE_COMMITTED_POSITION, "source" => self.source.name.to_string())
                // Without the epoch: a gauge of where in the binlog (the epoch's bits would
                // overflow a float's precision).
                .set(coord(0, file_index(&p.file), p.pos) as f64);
            self.cur.committed = Some((p.file.clone(), p.pos));
        }
    }

    async fn check_health(&mut self) -> Result<(), MyError> {
        self.source.binlog_health(&self.cur).await
    }

    /// A batch goes out soon; a position that moved past changes of no captured table goes
    /// out within a second, so the committed position keeps up with the binlog.
    fn deadline(&self) -> Option<Instant> {
        stream::deadline_with_unsent(&self.source.batch, self.cur.unsent_since)
    }

    fn batch(&self) -> &Batcher {
        &self.source.batch
    }

    fn whole(&self) -> bool {
        self.cur.tx.is_none() && !self.source.batch.is_empty()
    }

    fn ended(&self) -> MyError {
        MyError::Binlog(super::error::DriverError {
            message: "the server ended the binlog stream".into(),
            code: None,
            transient: true,
        })
    }

    fn downstream_gone(&self) -> MyError {
        MyError::Downstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressed transaction as mysql_async hands it over: GTID, the payload (at 400..900 in
    /// the file), then BEGIN, TABLE_MAP, WRITE_ROWS and XID decompressed from it with log_pos 0.
    #[test]
    fn a_compressed_transaction_ends_where_its_payload_ends() {
        const GTID: u8 = 33;
        const QUERY: u8 = 2;
        const TABLE_MAP: u8 = 19;
        const WRITE_ROWS: u8 = 30;
        const XID: u8 = 16;
        let mut payload = None;
        assert_eq!(event_span(&mut payload, GTID, 400, 79), (321, 400));
        assert_eq!(
            event_span(&mut payload, TRANSACTION_PAYLOAD_EVENT, 900, 500),
            (400, 900)
        );
        for inner in [QUERY, TABLE_MAP, WRITE_ROWS] {
            assert_eq!(event_span(&mut payload, inner, 0, 60), (400, 900));
        }
        assert_eq!(
            event_span(&mut payload, XID, 0, 31),
            (400, 900),
            "XID ends at 900"
        );
        // The next uncompressed event has a place of its own again.
        assert_eq!(event_span(&mut payload, GTID, 979, 79), (900, 979));
        assert_eq!(payload, None);
        // An artificial event (log_pos 0) outside a payload keeps end 0: no resume point.
        assert_eq!(event_span(&mut payload, 4, 0, 40), (0, 0));
    }

    #[test]
    fn a_server_id_clash_is_told_apart_from_a_purged_binlog() {
        use super::is_server_id_clash;
        assert!(is_server_id_clash(
            "ERROR 1236 (HY000): A slave with the same server_uuid/server_id as this slave has connected to the master; the first event 'mysql-bin.000003' at 4"
        ));
        assert!(is_server_id_clash(
            "ERROR 1236 (HY000): A replica with the same server_id as this replica has connected"
        ));
        assert!(is_server_id_clash(
            "ERROR 4052 (HY000): A slave with the same server_uuid/server_id is already connected"
        ));
        assert!(!is_server_id_clash(
            "ERROR 1236 (HY000): Could not find first log file name in binary log index file"
        ));
    }
}
