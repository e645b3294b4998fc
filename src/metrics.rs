//! Metric names (part of the user-facing contract: see docs/metrics.md) and the HTTP endpoint
//! serving `/metrics`, `/healthz` and `/status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

// Sources, labels {source, table, op} / {source}.
pub const SOURCE_EVENTS: &str = "sluice_source_events_total";
pub const SOURCE_SNAPSHOT_ROWS: &str = "sluice_source_snapshot_rows_total";
pub const SOURCE_SNAPSHOT_ROWS_ESTIMATED: &str = "sluice_source_snapshot_rows_estimated";
pub const SOURCE_LAG_SECONDS: &str = "sluice_source_lag_seconds";
pub const SOURCE_LAG_BYTES: &str = "sluice_source_lag_bytes";
pub const SOURCE_COMMITTED_POSITION: &str = "sluice_source_committed_position";
pub const SOURCE_UNCHANGED_TOAST: &str = "sluice_source_unchanged_toast_total";
pub const SOURCE_ERRORS: &str = "sluice_source_errors_total";
pub const SOURCE_LOSSY_VALUES: &str = "sluice_source_lossy_values_total";
pub const SOURCE_UNMAPPED_TYPES: &str = "sluice_source_unmapped_type_columns";
pub const SOURCE_UP: &str = "sluice_source_up";
pub const SOURCE_POSITION_LOST: &str = "sluice_source_position_lost";
pub const SOURCE_SNAPSHOT_RUNNING: &str = "sluice_source_snapshot_running";

// Sinks, labels {zone, stream}.
pub const SINK_ROWS: &str = "sluice_sink_rows_total";
pub const SINK_FILES: &str = "sluice_sink_files_total";
pub const SINK_BYTES: &str = "sluice_sink_bytes_total";
pub const SINK_COMMITS: &str = "sluice_sink_commits_total";
pub const SINK_COMMIT_SECONDS: &str = "sluice_sink_commit_duration_seconds";
pub const SINK_LAST_COMMIT_TIMESTAMP: &str = "sluice_sink_last_commit_timestamp_seconds";
pub const SINK_SECONDS_SINCE_COMMIT: &str = "sluice_sink_seconds_since_last_commit";
pub const SINK_REPLAYED_SKIPPED: &str = "sluice_sink_replayed_events_skipped_total";
pub const SINK_TYPE_MISMATCH: &str = "sluice_sink_type_mismatch_total";

// Process.
pub const QUEUE_DEPTH: &str = "sluice_queue_depth_batches";
pub const RESIDENT_MEMORY: &str = "sluice_process_resident_memory_bytes";
pub const PIPELINE_RESTARTS: &str = "sluice_pipeline_restarts_total";

/// Install the global recorder. Safe to call once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        SOURCE_EVENTS,
        "Change events read from the source, by table and op (c, u, d, r, t)."
    );
    describe_counter!(SOURCE_SNAPSHOT_ROWS, "Rows read by the initial snapshot.");
    describe_gauge!(
        SOURCE_SNAPSHOT_ROWS_ESTIMATED,
        "The server's estimate of a table's rows (pg_class.reltuples), for snapshot progress."
    );
    describe_gauge!(
        SOURCE_LAG_SECONDS,
        Unit::Seconds,
        "Now minus the commit time of the last transaction read."
    );
    describe_gauge!(
        SOURCE_COMMITTED_POSITION,
        "Last source position committed to the lake and acknowledged (Postgres: LSN)."
    );
    describe_counter!(
        SOURCE_UNCHANGED_TOAST,
        "Unchanged TOAST values the server did not send (written as null)."
    );
    describe_counter!(
        SOURCE_ERRORS,
        "Source errors, by kind (transient or definite)."
    );
    describe_gauge!(
        SOURCE_UP,
        "1 while the source is connected and running, 0 while it is down or restarting."
    );
    describe_gauge!(
        SOURCE_POSITION_LOST,
        "1 when the source's log position is gone (slot dropped or invalidated): re-snapshot to recover."
    );
    describe_gauge!(
        SOURCE_SNAPSHOT_RUNNING,
        "1 while the source reads its initial snapshot."
    );
    describe_counter!(SINK_ROWS, "Rows committed to the lake.");
    describe_counter!(SINK_FILES, "Files committed to the lake.");
    describe_counter!(
        SINK_BYTES,
        Unit::Bytes,
        "Bytes of Parquet committed to the lake."
    );
    describe_counter!(SINK_COMMITS, "Lake commits.");
    describe_histogram!(
        SINK_COMMIT_SECONDS,
        Unit::Seconds,
        "Time to make a commit durable."
    );
    describe_gauge!(
        SINK_LAST_COMMIT_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the last lake commit."
    );
    describe_gauge!(
        SINK_SECONDS_SINCE_COMMIT,
        Unit::Seconds,
        "Seconds since the last lake commit."
    );
    describe_counter!(
        SINK_REPLAYED_SKIPPED,
        "Replayed events skipped because the lake already has them."
    );
    describe_counter!(
        SINK_TYPE_MISMATCH,
        "Values that did not fit their column type (written as null)."
    );
    describe_gauge!(QUEUE_DEPTH, "Batches waiting in an in-process queue.");
    describe_gauge!(
        RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_counter!(
        PIPELINE_RESTARTS,
        "Pipeline restarts after transient errors."
    );
}

/// Resident set size from /proc (Linux), in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    healthy: Arc<AtomicBool>,
    status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// Serve the admin endpoint until the process ends.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    healthy: Arc<AtomicBool>,
    status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .route("/status", get(status_json))
        .with_state(AppState {
            handle,
            healthy,
            status,
        });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for metrics: {e} (set metrics.listen)")
    })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}

async fn render(State(s): State<AppState>) -> String {
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!(RESIDENT_MEMORY).set(rss as f64);
    }
    s.handle.render()
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting or restarting\n")
    }
}

async fn status_json(State(s): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json((s.status)())
}
