//! The Debezium envelope in JSON (JsonConverter, `schemas.enable=false`), value encodings as
//! Debezium 3.6 writes them with its defaults (see ../shared/debezium-samples):
//! decimals as base64 big-endian two's-complement unscaled bytes (`decimal.handling.mode=precise`),
//! `timestamp` as epoch microseconds (MicroTimestamp), `timestamptz` as ISO-8601 with `Z`
//! (ZonedTimestamp), `date` as epoch days, `time` as microseconds, JSON as its text, bytes as base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value as Json, json};

use super::{ChangeEvent, ColumnType, Op, TableSchema};

/// The version string in `source.version`: sluice's own, so consumers can tell who wrote it.
pub(crate) const CONNECTOR_VERSION: &str = concat!("sluice-", env!("CARGO_PKG_VERSION"));

/// The message key: the primary-key columns.
pub(crate) fn key_json(event: &ChangeEvent) -> Json {
    serde_json::to_value(serialize::Key(event)).unwrap_or(Json::Null)
}

/// The message value: `{before, after, source, transaction, op, ts_ms, ts_us, ts_ns}`
/// (MongoDB's adds `updateDescription`; its images are the documents' extended JSON).
pub(crate) fn envelope_json(event: &ChangeEvent, processed_at_us: i64) -> Json {
    serde_json::to_value(serialize::Envelope {
        event,
        processed_at_us,
    })
    .unwrap_or(Json::Null)
}

/// The key with Kafka Connect's embedded schema (JsonConverter `schemas.enable=true`).
pub(crate) fn key_json_with_schema(event: &ChangeEvent) -> Json {
    let table = &event.table;
    let fields: Vec<Json> = if table.source_info.documents {
        vec![json!({ "type": "string", "optional": false, "field": "id" })]
    } else {
        table
            .key_columns()
            .map(|(_, c)| field_schema(&c.name, &c.ty, false))
            .collect()
    };
    json!({
        "schema": { "type": "struct", "fields": fields, "optional": false, "name": format!("{}.Key", table.stream) },
        "payload": key_json(event),
    })
}

/// The envelope with Kafka Connect's embedded schema, as Debezium's JsonConverter writes it
/// (the tests compare it with recorded Debezium events; the codec writes the same in pieces).
#[cfg(test)]
pub(crate) fn envelope_json_with_schema(event: &ChangeEvent, processed_at_us: i64) -> Json {
    json!({ "schema": envelope_schema(&event.table), "payload": envelope_json(event, processed_at_us) })
}

/// The Connect schema of the envelope: before/after rows, the source block, transaction, op, times.
pub(crate) fn envelope_schema(table: &TableSchema) -> Json {
    let row_fields: Vec<Json> = table
        .columns
        .iter()
        .map(|c| field_schema(&c.name, &c.ty, c.nullable))
        .collect();
    let documents = table.source_info.documents;
    let row = |field: &str| match documents {
        true => {
            json!({ "type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": field })
        }
        false => {
            json!({ "type": "struct", "fields": row_fields, "optional": true, "name": format!("{}.Value", table.stream), "field": field })
        }
    };
    let s = |field: &str, ty: &str, optional: bool| json!({ "type": ty, "optional": optional, "field": field });
    let source = source_schema(table, &s);
    let transaction = json!({
        "type": "struct",
        "fields": [s("id", "string", false), s("total_order", "int64", false), s("data_collection_order", "int64", false)],
        "optional": true, "name": "event.block", "version": 1, "field": "transaction",
    });
    let mut fields = vec![row("before"), row("after")];
    if documents {
        fields.push(json!({
            "type": "struct", "optional": true, "field": "updateDescription",
            "name": "io.debezium.connector.mongodb.changestream.updatedescription", "version": 1,
            "fields": [
                { "type": "array", "items": { "type": "string", "optional": false }, "optional": true, "field": "removedFields" },
                { "type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": "updatedFields" },
                { "type": "array", "optional": true, "field": "truncatedArrays", "items": { "type": "struct", "optional": false,
                    "name": "io.debezium.connector.mongodb.changestream.truncatedarray", "version": 1,
                    "fields": [s("field", "string", false), s("size", "int32", false)] } },
            ],
        }));
    }
    fields.extend([
        source,
        transaction,
        s("op", "string", false),
        s("ts_ms", "int64", true),
        s("ts_us", "int64", true),
        s("ts_ns", "int64", true),
    ]);
    json!({
        "type": "struct",
        "fields": fields,
        "optional": false,
        "name": format!("{}.Envelope", table.stream),
        "version": 2,
    })
}

/// The Connect schema of the `source` block: Debezium's, per connector.
fn source_schema(table: &TableSchema, s: &dyn Fn(&str, &str, bool) -> Json) -> Json {
    let snapshot = json!({ "type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
        "parameters": { "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental" },
        "default": "false", "field": "snapshot" });
    let common = [
        s("version", "string", false),
        s("connector", "string", false),
        s("name", "string", false),
        s("ts_ms", "int64", false),
        snapshot,
        s("db", "string", false),
        s("sequence", "string", true),
        s("ts_us", "int64", true),
        s("ts_ns", "int64", true),
    ];
    let (specific, name) = match table.source_info.connector {
        connector @ ("mysql" | "mariadb") => (
            vec![
                s("table", "string", true),
                s("server_id", "int64", false),
                s("gtid", "string", true),
                s("file", "string", false),
                s("pos", "int64", false),
                s("row", "int32", false),
                s("thread", "int64", true),
                s("query", "string", true),
            ],
            format!("io.debezium.connector.{connector}.Source"),
        ),
        "mongodb" => (
            vec![
                s("collection", "string", false),
                s("ord", "int32", false),
                s("lsid", "string", true),
                s("txnNumber", "int64", true),
                s("wallTime", "int64", true),
            ],
            "io.debezium.connector.mongo.Source".to_string(),
        ),
        _ => (
            vec![
                s("schema", "string", false),
                s("table", "string", false),
                s("txId", "int64", true),
                s("lsn", "int64", true),
                s("xmin", "int64", true),
                s("origin", "string", true),
                s("origin_lsn", "int64", true),
            ],
            "io.debezium.connector.postgresql.Source".to_string(),
        ),
    };
    let fields: Vec<Json> = common.into_iter().chain(specific).collect();
    json!({ "type": "struct", "fields": fields, "optional": false, "name": name, "version": 1, "field": "source" })
}

/// One column's Connect schema, with Debezium's logical type names.
fn field_schema(field: &str, ty: &ColumnType, optional: bool) -> Json {
    let mut f = type_schema(ty);
    if let Json::Object(map) = &mut f {
        map.insert("optional".into(), json!(optional));
        map.insert("field".into(), json!(field));
    }
    f
}

fn type_schema(ty: &ColumnType) -> Json {
    let named = |t: &str, name: &str| json!({ "type": t, "name": name, "version": 1 });
    match ty {
        ColumnType::Bool => json!({ "type": "boolean" }),
        ColumnType::Int16 => json!({ "type": "int16" }),
        ColumnType::Int32 => json!({ "type": "int32" }),
        ColumnType::Int64 => json!({ "type": "int64" }),
        ColumnType::Float32 => json!({ "type": "float" }),
        ColumnType::Float64 => json!({ "type": "double" }),
        ColumnType::Decimal { precision, scale } => json!({
            "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
            "parameters": { "scale": scale.to_string(), "connect.decimal.precision": precision.to_string() },
        }),
        ColumnType::Numeric => json!({
            "type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
            "fields": [{ "type": "int32", "optional": false, "field": "scale" }, { "type": "bytes", "optional": false, "field": "value" }],
        }),
        ColumnType::Text | ColumnType::Other(_) => json!({ "type": "string" }),
        ColumnType::Json => named("string", "io.debezium.data.Json"),
        ColumnType::Uuid => named("string", "io.debezium.data.Uuid"),
        ColumnType::Bytes => json!({ "type": "bytes" }),
        ColumnType::Date => named("int32", "io.debezium.time.Date"),
        ColumnType::Time | ColumnType::Duration => named("int64", "io.debezium.time.MicroTime"),
        ColumnType::TimeTz => named("string", "io.debezium.time.ZonedTime"),
        ColumnType::Timestamp => named("int64", "io.debezium.time.MicroTimestamp"),
        ColumnType::TimestampTz => named("string", "io.debezium.time.ZonedTimestamp"),
        ColumnType::Interval => named("string", "io.debezium.time.Interval"),
        ColumnType::List(elem) => {
            let mut items = type_schema(elem);
            if let Json::Object(map) = &mut items {
                map.insert("optional".into(), json!(true));
            }
            json!({ "type": "array", "items": items })
        }
    }
}

pub(crate) fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Kafka Connect's Decimal: the unscaled value as minimal big-endian two's-complement bytes.
pub(crate) fn decimal_bytes(unscaled: i128) -> Vec<u8> {
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    // Drop leading bytes that only repeat the sign, keeping the sign bit in the first byte left.
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

/// Debezium's VariableScaleDecimal for numerics without a fixed scale: `{"scale", "value"}` with
/// the unscaled value as big-endian two's-complement bytes. NaN and infinities have no such form:
/// null, as Debezium's precise mode does.
pub(crate) fn variable_scale_decimal(text: &str) -> Json {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) || int.len() + frac.len() == 0 {
        return Json::Null;
    }
    // Magnitude as big-endian bytes, by repeated multiply-by-ten.
    let mut magnitude: Vec<u8> = vec![0];
    for d in int.bytes().chain(frac.bytes()) {
        let mut carry = (d - b'0') as u32;
        for byte in magnitude.iter_mut().rev() {
            let v = *byte as u32 * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    if magnitude[0] & 0x80 != 0 {
        magnitude.insert(0, 0); // room for the sign bit
    }
    if neg {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in magnitude.iter_mut().rev() {
            let v = (!*byte) as u16 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    while magnitude.len() > 1
        && ((magnitude[0] == 0 && magnitude[1] & 0x80 == 0)
            || (magnitude[0] == 0xff && magnitude[1] & 0x80 != 0))
    {
        magnitude.remove(0);
    }
    json!({ "scale": frac.len(), "value": BASE64.encode(magnitude) })
}

/// ISO-8601 in UTC with `Z` and the shortest fraction, as Java's ISO_OFFSET_DATE_TIME prints it.
pub(crate) fn zoned_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let Some(dt) = chrono::DateTime::from_timestamp(secs, frac * 1000) else {
        return micros.to_string();
    };
    let mut s = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

impl Op {
    pub(crate) fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "r" => Op::Read,
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => Op::Truncate,
            _ => return None,
        })
    }
}

pub mod decode;
pub(crate) mod serialize;

#[cfg(test)]
mod tests;
