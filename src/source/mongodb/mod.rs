//! The MongoDB source: a snapshot read in `_id` chunks, then change streams.
//!
//! ```text
//!   Setup ──(nothing committed)──▶ Snapshot ──▶ Streaming
//!     ├──(snapshot unfinished)───▶ Snapshot (the rest) ──▶ Streaming
//!     └──(position committed)──────────────────────────▲
//! ```
//!
//! * **Setup** connects, checks the server is a replica set or sharded cluster (change
//!   streams need one) and resolves the configured `db.collection` names.
//! * **Snapshot** takes the cluster time T0, then reads each collection in `_id` order, a chunk
//!   at a time, each chunk made exactly the state at a cluster time L with the changes read
//!   while it was read (snapshot.rs, window.rs). Streaming then starts at T0; a change to a
//!   document at or before its chunk's L is dropped for that document, so the hand-over has no
//!   gap and no duplicate.
//! * **Streaming** watches the deployment's change stream (stream.rs), resumes after the last
//!   committed resume token, and turns events into changes of typed rows (documents.rs).
//!
//! Sequences: the event's cluster time, then its index among events of that cluster time (a
//! transaction's events share one); snapshot rows use T0 minus one.

pub(crate) mod check;
pub mod documents;
pub(crate) mod error;
pub mod snapshot;
pub mod stream;
pub(crate) mod window;

use std::collections::HashMap;
use std::sync::Arc;

use mongodb::Client;
use mongodb::bson::{Bson, Document, Timestamp, doc};

use crate::config::{SnapshotMode, SourceConfig, TlsMode};
use crate::contract::batch::{Batcher, SourceBatch};
use crate::contract::position::mongodb::MongoSnapshot;
use crate::contract::position::{MongoPosition, ResumePosition};
use crate::event::{Row, SourceInfo, TableId, TableSchema};
use crate::lake::schema_history::HistoryStore;
use crate::source::SourceContext;
use documents::{CollectionSchema, Schemas};
pub(crate) use error::MongoError;
use snapshot::SnapshotFilter;

/// Where streaming resumes: after a token, or at a cluster time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamFrom {
    Token(String),
    Time(u64),
}

pub(crate) fn cluster_time(t: Timestamp) -> u64 {
    ((t.time as u64) << 32) | t.increment as u64
}

/// A cluster time as MongoDB shows it, `seconds:increment`.
pub(crate) fn render_time(ct: u64) -> String {
    format!("{}:{}", ct >> 32, ct as u32)
}

pub(crate) fn timestamp(ct: u64) -> Timestamp {
    Timestamp {
        time: (ct >> 32) as u32,
        increment: ct as u32,
    }
}

pub(crate) struct MongoSource {
    ctx: SourceContext,
    name: Arc<str>,
    client: Client,
    patterns: Vec<glob::Pattern>,
    /// The captured collections found at setup, `db.collection`.
    collections: Vec<String>,
    schemas: Schemas,
    tables: HashMap<String, Arc<TableSchema>>,
    next_version: u32,
    history: HistoryStore,
    /// Id of the saved schemas; None after they changed.
    history_id: Option<String>,
    batch: Batcher,
    snapshot_taken_at: Option<i64>,
    /// Streamed changes the snapshot already holds are dropped until the stream passes the last
    /// chunk's cluster time.
    snapshot_filter: Option<(MongoSnapshot, SnapshotFilter)>,
    /// The last event was an invalidate: the next stream starts after its token.
    invalidated: bool,
}

/// Databases sluice never captures.
const SYSTEM_DBS: [&str; 3] = ["admin", "local", "config"];

impl MongoSource {
    /// Setup: connect, check the deployment, resolve the collections.
    pub(crate) async fn connect(ctx: SourceContext) -> Result<MongoSource, MongoError> {
        let client = connect_client(&ctx.config).await?;
        if let Some(problem) = check::deployment_problem(&client).await? {
            return Err(MongoError::Setup(format!(
                "prerequisites not met: {}; fix: {}",
                problem.problem, problem.fix
            )));
        }
        let patterns = table_patterns(&ctx.config)?;
        let collections = resolve_collections(&client, &patterns).await?;
        let history =
            HistoryStore::open(&ctx.lake_path, &ctx.config.name).map_err(MongoError::History)?;
        let name: Arc<str> = Arc::from(ctx.config.name.as_str());
        tracing::info!(source = %name, collections = collections.len(), "connected");
        Ok(MongoSource {
            ctx,
            name,
            client,
            patterns,
            collections,
            schemas: Schemas::new(),
            tables: HashMap::new(),
            next_version: 1,
            history,
            history_id: None,
            batch: Batcher::default(),
            snapshot_taken_at: None,
            snapshot_filter: None,
            invalidated: false,
        })
    }

    /// Run until shutdown (Ok) or an error.
    pub(crate) async fn run(mut self) -> Result<(), MongoError> {
        let committed = match &self.ctx.committed {
            Some(ResumePosition::Mongo(p)) => Some(p.clone()),
            _ => None,
        };
        let from = match committed {
            None => {
                let mut t0 = self.cluster_time_now().await?;
                if self.ctx.config.snapshot == SnapshotMode::Never {
                    let position = self.position(&StreamFrom::Time(t0), t0)?;
                    self.send(Some(position)).await?;
                } else {
                    tracing::info!(source = %self.name, "taking the initial snapshot");
                    // Streaming starts a margin early: a write that took its cluster time just
                    // before may still be committing, invisible to the snapshot's reads.
                    t0 = t0.saturating_sub(snapshot::WINDOW_MARGIN);
                    let state = MongoSnapshot::default();
                    let state = self.read_snapshot(t0, state).await?;
                    self.set_snapshot_filter(Some(state))?;
                    if self.ctx.config.snapshot == SnapshotMode::InitialOnly {
                        tracing::info!(source = %self.name, "initial snapshot handed over; not streaming (snapshot: initial_only)");
                        return Ok(());
                    }
                }
                StreamFrom::Time(t0)
            }
            Some(p) => {
                self.load_history(&p.schemas)?;
                match p.snapshot {
                    Some(state) if !state.complete => {
                        let state = self.read_snapshot(p.start_at, state).await?;
                        self.set_snapshot_filter(Some(state))?;
                        if self.ctx.config.snapshot == SnapshotMode::InitialOnly {
                            return Ok(());
                        }
                        StreamFrom::Time(p.start_at)
                    }
                    snapshot => {
                        self.set_snapshot_filter(snapshot)?;
                        match p.token {
                            Some(t) => StreamFrom::Token(t),
                            None => StreamFrom::Time(p.start_at),
                        }
                    }
                }
            }
        };
        self.stream(from).await
    }

    /// The deployment's current cluster time (a `ping`'s operationTime).
    async fn cluster_time_now(&self) -> Result<u64, MongoError> {
        let reply = self
            .client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(MongoError::driver("reading the cluster time"))?;
        match reply.get("operationTime") {
            Some(Bson::Timestamp(t)) => Ok(cluster_time(*t)),
            _ => Err(MongoError::Setup(
                "the server reports no operationTime: change streams need a replica set or a sharded cluster".into(),
            )),
        }
    }

    fn load_history(&mut self, id: &str) -> Result<(), MongoError> {
        let schemas: Schemas =
            tokio::task::block_in_place(|| self.history.load(id)).map_err(MongoError::History)?;
        self.schemas = schemas;
        self.tables.clear();
        self.history_id = Some(id.to_string());
        Ok(())
    }

    pub(crate) fn captured(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }

    /// The table schema of `name`, widened for `doc` when given (a changed schema is a new
    /// version, which starts new files, and a new history to save).
    fn table(&mut self, name: &str, doc: Option<&Document>) -> Arc<TableSchema> {
        let schema = self.schemas.entry(name.to_string()).or_default();
        let changed = doc.is_some_and(|d| schema.observe(d));
        if changed {
            self.history_id = None;
        }
        if let (false, Some(t)) = (changed, self.tables.get(name)) {
            return t.clone();
        }
        let table = Arc::new(table_schema(&self.name, name, schema, self.next_version));
        self.next_version += 1;
        if changed && self.tables.contains_key(name) {
            tracing::info!(source = %self.name, collection = %name, version = table.version, "inferred schema widened");
        }
        self.tables.insert(name.to_string(), table.clone());
        table
    }

    /// `doc` as a row of the schema `table` made for `name`.
    fn row(&self, name: &str, doc: &Document) -> Row {
        self.schemas
            .get(name)
            .map(|s| s.row(doc))
            .unwrap_or_default()
    }

    fn set_snapshot_filter(&mut self, state: Option<MongoSnapshot>) -> Result<(), MongoError> {
        self.snapshot_filter = match state.filter(|s| s.filter_until() > 0) {
            Some(s) => {
                let filter = SnapshotFilter::new(&s)?;
                Some((s, filter))
            }
            None => None,
        };
        Ok(())
    }

    /// `<source>.<db>.<collection>`.
    fn stream_name(&self, name: &str) -> String {
        format!("{}.{name}", self.name)
    }

    /// The position for `from`, covering cluster time `time`, with the schemas (saved first if
    /// they changed) and the snapshot while its filter still applies after `time`.
    fn position(&mut self, from: &StreamFrom, time: u64) -> Result<ResumePosition, MongoError> {
        let id = match &self.history_id {
            Some(id) => id.clone(),
            None => {
                let id = tokio::task::block_in_place(|| self.history.save(&self.schemas))
                    .map_err(MongoError::History)?;
                self.history_id = Some(id.clone());
                id
            }
        };
        let (token, start_at) = match from {
            StreamFrom::Token(t) => (Some(t.clone()), 0),
            StreamFrom::Time(t) => (None, *t),
        };
        let snapshot = self
            .snapshot_filter
            .as_ref()
            .filter(|(s, _)| time <= s.filter_until())
            .map(|(s, _)| s.clone());
        Ok(ResumePosition::Mongo(MongoPosition {
            token,
            start_at,
            time,
            schemas: id,
            snapshot,
        }))
    }

    async fn send(&mut self, resume: Option<ResumePosition>) -> Result<(), MongoError> {
        let events = self.batch.take();
        crate::source::count_events(&self.name, &events);
        self.ctx
            .out
            .send(SourceBatch::raw(self.name.clone(), events, resume))
            .await
            .map_err(|_| MongoError::Downstream)
    }
}

/// The table schema of collection `name` (`db.collection`) of source `source`.
pub(crate) fn table_schema(
    source: &str,
    name: &str,
    schema: &CollectionSchema,
    version: u32,
) -> TableSchema {
    let (db, coll) = name.split_once('.').unwrap_or(("", name));
    TableSchema::new(
        TableId {
            source: source.to_string(),
            namespace: db.to_string(),
            table: coll.to_string(),
        },
        schema.columns(),
        version,
        SourceInfo {
            connector: "mongodb",
            db: db.to_string(),
            documents: true,
        },
    )
}

/// A client for the source's URL, with the TLS settings of the source file.
pub(crate) async fn connect_client(config: &SourceConfig) -> Result<Client, MongoError> {
    use mongodb::options::{ClientOptions, Tls, TlsOptions};
    let mut options = ClientOptions::parse(&config.url)
        .await
        .map_err(MongoError::driver("parsing the source url"))?;
    options.app_name = Some("sluice".into());
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MongoError::Setup(format!("password_file {}: {e}", path.display())))?;
        if let Some(cred) = options.credential.as_mut() {
            cred.password = Some(text.trim_end_matches(['\n', '\r']).to_string());
        }
    }
    match config.tls.mode {
        None => {}
        Some(TlsMode::Disable) => options.tls = Some(Tls::Disabled),
        Some(mode) => {
            let mut tls = TlsOptions::default();
            tls.ca_file_path = config.tls.ca_file.clone();
            // require: encrypt, trust any certificate. verify-ca checks the name too: the
            // driver's rustls TLS cannot trust a CA's certificate for any name.
            tls.allow_invalid_certificates = Some(mode == TlsMode::Require);
            options.tls = Some(Tls::Enabled(tls));
        }
    }
    Client::with_options(options).map_err(MongoError::driver("creating the client"))
}

/// `db.collection` glob patterns of the configured tables.
pub(crate) fn table_patterns(config: &SourceConfig) -> Result<Vec<glob::Pattern>, MongoError> {
    config
        .tables
        .iter()
        .map(|t| {
            glob::Pattern::new(t).map_err(|e| {
                MongoError::Setup(format!("tables: `{t}` is not a valid pattern: {e}"))
            })
        })
        .collect()
}

/// Every `db.collection` the patterns match, sorted.
pub(crate) async fn resolve_collections(
    client: &Client,
    patterns: &[glob::Pattern],
) -> Result<Vec<String>, MongoError> {
    let mut out = Vec::new();
    let dbs = client
        .list_database_names()
        .await
        .map_err(MongoError::driver("listing databases"))?;
    for db in dbs.iter().filter(|d| !SYSTEM_DBS.contains(&d.as_str())) {
        let names = client
            .database(db)
            .list_collection_names()
            .await
            .map_err(MongoError::driver("listing collections"))?;
        for coll in names.into_iter().filter(|c| !c.starts_with("system.")) {
            let name = format!("{db}.{coll}");
            if patterns.iter().any(|p| p.matches(&name)) {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

impl crate::source::Source for MongoSource {
    type Error = MongoError;

    async fn connect(ctx: SourceContext) -> Result<Self, MongoError> {
        MongoSource::connect(ctx).await
    }

    async fn run(self) -> Result<(), MongoError> {
        MongoSource::run(self).await
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
    fn cluster_times_order_like_timestamps() {
        let a = cluster_time(Timestamp {
            time: 10,
            increment: 5,
        });
        let b = cluster_time(Timestamp {
            time: 11,
            increment: 0,
        });
        assert!(a < b);
        assert_eq!(
            timestamp(a),
            Timestamp {
                time: 10,
                increment: 5
            }
        );
    }
}
