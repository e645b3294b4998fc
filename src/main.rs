//! The `sluice` command line. anyhow lives here, at the edge; the library has typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sluice::config::{Config, LogFormat, LogKind};
use sluice::status::{SharedStatus, StatusBoard};
use sluice::topology;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Change-data-capture from database logs into a Parquet lake, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until SIGTERM/SIGINT (then drain, commit and exit 0).
    Run {
        /// The daemon configuration.
        #[arg(long, short, default_value = "sluice.yaml", env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Run one stage only (needs `log.kind: kafka`).
        #[arg(long, value_enum)]
        only: Option<Stage>,
        /// Kafka mode: this process's name among the processes of its stage (its transactional
        /// id and lake writer). Stable across restarts, unique among running processes.
        #[arg(long, env = "SLUICE_INSTANCE")]
        instance: Option<String>,
    },
    /// Validate every file, reach every source and sink, check prerequisites; print each problem
    /// with its fix and exit non-zero if there is any.
    Check {
        #[arg(long, short, default_value = "sluice.yaml", env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Print table definitions for the lake (Hive/Spark/Presto external tables, DuckDB views),
    /// and write them to <lake>/_ddl/.
    Ddl {
        #[arg(long, short, default_value = "sluice.yaml", env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Which definitions to print.
        #[arg(long, value_enum, default_value = "all")]
        dialect: Dialect,
    },
    /// Work with transform files offline.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
    /// Show a running daemon's state (from its admin endpoint).
    Status {
        /// The daemon's metrics/admin address.
        #[arg(long, default_value = "127.0.0.1:9187")]
        addr: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run one transform on recorded Debezium records and print the cleansed events and the
    /// dead letters, one JSON object per line.
    Test {
        /// The transform file (`CREATE STREAM … AS SELECT …`).
        file: PathBuf,
        /// Recorded records, one per line: Debezium envelopes (with or without the embedded
        /// schema), or `{"key": …, "value": …}` as a topic dump shows them.
        #[arg(long)]
        input: PathBuf,
        /// Key columns of the raw records when the records carry no key (comma-separated).
        #[arg(long, default_value = "")]
        key: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dialect {
    Hive,
    Duckdb,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    Sources,
    Transforms,
    Sinks,
}

/// glibc's malloc gives threads that allocate at once arenas of their own (up to eight per core)
/// and keeps what is freed in each, and it raises its mmap threshold after every large free, so
/// batch-sized buffers end up in those arenas too. Measured on the catch-ups: the live heap peaks
/// near 23 MB while the process held 45 MB of anonymous memory. Two arenas and a fixed threshold
/// (large buffers mapped and unmapped) keep the rate and take 10-15 MB off the peak.
///
/// Kafka mode gets a higher threshold and glibc's arenas: librdkafka builds every message set
/// (up to 1 MB) and its compressed copy in fresh buffers, and mapping each one anew cost 170,000
/// page faults per 160,000 records, a fifth of the producer's rate, for no lower peak; and its
/// threads allocate every record's copy on one thread and free it on another, which two shared
/// arenas made contend (producer 1.47 CPU s per 160,000 records with them, 1.7 with two; peak
/// RSS 93-99 MB against 81-91).
///
/// For the daemon (`sluice run`); the other commands are short-lived. Operators can still tune
/// it with glibc's own `MALLOC_ARENA_MAX` and friends, which then win.
fn bound_malloc_caches(log: LogKind) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let (arenas, mmap_threshold, trim_threshold) = match log {
            LogKind::Kafka => (None, KAFKA_MMAP_THRESHOLD, 4 * KAFKA_MMAP_THRESHOLD),
            LogKind::Embedded => (Some(2), 256 * 1024, 1024 * 1024),
        };
        // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
        // exists.
        unsafe {
            if let Some(arenas) = arenas {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
        }
    }
}

/// Above librdkafka's largest buffers: a message set of `batch.size` (1 MB) and its compressed
/// copy.
const KAFKA_MMAP_THRESHOLD: i32 = 4 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Several rustls crypto providers are compiled in (through dependencies); TLS code that asks
    // for "the default" needs one chosen up front.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The test suite's build arms failpoints from FAILPOINTS (src/failpoint.rs).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let result =
        match cli.command {
            Command::Run {
                config: path,
                only,
                instance,
            } => match sluice::transform::load::load(&path) {
                // Read before any thread starts: how the stages are joined decides how malloc is
                // set up, which must come first.
                Ok((config, transforms)) => {
                    bound_malloc_caches(config.daemon.log.kind);
                    block_on(run(config, transforms, path, only, instance))
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            },
            Command::Check { config } => block_on(check(config)),
            Command::Ddl { config, dialect } => {
                block_on(async move { tokio::task::block_in_place(|| ddl(config, dialect)) })
            }
            Command::Status { addr, json } => block_on(status(&addr, json)),
            Command::Transform {
                command: TransformCommand::Test { file, input, key },
            } => block_on(async move {
                tokio::task::block_in_place(|| transform_test(&file, &input, &key))
            }),
        };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run a command's future on a new multi-threaded runtime.
fn block_on(work: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(work)
}

fn transform_test(
    file: &std::path::Path,
    input: &std::path::Path,
    key: &str,
) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, Write};
    let def =
        sluice::transform::definition::parse_file(file).map_err(|p| anyhow::anyhow!("{p}"))?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?,
    );
    let key: Vec<String> = key
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    let lines = reader.lines().map_while(Result::ok);
    let outputs = sluice::transform::run_offline(&def, lines, key);
    let mut stdout = std::io::stdout().lock();
    let (mut cleansed, mut dead) = (0, 0);
    for o in &outputs {
        if o.get("error").is_some() {
            dead += 1;
        } else {
            cleansed += 1;
        }
        writeln!(stdout, "{o}")?;
    }
    eprintln!(
        "{}: {cleansed} cleansed event(s), {dead} dead letter(s)",
        def.name
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("SLUICE_LOG") {
        Ok(env) => tracing_subscriber::EnvFilter::try_new(env).context("SLUICE_LOG")?,
        Err(_) => tracing_subscriber::EnvFilter::try_new(level).with_context(|| {
            format!("log_level `{level}` is not a filter like `info,sluice::sink=debug`")
        })?,
    };
    // Colours only on a terminal: logs redirected to a file or a collector stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn run(
    config: Config,
    transforms: Vec<sluice::transform::TransformDef>,
    config_path: PathBuf,
    only: Option<Stage>,
    instance: Option<String>,
) -> anyhow::Result<ExitCode> {
    // Listen for SIGTERM and SIGINT before anything else: one that arrived while sluice was
    // still starting used to find no handler and kill the process outright.
    let mut signals = StopSignals::listen()?;
    init_logging(config.daemon.log_format, &config.daemon.log_level)?;
    if only.is_some() && config.daemon.log.kind == LogKind::Embedded {
        anyhow::bail!(
            "--only needs `log.kind: kafka` in {}: in embedded mode every stage runs in one process",
            config_path.display()
        );
    }
    let options = topology::RunOptions {
        only: only.map(|stage| match stage {
            Stage::Sources => topology::Role::Sources,
            Stage::Transforms => topology::Role::Transforms,
            Stage::Sinks => topology::Role::Sinks,
        }),
        instance,
    };
    let handle = sluice::metrics::install()?;
    let healthy = Arc::new(AtomicBool::new(false));
    let status = SharedStatus::default();
    let status_view = status.clone();
    let addr = config
        .daemon
        .metrics
        .listen
        .parse()
        .context("metrics.listen")?;
    sluice::metrics::serve(
        addr,
        handle,
        healthy.clone(),
        Arc::new(move || serde_json::to_value(status_view.snapshot()).unwrap_or_default()),
    )
    .await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("signal received: stopping");
        shutdown_tx.send_replace(true);
        signals.recv().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    tracing::info!(pipeline = %config.daemon.pipeline, sources = config.sources.len(), metrics = %addr, "sluice starting");
    match topology::run(&config, &transforms, &options, shutdown_rx, healthy, status).await {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let chain = sluice::error::error_chain(&e);
            tracing::error!(error = %chain, "pipeline stopped");
            eprintln!("error: {chain}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment they are created (a signal that comes before
/// anyone waits is kept for the next `recv`).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

async fn check(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let findings = sluice::command::check::run(&config_path).await;
    for f in &findings {
        println!("{f}");
    }
    let problems = findings.iter().filter(|f| !f.warning).count();
    let warnings = findings.len() - problems;
    if problems == 0 {
        println!(
            "ok: {} is valid, every source and the sink are reachable and ready ({warnings} warning(s))",
            config_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{problems} problem(s) found, {warnings} warning(s)");
    Ok(ExitCode::FAILURE)
}

async fn status(addr: &str, json: bool) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("no sluice daemon answers on {addr} (is it running? see metrics.listen)")
        })?;
    stream
        .write_all(format!("GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    let value: serde_json::Value =
        serde_json::from_str(body).context("the daemon's /status answer is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let board: StatusBoard = serde_json::from_value(value)
        .context("the daemon's /status answer is not the status this sluice knows")?;
    print_status(&board);
    Ok(ExitCode::SUCCESS)
}

/// `sluice status` as tables: the pipeline, its sources, its streams.
fn print_status(board: &StatusBoard) {
    println!(
        "pipeline: {}   restarts: {}",
        board.state.as_str(),
        board.restarts
    );
    if let Some(holder) = &board.lake_holder {
        println!("waiting for the lake, held by: {holder}");
    }
    if let Some(err) = &board.last_error {
        println!("last error: {err}");
    }
    println!();
    println!(
        "{:<14} {:<14} {:<24} {:>9}  SNAPSHOT",
        "SOURCE", "STATE", "POSITION", "LAG"
    );
    for (name, src) in &board.sources {
        let position = board.committed.get(name);
        let point = position.map_or_else(|| "-".into(), |p| p.log_point());
        let lag = src
            .lag_seconds
            .map(|l| format!("{l:.1}s"))
            .unwrap_or_else(|| "-".into());
        let progress = match position.and_then(|p| p.unfinished_snapshot()) {
            None if src.snapshot_rows > 0 => {
                format!("done ({} rows this run)", src.snapshot_rows)
            }
            None => "done".to_string(),
            Some(s) => {
                let estimate = s.estimated_rows.max(s.rows);
                let pct = if estimate > 0 {
                    s.rows as f64 * 100.0 / estimate as f64
                } else {
                    0.0
                };
                format!(
                    "{}/{estimate} rows ({pct:.0}%) committed, at {}",
                    s.rows,
                    s.table.unwrap_or("-")
                )
            }
        };
        let state = src.state.as_str();
        println!("{name:<14} {state:<14} {point:<24} {lag:>9}  {progress}");
    }
    println!();
    println!(
        "{:<40} {:<6} {:>10} {:>6}  LAST COMMIT",
        "STREAM", "ZONE", "ROWS", "FILES"
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (name, stream) in &board.streams {
        let ago = format!(
            "{:.1}s ago",
            (now_ms - stream.last_commit_ms) as f64 / 1000.0
        );
        println!(
            "{name:<40} {:<6} {:>10} {:>6}  {ago}",
            stream.zone, stream.rows, stream.files
        );
    }
}

fn ddl(config_path: PathBuf, dialect: Dialect) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let config = match sluice::transform::load::load(&config_path) {
        Ok((config, _)) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let lake = sluice::lake::commit::LakeRoot::open(&config.daemon.sink.path)?;
    let ddl = sluice::lake::ddl::generate(&lake)?;
    sluice::lake::ddl::write(&lake, &ddl)?;
    let mut stdout = std::io::stdout().lock();
    for d in &ddl {
        let texts = [
            (dialect != Dialect::Duckdb).then_some(&d.hive),
            (dialect != Dialect::Hive).then_some(&d.duckdb),
        ];
        for text in texts.into_iter().flatten() {
            match writeln!(stdout, "{text}") {
                Ok(()) => {}
                // The reader stopped reading (e.g. `| head`): nothing more to print.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    eprintln!(
        "{} stream(s); written to {}/_ddl",
        ddl.len(),
        lake.store().location()
    );
    Ok(ExitCode::SUCCESS)
}
