//! The lake: storage below every stage. Where files live ([`store`]: a local folder, HDFS or S3),
//! how a set of files becomes visible at once with the source positions it covers ([`commit`],
//! the exactly-once protocol), which one process may write it ([`lease`]), how rows become Parquet ([`parquet`]), the current-state zone
//! ([`ods`]), small files merged ([`compact`]), table definitions for query engines ([`ddl`]) and
//! the schema histories sources keep beside their positions ([`schema_history`]).

pub mod commit;
pub(crate) mod compact;
pub mod ddl;
pub(crate) mod lease;
pub(crate) mod ods;
pub mod parquet;
pub(crate) mod schema_history;
pub mod store;
