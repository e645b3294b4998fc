//! Debezium JSON records back into change events: for `sluice transform test` (recorded
//! envelopes), and for reading raw topics written by sluice or by Debezium itself.
//!
//! A record is a line of JSON: the envelope itself, the envelope with Kafka Connect's embedded
//! schema (`{"schema", "payload"}`), or `{"key", "value"}` as a topic dump shows it (the key's
//! fields name the key columns). With a schema the column types are exact (Debezium's logical
//! types: Decimal, MicroTimestamp, ZonedTimestamp, Json, …); without one they are inferred from
//! the values (integers, floats, booleans, text; objects and arrays as JSON text).
//!
//! Decoding never panics on any input: every problem is an error naming the field.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value as Json};

use crate::event::{
    ChangeEvent, ChangeOrigin, Column, ColumnType, Op, Row, Seq, SourceInfo, TableId, TableSchema,
    Value,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(message.into()))
}

/// How a column's JSON values are read.
#[derive(Debug, Clone, PartialEq)]
struct ColumnCodec {
    ty: ColumnType,
    /// Multiply integers by this to get microseconds (ms: 1000) or divide (ns: -1000).
    micros: i64,
}

/// Each column's name and codec, in order.
type Codecs = Vec<(String, ColumnCodec)>;

/// Decodes records of one stream after another, keeping the schema it built last so that
/// consecutive records of the same shape share one `TableSchema` (as a source's events do).
#[derive(Default)]
pub struct Decoder {
    last: Option<(Codecs, Arc<TableSchema>)>,
    count: u64,
    /// Key columns for records that carry no key.
    default_key: Vec<String>,
}

impl Decoder {
    /// A decoder that takes `key` as the key columns of records without a key of their own.
    pub(crate) fn with_key(key: Vec<String>) -> Self {
        Decoder {
            default_key: key,
            ..Decoder::default()
        }
    }

    /// Decode one record (one line).
    pub fn decode(&mut self, line: &str) -> Result<ChangeEvent, DecodeError> {
        let record: Json =
            serde_json::from_str(line).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
        let (key, value) = match record.get("value") {
            Some(v) if record.get("op").is_none() => (record.get("key"), v),
            _ => (None, &record),
        };
        self.decode_parts(key, value)
    }

    /// Decode a record given as its key (if any) and value, as a Kafka message holds them.
    pub(crate) fn decode_parts(
        &mut self,
        key: Option<&Json>,
        value: &Json,
    ) -> Result<ChangeEvent, DecodeError> {
        let (schema, envelope) = match (value.get("schema"), value.get("payload")) {
            (Some(s), Some(p)) => (Some(s), p),
            _ => (None, value),
        };
        self.decode_envelope(key, schema, envelope)
    }

    /// Decode the envelope itself, with its Connect schema if the record had one.
    pub(crate) fn decode_envelope(
        &mut self,
        key: Option<&Json>,
        schema: Option<&Json>,
        envelope: &Json,
    ) -> Result<ChangeEvent, DecodeError> {
        let envelope = envelope
            .as_object()
            .ok_or_else(|| DecodeError("the envelope is not a JSON object".into()))?;
        let op_code = envelope.get("op").and_then(Json::as_str).unwrap_or("");
        let op = Op::from_code(op_code)
            .ok_or_else(|| DecodeError(format!("op `{op_code}` is not one of r, c, u, d, t")))?;
        let source = envelope
            .get("source")
            .and_then(Json::as_object)
            .ok_or_else(|| DecodeError("no `source` object".into()))?;
        let codecs = match schema {
            Some(s) => codecs_from_schema(s)?,
            None => infer_codecs(envelope)?,
        };
        let mut key_names = key_columns(key);
        if key_names.is_empty() {
            key_names = self.default_key.clone();
        }
        let table = self.table(source, codecs.clone(), &key_names)?;
        let codecs: Vec<ColumnCodec> = codecs.into_iter().map(|(_, c)| c).collect();
        let image = |field: &str| -> Result<Option<Row>, DecodeError> {
            match envelope.get(field) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Object(map)) => row(&table, &codecs, map).map(Some),
                Some(_) => err(format!("`{field}` is not an object")),
            }
        };
        let before = image("before")?;
        let after = image("after")?;
        let ts_ms = source.get("ts_ms").and_then(Json::as_i64).unwrap_or(0);
        let commit_ts_us = source
            .get("ts_us")
            .and_then(Json::as_i64)
            .unwrap_or(ts_ms.saturating_mul(1000));
        self.count += 1;
        let lsn = source
            .get("lsn")
            .and_then(Json::as_u64)
            .unwrap_or(self.count);
        let snapshot = matches!(
            source.get("snapshot").and_then(Json::as_str),
            Some(s) if s != "false"
        );
        Ok(ChangeEvent {
            table,
            op,
            // Debezium fills the missing columns of a key-only before image with nulls or zeros;
            // a delete's before without a full row cannot be told apart, so trust it.
            partial_before: false,
            before,
            after,
            seq: Seq::new(lsn, self.count),
            commit_ts_us,
            pos: match source.get("file").and_then(Json::as_str) {
                // MySQL / MariaDB records name a binlog file and offset.
                Some(file) => ChangeOrigin::Binlog {
                    file: file.into(),
                    pos: source.get("pos").and_then(Json::as_u64).unwrap_or(0),
                    row: source.get("row").and_then(Json::as_u64).unwrap_or(0) as u32,
                    server_id: source.get("server_id").and_then(Json::as_u64).unwrap_or(0) as u32,
                    gtid: source.get("gtid").and_then(Json::as_str).map(Into::into),
                },
                None => ChangeOrigin::PgLsn {
                    lsn,
                    commit_lsn: lsn,
                },
            },
            tx_id: source.get("txId").and_then(Json::as_u64),
            snapshot,
        })
    }

    /// The table schema for this record: the previous one if the columns are the same.
    fn table(
        &mut self,
        source: &Map<String, Json>,
        codecs: Codecs,
        key_names: &[String],
    ) -> Result<Arc<TableSchema>, DecodeError> {
        let text = |f: &str| {
            source
                .get(f)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        let id = TableId {
            source: text("name"),
            namespace: match source.get("schema").and_then(Json::as_str) {
                Some(schema) => schema.to_string(),
                None => text("db"),
            },
            table: match source.get("table").and_then(Json::as_str) {
                Some(t) => t.to_string(),
                None => text("collection"),
            },
        };
        if let Some((last, schema)) = &self.last
            && last == &codecs
            && schema.id == id
        {
            return Ok(schema.clone());
        }
        let columns = codecs
            .iter()
            .map(|(name, c)| Column {
                name: name.clone(),
                ty: c.ty.clone(),
                nullable: true,
                key: key_names.contains(name),
                source_type: String::new(),
            })
            .collect();
        let version = self.last.as_ref().map_or(1, |(_, s)| s.version + 1);
        let connector: &'static str = match text("connector").as_str() {
            "mysql" => "mysql",
            "mariadb" => "mariadb",
            "mongodb" => "mongodb",
            _ => "postgresql",
        };
        let schema = Arc::new(TableSchema::new(
            id,
            columns,
            version,
            SourceInfo {
                connector,
                db: text("db"),
                documents: false,
            },
        ));
        self.last = Some((codecs, schema.clone()));
        Ok(schema)
    }
}

/// The key's field names, from `{"id": 1}` or `{"schema", "payload": {"id": 1}}`.
fn key_columns(key: Option<&Json>) -> Vec<String> {
    let Some(key) = key else { return Vec::new() };
    let payload = key.get("payload").unwrap_or(key);
    payload
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Column codecs from the Connect schema's `after` (or `before`) struct.
fn codecs_from_schema(schema: &Json) -> Result<Codecs, DecodeError> {
    let fields = schema
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| DecodeError("schema has no fields".into()))?;
    let image = fields
        .iter()
        .find(|f| f.get("field").and_then(Json::as_str) == Some("after"))
        .or_else(|| {
            fields
                .iter()
                .find(|f| f.get("field").and_then(Json::as_str) == Some("before"))
        })
        .ok_or_else(|| DecodeError("schema has no before/after struct".into()))?;
    image
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| DecodeError("the after struct has no fields".into()))?
        .iter()
        .map(|f| {
            let name = f
                .get("field")
                .and_then(Json::as_str)
                .ok_or_else(|| DecodeError("a schema field has no name".into()))?;
            Ok((name.to_string(), codec_of(f)?))
        })
        .collect()
}

/// A Connect field schema → how to read it.
fn codec_of(field: &Json) -> Result<ColumnCodec, DecodeError> {
    let ty = field.get("type").and_then(Json::as_str).unwrap_or("");
    let name = field.get("name").and_then(Json::as_str).unwrap_or("");
    let plain = |ty: ColumnType| Ok(ColumnCodec { ty, micros: 1 });
    let scaled = |ty: ColumnType, micros: i64| Ok(ColumnCodec { ty, micros });
    match (ty, name) {
        ("boolean", _) => plain(ColumnType::Bool),
        ("int8" | "int16", _) => plain(ColumnType::Int16),
        ("int32", "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => {
            plain(ColumnType::Date)
        }
        ("int32", "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time") => {
            scaled(ColumnType::Time, 1000)
        }
        ("int32", _) => plain(ColumnType::Int32),
        ("int64", "io.debezium.time.MicroTimestamp") => plain(ColumnType::Timestamp),
        ("int64", "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
            scaled(ColumnType::Timestamp, 1000)
        }
        ("int64", "io.debezium.time.NanoTimestamp") => scaled(ColumnType::Timestamp, -1000),
        ("int64", "io.debezium.time.MicroTime") => plain(ColumnType::Time),
        ("int64", "io.debezium.time.NanoTime") => scaled(ColumnType::Time, -1000),
        ("int64", _) => plain(ColumnType::Int64),
        ("float" | "float32", _) => plain(ColumnType::Float32),
        ("double" | "float64", _) => plain(ColumnType::Float64),
        ("string", "io.debezium.time.ZonedTimestamp") => plain(ColumnType::TimestampTz),
        ("string", "io.debezium.time.ZonedTime") => plain(ColumnType::TimeTz),
        ("string", "io.debezium.data.Json") => plain(ColumnType::Json),
        ("string", "io.debezium.data.Uuid") => plain(ColumnType::Uuid),
        ("string", "io.debezium.time.Interval") => plain(ColumnType::Interval),
        ("string", _) => plain(ColumnType::Text),
        ("bytes", "org.apache.kafka.connect.data.Decimal") => {
            let param = |p: &str| {
                field
                    .get("parameters")
                    .and_then(|ps| ps.get(p))
                    .and_then(Json::as_str)
                    .and_then(|s| s.parse::<i64>().ok())
            };
            match (param("connect.decimal.precision"), param("scale")) {
                (Some(p @ 1..=38), Some(s @ -38..=38)) => plain(ColumnType::Decimal {
                    precision: p as u8,
                    scale: s as i8,
                }),
                (_, Some(s @ -38..=38)) => plain(ColumnType::Decimal {
                    precision: 38,
                    scale: s as i8,
                }),
                _ => err("a Decimal field without a usable scale parameter"),
            }
        }
        ("bytes", _) => plain(ColumnType::Bytes),
        ("struct", "io.debezium.data.VariableScaleDecimal") => plain(ColumnType::Numeric),
        ("array", _) => {
            let items = field
                .get("items")
                .ok_or_else(|| DecodeError("an array field without items".into()))?;
            Ok(ColumnCodec {
                ty: ColumnType::List(Box::new(codec_of(items)?.ty)),
                micros: 1,
            })
        }
        (other, _) => err(format!("unsupported Connect type `{other}`")),
    }
}

/// Without a schema: types from the values of the after (or before) image.
fn infer_codecs(envelope: &Map<String, Json>) -> Result<Codecs, DecodeError> {
    let image = envelope
        .get("after")
        .filter(|a| !a.is_null())
        .or_else(|| envelope.get("before"))
        .and_then(Json::as_object);
    let Some(image) = image else {
        return Ok(Vec::new()); // a truncate: no columns
    };
    Ok(image
        .iter()
        .map(|(name, v)| {
            let ty = match v {
                Json::Bool(_) => ColumnType::Bool,
                Json::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int64,
                Json::Number(_) => ColumnType::Float64,
                Json::Object(_) | Json::Array(_) => ColumnType::Json,
                Json::String(_) | Json::Null => ColumnType::Text,
            };
            (name.clone(), ColumnCodec { ty, micros: 1 })
        })
        .collect())
}

fn row(
    table: &TableSchema,
    codecs: &[ColumnCodec],
    image: &Map<String, Json>,
) -> Result<Row, DecodeError> {
    table
        .columns
        .iter()
        .zip(codecs)
        .map(|(col, codec)| match image.get(&col.name) {
            None | Some(Json::Null) => Ok(Value::Null),
            Some(v) => value(codec, &codec.ty, v)
                .map_err(|e| DecodeError(format!("column `{}`: {}", col.name, e.0))),
        })
        .collect()
}

fn value(codec: &ColumnCodec, ty: &ColumnType, v: &Json) -> Result<Value, DecodeError> {
    let int = || {
        v.as_i64()
            .ok_or_else(|| DecodeError(format!("expected an integer, got {}", kind(v))))
    };
    let micros = |i: i64| {
        if codec.micros >= 0 {
            i.checked_mul(codec.micros)
                .ok_or_else(|| DecodeError("time value out of range".into()))
        } else {
            Ok(i / -codec.micros)
        }
    };
    let text = || {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| DecodeError(format!("expected a string, got {}", kind(v))))
    };
    Ok(match ty {
        _ if v.is_null() => Value::Null,
        ColumnType::Bool => match v {
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Bool(n.as_i64() != Some(0)),
            _ => return err(format!("expected a boolean, got {}", kind(v))),
        },
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => Value::Int(int()?),
        ColumnType::Float32 | ColumnType::Float64 => match v {
            Json::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            Json::String(s) => match s.as_str() {
                "NaN" => Value::Float(f64::NAN),
                "Infinity" => Value::Float(f64::INFINITY),
                "-Infinity" => Value::Float(f64::NEG_INFINITY),
                _ => return err("expected a number"),
            },
            _ => return err(format!("expected a number, got {}", kind(v))),
        },
        ColumnType::Decimal { .. } => {
            let bytes = BASE64
                .decode(text()?)
                .map_err(|e| DecodeError(format!("a Decimal is base64: {e}")))?;
            Value::Decimal(unscaled(&bytes)?)
        }
        ColumnType::Numeric => match v {
            Json::Object(m) => {
                let scale = m.get("scale").and_then(Json::as_i64).unwrap_or(0);
                let raw = m.get("value").and_then(Json::as_str).unwrap_or("");
                let bytes = BASE64.decode(raw).map_err(|e| {
                    DecodeError(format!("a VariableScaleDecimal value is base64: {e}"))
                })?;
                Value::Text(decimal_text(unscaled(&bytes)?, scale))
            }
            Json::Number(n) => Value::Text(n.to_string()),
            _ => Value::Text(text()?),
        },
        ColumnType::Json => match v {
            Json::String(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        },
        ColumnType::Text
        | ColumnType::Uuid
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Other(_) => Value::Text(text()?),
        ColumnType::Bytes => Value::Bytes(
            BASE64
                .decode(text()?)
                .map_err(|e| DecodeError(format!("bytes are base64: {e}")))?,
        ),
        ColumnType::Date => Value::Temporal(int()?),
        ColumnType::Time | ColumnType::Duration | ColumnType::Timestamp => {
            Value::Temporal(micros(int()?)?)
        }
        ColumnType::TimestampTz => {
            let s = text()?;
            let t = chrono::DateTime::parse_from_rfc3339(&s)
                .map_err(|e| DecodeError(format!("not an ISO-8601 timestamp: {e}")))?;
            Value::Temporal(t.timestamp_micros())
        }
        ColumnType::List(elem) => {
            let items = v
                .as_array()
                .ok_or_else(|| DecodeError(format!("expected an array, got {}", kind(v))))?;
            Value::List(
                items
                    .iter()
                    .map(|item| value(codec, elem, item))
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// What a JSON value is, for error messages ("expected a number, not a string").
pub(crate) fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Big-endian two's-complement bytes → i128 (at most 16 bytes).
fn unscaled(bytes: &[u8]) -> Result<i128, DecodeError> {
    if bytes.is_empty() || bytes.len() > 16 {
        return err(format!("a decimal of {} bytes (1 to 16 fit)", bytes.len()));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Ok(i128::from_be_bytes(full))
}

fn decimal_text(unscaled: i128, scale: i64) -> String {
    if scale <= 0 {
        return format!("{unscaled}{}", "0".repeat((-scale).min(64) as usize));
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::debezium::{envelope_json, envelope_json_with_schema, key_json};

    fn sample(file: &str) -> Json {
        let path = format!(
            "{}/tests/fixtures/debezium/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn debezium_records_with_schema_decode_to_typed_events_and_back() {
        let records = sample("pg-schemas-events.json");
        let mut decoder = Decoder::default();
        for op in ["c", "u", "d"] {
            let record = &records[op];
            let line =
                serde_json::json!({"key": record["key"], "value": record["value"]}).to_string();
            let event = decoder.decode(&line).unwrap();
            assert_eq!(event.op.code(), op);
            assert_eq!(event.table.stream, "pg.public.bench");
            assert!(event.table.columns[0].key);
            let price = event
                .table
                .columns
                .iter()
                .find(|c| c.name == "price")
                .unwrap();
            assert_eq!(
                price.ty,
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2
                }
            );
            // Encoding the decoded event again gives Debezium's before/after and key.
            let again = envelope_json_with_schema(&event, 0);
            assert_eq!(
                again["payload"]["after"], record["value"]["payload"]["after"],
                "{op}"
            );
            assert_eq!(
                again["payload"]["before"], record["value"]["payload"]["before"],
                "{op}"
            );
            assert_eq!(key_json(&event), record["key"]["payload"]);
        }
    }

    #[test]
    fn records_without_schema_infer_types() {
        let records = sample("pg_events.json");
        let mut decoder = Decoder::default();
        let event = decoder.decode(&records["c"]["value"].to_string()).unwrap();
        let after = event.after.as_ref().unwrap();
        assert_eq!(after[0], Value::Int(1));
        assert_eq!(
            envelope_json(&event, 0)["after"],
            records["c"]["value"]["after"]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = Decoder::default();
        for line in [
            "",
            "[]",
            "{}",
            r#"{"op":"x","source":{}}"#,
            r#"{"op":"c","source":{},"after":[1]}"#,
            r#"{"schema":{"fields":[{"field":"after","fields":[{"field":"p","type":"bytes","name":"org.apache.kafka.connect.data.Decimal"}]}]},"payload":{"op":"c","source":{},"after":{"p":"AAAAAAAAAAAAAAAAAAAAAAAA"}}}"#,
        ] {
            assert!(decoder.decode(line).is_err(), "{line}");
        }
    }
}
