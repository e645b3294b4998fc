//! The on-disk formats cannot drift: every kind of record sluice writes and later reads back
//! (commit records with each kind of source position, the Kafka offsets record, the schema
//! histories, the ODS merge state) is read from `tests/fixtures/golden/` and written back byte
//! for byte with the same call the writer uses. A lake or a topic written by an earlier release
//! must stay readable, and a schema history's id is the hash of its bytes, so a change of field
//! order or spelling would fork every history.
//!
//! The fixtures were written by hand to the struct definitions, then checked against this test on
//! the code as it was before the architecture change (commit a10ee86), so they are what that code
//! wrote. To add a field: add it to a fixture and keep the old fixtures passing.

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::lake::commit::Commit;
use crate::lake::ods::MergeState;
use crate::source::mongodb::documents::Schemas as MongoSchemas;
use crate::source::mysql::ddl::Tables as MysqlTables;
use crate::topology::kafka::sources_to_raw::OffsetRecord;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Read `name` as `T` and write it back with `write`; the bytes must be the file's.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str, write: fn(&T) -> Vec<u8>) {
    let bytes = fixture(name);
    let value: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let written = write(&value);
    assert!(
        written == bytes,
        "{name} is not written back as it was read:\n--- fixture\n{}\n--- written\n{}",
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&written)
    );
}

fn compact<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Commit records are written pretty (lake.rs), for people reading them.
fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap()
}

#[test]
fn commit_records_with_every_kind_of_position_and_snapshot_state() {
    round_trip::<Commit>("commit-snapshots.json", pretty);
}

#[test]
fn commit_records_of_streaming_sources_and_a_compaction() {
    round_trip::<Commit>("commit-streaming.json", pretty);
}

#[test]
fn commit_records_of_a_kafka_mode_lake_writer() {
    round_trip::<Commit>("commit-kafka-writer.json", pretty);
}

#[test]
fn the_kafka_offsets_topic_record() {
    round_trip::<OffsetRecord>("kafka-offset-record.json", compact);
}

#[test]
fn schema_histories_whose_ids_hash_their_bytes() {
    round_trip::<MysqlTables>("mysql-schema-history.json", compact);
    round_trip::<MongoSchemas>("mongo-schema-history.json", compact);
}

#[test]
fn the_ods_merge_state() {
    round_trip::<MergeState>("ods-merge-state.json", compact);
}
