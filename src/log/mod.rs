//! How stages are joined. Embedded mode joins them with in-process channels (see
//! [`crate::runtime`]); Kafka mode with topics ([`kafka`]): sources produce raw topics, transform
//! workers turn them into cleansed topics, sink workers write the lake.

pub mod kafka;
