//! sluice's integration tests as one binary (one link instead of one per file), a module per
//! subject. They talk to real servers over loopback (scripts/services.sh starts them).
//!
//! Five stay binaries of their own, because cargo runs binaries one after another and these
//! must not run beside the others: mysql_server.rs, observability.rs and server_restart.rs stop
//! or restart a shared server; compose_structure.rs and s3_lake.rs set process environment
//! variables, which other threads (and every process spawn) read.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod crash_exactly_once;
mod failpoints;
mod fuzz_decoders;
mod fuzz_mongo_documents;
mod fuzz_mysql_decoders;
mod hdfs_lake;
mod kafka_pipeline;
mod lake_compaction;
mod lake_ods;
mod mongo_crash;
mod mongo_source;
mod mysql_crash;
mod mysql_failover;
mod mysql_source;
mod one_writer;
mod postgres_pipeline;
mod postgres_source;
mod resilience;
mod transforms;
