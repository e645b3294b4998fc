//! The Postgres source: logical replication with pgoutput.
//!
//! An explicit state machine (as in supabase/etl):
//!
//! ```text
//!   Setup ──(no position committed)──▶ Snapshot ──▶ Streaming
//!     └────(position committed)───────────────────────▲
//! ```
//!
//! * **Setup** resolves the configured tables, makes sure the publication exists, and decides
//!   from the lake's committed position and the slot's existence where to begin.
//! * **Snapshot** creates the slot on a replication connection with `EXPORT_SNAPSHOT`, reads
//!   every table with COPY inside a transaction that imported that snapshot, so the rows are
//!   exactly the state at the slot's consistent point, and emits them as `op=r`. Snapshot batches
//!   carry no resume position: they become durable only together with the first position after
//!   them, so a crash mid-snapshot leaves nothing behind and the snapshot starts over.
//! * **Streaming** starts replication at the committed LSN and turns pgoutput messages into
//!   events; the slot's confirmed position is advanced only to what the sink has committed.

pub mod catalog;
pub(crate) mod check;
pub(crate) mod error;
pub mod pgoutput;
pub(crate) mod snapshot;
pub mod text;
pub(crate) mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio_postgres::{Client, NoTls};

use crate::config::{SnapshotMode, SourceConfig};
use crate::contract::batch::{Batcher, SourceBatch};
use crate::contract::position::ResumePosition;
use crate::event::{ChangeEvent, ChangeOrigin, Op, Row, Seq, TableSchema, Value, now_us};
use crate::lake::position_claims::{PositionClaim, PositionClaims};
use crate::metrics as m;
use crate::source::{SourceContext, count_events, stream};
use catalog::{PgTable, SESSION_OPTIONS};
pub(crate) use error::PgError;
#[cfg(test)]
pub(crate) use error::sqlstate_is_transient;
use pgoutput::{Message, TupleValue};
use snapshot::SnapshotState;

/// What a Postgres source's claim in the lake is called (see `lake::position_claims`).
const SLOT_CLAIM: &str = "postgres_slot";
/// SQLSTATE of `CREATE_REPLICATION_SLOT` for a slot that exists.
const DUPLICATE_OBJECT: &str = "42710";
/// Microseconds between the Unix epoch and Postgres's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Where the source begins, decided in Setup.
enum Start {
    /// Fresh slot: snapshot (or not), then stream from the slot's consistent point.
    NewSlot { snapshot: bool },
    /// A snapshot was under way: read the rest at a new exported snapshot, then stream.
    ResumeSnapshot { lsn: u64, state: SnapshotState },
    /// Resume streaming at a committed LSN (with the phase filter of a resumed snapshot).
    Resume {
        lsn: u64,
        filter: Option<SnapshotState>,
    },
}

pub(crate) struct PostgresSource {
    ctx: SourceContext,
    name: Arc<str>,
    db: String,
    client: Client,
    tables: Vec<PgTable>,
    /// Schemas by relation id, as last seen.
    schemas: HashMap<u32, Arc<TableSchema>>,
    batch: Batcher,
    /// Commit time given to snapshot rows: when this run's snapshot began.
    snapshot_taken_at: Option<i64>,
    /// Streamed changes already contained in a resumed snapshot are dropped until the stream
    /// passes the last phase's position (see snapshot.rs).
    snapshot_filter: Option<SnapshotState>,
}

impl PostgresSource {
    /// Setup: connect, resolve tables, ensure the publication.
    pub(crate) async fn connect(ctx: SourceContext) -> Result<PostgresSource, PgError> {
        let (client, db) = connect_sql(&ctx.config).await?;
        for risk in check::risks(&client, &ctx.config).await {
            tracing::warn!(source = %ctx.config.name, "{}; fix: {}", risk.problem, risk.fix);
        }
        let problems = check::prerequisites(&client, &db, &ctx.config).await;
        if !problems.is_empty() {
            let text = problems
                .iter()
                .map(|f| format!("{}; fix: {}", f.problem, f.fix))
                .collect::<Vec<_>>()
                .join("\n  ");
            return Err(PgError::Setup(format!(
                "prerequisites not met, nothing was created:\n  {text}"
            )));
        }
        let (tables, _) = catalog::resolve_tables(&client, &ctx.config.tables).await?;
        catalog::ensure_publication(
            &client,
            &ctx.config.publication_name(),
            &tables,
            &ctx.config.tables,
        )
        .await?;
        let name: Arc<str> = Arc::from(ctx.config.name.as_str());
        Ok(PostgresSource {
            ctx,
            name,
            db,
            client,
            tables,
            schemas: HashMap::new(),
            batch: Batcher::default(),
            snapshot_taken_at: None,
            snapshot_filter: None,
        })
    }

    /// Run until shutdown (Ok) or an error.
    pub(crate) async fn run(mut self) -> Result<(), PgError> {
        let slot = self.ctx.config.slot_name();
        let start = self.decide_start(&slot).await?;
        for t in self.tables.clone() {
            let (schema, _) =
                catalog::table_schema(&self.client, &self.name, &self.db, &t, 1).await?;
            self.schemas.insert(t.relid, Arc::new(schema));
        }
        let (mut repl, start_lsn) = match start {
            Start::Resume { lsn, filter } => {
                self.snapshot_filter = filter.filter(|f| f.filter_until() > lsn);
                (self.replication(&slot, lsn).await?, lsn)
            }
            Start::ResumeSnapshot { lsn, state } => {
                // A temporary slot exports a snapshot at an exactly known position for the rest.
                let temp = format!("{slot}_resume_{}", std::process::id());
                let mut gate =
                    ReplicationClient::connect_gated(self.replication_config(&temp, 0)?).await?;
                let (phase_lsn, snapshot_name) = create_slot(&mut gate, &temp, true, true).await?;
                let snapshot_name =
                    snapshot_name.ok_or_else(|| PgError::Setup("no snapshot exported".into()))?;
                let state = self
                    .read_snapshot(&slot, &snapshot_name, phase_lsn, state)
                    .await?;
                drop(gate); // the temporary slot goes with its session
                if self.ctx.config.snapshot == SnapshotMode::InitialOnly {
                    return self.finish_initial_only();
                }
                self.snapshot_filter = (state.filter_until() > 0).then_some(state);
                (self.replication(&slot, lsn).await?, lsn)
            }
            Start::NewSlot { snapshot } => {
                let mut repl =
                    ReplicationClient::connect_gated(self.replication_config(&slot, 0)?).await?;
                let (consistent_point, snapshot_name) =
                    create_slot(&mut repl, &slot, snapshot, false).await?;
                match snapshot_name {
                    Some(name) => {
                        tracing::info!(source = %self.name, slot, "taking the initial snapshot");
                        let state = self
                            .read_snapshot(&slot, &name, consistent_point, SnapshotState::default())
                            .await?;
                        // One phase read everything at the consistent point: nothing to filter.
                        self.snapshot_filter = (state.filter_until() > 0).then_some(state);
                    }
                    None => {
                        self.flush(Some(self.position(&slot, consistent_point)))
                            .await?
                    }
                }
                if self.ctx.config.snapshot == SnapshotMode::InitialOnly {
                    return self.finish_initial_only();
                }
                repl.start().await?;
                (repl, consistent_point)
            }
        };
        repl.wait_started().await?;
        self.ctx.status.source(&self.name, |s| {
            s.state = crate::status::SourceState::Streaming
        });
        tracing::info!(source = %self.name, slot, lsn = %crate::event::format_lsn(start_lsn), "streaming");
        let result = self.stream(&mut repl, &slot, start_lsn).await;
        repl.stop();
        result
    }

    async fn decide_start(&mut self, slot: &str) -> Result<Start, PgError> {
        let slot_state = catalog::slot_confirmed_lsn(&self.client, slot).await?;
        let committed = match &self.ctx.committed {
            Some(ResumePosition::Postgres {
                lsn,
                slot: s,
                snapshot,
            }) if s == slot => Some((*lsn, snapshot.clone())),
            _ => None,
        };
        let lake_lsn = committed.as_ref().map(|(lsn, _)| *lsn);
        if let (Some(lake_lsn), Some(Some(slot_lsn))) = (lake_lsn, slot_state)
            && slot_lsn > lake_lsn
        {
            // Only this pipeline's commits move the slot, and never past the lake: someone else
            // did, or the lake was restored from an older backup. Streaming would skip the gap.
            return Err(PgError::LakeBehindSlot {
                slot: slot.to_string(),
                source_name: self.name.to_string(),
                lake_lsn: crate::event::format_lsn(lake_lsn),
                slot_lsn: crate::event::format_lsn(slot_lsn),
            });
        }
        Ok(match (committed, slot_state) {
            (Some((lsn, Some(state))), Some(_)) if !state.complete => {
                Start::ResumeSnapshot { lsn, state }
            }
            (Some((lsn, filter)), Some(_)) => Start::Resume { lsn, filter },
            (Some(_), None) => {
                return Err(PgError::SlotLost {
                    slot: slot.to_string(),
                    source_name: self.name.to_string(),
                });
            }
            (None, existing) => {
                let claims = PositionClaims::open(&self.ctx.lake_path).map_err(PgError::Lake)?;
                let ours = claims
                    .made(&self.name, SLOT_CLAIM, slot)
                    .map_err(PgError::Lake)?;
                if existing.is_some() {
                    if !ours {
                        return Err(PgError::SlotNotOurs {
                            slot: slot.to_string(),
                            source_name: self.name.to_string(),
                            lake: claims.location(),
                        });
                    }
                    // Our slot without a committed position: an earlier start died before its
                    // first commit. Its exported snapshot is gone, so the only consistent start
                    // is a new slot and a new snapshot.
                    tracing::warn!(source = %self.name, slot, "this lake's slot exists but nothing was committed: recreating it");
                    catalog::drop_slot(&self.client, slot).await?;
                }
                // Claimed before it exists, so that a crash right after creating it leaves a
                // slot this lake can prove is its own.
                let claim = PositionClaim {
                    kind: SLOT_CLAIM.into(),
                    name: slot.to_string(),
                    created_at_ms: crate::event::now_us() / 1000,
                };
                claims.record(&self.name, &claim).map_err(PgError::Lake)?;
                Start::NewSlot {
                    snapshot: self.ctx.config.snapshot != SnapshotMode::Never,
                }
            }
        })
    }

    /// The position to resume streaming at `lsn`, with the phase filter while it still applies.
    fn position(&self, slot: &str, lsn: u64) -> ResumePosition {
        let snapshot = self
            .snapshot_filter
            .clone()
            .filter(|s| lsn < s.filter_until());
        ResumePosition::Postgres {
            lsn,
            slot: slot.to_string(),
            snapshot,
        }
    }

    fn replication_config(&self, slot: &str, start_lsn: u64) -> Result<ReplicationConfig, PgError> {
        replication_config(
            &self.ctx.config,
            slot,
            &self.ctx.config.publication_name(),
            start_lsn,
        )
    }

    async fn replication(&self, slot: &str, lsn: u64) -> Result<ReplicationClient, PgError> {
        let cfg = self
            .replication_config(slot, lsn)?
            .with_ack_lsn(Lsn::from_u64(lsn));
        Ok(ReplicationClient::connect(cfg).await?)
    }

    /// `snapshot: initial_only`: the snapshot is handed over with its final position; the
    /// source ends, and the pipeline stops once the sink has committed it.
    fn finish_initial_only(&mut self) -> Result<(), PgError> {
        tracing::info!(source = %self.name, "initial snapshot handed over; not streaming (snapshot: initial_only)");
        Ok(())
    }

    async fn stream(
        &mut self,
        repl: &mut ReplicationClient,
        slot: &str,
        start_lsn: u64,
    ) -> Result<(), PgError> {
        let name = self.name.clone();
        let control = stream::Control {
            name: &name,
            shutdown: self.ctx.shutdown.clone(),
            acks: self.ctx.acks.clone(),
            heartbeat: Some(self.ctx.config.heartbeat.0),
        };
        let mut log = PgLog {
            source: self,
            repl,
            slot,
            tx: TxState::default(),
            resume: start_lsn,
            at_commit: false,
        };
        stream::run(&mut log, control).await
    }

    async fn handle_message(
        &mut self,
        msg: Message,
        tx: &mut TxState,
        lsn: u64,
    ) -> Result<(), PgError> {
        let (relation, op, before, after) = match msg {
            Message::Relation(rel) => return self.on_relation(rel).await,
            Message::Insert { relation, new } => (relation, Op::Create, None, Some(new)),
            Message::Update { relation, old, new } => (relation, Op::Update, old, Some(new)),
            Message::Delete { relation, old } => (relation, Op::Delete, Some(old), None),
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    if let Some(schema) = self.schemas.get(&relation).cloned() {
                        self.push_change(tx, schema, Op::Truncate, (None, false), None, lsn);
                    }
                }
                return Ok(());
            }
            Message::Other(_) => return Ok(()),
        };
        let Some(schema) = self.schemas.get(&relation).cloned() else {
            return Ok(()); // a table published by someone else, not configured here
        };
        let before_row = match &before {
            Some((_, old)) => Some(tuple_row(&schema, old, None)?),
            None => None,
        };
        // 'K': the old key only (REPLICA IDENTITY DEFAULT/INDEX); 'O': the whole old row.
        let partial_before = matches!(&before, Some((pgoutput::OldKind::Key, _)));
        let after_row = match &after {
            Some(new) => Some(tuple_row(&schema, new, before_row.as_ref())?),
            None => None,
        };
        if let Some(filter) = &self.snapshot_filter {
            let key = after_row
                .as_ref()
                .or(before_row.as_ref())
                .and_then(|r| snapshot::int_key(&schema, r));
            let table = format!("{}.{}", schema.id.namespace, schema.id.table);
            if filter.already_read(&table, key, tx.commit_lsn) {
                return Ok(()); // the resumed snapshot read this key after this change
            }
        }
        self.push_change(tx, schema, op, (before_row, partial_before), after_row, lsn);
        Ok(())
    }

    fn push_change(
        &mut self,
        tx: &mut TxState,
        table: Arc<TableSchema>,
        op: Op,
        (before, partial_before): (Option<Row>, bool),
        after: Option<Row>,
        lsn: u64,
    ) {
        let event = ChangeEvent {
            table,
            op,
            before,
            after,
            partial_before,
            seq: Seq::new(tx.commit_lsn, 0),
            commit_ts_us: tx.commit_ts_us,
            pos: ChangeOrigin::PgLsn {
                lsn,
                commit_lsn: tx.commit_lsn,
            },
            tx_id: Some(tx.xid),
            snapshot: false,
        };
        self.batch.push_change(event, &mut tx.index);
    }

    /// A Relation message: the table's shape as the stream knows it, sent before the first change
    /// of a table in a session and again after its columns changed. Columns are listed as the
    /// stream has them and typed from the catalog by name (the catalog knows domains, arrays,
    /// keys and nullability); a changed shape is a new schema version, which starts new files.
    /// A table that is not captured yet but matches the configured names (a table created under
    /// a glob, published schema-wide) is captured from here on: all its rows are in the stream.
    async fn on_relation(&mut self, rel: pgoutput::Relation) -> Result<(), PgError> {
        let table = match self.tables.iter().find(|t| t.relid == rel.id) {
            Some(t) => t.clone(),
            None if self.matches_config(&rel.namespace, &rel.name) => {
                let t = PgTable {
                    relid: rel.id,
                    schema: rel.namespace.clone(),
                    name: rel.name.clone(),
                    replica_identity: rel.replica_identity as char,
                    has_primary_key: rel.columns.iter().any(|c| c.key),
                };
                tracing::info!(source = %self.name, table = %t.display(), "new table matches the configured names: capturing it");
                self.tables.push(t.clone());
                t
            }
            None => return Ok(()),
        };
        let current = self.schemas.get(&rel.id).cloned();
        let version = current.as_ref().map_or(0, |s| s.version);
        let (catalog, oids) =
            catalog::table_schema(&self.client, &self.name, &self.db, &table, version).await?;
        let columns = rel
            .columns
            .iter()
            .map(|rc| {
                let known = catalog
                    .columns
                    .iter()
                    .zip(&oids)
                    .find(|(c, oid)| c.name == rc.name && **oid == rc.type_oid);
                match known {
                    Some((c, _)) => c.clone(),
                    // The catalog moved on already (dropped, retyped again): the stream's view.
                    None => crate::event::Column {
                        name: rc.name.clone(),
                        ty: catalog::map_type(
                            rc.type_oid,
                            rc.type_modifier,
                            &format!("oid {}", rc.type_oid),
                        ),
                        nullable: true,
                        key: rc.key,
                        source_type: format!("oid {}", rc.type_oid),
                    },
                }
            })
            .collect();
        let mut schema = catalog;
        schema.columns = columns;
        if current.as_ref().is_some_and(|cur| cur.same_shape(&schema)) {
            return Ok(());
        }
        schema.version = version + 1;
        if current.is_some() {
            tracing::info!(source = %self.name, table = %table.display(), version = schema.version, "table schema changed");
        }
        self.schemas.insert(rel.id, Arc::new(schema));
        Ok(())
    }

    /// Write a heartbeat into the WAL (so the stream reaches a new commit and the slot advances
    /// even when nothing captured changes), report the slot's lag in bytes, and stop with the
    /// cause if the server invalidated the slot.
    async fn slot_health(&self, slot: &str) -> Result<(), PgError> {
        self.client
            .execute(
                "SELECT pg_logical_emit_message(true, 'sluice_heartbeat', '')",
                &[],
            )
            .await
            .map_err(PgError::query("writing a heartbeat"))?;
        let row = self
            .client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8, wal_status
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(PgError::query("reading the slot's state"))?;
        let Some(row) = row else {
            return Err(PgError::SlotLost {
                slot: slot.to_string(),
                source_name: self.name.to_string(),
            });
        };
        if row.get::<_, Option<String>>(1).as_deref() == Some("lost") {
            return Err(PgError::SlotLost {
                slot: slot.to_string(),
                source_name: self.name.to_string(),
            });
        }
        if let Some(bytes) = row.get::<_, Option<f64>>(0) {
            metrics::gauge!(m::SOURCE_LAG_BYTES, "source" => self.name.to_string())
                .set(bytes.max(0.0));
        }
        Ok(())
    }

    fn matches_config(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.ctx
            .config
            .tables
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(&name)))
    }

    /// Hand the current batch downstream (waiting while the pipeline is full: backpressure).
    async fn flush(&mut self, resume: Option<ResumePosition>) -> Result<(), PgError> {
        let events = self.batch.take();
        count_events(&self.name, &events);
        let batch = SourceBatch::raw(self.name.clone(), events, resume);
        self.ctx
            .out
            .send(batch)
            .await
            .map_err(|_| PgError::Downstream)
    }
}

#[derive(Default)]
struct TxState {
    commit_lsn: u64,
    xid: u64,
    commit_ts_us: i64,
    /// Position of the next change within the transaction: the minor part of the sequence.
    index: u64,
}

/// One COPY text line → a row.
fn copy_row(
    schema: &TableSchema,
    line: &[u8],
    fields: &mut Vec<Option<Vec<u8>>>,
) -> Result<Row, PgError> {
    text::split_copy_line(line, fields)
        .map_err(|e| PgError::Setup(format!("COPY output of {}: {e}", schema.stream)))?;
    if fields.len() != schema.columns.len() {
        return Err(PgError::Setup(format!(
            "COPY output of {} has {} fields, expected {}",
            schema.stream,
            fields.len(),
            schema.columns.len()
        )));
    }
    schema
        .columns
        .iter()
        .zip(fields.iter())
        .map(|(col, f)| match f {
            None => Ok(Value::Null),
            Some(raw) => parse_value(schema, col, raw),
        })
        .collect()
}

fn parse_value(
    schema: &TableSchema,
    col: &crate::event::Column,
    raw: &[u8],
) -> Result<Value, PgError> {
    text::parse_text(&col.ty, raw).map_err(|source| PgError::Value {
        table: schema.stream.clone(),
        column: col.name.clone(),
        source,
    })
}

/// A pgoutput tuple → a row. `previous` fills unchanged TOAST values from the old image when the
/// server sent one (REPLICA IDENTITY FULL). In a key-only old tuple (REPLICA IDENTITY DEFAULT)
/// the non-key columns arrive as nulls.
fn tuple_row(
    schema: &TableSchema,
    tuple: &[TupleValue],
    previous: Option<&Row>,
) -> Result<Row, PgError> {
    if tuple.len() != schema.columns.len() {
        return Err(PgError::Setup(format!(
            "a change of {} has {} columns but the table has {}: schema changed without a Relation message",
            schema.stream,
            tuple.len(),
            schema.columns.len()
        )));
    }
    let mut row = Vec::with_capacity(tuple.len());
    for (i, (col, tv)) in schema.columns.iter().zip(tuple).enumerate() {
        row.push(match tv {
            TupleValue::Null => Value::Null,
            TupleValue::Text(b) => parse_value(schema, col, b)?,
            TupleValue::Binary(_) => {
                return Err(PgError::Setup("binary pgoutput values were not requested".into()));
            }
            TupleValue::UnchangedToast => match previous.and_then(|p| p.get(i)) {
                Some(v) if *v != Value::Null => v.clone(),
                _ => {
                    metrics::counter!(m::SOURCE_UNCHANGED_TOAST, "table" => schema.stream.clone()).increment(1);
                    tracing::warn!(table = %schema.stream, column = %col.name,
                        "unchanged TOAST value not sent by the server; written as null. Fix: ALTER TABLE … REPLICA IDENTITY FULL");
                    Value::Null
                }
            },
        });
    }
    Ok(row)
}

/// A normal SQL connection with the session settings the text parsers rely on, over TLS when
/// configured.
pub(crate) async fn connect_sql(source: &SourceConfig) -> Result<(Client, String), PgError> {
    let (mode, url) = tls::resolve(&source.url, &source.tls)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| PgError::Setup(format!("source url is not a Postgres URL: {e}")))?;
    config.options(SESSION_OPTIONS).application_name("sluice");
    if let Some(password) = read_password_file(source)? {
        config.password(password);
    }
    let db = config
        .get_dbname()
        .map(str::to_string)
        .or_else(|| config.get_user().map(str::to_string))
        .unwrap_or_default();
    let client = match tls::client_config(mode, &source.tls)? {
        None => {
            let (client, connection) = config.connect(NoTls).await.map_err(PgError::Connect)?;
            spawn_connection(connection);
            client
        }
        Some(tls_config) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
            let (client, connection) = config.connect(connector).await.map_err(PgError::Connect)?;
            spawn_connection(connection);
            client
        }
    };
    Ok((client, db))
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
}

fn read_password_file(source: &SourceConfig) -> Result<Option<String>, PgError> {
    let Some(path) = &source.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| PgError::Setup(format!("password_file {}: {e}", path.display())))?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

fn replication_config(
    source: &SourceConfig,
    slot: &str,
    publication: &str,
    start_lsn: u64,
) -> Result<ReplicationConfig, PgError> {
    let (mode, url) = tls::resolve(&source.url, &source.tls)?;
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| PgError::Setup(format!("source url is not a Postgres URL: {e}")))?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let password = match read_password_file(source)? {
        Some(p) => p,
        None => config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
    };
    let user = config.get_user().unwrap_or("postgres").to_string();
    let db = config.get_dbname().unwrap_or(&user).to_string();
    Ok(
        ReplicationConfig::new(host.clone(), user, password, db, slot, publication)
            .with_port(port)
            .with_tls(tls::replication_tls(mode, &source.tls, &host))
            .with_start_lsn(Lsn::from_u64(start_lsn))
            .with_options(SESSION_OPTIONS)
            .with_status_interval(Duration::from_secs(1))
            .with_buffer_size(Batcher::MAX_EVENTS * 2),
    )
}

/// `CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT` on the gated replication session: returns the
/// consistent point and, when asked for, the exported snapshot's name (valid while the session
/// runs no other command).
async fn create_slot(
    repl: &mut ReplicationClient,
    slot: &str,
    export: bool,
    temporary: bool,
) -> Result<(u64, Option<String>), PgError> {
    let mode = if export {
        "EXPORT_SNAPSHOT"
    } else {
        "NOEXPORT_SNAPSHOT"
    };
    let temporary = if temporary { "TEMPORARY " } else { "" };
    let rows = repl
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} {temporary}LOGICAL pgoutput {mode}",
            catalog::quote_ident(slot)
        ))
        .await
        .map_err(|e| {
            // A killed start's walsender can still be creating the slot after decide_start
            // looked (waiting for running transactions to finish): try again from the top,
            // which drops that uncommitted slot.
            if error::is_server_error(&e, DUPLICATE_OBJECT) {
                PgError::SlotRaced {
                    slot: slot.to_string(),
                }
            } else {
                PgError::Replication(e)
            }
        })?;
    let row = rows
        .first()
        .ok_or_else(|| PgError::Setup("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let text = |i: usize| {
        row.get(i)
            .and_then(|v| v.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let consistent_point = text(1)
        .as_deref()
        .and_then(catalog::parse_lsn)
        .ok_or_else(|| {
            PgError::Setup("CREATE_REPLICATION_SLOT returned no consistent point".into())
        })?;
    Ok((consistent_point, if export { text(2) } else { None }))
}

impl crate::source::Source for PostgresSource {
    type Error = PgError;

    async fn connect(ctx: SourceContext) -> Result<Self, PgError> {
        PostgresSource::connect(ctx).await
    }

    async fn run(self) -> Result<(), PgError> {
        PostgresSource::run(self).await
    }

    async fn check(
        config: &SourceConfig,
    ) -> (Vec<crate::finding::Finding>, Vec<crate::event::TableSchema>) {
        check::check(config).await
    }
}

/// The replication stream as the shared loop (`source::stream`) drives it.
struct PgLog<'a> {
    source: &'a mut PostgresSource,
    repl: &'a mut ReplicationClient,
    slot: &'a str,
    /// The transaction being read.
    tx: TxState,
    /// The end of the last whole transaction: where a restart resumes.
    resume: u64,
    /// The last message was a transaction's commit: a batch can go as it is.
    at_commit: bool,
}

impl stream::LogStream for PgLog<'_> {
    type Item = ReplicationEvent;
    type Error = PgError;

    async fn next(&mut self) -> Option<Result<ReplicationEvent, PgError>> {
        self.repl.recv().await.map_err(PgError::from).transpose()
    }

    async fn take(&mut self, event: ReplicationEvent) -> Result<stream::Flow, PgError> {
        self.at_commit = matches!(event, ReplicationEvent::Commit { .. });
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                self.tx = TxState {
                    commit_lsn: final_lsn.as_u64(),
                    xid: xid as u64,
                    commit_ts_us: commit_time_micros + PG_EPOCH_OFFSET_US,
                    index: 0,
                };
            }
            ReplicationEvent::XLogData {
                wal_start, data, ..
            } => {
                let message = pgoutput::decode(data)?;
                self.source
                    .handle_message(message, &mut self.tx, wal_start.as_u64())
                    .await?;
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.resume = end_lsn.as_u64();
                let source = &mut *self.source;
                if source
                    .snapshot_filter
                    .as_ref()
                    .is_some_and(|f| self.resume >= f.filter_until())
                {
                    source.snapshot_filter = None;
                }
                let lag = (now_us() - (commit_time_micros + PG_EPOCH_OFFSET_US)) as f64 / 1e6;
                metrics::gauge!(m::SOURCE_LAG_SECONDS, "source" => source.name.to_string())
                    .set(lag.max(0.0));
                source
                    .ctx
                    .status
                    .source(&source.name, |s| s.lag_seconds = Some(lag.max(0.0)));
                // Nothing of ours in this transaction, maybe; the position still moves.
                source.batch.start();
            }
            ReplicationEvent::KeepAlive { .. } | ReplicationEvent::Message { .. } => {}
            ReplicationEvent::StoppedAt { .. } => return Ok(stream::Flow::Stop),
        }
        Ok(stream::Flow::Continue)
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        let position = self.source.position(self.slot, self.resume);
        self.source.flush(Some(position)).await
    }

    fn committed(&mut self, position: &ResumePosition) {
        if let ResumePosition::Postgres { lsn, .. } = position {
            self.repl.update_applied_lsn(Lsn::from_u64(*lsn));
            metrics::gauge!(m::SOURCE_COMMITTED_POSITION, "source" => self.source.name.to_string())
                .set(*lsn as f64);
        }
    }

    async fn check_health(&mut self) -> Result<(), PgError> {
        self.source.slot_health(self.slot).await
    }

    fn batch(&self) -> &Batcher {
        &self.source.batch
    }

    fn whole(&self) -> bool {
        self.at_commit && !self.source.batch.is_empty()
    }

    fn ended(&self) -> PgError {
        PgError::Setup("the replication stream ended".into())
    }

    fn downstream_gone(&self) -> PgError {
        PgError::Downstream
    }
}
