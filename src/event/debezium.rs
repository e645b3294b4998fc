//! The Debezium envelope in JSON (JsonConverter, `schemas.enable=false`), value encodings as
//! Debezium 3.6 writes them with its defaults (see ../shared/debezium-samples):
//! decimals as base64 big-endian two's-complement unscaled bytes (`decimal.handling.mode=precise`),
//! `timestamp` as epoch microseconds (MicroTimestamp), `timestamptz` as ISO-8601 with `Z`
//! (ZonedTimestamp), `date` as epoch days, `time` as microseconds, JSON as its text, bytes as base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value as Json, json};

use super::{ChangeEvent, ColumnType, Op, Row, SourcePos, TableSchema, Value};

/// The version string in `source.version`: sluice's own, so consumers can tell who wrote it.
pub const CONNECTOR_VERSION: &str = concat!("sluice-", env!("CARGO_PKG_VERSION"));

/// The message key: the primary-key columns.
pub fn key_json(event: &ChangeEvent) -> Json {
    let schema = &event.table;
    let row = event.row_image();
    let mut key = Map::new();
    for (i, col) in schema.key_columns() {
        let v = row
            .map(|r| value_json(&col.ty, &r[i]))
            .unwrap_or(Json::Null);
        key.insert(col.name.clone(), v);
    }
    Json::Object(key)
}

/// The message value: `{before, after, source, transaction, op, ts_ms, ts_us, ts_ns}`.
pub fn envelope_json(event: &ChangeEvent, processed_at_us: i64) -> Json {
    let schema = &event.table;
    let image = |r: &Option<Row>| {
        r.as_ref()
            .map(|r| row_json(schema, r))
            .unwrap_or(Json::Null)
    };
    json!({
        "before": image(&event.before),
        "after": image(&event.after),
        "source": source_json(event),
        "transaction": Json::Null,
        "op": event.op.code(),
        "ts_ms": processed_at_us.div_euclid(1000),
        "ts_us": processed_at_us,
        "ts_ns": processed_at_us as i128 * 1000,
    })
}

fn source_json(event: &ChangeEvent) -> Json {
    let schema = &event.table;
    let ts_us = event.commit_ts_us;
    let snapshot = if event.snapshot { "true" } else { "false" };
    let mut src = Map::new();
    src.insert("version".into(), json!(CONNECTOR_VERSION));
    src.insert("connector".into(), json!(schema.source_info.connector));
    src.insert("name".into(), json!(schema.id.source));
    src.insert("ts_ms".into(), json!(ts_us.div_euclid(1000)));
    src.insert("snapshot".into(), json!(snapshot));
    src.insert("db".into(), json!(schema.source_info.db));
    match &event.pos {
        SourcePos::PgLsn { lsn, commit_lsn } => {
            // Debezium: ["<last commit lsn>", "<lsn>"] as a JSON string.
            src.insert(
                "sequence".into(),
                json!(format!("[\"{commit_lsn}\",\"{lsn}\"]")),
            );
            src.insert("ts_us".into(), json!(ts_us));
            src.insert("ts_ns".into(), json!(ts_us as i128 * 1000));
            src.insert("schema".into(), json!(schema.id.namespace));
            src.insert("table".into(), json!(schema.id.table));
            src.insert("txId".into(), json!(event.tx_id));
            src.insert("lsn".into(), json!(lsn));
            src.insert("xmin".into(), Json::Null);
            src.insert("origin".into(), Json::Null);
            src.insert("origin_lsn".into(), Json::Null);
        }
    }
    Json::Object(src)
}

fn row_json(schema: &TableSchema, row: &Row) -> Json {
    let mut obj = Map::with_capacity(schema.columns.len());
    for (col, v) in schema.columns.iter().zip(row) {
        obj.insert(col.name.clone(), value_json(&col.ty, v));
    }
    Json::Object(obj)
}

/// One value in Debezium's JSON encoding for its column type.
pub fn value_json(ty: &ColumnType, v: &Value) -> Json {
    match (ty, v) {
        (_, Value::Null) => Json::Null,
        (_, Value::Bool(b)) => json!(b),
        (_, Value::Int(i)) => json!(i),
        (_, Value::Float(f)) if f.is_finite() => json!(f),
        (_, Value::Float(f)) => json!(non_finite_name(*f)),
        (_, Value::Decimal(u)) => json!(BASE64.encode(decimal_bytes(*u))),
        (ColumnType::Numeric, Value::Text(s)) => variable_scale_decimal(s),
        (_, Value::Text(s)) => json!(s),
        (ColumnType::List(elem), Value::List(items)) => {
            Json::Array(items.iter().map(|v| value_json(elem, v)).collect())
        }
        (_, Value::List(items)) => Json::Array(
            items
                .iter()
                .map(|v| value_json(&ColumnType::Text, v))
                .collect(),
        ),
        (_, Value::Bytes(b)) => json!(BASE64.encode(b)),
        (ColumnType::TimestampTz, Value::Temporal(us)) => json!(zoned_timestamp(*us)),
        (_, Value::Temporal(t)) => json!(t),
    }
}

fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Kafka Connect's Decimal: the unscaled value as minimal big-endian two's-complement bytes.
pub fn decimal_bytes(unscaled: i128) -> Vec<u8> {
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
fn variable_scale_decimal(text: &str) -> Json {
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
pub fn zoned_timestamp(micros: i64) -> String {
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
    pub fn from_code(code: &str) -> Option<Op> {
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

#[cfg(test)]
mod tests;
