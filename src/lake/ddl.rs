//! Table definitions for the lake, so users query it without writing schemas by hand: Hive /
//! Spark / Presto external tables and DuckDB views, per stream, for the raw change log
//! (partitioned by `date`) and the ODS current state. `sluice ddl` prints them; they are also
//! written to `<lake>/_ddl/<stream>.{hive,duckdb}.sql`, next to the data.

use arrow::datatypes::{DataType, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::commit::LakeRoot;
use super::ods;
use super::parquet::WriteError;

/// The definitions of one stream.
#[derive(Debug, Clone)]
pub struct StreamDdl {
    pub(crate) stream: String,
    pub hive: String,
    pub duckdb: String,
}

/// Definitions for every stream in the lake at `root`; `location` is how engines reach the root
/// (`file:///…`, `hdfs://…`).
pub fn generate(lake: &LakeRoot) -> Result<Vec<StreamDdl>, WriteError> {
    let location = lake.store().location();
    let location = location.trim_end_matches('/');
    let mut out = Vec::new();
    for log in ods::streams(lake) {
        let Some(schema) = newest_schema(lake, &log)? else {
            continue;
        };
        let (zone, stream) = ods::split_log(&log);
        let stream = stream.to_string();
        let name = stream.replace(['.', '-'], "_");
        let columns = schema
            .fields()
            .iter()
            .map(|f| format!("  `{}` {}", f.name(), hive_type(f.data_type())))
            .collect::<Vec<_>>()
            .join(",\n");
        let ods_columns = schema
            .fields()
            .iter()
            .filter(|f| !["_op", "_source_pos", "_tx_id"].contains(&f.name().as_str()))
            .map(|f| format!("  `{}` {}", f.name(), hive_type(f.data_type())))
            .collect::<Vec<_>>()
            .join(",\n");
        let hive = format!(
            "-- {stream}: change log (one row per change, partitioned by commit date) and current state.\n\
             CREATE EXTERNAL TABLE IF NOT EXISTS `{zone}_{name}` (\n{columns}\n)\nPARTITIONED BY (`date` STRING)\n\
             STORED AS PARQUET\nLOCATION '{location}/{zone}/{stream}';\nMSCK REPAIR TABLE `{zone}_{name}`;\n\n\
             CREATE EXTERNAL TABLE IF NOT EXISTS `ods_{name}` (\n{ods_columns}\n)\nSTORED AS PARQUET\n\
             LOCATION '{location}/ods/{stream}';\n"
        );
        let local = location.strip_prefix("file://").unwrap_or(location);
        let duckdb = format!(
            "-- {stream}: change log and current state (files of older schemas are merged by name).\n\
             CREATE OR REPLACE VIEW \"{zone}_{name}\" AS SELECT * FROM read_parquet('{local}/{zone}/{stream}/*/*.parquet', \
             hive_partitioning = true, union_by_name = true);\n\
             CREATE OR REPLACE VIEW \"ods_{name}\" AS SELECT * FROM read_parquet('{local}/ods/{stream}/*.parquet', \
             union_by_name = true);\n"
        );
        out.push(StreamDdl {
            stream,
            hive,
            duckdb,
        });
    }
    Ok(out)
}

/// Write each stream's definitions under `<lake>/_ddl/`.
pub fn write(lake: &LakeRoot, ddl: &[StreamDdl]) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: "_ddl".into(),
        source,
    };
    lake.store().mkdirs("_ddl").map_err(io)?;
    for d in ddl {
        lake.store()
            .put(&format!("_ddl/{}.hive.sql", d.stream), d.hive.as_bytes())
            .map_err(io)?;
        lake.store()
            .put(
                &format!("_ddl/{}.duckdb.sql", d.stream),
                d.duckdb.as_bytes(),
            )
            .map_err(io)?;
    }
    Ok(())
}

/// The schema of the change log's newest file (the highest last sequence in its name).
fn newest_schema(lake: &LakeRoot, log: &str) -> Result<Option<Schema>, WriteError> {
    let io = |source| WriteError::Io {
        path: log.into(),
        source,
    };
    let files = lake.store().list_files(log).map_err(io)?;
    let newest = files
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .max_by_key(|f| f.rsplit('-').next().unwrap_or("").to_string());
    let Some(path) = newest else { return Ok(None) };
    let bytes = lake.store().get(&path).map_err(io)?;
    Ok(Some(
        ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .schema()
            .as_ref()
            .clone(),
    ))
}

/// Hive / Spark SQL type of an Arrow type as sluice writes it.
fn hive_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Binary => "BINARY".into(),
        DataType::Date32 => "DATE".into(),
        // Hive has no time-of-day type: the Parquet TIME(µs) reads as microseconds.
        DataType::Time64(TimeUnit::Microsecond) => "BIGINT".into(),
        // A duration (MySQL TIME) is stored as signed microseconds.
        DataType::Duration(_) => "BIGINT".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::List(item) => format!("ARRAY<{}>", hive_type(item.data_type())),
        _ => "STRING".into(),
    }
}
