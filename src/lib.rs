//! sluice: change-data-capture from database logs into a Parquet lake, exactly once.
//!
//! The modules are layers; imports point down only (ARCHITECTURE.md has the picture, and
//! `architecture_tests.rs` checks every `use`):
//!
//! 1. commands: [`command`] (`sluice check`; the CLI itself is `main.rs`), and [`decoders`], the
//!    fuzz tests' window into the sources
//! 2. topologies: [`topology`] (embedded, and Kafka mode's stages), supervision and shutdown
//! 3. stages and connectors: [`sink`] over [`transform`], [`source`], the [`kafka`] client
//! 4. storage: [`lake`] (stores, the commit protocol, Parquet, ODS, compaction, DDL, histories)
//! 5. what stages report: [`status`]
//! 6. the contract between stages: [`contract`] (batches, acks, the sequence cut, positions)
//! 7. the model: [`event`] (change events, the Debezium envelope, dead letters)
//! 8. leaves: [`config`], [`error`], [`finding`], [`metrics`], and the test build's failpoints

pub mod command;
pub mod config;
pub mod contract;
pub mod decoders;
pub mod error;
pub mod event;
mod failpoint;
pub mod finding;
pub mod kafka;
pub mod lake;
pub mod metrics;
pub mod sink;
pub(crate) mod source;
pub mod status;
pub mod topology;
pub mod transform;

#[cfg(test)]
mod architecture_tests;
#[cfg(test)]
mod golden_tests;
