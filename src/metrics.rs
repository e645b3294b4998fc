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
pub(crate) const SOURCE_EVENTS: &str = "sluice_source_events_total";
pub(crate) const SOURCE_SNAPSHOT_ROWS: &str = "sluice_source_snapshot_rows_total";
pub(crate) const SOURCE_SNAPSHOT_ROWS_ESTIMATED: &str = "sluice_source_snapshot_rows_estimated";
pub(crate) const SOURCE_LAG_SECONDS: &str = "sluice_source_lag_seconds";
pub(crate) const SOURCE_LAG_BYTES: &str = "sluice_source_lag_bytes";
pub(crate) const SOURCE_COMMITTED_POSITION: &str = "sluice_source_committed_position";
pub(crate) const SOURCE_UNCHANGED_TOAST: &str = "sluice_source_unchanged_toast_total";
pub(crate) const SOURCE_ERRORS: &str = "sluice_source_errors_total";
pub(crate) const SOURCE_LOSSY_VALUES: &str = "sluice_source_lossy_values_total";
pub(crate) const SOURCE_UNMAPPED_TYPES: &str = "sluice_source_unmapped_type_columns";
pub(crate) const SOURCE_UP: &str = "sluice_source_up";
pub(crate) const SOURCE_POSITION_LOST: &str = "sluice_source_position_lost";
pub(crate) const SOURCE_SNAPSHOT_RUNNING: &str = "sluice_source_snapshot_running";
pub(crate) const SOURCE_DDL_UNPARSED: &str = "sluice_source_ddl_unparsed_total";

// Sinks, labels {zone, stream}.
pub(crate) const SINK_ROWS: &str = "sluice_sink_rows_total";
pub(crate) const SINK_FILES: &str = "sluice_sink_files_total";
pub(crate) const SINK_BYTES: &str = "sluice_sink_bytes_total";
pub(crate) const SINK_COMMITS: &str = "sluice_sink_commits_total";
pub(crate) const SINK_COMMIT_SECONDS: &str = "sluice_sink_commit_duration_seconds";
pub(crate) const SINK_LAST_COMMIT_TIMESTAMP: &str = "sluice_sink_last_commit_timestamp_seconds";
pub(crate) const SINK_SECONDS_SINCE_COMMIT: &str = "sluice_sink_seconds_since_last_commit";
pub(crate) const LAKE_WRITABLE: &str = "sluice_lake_writable";
pub(crate) const SINK_REPLAYED_SKIPPED: &str = "sluice_sink_replayed_events_skipped_total";
pub(crate) const SINK_TYPE_MISMATCH: &str = "sluice_sink_type_mismatch_total";

// Transforms, labels {transform} (and {op} for output events).
pub(crate) const TRANSFORM_EVENTS_IN: &str = "sluice_transform_events_in_total";
pub(crate) const TRANSFORM_EVENTS_OUT: &str = "sluice_transform_events_out_total";
pub(crate) const TRANSFORM_FILTERED: &str = "sluice_transform_filtered_total";
pub(crate) const TRANSFORM_DEAD_LETTERS: &str = "sluice_transform_dead_letters_total";
pub(crate) const TRANSFORM_ERRORS: &str = "sluice_transform_errors_total";
pub(crate) const TRANSFORM_BATCH_SECONDS: &str = "sluice_transform_batch_duration_seconds";

// Lake maintenance.
pub(crate) const SINK_COMPACTIONS: &str = "sluice_sink_compactions_total";
pub(crate) const SINK_FILES_COMPACTED: &str = "sluice_sink_files_compacted_total";
pub(crate) const ODS_MERGE_SECONDS: &str = "sluice_ods_merge_duration_seconds";
pub(crate) const ODS_ROWS: &str = "sluice_ods_rows";

// Process.
pub(crate) const QUEUE_DEPTH: &str = "sluice_queue_depth_batches";
pub(crate) const RESIDENT_MEMORY: &str = "sluice_process_resident_memory_bytes";
pub(crate) const PIPELINE_RESTARTS: &str = "sluice_pipeline_restarts_total";

// Kafka mode.
pub(crate) const KAFKA_PRODUCED: &str = "sluice_kafka_produced_records_total";
pub(crate) const KAFKA_TRANSACTIONS: &str = "sluice_kafka_transactions_total";
pub(crate) const KAFKA_COMMIT_SECONDS: &str = "sluice_kafka_transaction_commit_duration_seconds";
pub(crate) const KAFKA_TRANSACTION_SECONDS: &str = "sluice_kafka_transaction_duration_seconds";
pub(crate) const KAFKA_CONSUMER_LAG: &str = "sluice_kafka_consumer_lag_records";
pub(crate) const KAFKA_UNDECODABLE: &str = "sluice_kafka_undecodable_records_total";
pub(crate) const KAFKA_IN_FLIGHT: &str = "sluice_kafka_producer_in_flight_records";

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

/// Every metric sluice exports: name, kind and help text. `describe` registers them all, and the
/// tests check that docs/metrics.md lists exactly these.
pub(crate) const CATALOG: &[(&str, Kind, &str)] = &[
    (
        TRANSFORM_EVENTS_IN,
        Kind::Counter,
        "Raw change events a transform read.",
    ),
    (
        TRANSFORM_EVENTS_OUT,
        Kind::Counter,
        "Cleansed change events a transform wrote, by op.",
    ),
    (
        TRANSFORM_FILTERED,
        Kind::Counter,
        "Raw events that produced no cleansed event (neither image passes the WHERE).",
    ),
    (
        TRANSFORM_DEAD_LETTERS,
        Kind::Counter,
        "Raw events sent to the transform's dead-letter stream (a failed cast, a function error, a plan error).",
    ),
    (
        TRANSFORM_ERRORS,
        Kind::Counter,
        "Times a transform could not be planned for its raw stream's schema (its events are dead-lettered).",
    ),
    (
        TRANSFORM_BATCH_SECONDS,
        Kind::Histogram,
        "Time to transform one run of raw events.",
    ),
    (
        SOURCE_EVENTS,
        Kind::Counter,
        "Change events read from the source, by table and op (r, c, u, d, t).",
    ),
    (
        SOURCE_SNAPSHOT_ROWS,
        Kind::Counter,
        "Rows read by the initial snapshot.",
    ),
    (
        SOURCE_SNAPSHOT_ROWS_ESTIMATED,
        Kind::Gauge,
        "The server's estimate of a table's rows (pg_class.reltuples, information_schema TABLE_ROWS), for snapshot progress.",
    ),
    (
        SOURCE_SNAPSHOT_RUNNING,
        Kind::Gauge,
        "1 while the source reads its initial snapshot.",
    ),
    (
        SOURCE_LAG_SECONDS,
        Kind::Gauge,
        "Now minus the commit time of the last transaction read, in seconds.",
    ),
    (
        SOURCE_LAG_BYTES,
        Kind::Gauge,
        "Bytes of log the lake is behind: WAL the server keeps for the slot (Postgres), binlog past the committed position (MySQL).",
    ),
    (
        SOURCE_COMMITTED_POSITION,
        Kind::Gauge,
        "Last source position committed to the lake and acknowledged (Postgres: LSN as a number; MySQL: binlog file number * 2^32 + offset).",
    ),
    (
        SOURCE_UNCHANGED_TOAST,
        Kind::Counter,
        "Unchanged TOAST values the server did not send (written as null).",
    ),
    (
        SOURCE_LOSSY_VALUES,
        Kind::Counter,
        "Values the lake cannot hold exactly, by reason (numeric NaN in a decimal column, multi-dimensional arrays flattened, MySQL zero dates, text invalid in its charset, columns missing from a row image).",
    ),
    (
        SOURCE_DDL_UNPARSED,
        Kind::Counter,
        "MySQL DDL statements sluice could not parse; the tables they name were re-read from the catalog.",
    ),
    (
        SOURCE_UNMAPPED_TYPES,
        Kind::Gauge,
        "Columns of types sluice does not map, carried as text, by table and type.",
    ),
    (
        SOURCE_ERRORS,
        Kind::Counter,
        "Source errors, by kind (transient: retried; definite: the source stops).",
    ),
    (
        SOURCE_UP,
        Kind::Gauge,
        "1 while the source is connected and running, 0 while it is down or restarting.",
    ),
    (
        SOURCE_POSITION_LOST,
        Kind::Gauge,
        "1 when the source's log position is gone (slot dropped or invalidated, binlog purged): re-snapshot to recover.",
    ),
    (SINK_ROWS, Kind::Counter, "Rows committed to the lake."),
    (SINK_FILES, Kind::Counter, "Files committed to the lake."),
    (
        SINK_BYTES,
        Kind::Counter,
        "Bytes of Parquet committed to the lake.",
    ),
    (SINK_COMMITS, Kind::Counter, "Lake commits."),
    (
        LAKE_WRITABLE,
        Kind::Gauge,
        "0 while the lake refuses writes (full, read-only, no permission): the pipeline waits and retries, losing nothing; 1 after a commit.",
    ),
    (
        SINK_COMMIT_SECONDS,
        Kind::Histogram,
        "Time to make a commit durable, in seconds.",
    ),
    (
        SINK_LAST_COMMIT_TIMESTAMP,
        Kind::Gauge,
        "Unix time of the last lake commit, in seconds.",
    ),
    (
        SINK_SECONDS_SINCE_COMMIT,
        Kind::Gauge,
        "Seconds since the last lake commit.",
    ),
    (
        SINK_REPLAYED_SKIPPED,
        Kind::Counter,
        "Replayed events skipped because the lake already has them (cut by sequence).",
    ),
    (
        SINK_TYPE_MISMATCH,
        Kind::Counter,
        "Values that did not fit their column type (written as null; a bug if ever non-zero).",
    ),
    (
        SINK_COMPACTIONS,
        Kind::Counter,
        "Partitions rewritten by small-file compaction.",
    ),
    (
        SINK_FILES_COMPACTED,
        Kind::Counter,
        "Small change-log files replaced by compaction.",
    ),
    (
        ODS_MERGE_SECONDS,
        Kind::Histogram,
        "Time to merge a stream's ODS (current state) from its change log, in seconds.",
    ),
    (
        ODS_ROWS,
        Kind::Gauge,
        "Live rows in a stream's ODS table after the last merge.",
    ),
    (
        QUEUE_DEPTH,
        Kind::Gauge,
        "Batches waiting in an in-process queue.",
    ),
    (
        RESIDENT_MEMORY,
        Kind::Gauge,
        "Resident set size of the process, in bytes.",
    ),
    (
        PIPELINE_RESTARTS,
        Kind::Counter,
        "Pipeline restarts after transient errors.",
    ),
    (
        KAFKA_PRODUCED,
        Kind::Counter,
        "Records a Kafka-mode stage produced, by stage.",
    ),
    (
        KAFKA_TRANSACTIONS,
        Kind::Counter,
        "Kafka transactions, by stage and outcome (committed, failed: aborted).",
    ),
    (
        KAFKA_COMMIT_SECONDS,
        Kind::Histogram,
        "Time to commit a Kafka transaction (produce latency to committed), by stage.",
    ),
    (
        KAFKA_TRANSACTION_SECONDS,
        Kind::Histogram,
        "Time from a sources transaction's first record to its commit.",
    ),
    (
        KAFKA_CONSUMER_LAG,
        Kind::Gauge,
        "Records behind the end of a topic partition, by stage, topic and partition.",
    ),
    (
        KAFKA_UNDECODABLE,
        Kind::Counter,
        "Topic records a sink could not decode (dead-lettered), by topic.",
    ),
    (
        KAFKA_IN_FLIGHT,
        Kind::Gauge,
        "Records in the producer's queue not yet acknowledged by the brokers, by stage.",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe() {
    for (name, kind, help) in CATALOG {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// Resident set size from /proc (Linux), in bytes.
pub(crate) fn resident_memory_bytes() -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md, the user's catalog, lists exactly the metrics the code exports.
    #[test]
    fn the_documented_catalog_matches_the_code() {
        let docs = include_str!("../docs/metrics.md");
        let documented: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| sluice_"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let code: std::collections::BTreeSet<&str> = CATALOG
            .iter()
            .map(|(n, _, _)| n.strip_prefix("sluice_").unwrap())
            .collect();
        assert_eq!(documented, code);
        for (name, kind, _) in CATALOG {
            assert_eq!(
                name.ends_with("_total"),
                *kind == Kind::Counter,
                "{name}: counters, and only counters, end in _total"
            );
        }
    }
}
