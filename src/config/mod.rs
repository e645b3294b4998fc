//! Configuration files: `sluice.yaml` and the `sources/*.yaml` it points at.
//!
//! Every file is read as text, `${VAR}` / `${VAR:-default}` are interpolated (line numbers are kept),
//! then parsed with unknown keys refused. Errors carry the file, line and column and say what was
//! expected, so a user can fix the file without reading the code.

mod interpolate;
pub(crate) mod kafka;
mod units;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub(crate) use interpolate::interpolate_env;
pub(crate) use units::{ByteSize, HumanDuration};

/// A problem in one configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub(crate) file: PathBuf,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
    pub(crate) message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// All the problems found while loading: the loader keeps going after the first one so that a
/// user sees everything wrong in one pass.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// `sluice.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Names metrics and default topic prefixes.
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
    /// A folder (every `*.yaml` in it) or a list of files, relative to this file.
    #[serde(default = "default_sources")]
    pub(crate) sources: PathList,
    /// A folder (every `*.sql` in it) or a list of files, relative to this file.
    #[serde(default = "default_transforms")]
    pub(crate) transforms: PathList,
    #[serde(default)]
    pub log: LogConfig,
    pub sink: SinkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log levels, overall and by module, in tracing's filter syntax: `info`,
    /// `info,sluice::sink=debug`. The `SLUICE_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Capacity, in batches, of each in-process channel between stages. Small on purpose: the
    /// source database's log is the durable buffer, so sluice holds little in memory.
    #[serde(default = "default_channel_batches")]
    pub(crate) channel_batches: usize,
}

fn default_pipeline() -> String {
    "sluice".into()
}
fn default_sources() -> PathList {
    PathList::One("sources/".into())
}
fn default_transforms() -> PathList {
    PathList::One("transforms/".into())
}
fn default_log_level() -> String {
    "info".into()
}

fn default_channel_batches() -> usize {
    4
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum PathList {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub kind: LogKind,
    #[serde(default)]
    pub(crate) kafka: Option<kafka::KafkaConfig>,
}

impl LogConfig {
    /// `log.kafka`, with every default when it is absent.
    pub(crate) fn kafka_config(&self) -> kafka::KafkaConfig {
        self.kafka.clone().unwrap_or_else(|| {
            serde_yaml::from_str("{}").expect("every log.kafka key has a default")
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    #[default]
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `file:///abs/path` (or a plain path); later `hdfs://…` and `s3://…`.
    pub path: String,
    #[serde(default = "default_zones")]
    pub(crate) zones: Vec<Zone>,
    #[serde(default)]
    pub(crate) rotate: RotateConfig,
    /// How often the ODS zone (current state per stream) is merged from the change log, when
    /// `zones` includes `ods`. Fresher costs more merging.
    #[serde(default = "default_ods_interval")]
    pub(crate) ods_interval: HumanDuration,
    #[serde(default)]
    pub(crate) compaction: CompactConfig,
}

/// Small-file compaction of the change log: every `interval`, a partition with at least
/// `min_files` files smaller than `small_bytes` has them rewritten as one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompactConfig {
    #[serde(default = "default_compact_interval")]
    pub(crate) interval: HumanDuration,
    #[serde(default = "default_compact_min_files")]
    pub(crate) min_files: usize,
    #[serde(default = "default_compact_small_bytes")]
    pub(crate) small_bytes: ByteSize,
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            interval: default_compact_interval(),
            min_files: default_compact_min_files(),
            small_bytes: default_compact_small_bytes(),
        }
    }
}

fn default_compact_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_compact_min_files() -> usize {
    8
}
fn default_compact_small_bytes() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}

fn default_ods_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_zones() -> Vec<Zone> {
    vec![Zone::Raw]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    Raw,
    Cleansed,
    Ods,
    /// Dead letters: written whenever a transform (or Kafka mode's decoder) rejects a record,
    /// whatever `sink.zones` says.
    Dlq,
}

impl Zone {
    /// The zone's folder in the lake, and its name in `sink.zones`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Zone::Raw => "raw",
            Zone::Cleansed => "cleansed",
            Zone::Ods => "ods",
            Zone::Dlq => "dlq",
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When an open Parquet file is closed and committed: whichever limit comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateConfig {
    #[serde(default = "default_rotate_rows")]
    pub(crate) rows: u64,
    #[serde(default = "default_rotate_bytes")]
    pub(crate) bytes: ByteSize,
    #[serde(default = "default_rotate_interval")]
    pub(crate) interval: HumanDuration,
}

impl Default for RotateConfig {
    fn default() -> Self {
        Self {
            rows: default_rotate_rows(),
            bytes: default_rotate_bytes(),
            interval: default_rotate_interval(),
        }
    }
}

fn default_rotate_rows() -> u64 {
    1_000_000
}
fn default_rotate_bytes() -> ByteSize {
    ByteSize(128 * 1024 * 1024)
}
fn default_rotate_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and `/status`.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9187".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `sources/<name>.yaml`: one database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// First part of every stream name of this source.
    pub(crate) name: String,
    pub(crate) kind: SourceKind,
    pub url: String,
    /// `schema.table` names or globs (`public.*`).
    pub(crate) tables: Vec<String>,
    #[serde(default)]
    pub(crate) snapshot: SnapshotMode,
    /// Postgres: replication slot name (default `sluice_<name>`).
    #[serde(default)]
    pub(crate) slot: Option<String>,
    /// Postgres: publication name (default `sluice_<name>`).
    #[serde(default)]
    pub(crate) publication: Option<String>,
    /// How often the source shows it is alive: Postgres writes a heartbeat into the WAL
    /// (pg_logical_emit_message) so an idle or filtered database still advances the slot and
    /// frees WAL; MySQL/MariaDB asks the server for binlog heartbeats this often and checks that
    /// its binlog file is still there.
    #[serde(default = "default_heartbeat")]
    pub(crate) heartbeat: HumanDuration,
    /// Rows per snapshot chunk (tables with a single integer primary key are read in key order,
    /// a chunk per query, and a crash resumes after the last committed row).
    #[serde(default = "default_snapshot_chunk_rows")]
    pub(crate) snapshot_chunk_rows: u64,
    /// TLS to the database (Postgres): `{ mode: disable | require | verify-ca | verify-full,
    /// ca_file: /path/ca.pem }`. Without it, the URL's `sslmode` decides (default disable).
    #[serde(default)]
    pub(crate) tls: TlsConfig,
    /// A file holding the password (e.g. a mounted secret); overrides the URL's password.
    #[serde(default)]
    pub(crate) password_file: Option<PathBuf>,
    /// MySQL/MariaDB: the replica server id sluice registers with (default: derived from the
    /// source name, stable across restarts). It must differ from every server's and replica's.
    #[serde(default)]
    pub(crate) server_id: Option<u32>,
    /// MySQL/MariaDB: resume by GTID where the server has GTIDs (default, survives a failover to
    /// a replica with the same GTIDs) or by binlog file and offset.
    #[serde(default)]
    pub(crate) resume_by: ResumeBy,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    #[serde(default)]
    pub(crate) mode: Option<TlsMode>,
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TlsMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ResumeBy {
    #[default]
    Gtid,
    Position,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceKind {
    Postgres,
    Mysql,
    Mongodb,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SnapshotMode {
    /// Snapshot the tables once, then stream changes.
    #[default]
    Initial,
    /// Stream changes from the slot's creation on; existing rows are not read.
    Never,
    /// Snapshot, commit, and stop.
    InitialOnly,
}

impl SourceConfig {
    pub(crate) fn slot_name(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("sluice_{}", sanitize_identifier(&self.name)))
    }
    pub(crate) fn publication_name(&self) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("sluice_{}", sanitize_identifier(&self.name)))
    }
}

fn default_snapshot_chunk_rows() -> u64 {
    50_000
}

fn default_heartbeat() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Postgres slot names allow lower-case letters, digits and underscores only.
fn sanitize_identifier(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Everything the daemon runs: `sluice.yaml` plus the files it names.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `sluice.yaml` it was loaded from.
    pub file: PathBuf,
    pub daemon: DaemonConfig,
    pub sources: Vec<SourceConfig>,
    /// The cleansing transforms' files (`transforms:`), which `crate::transform::load` parses:
    /// this leaf knows nothing of SQL.
    pub(crate) transform_files: Vec<PathBuf>,
}

impl Config {
    /// Load and validate `sluice.yaml` and every file it points at, collecting every problem.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with(path, |_, _| {})
    }

    /// `load`, with `more` checking what the files name (the transforms) against the rest;
    /// every problem of both is reported at once. `more` runs whenever sluice.yaml parses.
    pub(crate) fn load_with(
        path: &Path,
        more: impl FnOnce(&Config, &mut Vec<ConfigProblem>),
    ) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let daemon: DaemonConfig = match parse_yaml_file(path) {
            Ok(d) => d,
            Err(p) => return Err(ConfigErrors(vec![p])),
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let source_files = expand_paths(path, &base, &daemon.sources, "yaml", &mut problems);
        let transform_files = expand_paths(path, &base, &daemon.transforms, "sql", &mut problems);

        let mut sources = Vec::new();
        for file in source_files {
            match parse_yaml_file::<SourceConfig>(&file) {
                Ok(mut s) => {
                    s.file = file;
                    validate_source(&s, &mut problems);
                    sources.push(s);
                }
                Err(p) => problems.push(p),
            }
        }
        let mut names = BTreeSet::new();
        for s in &sources {
            if !names.insert(s.name.clone()) {
                problems.push(problem(&s.file, format!(
                    "source name `{}` is used by another file too; every source needs its own name",
                    s.name
                )));
            }
        }
        if sources.is_empty() && problems.is_empty() {
            problems.push(problem(path, "no sources: add a file to the `sources` folder (see sources/ in the repository for examples)".into()));
        }
        validate_daemon(path, &daemon, &mut problems);
        if daemon.log.kind == LogKind::Kafka {
            for s in sources.iter().filter(|s| s.kind == SourceKind::Mongodb) {
                problems.push(problem(&s.file, "kind: mongodb sources do not run in Kafka mode yet (their raw records are documents the sink cannot type back); use log.kind: embedded for them".into()));
            }
        }
        let config = Config {
            file: path.to_path_buf(),
            daemon,
            sources,
            transform_files,
        };
        more(&config, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// A problem with a whole file (no line).
pub(crate) fn problem(file: &Path, message: String) -> ConfigProblem {
    ConfigProblem {
        file: file.to_path_buf(),
        line: None,
        column: None,
        message,
    }
}

fn validate_source(s: &SourceConfig, problems: &mut Vec<ConfigProblem>) {
    if s.name.is_empty() || s.name.contains('.') {
        problems.push(problem(&s.file, format!(
            "name `{}`: a source name must be non-empty and contain no `.` (it is the first part of stream names)",
            s.name
        )));
    }
    if s.tables.is_empty() {
        problems.push(problem(
            &s.file,
            "tables: list at least one table, e.g. [public.orders]".into(),
        ));
    }
    for t in &s.tables {
        let (parts, shape) = match s.kind {
            SourceKind::Postgres => (
                t.split('.').count(),
                "`schema.table` (globs allowed, e.g. public.*)",
            ),
            SourceKind::Mysql => (
                t.split('.').count(),
                "`database.table` (globs allowed, e.g. shop.*)",
            ),
            // A collection name may hold dots: the database is up to the first.
            SourceKind::Mongodb => (
                match t.split_once('.') {
                    Some((db, coll)) if !db.is_empty() && !coll.is_empty() => 2,
                    _ => 0,
                },
                "`database.collection` (globs allowed, e.g. shop.*)",
            ),
        };
        if parts != 2 {
            problems.push(problem(&s.file, format!("tables: `{t}` must be {shape}")));
        }
    }
    if s.kind != SourceKind::Mysql && (s.server_id.is_some() || s.resume_by != ResumeBy::Gtid) {
        problems.push(problem(
            &s.file,
            "server_id and resume_by are settings of kind: mysql sources".into(),
        ));
    }
    if s.server_id == Some(0) {
        problems.push(problem(&s.file, "server_id must be at least 1".into()));
    }
}

fn validate_daemon(path: &Path, d: &DaemonConfig, problems: &mut Vec<ConfigProblem>) {
    if d.sink.zones.contains(&Zone::Dlq) {
        problems.push(problem(
            path,
            "sink.zones: `dlq` is not chosen: dead letters are always written when a transform rejects a row; remove it from the list".into(),
        ));
    }
    if d.log.kind == LogKind::Kafka {
        let kafka = d.log.kafka_config();
        if kafka.format == kafka::Format::Avro && kafka.schema_registry.is_none() {
            problems.push(problem(
                path,
                "log.kafka.format: `avro` needs log.kafka.schema_registry, the URL of a Confluent-compatible schema registry (for example http://127.0.0.1:8081)".into(),
            ));
        }
        if kafka.partitions < 1 {
            problems.push(problem(
                path,
                "log.kafka.partitions must be at least 1".into(),
            ));
        }
    }
    if d.sink.rotate.rows == 0 {
        problems.push(problem(path, "sink.rotate.rows must be at least 1".into()));
    }
    // A commit moves files on S3 with a server-side copy, which S3 refuses above 5 GiB; a file
    // can pass its rotation size by a row group.
    const S3_ROTATE_LIMIT: u64 = 4 << 30;
    if d.sink.path.starts_with("s3://") && d.sink.rotate.bytes.0 > S3_ROTATE_LIMIT {
        problems.push(problem(
            path,
            "sink.rotate.bytes must be at most 4GiB on S3 (S3 copies at most 5 GiB in one request, and a commit moves each file by a copy); 128MiB to 1GiB suits most readers".into(),
        ));
    }
    if d.channel_batches == 0 {
        problems.push(problem(path, "channel_batches must be at least 1".into()));
    }
    if d.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
        problems.push(problem(
            path,
            format!(
                "metrics.listen `{}` is not an address like 127.0.0.1:9187",
                d.metrics.listen
            ),
        ));
    }
    let supported = ["file://", "hdfs://", "s3://"]
        .iter()
        .any(|scheme| d.sink.path.starts_with(scheme));
    if !supported && d.sink.path.contains("://") {
        problems.push(problem(
            path,
            format!(
                "sink.path `{}`: use file:///path, a plain path, hdfs://namenode:port/path or s3://bucket/prefix",
                d.sink.path
            ),
        ));
    }
}

/// Read a YAML file, interpolate `${VAR}`, and deserialize it with unknown keys refused.
pub(crate) fn parse_yaml_file<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<T, ConfigProblem> {
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(path, format!("cannot read: {e}")))?;
    let text = interpolate_env(&text).map_err(|(line, msg)| ConfigProblem {
        file: path.to_path_buf(),
        line: Some(line),
        column: None,
        message: msg,
    })?;
    serde_yaml::from_str(&text).map_err(|e| {
        let loc = e.location();
        ConfigProblem {
            file: path.to_path_buf(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message: explain_yaml_error(&e.to_string()),
        }
    })
}

/// serde_yaml appends " at line X column Y" itself; we print the location in front instead.
fn explain_yaml_error(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    if msg.contains("unknown field") {
        format!("{msg} (check the spelling of the key)")
    } else if msg.contains("missing field") {
        format!("{msg} (this key is required)")
    } else {
        msg.to_string()
    }
}

fn expand_paths(
    config_file: &Path,
    base: &Path,
    list: &PathList,
    ext: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<PathBuf> {
    let entries: Vec<&String> = match list {
        PathList::One(s) => vec![s],
        PathList::Many(v) => v.iter().collect(),
    };
    let mut out = Vec::new();
    for entry in entries {
        let p = base.join(entry);
        if p.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            f.extension()
                                .is_some_and(|x| x == ext || (ext == "yaml" && x == "yml"))
                        })
                        .collect();
                    files.sort();
                    out.extend(files);
                }
                Err(e) => problems.push(problem(
                    config_file,
                    format!("cannot list `{}`: {e}", p.display()),
                )),
            }
        } else if p.is_file() {
            out.push(p);
        } else if !(entry.ends_with('/') && ext == "sql") {
            // A missing transforms folder is fine (no transforms yet); anything else is a mistake.
            problems.push(problem(
                config_file,
                format!(
                    "`{entry}` (resolved to {}) does not exist; give a folder or a list of files",
                    p.display()
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
