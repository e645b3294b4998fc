//! Helpers shared by the integration tests: a database of their own on the real Postgres that
//! `scripts/services.sh up` starts, the real `sluice` binary, and readers of the lake.
#![allow(dead_code)]

pub mod mongo;
pub mod mysql;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_postgres::{Client, NoTls};

/// How long a test waits for a Postgres daemon's first snapshot or slot. Creating a logical slot
/// waits until the transactions running at that moment have ended, learnt from the
/// `xl_running_xacts` records the background writer logs every 15 s, and it can take two of
/// them: when the tests beside it keep writing, that is up to 30 s before the snapshot starts
/// (a 30 s wait timed out once in a full run).
pub const FIRST_SNAPSHOT: Duration = Duration::from_secs(90);

pub fn pg_admin_url() -> String {
    std::env::var("SLUICE_PG_URL")
        .unwrap_or_else(|_| "postgres://sluice:sluice@127.0.0.1:5432/sluice".into())
}

pub fn pg_plain_url() -> String {
    std::env::var("SLUICE_PG_PLAIN_URL")
        .unwrap_or_else(|_| "postgres://sluice:sluice@127.0.0.1:5433/sluice".into())
}

pub fn python() -> String {
    std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/sluice-services/venv/bin/python")
    })
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url} (run scripts/services.sh up postgres): {e}")
        });
    tokio::spawn(conn);
    client
}

/// A database of the test's own, dropped and recreated (with its slots) on each run.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create(name: &str) -> TestDb {
        Self::create_on(&pg_admin_url(), name).await
    }

    pub async fn create_on(admin_url: &str, name: &str) -> TestDb {
        let admin = connect(admin_url).await;
        for row in admin
            .query(
                "SELECT slot_name FROM pg_replication_slots WHERE database = $1",
                &[&name],
            )
            .await
            .unwrap()
        {
            let slot: String = row.get(0);
            // The slot may still be held by a daemon killed a moment ago.
            for _ in 0..50 {
                if admin
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER sluice"))
            .await
            .unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("bad admin url"),
        };
        TestDb {
            name: name.to_string(),
            url,
            admin_url: admin_url.to_string(),
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Slots of this database: (name, confirmed_flush_lsn).
    pub async fn slots(&self) -> Vec<(String, Option<String>)> {
        let admin = connect(&self.admin_url).await;
        admin
            .query("SELECT slot_name::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = $1", &[&self.name])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

/// A sluice daemon under test: its config folder and lake in a temp dir.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub lake: PathBuf,
    pub metrics_addr: String,
    pub child: Option<Child>,
    /// Set `SLUICE_LOG` for the daemon (overriding the config's `log_level`).
    pub log_env: bool,
    /// More environment for the daemon.
    pub env: Vec<(String, String)>,
}

/// A Postgres LSN as `X/Y` text → u64 (sluice's own parser).
pub fn lsn(text: &str) -> u64 {
    sluice::decoders::postgres::parse_lsn(text).unwrap_or_else(|| panic!("`{text}` is not an LSN"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Write `sluice.yaml` and one Postgres source file.
    pub fn configure(source_name: &str, url: &str, tables: &[&str], rotate: &str) -> Daemon {
        Self::configure_with_sink(source_name, url, tables, rotate, None)
    }

    /// Write `sluice.yaml` and one MySQL/MariaDB source file.
    pub fn configure_mysql(source_name: &str, url: &str, tables: &[&str], rotate: &str) -> Daemon {
        Self::configure_kind("mysql", source_name, url, tables, rotate, None)
    }

    /// Like `configure`, with the lake at `sink_path` (e.g. `hdfs://…`) instead of a local folder.
    pub fn configure_with_sink(
        source_name: &str,
        url: &str,
        tables: &[&str],
        rotate: &str,
        sink_path: Option<&str>,
    ) -> Daemon {
        Self::configure_kind("postgres", source_name, url, tables, rotate, sink_path)
    }

    /// `sluice.yaml` and one source file of `kind`.
    pub fn configure_kind(
        kind: &str,
        source_name: &str,
        url: &str,
        tables: &[&str],
        rotate: &str,
        sink_path: Option<&str>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("sluice.yaml");
        std::fs::write(
            &config,
            format!(
                "pipeline: test\nsink:\n  path: {}\n  rotate: {rotate}\nmetrics: {{ listen: {metrics_addr} }}\n",
                sink_path.map(String::from).unwrap_or_else(|| format!("file://{}", lake.display()))
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("sources")).unwrap();
        std::fs::write(
            dir.path()
                .join("sources")
                .join(format!("{source_name}.yaml")),
            format!(
                "name: {source_name}\nkind: {kind}\nurl: {url}\ntables: [{}]\n",
                tables.join(", ")
            ),
        )
        .unwrap();
        Daemon {
            dir,
            config,
            lake,
            metrics_addr,
            child: None,
            log_env: true,
            env: Vec::new(),
        }
    }

    /// A second daemon on the same configuration (the same lake and sources), with its own
    /// folder, log and metrics port: an operator's second `sluice run`, or a rolling deploy.
    pub fn twin(&self) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("sluice.yaml");
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace(&self.metrics_addr, &metrics_addr);
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir_all(dir.path().join("sources")).unwrap();
        let source = self.source_file();
        std::fs::copy(
            &source,
            dir.path().join("sources").join(source.file_name().unwrap()),
        )
        .unwrap();
        Daemon {
            dir,
            config,
            lake: self.lake.clone(),
            metrics_addr,
            child: None,
            log_env: self.log_env,
            env: self.env.clone(),
        }
    }

    /// The daemon's `/status`, as JSON (None while it does not answer).
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(&self.metrics_addr, "/status")?).ok()
    }

    /// Send a signal (`STOP`, `CONT`, …) to the running daemon.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The source file (the one `configure*` wrote).
    pub fn source_file(&self) -> PathBuf {
        let dir = self.dir.path().join("sources");
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "yaml"))
            .unwrap()
    }

    /// Add lines to the source file (settings such as `snapshot_chunk_rows: 100`).
    pub fn append_source(&self, lines: &str) {
        let file = self.source_file();
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text + lines).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if self.log_env {
            cmd.env("SLUICE_LOG", "info,sluice=debug");
        } else {
            cmd.env_remove("SLUICE_LOG");
        }
        cmd
    }

    /// Run `sluice check` on this configuration: whether it passed, and what it printed
    /// (stdout then stderr).
    pub fn check(&self) -> (bool, String) {
        let out = self
            .command(&["check", "--config", self.config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sluice.log"))
            .unwrap();
        let child = self
            .command(&["run", "--config", self.config.to_str().unwrap()])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not stop within 30 s of SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the daemon to exit by itself (a failpoint, a definite error) and say how.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("not running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not exit within {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The running daemon's peak resident memory (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    pub fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics").unwrap_or_default()
    }

    /// The sum of every series whose line starts with `prefix` (a name, or a name and labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        metric_sum(&self.metrics(), prefix)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // A failed test's daemon log goes with its temporary directory: show it first.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the daemon's log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

/// One row of a change-log file, every column rendered as canonical text.
#[derive(Debug, Clone)]
pub struct LakeRow {
    pub op: String,
    pub seq: String,
    pub values: BTreeMap<String, Option<String>>,
    pub file: PathBuf,
}

/// Every row of every committed file of a stream, sorted by `_seq`.
pub fn lake_rows(lake: &Path, stream: &str) -> Vec<LakeRow> {
    zone_rows(lake, "raw", stream)
}

/// Every row of a zone's files for a stream, sorted by `_seq` (ODS rows have op "r").
///
/// A running daemon may replace files while they are read (compaction, the ODS merge): when a
/// listed file is gone, the listing was stale and the whole read starts again.
pub fn zone_rows(lake: &Path, zone: &str, stream: &str) -> Vec<LakeRow> {
    let dir = lake.join(zone).join(stream);
    let mut rows: Vec<LakeRow> = read_each_file(&dir, file_rows)
        .into_iter()
        .flatten()
        .collect();
    rows.sort_by(|a, b| a.seq.cmp(&b.seq));
    rows
}

fn file_rows(path: &Path, file: std::fs::File) -> Vec<LakeRow> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            let mut values = BTreeMap::new();
            for (c, field) in schema.fields().iter().enumerate() {
                values.insert(field.name().clone(), render(batch.column(c).as_ref(), i));
            }
            rows.push(LakeRow {
                op: values
                    .get("_op")
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "r".into()),
                seq: values["_seq"].clone().unwrap(),
                values,
                file: path.to_path_buf(),
            });
        }
    }
    rows
}

/// Rows in a zone's committed files of a stream, from the Parquet footers.
pub fn zone_row_count(lake: &Path, zone: &str, stream: &str) -> i64 {
    read_each_file(&lake.join(zone).join(stream), |_, file| {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .metadata()
            .file_metadata()
            .num_rows()
    })
    .into_iter()
    .sum()
}

/// `read` of every Parquet file under `dir`. A listed file that is gone when opened means the
/// running daemon's compaction or ODS merge replaced it: the listing was stale, so list again.
fn read_each_file<T>(dir: &Path, mut read: impl FnMut(&Path, std::fs::File) -> T) -> Vec<T> {
    'listing: for _ in 0..50 {
        let mut out = Vec::new();
        for path in parquet_files(dir) {
            match std::fs::File::open(&path) {
                Ok(file) => out.push(read(&path, file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue 'listing;
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
        return out;
    }
    panic!(
        "the files under {} kept disappearing while they were read",
        dir.display()
    );
}

pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Canonical text of a value, matching the SQL expressions the tests give `table_state`.
fn render(a: &dyn Array, i: usize) -> Option<String> {
    use arrow::datatypes as t;
    fn prim<T: t::ArrowPrimitiveType>(a: &dyn Array, i: usize) -> String
    where
        T::Native: std::fmt::Display,
    {
        a.as_primitive::<T>().value(i).to_string()
    }
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::Int16 => prim::<t::Int16Type>(a, i),
        DataType::Int32 => prim::<t::Int32Type>(a, i),
        DataType::Int64 => prim::<t::Int64Type>(a, i),
        DataType::Float64 => prim::<t::Float64Type>(a, i),
        DataType::Float32 => prim::<t::Float32Type>(a, i),
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Decimal128(_, scale) => format_decimal(
            a.as_primitive::<t::Decimal128Type>().value(i),
            *scale as u32,
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => prim::<t::TimestampMicrosecondType>(a, i),
        DataType::Date32 => prim::<t::Date32Type>(a, i),
        DataType::Time64(TimeUnit::Microsecond) => prim::<t::Time64MicrosecondType>(a, i),
        DataType::Duration(TimeUnit::Microsecond) => prim::<t::DurationMicrosecondType>(a, i),
        DataType::Binary => a
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            let parts: Vec<String> = (0..items.len())
                .map(|j| render(items.as_ref(), j).unwrap_or_else(|| "NULL".into()))
                .collect();
            format!("[{}]", parts.join(","))
        }
        other => panic!("unexpected type {other}"),
    })
}

fn format_decimal(v: i128, scale: u32) -> String {
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let s = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale as usize + 1);
        let (int, frac) = padded.split_at(padded.len() - scale as usize);
        format!("{int}.{frac}")
    };
    if neg { format!("-{s}") } else { s }
}

/// A stream's rows in the ODS zone, by key (the first of `cols`), as canonical text.
pub fn ods_state(d: &Daemon, stream: &str, cols: &[&str]) -> BTreeMap<String, Vec<Option<String>>> {
    zone_rows(&d.lake, "ods", stream)
        .into_iter()
        .map(|r| {
            let key = r.values[cols[0]].clone().unwrap();
            (
                key,
                cols.iter()
                    .map(|c| r.values.get(*c).cloned().flatten())
                    .collect(),
            )
        })
        .collect()
}

/// The current state the change log implies: last row per key by `_seq`, deletes removed,
/// a truncate clears everything before it.
pub fn state_from_log(
    rows: &[LakeRow],
    key: &str,
    columns: &[&str],
) -> BTreeMap<String, Vec<Option<String>>> {
    let mut state = BTreeMap::new();
    for r in rows {
        match r.op.as_str() {
            "t" => state.clear(),
            "d" => {
                state.remove(r.values[key].as_ref().unwrap());
            }
            _ => {
                let k = r.values[key].clone().unwrap();
                // A column missing from an older file reads as null, as merged schemas do.
                let row = columns.iter().map(|c| r.values.get(*c).cloned().flatten());
                state.insert(k, row.collect());
            }
        }
    }
    state
}

/// The table's rows as canonical text, by key. `exprs` are SQL expressions in column order;
/// the first is the key.
pub async fn table_state(
    client: &Client,
    table: &str,
    exprs: &[&str],
) -> BTreeMap<String, Vec<Option<String>>> {
    let sql = format!(
        "SELECT {} FROM {table}",
        exprs
            .iter()
            .map(|e| format!("({e})::text"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let vals: Vec<Option<String>> = (0..exprs.len()).map(|i| r.get(i)).collect();
            (vals[0].clone().unwrap(), vals[1..].to_vec())
        })
        .map(|(k, v)| {
            let mut all = vec![Some(k.clone())];
            all.extend(v);
            (k, all)
        })
        .collect()
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(wait_until(timeout, f).await, "timed out waiting for {what}");
}

/// The first few keys where two states differ, for a failure message.
pub fn differences(
    got: &BTreeMap<String, Vec<Option<String>>>,
    want: &BTreeMap<String, Vec<Option<String>>>,
) -> String {
    let mut out = format!("{} rows, want {}", got.len(), want.len());
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    for k in keys
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .take(5)
    {
        out.push_str(&format!(
            "\n  {k}: got {:?}, want {:?}",
            got.get(k),
            want.get(k)
        ));
    }
    out
}

/// Poll `got` until it equals `want` or `timeout` passes; on a timeout, where they differ.
pub async fn wait_for_state(
    timeout: Duration,
    want: &BTreeMap<String, Vec<Option<String>>>,
    mut got: impl FnMut() -> BTreeMap<String, Vec<Option<String>>>,
) -> Result<(), String> {
    if wait_until(timeout, || {
        let equal = got() == *want;
        async move { equal }
    })
    .await
    {
        return Ok(());
    }
    Err(differences(&got(), want))
}

/// Poll `f` until it holds or `timeout` passes; whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

pub type Shared<T> = Arc<std::sync::Mutex<T>>;

pub fn hdfs_url() -> String {
    std::env::var("SLUICE_HDFS_URL").unwrap_or_else(|_| "hdfs://127.0.0.1:9000".into())
}

/// Copy the committed zones of a lake on any store (HDFS) to a local folder, so the local
/// readers above can check it. Fails (to be retried) if a file changes under it.
pub fn mirror_lake(url: &str, local: &Path) -> std::io::Result<()> {
    let store = sluice::lake::store::Store::open(url)?;
    let _ = std::fs::remove_dir_all(local);
    for zone in ["raw", "ods"] {
        for rel in store.list_files(zone)? {
            let bytes = store.get(&rel)?;
            let path = local.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(path, bytes)?;
        }
    }
    Ok(())
}

impl Daemon {
    /// Add settings under `sink:` in sluice.yaml (e.g. `zones: [raw, ods]`).
    pub fn add_sink_settings(&self, lines: &[&str]) {
        let extra: String = lines.iter().map(|l| format!("  {l}\n")).collect();
        let cfg = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace("sink:\n", &format!("sink:\n{extra}"));
        std::fs::write(&self.config, cfg).unwrap();
    }
}

/// Run Python (the test venv) with `args`; its trimmed standard output, or a panic with stderr.
pub fn python_stdout(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("python (scripts/services.sh up python)");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A lake on a remote store after a pipeline ran with kill -9 between batches of changes and
/// caught up: raw zone equal to the table, ODS complete, no change twice. `local` mirrors it.
pub struct RemoteLakeRun {
    pub db: TestDb,
    pub client: Client,
    pub daemon: Daemon,
    pub local: PathBuf,
}

impl RemoteLakeRun {
    /// `"<rows> <sum of v>"` of the table, as the independent readers print it.
    pub async fn table_count_sum(&self) -> String {
        let row = self
            .client
            .query_one("SELECT count(*), sum(v) FROM t", &[])
            .await
            .unwrap();
        let (n, sum): (i64, i64) = (row.get(0), row.get(1));
        format!("{n} {sum}")
    }
}

pub async fn remote_lake_run(
    name: &str,
    lake_url: &str,
    env: Vec<(String, String)>,
) -> RemoteLakeRun {
    let db = TestDb::create(&format!("sluice_it_{name}")).await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, 0 FROM generate_series(1, 2000) g;")
        .await
        .unwrap();
    let mut d = Daemon::configure_with_sink(
        name,
        &db.url,
        &["public.t"],
        "{ rows: 500, interval: 200ms }",
        Some(lake_url),
    );
    d.env = env;
    d.add_sink_settings(&["zones: [raw, ods]", "ods_interval: 300ms"]);
    d.start();
    // Changes while the daemon is killed now and then, in the middle of uploads and commits.
    for round in 0..6i32 {
        client
            .batch_execute(&format!(
                "UPDATE t SET v = v + 1 WHERE id % 5 = {round}; DELETE FROM t WHERE id % 101 = {round};
                 INSERT INTO t SELECT g, 0 FROM generate_series({lo}, {hi}) g;",
                lo = 5000 + round * 100,
                hi = 5000 + round * 100 + 99
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300 + (round as u64 * 137) % 500)).await;
        d.kill9();
        d.start();
    }
    let want = table_state(&client, "t", &["id", "v"]).await;
    let stream = format!("{name}.public.t");
    let local = d.dir.path().join("mirror");
    let caught_up = wait_until(Duration::from_secs(90), || async {
        mirror_lake(lake_url, &local).is_ok()
            && state_from_log(&lake_rows(&local, &stream), "id", &["id", "v"]) == want
            && zone_rows(&local, "ods", &stream).len() == want.len()
    })
    .await;
    assert!(
        caught_up,
        "the lake at {lake_url} did not converge:\n{}",
        d.log()
    );
    assert!(d.terminate().success());
    mirror_lake(lake_url, &local).unwrap();
    let rows = lake_rows(&local, &stream);
    let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        rows.len(),
        "no change twice in the lake at {lake_url}"
    );
    RemoteLakeRun {
        db,
        client,
        daemon: d,
        local,
    }
}

/// The newest commit record of a local lake.
pub fn latest_commit(lake: &Path) -> Option<serde_json::Value> {
    let dir = lake.join("_sluice/commits");
    let newest = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".json")?
                .parse::<u64>()
                .ok()
                .map(|n| (n, e.path()))
        })
        .max()?;
    serde_json::from_slice(&std::fs::read(newest.1).ok()?).ok()
}

/// xorshift: reproducible random choices from a seed the test prints.
/// A random generator seeded from the clock, its seed printed (as `<what> seed N`) so a failing
/// run can be replayed with `Rng(N)`.
pub fn seeded_rng(what: &str) -> (u64, Rng) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{what} seed {seed}");
    (seed, Rng(seed))
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Exactly once, proven on a change log where every update bumps `version` by one: per key the
/// log reads `r` (any version) or `c` (version 0), then `u` with versions rising by exactly one,
/// then at most one `d` at the end. A lost change leaves a gap, a duplicate repeats a version;
/// the last version must equal the table's (`want`: key → [key, version]), deleted keys gone,
/// and no sequence may appear twice. Returns the count of events by op.
pub fn assert_version_chains(
    rows: &[LakeRow],
    want: &BTreeMap<String, Vec<Option<String>>>,
    key: &str,
    version: &str,
) -> BTreeMap<String, usize> {
    let mut seqs: Vec<&str> = rows.iter().map(|r| r.seq.as_str()).collect();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        rows.len(),
        "a sequence appears twice in the lake"
    );
    let mut per_key: BTreeMap<i64, Vec<&LakeRow>> = BTreeMap::new();
    for r in rows {
        let k = r.values[key]
            .as_ref()
            .unwrap_or_else(|| panic!("a row without its key: {r:?}"));
        per_key.entry(k.parse().unwrap()).or_default().push(r);
    }
    let mut by_op: BTreeMap<String, usize> = BTreeMap::new();
    for (k, events) in &per_key {
        let version_of = |r: &LakeRow| {
            r.values[version]
                .as_ref()
                .map(|v| v.parse::<i64>().unwrap())
        };
        let first = events[0];
        assert!(
            first.op == "r" || (first.op == "c" && version_of(first) == Some(0)),
            "key {k}: first event {} {:?}",
            first.op,
            version_of(first)
        );
        let mut last_version = version_of(first).unwrap();
        for (i, e) in events.iter().enumerate().skip(1) {
            match e.op.as_str() {
                "u" => {
                    let v = version_of(e).unwrap();
                    if v != last_version + 1 {
                        eprintln!("{events:#?}");
                    }
                    assert_eq!(
                        v,
                        last_version + 1,
                        "key {k}: version {v} after {last_version} (lost or duplicated update)"
                    );
                    last_version = v;
                }
                "d" => assert_eq!(i, events.len() - 1, "key {k}: events after its delete"),
                other => panic!("key {k}: unexpected {other} after the first event"),
            }
        }
        for e in events {
            *by_op.entry(e.op.clone()).or_default() += 1;
        }
        let deleted = events.last().unwrap().op == "d";
        match want.get(&k.to_string()) {
            Some(row) => {
                assert!(!deleted, "key {k} is in the table but deleted in the lake");
                assert_eq!(
                    row[1].as_deref().map(|v| v.parse::<i64>().unwrap()),
                    Some(last_version),
                    "key {k}"
                );
            }
            None => assert!(
                deleted,
                "key {k} was deleted from the table but not in the lake"
            ),
        }
    }
    by_op
}

/// The crash tests' workload on `accounts (id, version, balance, note)` holding ids
/// 1..=`initial_rows`: random transactions of inserts, updates (each bumps `version` by one) and
/// deletes until `stop`, counting committed statements in `committed`. After 400 transactions it
/// adds a column `tag`: a schema change in the middle.
pub async fn accounts_workload(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    committed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    seed: u64,
    initial_rows: i64,
) {
    use std::sync::atomic::Ordering;
    let mut client = connect(&url).await;
    let mut rng = Rng(seed);
    let mut live: Vec<i64> = (1..=initial_rows).collect();
    let mut next_id = initial_rows + 1;
    let mut transactions = 0u64;
    let mut insert = "INSERT INTO accounts (id, version, balance, note) VALUES ($1, 0, 0, 'new')";
    while !stop.load(Ordering::Relaxed) {
        transactions += 1;
        if transactions == 400 {
            // A schema change in the middle of the kills: later files carry the new column.
            client
                .batch_execute("ALTER TABLE accounts ADD COLUMN tag text")
                .await
                .unwrap();
            insert = "INSERT INTO accounts (id, version, balance, note, tag) VALUES ($1, 0, 0, 'new', 'tagged')";
        }
        let tx = client.transaction().await.unwrap();
        let mut inserted = Vec::new();
        let mut deleted = Vec::new();
        let n = 1 + rng.below(4);
        for _ in 0..n {
            let roll = rng.below(100);
            if roll < 35 || live.len() < 10 {
                tx.execute(insert, &[&next_id]).await.unwrap();
                inserted.push(next_id);
                next_id += 1;
            } else {
                let id = live[rng.below(live.len() as u64) as usize];
                if deleted.contains(&id) {
                    continue;
                }
                if roll < 88 {
                    tx.execute("UPDATE accounts SET version = version + 1, balance = balance + 1.25 WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                } else {
                    tx.execute("DELETE FROM accounts WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                    deleted.push(id);
                }
            }
        }
        tx.commit().await.unwrap();
        committed.fetch_add(n, Ordering::Relaxed);
        live.extend(inserted);
        live.retain(|id| !deleted.contains(id));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The crash tests' table, `accounts (id, version, balance, note)`, holding ids 1..=`rows`.
pub async fn create_accounts(client: &Client, rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, balance numeric(12,2), note text);
             INSERT INTO accounts SELECT g, 0, 0, 'n' FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
}

/// [`accounts_workload`] running in the background, from `seed`, until [`Workload::stop`].
pub struct Workload {
    stop: Arc<std::sync::atomic::AtomicBool>,
    committed: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    pub fn start(url: &str, seed: u64, initial_rows: i64) -> Workload {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn(accounts_workload(
            url.to_string(),
            stop.clone(),
            committed.clone(),
            seed,
            initial_rows,
        ));
        Workload {
            stop,
            committed,
            task,
        }
    }

    /// The statements committed so far.
    pub fn committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stop it; the statements it committed.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap();
        self.committed.load(std::sync::atomic::Ordering::Relaxed)
    }
}
