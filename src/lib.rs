//! sluice: change-data-capture from database logs into a Parquet lake, exactly once.
//!
//! Layout (one module per component, as in Vector):
//! - [`config`]: `sluice.yaml` and `sources/*.yaml`, with file/line errors.
//! - [`event`]: the change-event model and the Debezium envelope.
//! - [`source`]: database sources (Postgres logical replication, MySQL/MariaDB binlog).
//! - [`transform`]: cleansing transforms (SQL on DataFusion) and the dead-letter queue.
//! - [`sink`]: the Parquet lake and its commit protocol.
//! - [`log`]: Kafka mode, where topics join the stages (embedded mode joins them in-process).
//! - [`runtime`]: the topology joining them, supervision and shutdown.
//! - [`metrics`]: metric names and the admin HTTP endpoint.
//! - [`check`]: `sluice check`.
//! - [`status`]: what `/status` and `sluice status` show.

pub mod check;
pub mod config;
pub mod event;
pub mod log;
pub mod metrics;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod status;
pub mod transform;

#[cfg(test)]
mod golden_tests;
