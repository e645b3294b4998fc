//! Avro in the Confluent wire format: a zero magic byte, the schema's registry id (4 bytes, big
//! endian), then the Avro binary datum.
//!
//! Schemas are derived from the Connect schemas sluice already writes for JSON, the way
//! Confluent's `AvroConverter` derives them from Debezium's (its `AvroData`): a struct is a
//! record named after the Connect name (`<stream>.Value` is record `Value` in namespace
//! `<stream>`), an optional field is a union with `null` (null first and default null, or the
//! type first when the field has a default), Connect's `int8`/`int16` are `int` with
//! `connect.type`, `Decimal` is `bytes` with the `decimal` logical type, and the Connect name,
//! version and parameters ride along as `connect.*` properties. Consumers that use Debezium
//! with the AvroConverter see the same schemas.
//!
//! Decoding goes the other way: the writer's Avro schema (from the registry) back to a Connect
//! schema and the datum to the JsonConverter's payload, so one envelope decoder serves both
//! formats. Nothing here panics on input: a datum that does not match is an [`AvroError`].

use std::collections::{HashMap, HashSet};

use apache_avro::Schema;
use apache_avro::types::Value;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value as Json, json};

use crate::event::debezium::decode::kind;

/// The first byte of a record in the Confluent wire format.
pub(crate) const MAGIC: u8 = 0;

#[derive(Debug, thiserror::Error)]
#[error("avro: {0}")]
pub struct AvroError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, AvroError> {
    Err(AvroError(message.into()))
}

/// The schema id and datum of a record in the Confluent wire format, or None when the bytes
/// are not in it (a JSON record never starts with a zero byte).
pub(crate) fn unframe(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [MAGIC, a, b, c, d, datum @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => None,
    }
}

/// A parsed Avro schema with its named types, able to encode JSON payloads and decode datums.
#[derive(Debug)]
pub(crate) struct AvroSchema {
    /// The schema's JSON text, as registered.
    pub(crate) text: String,
    schema: Schema,
    /// Named types by full name, for `Ref`s.
    named: HashMap<String, Schema>,
}

impl AvroSchema {
    pub(crate) fn parse(text: &str) -> Result<Self, AvroError> {
        let schema = Schema::parse_str(text)
            .map_err(|e| AvroError(format!("the schema is not valid Avro: {e}")))?;
        let mut named = HashMap::new();
        collect_named(&schema, &mut named);
        Ok(AvroSchema {
            text: text.to_string(),
            schema,
            named,
        })
    }

    /// The schema derived from a Connect schema (JsonConverter's shape).
    pub(crate) fn from_connect(connect: &Json) -> Result<Self, AvroError> {
        let avro = connect_to_avro(connect, &mut HashSet::new())?;
        Self::parse(&avro.to_string())
    }

    /// The Connect schema this Avro schema stands for.
    pub(crate) fn to_connect(&self) -> Result<Json, AvroError> {
        let avro: Json = serde_json::from_str(&self.text)
            .map_err(|e| AvroError(format!("the schema is not JSON: {e}")))?;
        avro_to_connect(&avro, None, &mut HashMap::new())
    }

    /// The Confluent-framed record of a JsonConverter payload.
    pub(crate) fn encode_framed(&self, id: u32, payload: &Json) -> Result<Vec<u8>, AvroError> {
        let value = self.to_value(&self.schema, payload)?;
        let datum = apache_avro::to_avro_datum(&self.schema, value)
            .map_err(|e| AvroError(format!("the value does not match its schema: {e}")))?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// A datum written with this schema, as the JsonConverter's payload.
    pub(crate) fn decode(&self, mut datum: &[u8]) -> Result<Json, AvroError> {
        let value = apache_avro::from_avro_datum(&self.schema, &mut datum, None)
            .map_err(|e| AvroError(format!("the datum does not match its schema: {e}")))?;
        if !datum.is_empty() {
            return err(format!("{} bytes after the datum", datum.len()));
        }
        value_to_json(value)
    }

    fn resolve<'a>(&'a self, schema: &'a Schema) -> Result<&'a Schema, AvroError> {
        match schema {
            Schema::Ref { name } => {
                let full = name.fullname(None);
                self.named
                    .get(&full)
                    .ok_or_else(|| AvroError(format!("unknown type `{full}`")))
            }
            s => Ok(s),
        }
    }

    fn to_value(&self, schema: &Schema, json: &Json) -> Result<Value, AvroError> {
        let schema = self.resolve(schema)?;
        let mismatch = || AvroError(format!("{} does not fit {:?}", kind(json), schema));
        Ok(match schema {
            Schema::Null if json.is_null() => Value::Null,
            Schema::Boolean => Value::Boolean(json.as_bool().ok_or_else(mismatch)?),
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let i = json.as_i64().and_then(|i| i32::try_from(i).ok());
                let i = i.ok_or_else(mismatch)?;
                match schema {
                    Schema::Date => Value::Date(i),
                    Schema::TimeMillis => Value::TimeMillis(i),
                    _ => Value::Int(i),
                }
            }
            Schema::Long | Schema::TimestampMillis | Schema::TimestampMicros => {
                let i = json.as_i64().ok_or_else(mismatch)?;
                match schema {
                    Schema::TimestampMillis => Value::TimestampMillis(i),
                    Schema::TimestampMicros => Value::TimestampMicros(i),
                    _ => Value::Long(i),
                }
            }
            Schema::Float => Value::Float(float(json).ok_or_else(mismatch)? as f32),
            Schema::Double => Value::Double(float(json).ok_or_else(mismatch)?),
            Schema::String => Value::String(json.as_str().ok_or_else(mismatch)?.to_string()),
            Schema::Bytes => Value::Bytes(base64_bytes(json)?),
            Schema::Decimal(_) => Value::Decimal(base64_bytes(json)?.into()),
            Schema::Enum(e) => {
                let symbol = json.as_str().ok_or_else(mismatch)?;
                let i = e.symbols.iter().position(|s| s == symbol);
                let i = i.ok_or_else(|| AvroError(format!("`{symbol}` is not a symbol")))?;
                Value::Enum(i as u32, symbol.to_string())
            }
            Schema::Array(a) => Value::Array(
                json.as_array()
                    .ok_or_else(mismatch)?
                    .iter()
                    .map(|item| self.to_value(&a.items, item))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Map(m) => Value::Map(
                json.as_object()
                    .ok_or_else(mismatch)?
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.to_value(&m.types, v)?)))
                    .collect::<Result<_, AvroError>>()?,
            ),
            Schema::Record(r) => {
                let object = json.as_object().ok_or_else(mismatch)?;
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let v = field_of(object, &f.name).unwrap_or(&Json::Null);
                    let value = self
                        .to_value(&f.schema, v)
                        .map_err(|e| AvroError(format!("field `{}`: {}", f.name, e.0)))?;
                    fields.push((f.name.clone(), value));
                }
                Value::Record(fields)
            }
            Schema::Union(u) => {
                let variants = u.variants();
                let i = match json {
                    Json::Null => variants.iter().position(|v| *v == Schema::Null),
                    _ => variants.iter().position(|v| *v != Schema::Null),
                };
                let i = i.ok_or_else(mismatch)?;
                Value::Union(i as u32, Box::new(self.to_value(&variants[i], json)?))
            }
            _ => return Err(mismatch()),
        })
    }
}

/// A JSON number, or the JsonConverter's names for the non-finite ones.
fn float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn base64_bytes(json: &Json) -> Result<Vec<u8>, AvroError> {
    let text = json
        .as_str()
        .ok_or_else(|| AvroError(format!("bytes must be base64 text, not {}", kind(json))))?;
    BASE64
        .decode(text)
        .map_err(|e| AvroError(format!("bytes are not base64: {e}")))
}

/// The payload's entry for an Avro field: the field name itself, or a column whose name had to
/// be made a valid Avro name.
fn field_of<'a>(object: &'a Map<String, Json>, avro_name: &str) -> Option<&'a Json> {
    object.get(avro_name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| avro_name_of(k) == avro_name)
            .map(|(_, v)| v)
    })
}

fn value_to_json(value: Value) -> Result<Json, AvroError> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => json!(i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => json!(i),
        Value::Float(f) => float_json(f as f64),
        Value::Double(f) => float_json(f),
        Value::Bytes(b) | Value::Fixed(_, b) => json!(BASE64.encode(b)),
        Value::Decimal(d) => {
            let bytes = Vec::<u8>::try_from(&d).map_err(|e| AvroError(e.to_string()))?;
            json!(BASE64.encode(bytes))
        }
        Value::BigDecimal(d) => json!(d.to_string()),
        Value::String(s) | Value::Enum(_, s) => Json::String(s),
        Value::Uuid(u) => json!(u.to_string()),
        Value::Union(_, v) => value_to_json(*v)?,
        Value::Array(items) => Json::Array(
            items
                .into_iter()
                .map(value_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => Json::Object(
            entries
                .into_iter()
                .map(|(k, v)| Ok((k, value_to_json(v)?)))
                .collect::<Result<_, AvroError>>()?,
        ),
        Value::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, value_to_json(v)?)))
                .collect::<Result<_, AvroError>>()?,
        ),
        Value::Duration(_) => return err("the `duration` logical type is not supported"),
    })
}

fn float_json(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => json!("NaN"),
        None if f > 0.0 => json!("Infinity"),
        None => json!("-Infinity"),
    }
}

fn collect_named(schema: &Schema, named: &mut HashMap<String, Schema>) {
    match schema {
        Schema::Record(r) => {
            named.insert(r.name.fullname(None), schema.clone());
            for f in &r.fields {
                collect_named(&f.schema, named);
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Fixed(f) => {
            named.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Array(a) => collect_named(&a.items, named),
        Schema::Map(m) => collect_named(&m.types, named),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_named(v, named)),
        _ => {}
    }
}

/// A name Avro accepts (`[A-Za-z_][A-Za-z0-9_]*`): other characters become `_`, and a leading
/// digit gets a `_` before it, as Debezium's `field.name.adjustment.mode: avro` does.
pub(crate) fn avro_name_of(name: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out: String = name
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A Connect name as an Avro full name: each dotted part made valid.
fn avro_full_name(connect_name: &str) -> String {
    connect_name
        .split('.')
        .map(avro_name_of)
        .collect::<Vec<_>>()
        .join(".")
}

/// The Avro type of a Connect schema node. `named` holds the records already defined in this
/// schema: a second use (`after` after `before`) refers to the first by its full name.
fn connect_to_avro(node: &Json, named: &mut HashSet<String>) -> Result<Json, AvroError> {
    let ty = node.get("type").and_then(Json::as_str).unwrap_or("");
    let name = node.get("name").and_then(Json::as_str);
    let mut avro = match ty {
        "struct" => {
            let full = avro_full_name(name.unwrap_or("io.confluent.connect.avro.ConnectDefault"));
            if !named.insert(full.clone()) {
                return Ok(Json::String(full));
            }
            let (namespace, short) = match full.rsplit_once('.') {
                Some((ns, short)) => (Some(ns), short),
                None => (None, full.as_str()),
            };
            let fields = node
                .get("fields")
                .and_then(Json::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|f| connect_field_to_avro(f, named))
                .collect::<Result<Vec<_>, _>>()?;
            let mut record = json!({ "type": "record", "name": short });
            if let Some(ns) = namespace {
                record["namespace"] = json!(ns);
            }
            record["fields"] = Json::Array(fields);
            record
        }
        "array" => {
            let items = node
                .get("items")
                .ok_or_else(|| AvroError("an array without items".into()))?;
            json!({ "type": "array", "items": optional_to_avro(items, named)? })
        }
        "map" => {
            let keys = node.pointer("/keys/type").and_then(Json::as_str);
            if keys != Some("string") {
                return err("maps with keys other than strings are not supported in Avro");
            }
            let values = node
                .get("values")
                .ok_or_else(|| AvroError("a map without values".into()))?;
            json!({ "type": "map", "values": optional_to_avro(values, named)? })
        }
        "int8" | "int16" => json!({ "type": "int", "connect.type": ty }),
        "int32" => json!("int"),
        "int64" => json!("long"),
        "float" => json!("float"),
        "double" => json!("double"),
        "boolean" => json!("boolean"),
        "string" => json!("string"),
        "bytes" => json!("bytes"),
        other => return err(format!("the Connect type `{other}` has no Avro form here")),
    };
    let version = node.get("version");
    let parameters = node.get("parameters");
    if name.is_none() && version.is_none() && parameters.is_none() {
        return Ok(avro);
    }
    if let Json::String(primitive) = avro {
        avro = json!({ "type": primitive });
    }
    if name == Some("org.apache.kafka.connect.data.Decimal") {
        let param = |key: &str| {
            parameters
                .and_then(|p| p.get(key))
                .and_then(Json::as_str)
                .and_then(|s| s.parse::<u64>().ok())
        };
        avro["scale"] = json!(param("scale").unwrap_or(0));
        avro["precision"] = json!(param("connect.decimal.precision").unwrap_or(64));
        avro["logicalType"] = json!("decimal");
    }
    if let Some(v) = version {
        avro["connect.version"] = v.clone();
    }
    if let Some(p) = parameters {
        avro["connect.parameters"] = p.clone();
    }
    if let Some(n) = name {
        avro["connect.name"] = json!(n);
    }
    Ok(avro)
}

/// The Avro type of a possibly optional Connect node: optional ones are unions with null.
fn optional_to_avro(node: &Json, named: &mut HashSet<String>) -> Result<Json, AvroError> {
    let avro = connect_to_avro(node, named)?;
    let optional = node
        .get("optional")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let has_default = node.get("default").is_some_and(|d| !d.is_null());
    Ok(match (optional, has_default) {
        (false, _) => avro,
        (true, false) => json!(["null", avro]),
        (true, true) => json!([avro, "null"]),
    })
}

fn connect_field_to_avro(field: &Json, named: &mut HashSet<String>) -> Result<Json, AvroError> {
    let name = field
        .get("field")
        .and_then(Json::as_str)
        .ok_or_else(|| AvroError("a struct field without a name".into()))?;
    let ty = optional_to_avro(field, named)
        .map_err(|e| AvroError(format!("field `{name}`: {}", e.0)))?;
    let mut avro = json!({ "name": avro_name_of(name), "type": ty });
    let optional = field
        .get("optional")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    match field.get("default") {
        Some(d @ (Json::String(_) | Json::Bool(_) | Json::Number(_))) => {
            avro["default"] = d.clone()
        }
        _ if optional => avro["default"] = Json::Null,
        _ => {}
    }
    Ok(avro)
}

/// The Connect node of an Avro type. `named` maps the full names of records defined so far to
/// their Connect form, for references.
fn avro_to_connect(
    node: &Json,
    namespace: Option<&str>,
    named: &mut HashMap<String, Json>,
) -> Result<Json, AvroError> {
    match node {
        Json::String(t) => Ok(match t.as_str() {
            "boolean" => json!({ "type": "boolean" }),
            "int" => json!({ "type": "int32" }),
            "long" => json!({ "type": "int64" }),
            "float" => json!({ "type": "float" }),
            "double" => json!({ "type": "double" }),
            "bytes" => json!({ "type": "bytes" }),
            "string" => json!({ "type": "string" }),
            "null" => return err("a `null` type outside a union"),
            reference => {
                let full = match (reference.contains('.'), namespace) {
                    (false, Some(ns)) => format!("{ns}.{reference}"),
                    _ => reference.to_string(),
                };
                named
                    .get(&full)
                    .or_else(|| named.get(reference))
                    .cloned()
                    .ok_or_else(|| AvroError(format!("unknown type `{reference}`")))?
            }
        }),
        Json::Array(branches) => {
            let mut types: Vec<&Json> = branches.iter().filter(|b| *b != "null").collect();
            let nullable = types.len() < branches.len();
            match (types.pop(), types.is_empty(), nullable) {
                (Some(only), true, true) => {
                    let mut connect = avro_to_connect(only, namespace, named)?;
                    connect["optional"] = json!(true);
                    Ok(connect)
                }
                _ => err("unions other than [null, T] have no Connect form"),
            }
        }
        Json::Object(o) => avro_object_to_connect(o, namespace, named),
        _ => err("a schema must be a name, a union or an object"),
    }
}

fn avro_object_to_connect(
    o: &Map<String, Json>,
    namespace: Option<&str>,
    named: &mut HashMap<String, Json>,
) -> Result<Json, AvroError> {
    let ty = o
        .get("type")
        .ok_or_else(|| AvroError("a schema without a type".into()))?;
    let mut connect = match ty.as_str() {
        Some("record") => record_to_connect(o, namespace, named)?,
        Some("array") => {
            let items = o
                .get("items")
                .ok_or_else(|| AvroError("an array without items".into()))?;
            json!({ "type": "array", "items": avro_to_connect(items, namespace, named)? })
        }
        Some("map") => {
            let values = o
                .get("values")
                .ok_or_else(|| AvroError("a map without values".into()))?;
            json!({ "type": "map", "keys": { "type": "string" }, "values": avro_to_connect(values, namespace, named)? })
        }
        Some("enum") => json!({ "type": "string" }),
        Some("fixed") => json!({ "type": "bytes" }),
        _ => avro_to_connect(ty, namespace, named)?,
    };
    match o.get("logicalType").and_then(Json::as_str) {
        Some("decimal") if o.get("connect.name").is_none() => {
            let scale = o.get("scale").and_then(Json::as_u64).unwrap_or(0);
            let precision = o.get("precision").and_then(Json::as_u64).unwrap_or(64);
            connect["name"] = json!("org.apache.kafka.connect.data.Decimal");
            connect["parameters"] = json!({ "scale": scale.to_string(), "connect.decimal.precision": precision.to_string() });
        }
        Some("date") => connect["name"] = json!("org.apache.kafka.connect.data.Date"),
        Some("timestamp-millis") => {
            connect["name"] = json!("org.apache.kafka.connect.data.Timestamp")
        }
        _ => {}
    }
    if let Some(t) = o.get("connect.type").and_then(Json::as_str) {
        connect["type"] = json!(t);
    }
    for (avro_key, connect_key) in [
        ("connect.name", "name"),
        ("connect.version", "version"),
        ("connect.parameters", "parameters"),
    ] {
        if let Some(v) = o.get(avro_key) {
            connect[connect_key] = v.clone();
        }
    }
    Ok(connect)
}

fn record_to_connect(
    o: &Map<String, Json>,
    namespace: Option<&str>,
    named: &mut HashMap<String, Json>,
) -> Result<Json, AvroError> {
    let name = o
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| AvroError("a record without a name".into()))?;
    let namespace = match name.rsplit_once('.') {
        Some((ns, _)) => Some(ns.to_string()),
        None => o
            .get("namespace")
            .and_then(Json::as_str)
            .map(str::to_string)
            .or(namespace.map(str::to_string)),
    };
    let full = match (&namespace, name.contains('.')) {
        (Some(ns), false) => format!("{ns}.{name}"),
        _ => name.to_string(),
    };
    let mut fields = Vec::new();
    for f in o
        .get("fields")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let field = f.get("name").and_then(Json::as_str);
        let field = field.ok_or_else(|| AvroError("a field without a name".into()))?;
        let ty = f
            .get("type")
            .ok_or_else(|| AvroError(format!("field `{field}` has no type")))?;
        let mut connect = avro_to_connect(ty, namespace.as_deref(), named)?;
        if connect.get("optional").is_none() {
            connect["optional"] = json!(false);
        }
        if let Some(default) = f.get("default").filter(|d| !d.is_null()) {
            connect["default"] = default.clone();
        }
        connect["field"] = json!(field);
        fields.push(connect);
    }
    let connect = json!({ "type": "struct", "fields": fields, "optional": false, "name": full });
    named.insert(full, connect.clone());
    Ok(connect)
}

#[cfg(test)]
mod tests;
