//! The MySQL / MariaDB source: a consistent snapshot, then the binlog (ROW format).
//!
//! An explicit state machine, as the Postgres source:
//!
//! ```text
//!   Setup ──(no position committed)──▶ Snapshot ──▶ Streaming
//!     ├────(snapshot unfinished)─────▶ Snapshot (a new phase) ──▶ Streaming
//!     └────(position committed)────────────────────────────────▲
//! ```
//!
//! * **Setup** connects, identifies the server (MariaDB or MySQL), checks the prerequisites
//!   (check.rs) and resolves the configured `db.table` names.
//! * **Snapshot** opens a consistent read view whose binlog position is known exactly (MariaDB:
//!   `START TRANSACTION WITH CONSISTENT SNAPSHOT` and `binlog_snapshot_file/position`, no lock;
//!   MySQL: the same under a brief `FLUSH TABLES WITH READ LOCK`), reads the table definitions
//!   into the schema history, and reads the rows in primary-key chunks, each committed with a
//!   position to resume from (snapshot.rs, with the phase filter shared with Postgres).
//! * **Streaming** registers as a replica and reads the binlog from the committed position (by
//!   GTID where the server has them, else file and offset), turning rows events into changes
//!   decoded with the schema history (binlog.rs, rows.rs, ddl.rs).
//!
//! Sequences: a transaction's binlog coordinate (file index << 32 | offset of its first event)
//! then the row's index in the transaction; snapshot rows use the snapshot's coordinate minus
//! one, so they sort before every change streamed after it.

pub(crate) mod binlog;
pub(crate) mod catalog;
pub(crate) mod check;
pub mod ddl;
pub(crate) mod error;
pub(crate) mod events;
pub mod gtid;
pub(crate) mod json;
pub mod mariadb;
pub mod rows;
pub mod schema;
pub(crate) mod snapshot;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::Conn;

use crate::config::{SnapshotMode, SourceConfig};
use crate::contract::batch::{Batcher, SourceBatch};
use crate::contract::position::SnapshotState;
use crate::contract::position::{BinlogPosition, ResumePosition};
use crate::lake::schema_history::HistoryStore;
use crate::metrics as m;
use crate::source::SourceContext;
use catalog::ServerInfo;
pub(crate) use error::MyError;
use schema::History;

/// A point in the binlog: where to read on from, and the GTID state there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BinlogPoint {
    pub(crate) file: String,
    pub(crate) pos: u64,
    pub(crate) gtid: Option<String>,
}

impl std::fmt::Display for BinlogPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = self.gtid.as_deref().filter(|g| !g.is_empty()) {
            write!(f, " (GTID {g})")?;
        }
        Ok(())
    }
}

impl BinlogPoint {
    /// The point's coordinate in sequence epoch `epoch` (see [`coord`]).
    pub(crate) fn coord(&self, epoch: u32) -> u64 {
        coord(epoch, file_index(&self.file), self.pos)
    }
}

/// The number a binlog file name ends with (`mysql-bin.000042` → 42).
pub(crate) fn file_index(name: &str) -> u32 {
    name.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A binlog coordinate, the major part of a change's sequence: `epoch << 52 | file index << 32 |
/// offset`. It increases along one binlog series; the epoch moves when the series changes (a
/// failover to another server, `RESET MASTER`, another `log_bin` name), so that the new series'
/// changes sort after everything before, whatever its file numbers (see `decide_epoch`). Epoch 0
/// is the layout of lakes written before epochs existed. File indexes have at most six digits
/// (under 2^20).
pub(crate) fn coord(epoch: u32, file_index: u32, pos: u64) -> u64 {
    ((epoch as u64) << 52) | (((file_index & 0xf_ffff) as u64) << 32) | (pos & 0xffff_ffff)
}

/// The highest epoch `coord` can hold.
const MAX_EPOCH: u32 = (1 << 12) - 1;

/// The sequence epoch to stream in, from the committed position and what the server is now:
/// the same series (server and binlog name) at or past the committed point keeps the epoch;
/// another series, or the same one behind the committed point (`RESET MASTER`), moves it on.
/// A position from before epochs (no series recorded) keeps epoch 0.
pub(crate) fn decide_epoch(at: &BinlogPosition, series: &str, server_end: &BinlogPoint) -> u32 {
    let Some(committed_series) = at.series.as_deref() else {
        return at.epoch;
    };
    let went_back = file_index(&server_end.file) < file_index(&at.file)
        || (file_index(&server_end.file) == file_index(&at.file) && server_end.pos < at.pos);
    if committed_series != series || went_back {
        at.epoch + 1
    } else {
        at.epoch
    }
}

/// Where the source begins, decided in Setup.
enum Start {
    /// Nothing committed: a consistent point, the snapshot (or not), then the binlog from there.
    Fresh { snapshot: bool },
    /// A snapshot was under way: read the rest at a new consistent point, then stream.
    ResumeSnapshot {
        at: BinlogPosition,
        state: SnapshotState,
    },
    /// Stream from a committed position.
    Resume { at: BinlogPosition },
}

pub(crate) struct MysqlSource {
    ctx: SourceContext,
    name: Arc<str>,
    server: ServerInfo,
    /// For catalog reads while streaming (the binlog has a connection of its own).
    conn: Conn,
    patterns: Vec<glob::Pattern>,
    /// The captured tables found at setup.
    tables: Vec<String>,
    history: History,
    schemas: HistoryStore,
    /// Id of the saved history of the current definitions; None after they changed.
    history_id: Option<String>,
    batch: Batcher,
    /// Commit time given to snapshot rows: when this run's snapshot began.
    snapshot_taken_at: Option<i64>,
    /// Streamed changes already in a resumed snapshot are dropped until the stream passes the
    /// last phase's point (see source/snapshot.rs).
    snapshot_filter: Option<SnapshotState>,
    db_charsets: HashMap<String, String>,
    /// The binlog series this server writes (`<server id or uuid> <log_bin name>`), and the
    /// sequence epoch of this run (see [`coord`]).
    series: String,
    epoch: u32,
}

impl MysqlSource {
    /// Setup: connect, identify the server, check prerequisites, resolve tables.
    pub(crate) async fn connect(ctx: SourceContext) -> Result<MysqlSource, MyError> {
        let mut conn = catalog::connect(&ctx.config).await?;
        let server = catalog::server_info(&mut conn).await?;
        let problems = check::prerequisites(&mut conn, &server, &ctx.config).await?;
        if !problems.is_empty() {
            let text = problems
                .iter()
                .map(|f| format!("{}; fix: {}", f.problem, f.fix))
                .collect::<Vec<_>>()
                .join("\n  ");
            return Err(MyError::Setup(format!("prerequisites not met:\n  {text}")));
        }
        let patterns = table_patterns(&ctx.config)?;
        let tables = catalog::resolve_tables(&mut conn, &patterns).await?;
        if tables.is_empty() {
            return Err(MyError::Setup(format!(
                "no table matches {:?}; tables are `database.table` (globs allowed, e.g. shop.*)",
                ctx.config.tables
            )));
        }
        let schemas =
            HistoryStore::open(&ctx.lake_path, &ctx.config.name).map_err(MyError::History)?;
        let name: Arc<str> = Arc::from(ctx.config.name.as_str());
        let server_end = snapshot::master_status(&mut conn).await?;
        let series = catalog::binlog_series(&mut conn, &server, &server_end.file).await?;
        let epoch = match &ctx.committed {
            Some(ResumePosition::Mysql(at)) => {
                let epoch = decide_epoch(at, &series, &server_end);
                if epoch != at.epoch {
                    tracing::warn!(source = %name, from = ?at.series, to = %series, epoch, "the binlog series changed (a failover, RESET MASTER or another log_bin name): its changes get a new sequence epoch, so that they sort after everything before");
                }
                epoch
            }
            _ => 0,
        };
        if epoch > MAX_EPOCH {
            return Err(MyError::Setup(format!(
                "the binlog series changed more than {MAX_EPOCH} times under this lake: snapshot again into a new sink path"
            )));
        }
        tracing::info!(source = %name, server = %server.version, tables = tables.len(), "connected");
        Ok(MysqlSource {
            history: History::new(&name, server.flavor.connector(), Default::default()),
            ctx,
            name,
            server,
            conn,
            patterns,
            tables,
            schemas,
            history_id: None,
            batch: Batcher::default(),
            snapshot_taken_at: None,
            snapshot_filter: None,
            db_charsets: HashMap::new(),
            series,
            epoch,
        })
    }

    /// Run until shutdown (Ok) or an error.
    pub(crate) async fn run(mut self) -> Result<(), MyError> {
        let from = match self.decide_start() {
            Start::Fresh { snapshot } => {
                let mut view = catalog::connect(&self.ctx.config).await?;
                let point = snapshot::open_consistent_view(&mut view, self.server.flavor).await?;
                let defs = catalog::table_defs(&mut view, &self.tables).await?;
                self.history = History::new(&self.name, self.server.flavor.connector(), defs);
                if snapshot {
                    tracing::info!(source = %self.name, at = %point, "taking the initial snapshot");
                    let state = SnapshotState::default();
                    let state = self.read_snapshot(&mut view, &point, &point, state).await?;
                    self.snapshot_filter = (state.filter_until() > 0).then_some(state);
                } else {
                    snapshot::close_view(view).await;
                    self.flush(Some(&point)).await?;
                }
                if self.ctx.config.snapshot == SnapshotMode::InitialOnly {
                    tracing::info!(source = %self.name, "initial snapshot handed over; not streaming (snapshot: initial_only)");
                    return Ok(());
                }
                point
            }
            Start::ResumeSnapshot { at, state } => {
                self.load_history(&at.schemas)?;
                let mut view = catalog::connect(&self.ctx.config).await?;
                let phase = snapshot::open_consistent_view(&mut view, self.server.flavor).await?;
                let stream_from = BinlogPoint {
                    file: at.file.clone(),
                    pos: at.pos,
                    gtid: at.gtid.clone(),
                };
                let state = self
                    .read_snapshot(&mut view, &stream_from, &phase, state)
                    .await?;
                if self.ctx.config.snapshot == SnapshotMode::InitialOnly {
                    return Ok(());
                }
                self.snapshot_filter = (state.filter_until() > 0).then_some(state);
                stream_from
            }
            Start::Resume { at } => {
                self.load_history(&at.schemas)?;
                let from = BinlogPoint {
                    file: at.file.clone(),
                    pos: at.pos,
                    gtid: at.gtid.clone(),
                };
                self.snapshot_filter = at
                    .snapshot
                    .filter(|f| f.filter_until() > from.coord(self.epoch));
                from
            }
        };
        self.stream(from).await
    }

    fn decide_start(&self) -> Start {
        match &self.ctx.committed {
            Some(ResumePosition::Mysql(at)) => match &at.snapshot {
                Some(state) if !state.complete => Start::ResumeSnapshot {
                    at: at.clone(),
                    state: state.clone(),
                },
                _ => Start::Resume { at: at.clone() },
            },
            _ => Start::Fresh {
                snapshot: self.ctx.config.snapshot != SnapshotMode::Never,
            },
        }
    }

    fn load_history(&mut self, id: &str) -> Result<(), MyError> {
        let tables =
            tokio::task::block_in_place(|| self.schemas.load(id)).map_err(MyError::History)?;
        self.history = History::new(&self.name, self.server.flavor.connector(), tables);
        self.history_id = Some(id.to_string());
        Ok(())
    }

    /// Whether sluice captures `db.table`.
    fn captured(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }

    /// The position of `at` with the current schema history (saved first if it changed) and the
    /// phase filter while it still applies.
    fn position(&mut self, at: &BinlogPoint) -> Result<ResumePosition, MyError> {
        let id = match &self.history_id {
            Some(id) => id.clone(),
            None => {
                let id = tokio::task::block_in_place(|| self.schemas.save(self.history.tables()))
                    .map_err(MyError::History)?;
                self.history_id = Some(id.clone());
                id
            }
        };
        let snapshot = self
            .snapshot_filter
            .clone()
            .filter(|s| at.coord(self.epoch) < s.filter_until());
        Ok(ResumePosition::Mysql(BinlogPosition {
            file: at.file.clone(),
            pos: at.pos,
            gtid: at.gtid.clone(),
            schemas: id,
            snapshot,
            series: Some(self.series.clone()),
            epoch: self.epoch,
        }))
    }

    /// Hand the current batch downstream (waiting while the pipeline is full: backpressure).
    async fn flush(&mut self, resume: Option<&BinlogPoint>) -> Result<(), MyError> {
        let resume = resume.map(|r| self.position(r)).transpose()?;
        self.send(resume).await
    }

    async fn send(&mut self, resume: Option<ResumePosition>) -> Result<(), MyError> {
        let events = self.batch.take();
        crate::source::count_events(&self.name, &events);
        let batch = SourceBatch::raw(self.name.clone(), events, resume);
        self.ctx
            .out
            .send(batch)
            .await
            .map_err(|_| MyError::Downstream)
    }

    /// Count values the lake could not hold exactly.
    fn report_lossy(&self, table: &str, lossy: rows::Lossy) {
        for (kind, n) in [
            ("zero_date", lossy.zero_dates),
            ("invalid_text", lossy.bad_text),
            ("missing_column", lossy.missing_columns),
        ] {
            if n > 0 {
                metrics::counter!(m::SOURCE_LOSSY_VALUES, "reason" => kind).increment(n);
                tracing::debug!(
                    table,
                    reason = kind,
                    values = n,
                    "values the lake cannot hold exactly"
                );
            }
        }
    }
}

/// `db.table` glob patterns of the configured tables.
pub(crate) fn table_patterns(config: &SourceConfig) -> Result<Vec<glob::Pattern>, MyError> {
    config
        .tables
        .iter()
        .map(|t| {
            glob::Pattern::new(t)
                .map_err(|e| MyError::Setup(format!("tables: `{t}` is not a valid pattern: {e}")))
        })
        .collect()
}

/// The replica server id: configured, or derived from the source name (stable across restarts,
/// different for different sources), in 2^30 .. 2^31 to stay clear of the small ids people give
/// their servers.
pub(crate) fn server_id(config: &SourceConfig) -> u32 {
    config.server_id.unwrap_or_else(|| {
        let hash = config.name.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ b as u32).wrapping_mul(0x0100_0193)
        });
        (1 << 30) | (hash & 0x3fff_ffff)
    })
}

impl crate::source::Source for MysqlSource {
    type Error = MyError;

    async fn connect(ctx: SourceContext) -> Result<Self, MyError> {
        MysqlSource::connect(ctx).await
    }

    async fn run(self) -> Result<(), MyError> {
        MysqlSource::run(self).await
    }

    async fn check(
        config: &SourceConfig,
    ) -> (Vec<crate::finding::Finding>, Vec<crate::event::TableSchema>) {
        check::check(config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_coordinates_order_along_the_binlog() {
        let a = BinlogPoint {
            file: "mysql-bin.000003".into(),
            pos: 4_000_000,
            gtid: None,
        };
        let b = BinlogPoint {
            file: "mysql-bin.000004".into(),
            pos: 4,
            gtid: None,
        };
        assert!(a.coord(0) < b.coord(0));
        assert!(
            b.coord(0) < a.coord(1),
            "a new epoch sorts after the old one"
        );
        // Epoch 0 is the layout before epochs: file index << 32 | offset.
        assert_eq!(b.coord(0), (4 << 32) | 4);
        assert_eq!(file_index("mysql-bin.000042"), 42);
        assert_eq!(file_index("weird"), 0);
        assert_eq!(a.to_string(), "mysql-bin.000003:4000000");
    }

    #[test]
    fn the_epoch_moves_when_the_binlog_series_changes_or_goes_back() {
        let at = BinlogPosition {
            file: "mysql-bin.000007".into(),
            pos: 500,
            gtid: None,
            schemas: "h".into(),
            snapshot: None,
            series: Some("1 mysql-bin".into()),
            epoch: 2,
        };
        let end = |file: &str, pos| BinlogPoint {
            file: file.into(),
            pos,
            gtid: None,
        };
        assert_eq!(
            decide_epoch(&at, "1 mysql-bin", &end("mysql-bin.000007", 900)),
            2
        );
        assert_eq!(
            decide_epoch(&at, "1 mysql-bin", &end("mysql-bin.000009", 4)),
            2
        );
        // A failover to another server, or another binlog name.
        assert_eq!(
            decide_epoch(&at, "2 mysql-bin", &end("mysql-bin.000009", 4)),
            3
        );
        assert_eq!(decide_epoch(&at, "1 binlog", &end("binlog.000009", 4)), 3);
        // RESET MASTER: the same series, numbered from the start again.
        assert_eq!(
            decide_epoch(&at, "1 mysql-bin", &end("mysql-bin.000001", 4000)),
            3
        );
        // A position from before epochs keeps epoch 0.
        let old = BinlogPosition {
            series: None,
            epoch: 0,
            ..at
        };
        assert_eq!(decide_epoch(&old, "2 x", &end("x.000001", 4)), 0);
    }
}
