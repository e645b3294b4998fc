//! MongoDB documents → typed lake rows.
//!
//! A collection has no schema, so sluice infers one from the documents it sees and keeps it in
//! the schema history (with the positions, so a restart types the next document the same way):
//!
//! * `_id` first, always text: an ObjectId as its 24 hex digits, a string as itself, a number
//!   as its decimal form, anything else as relaxed extended JSON. It is the key.
//! * then every top-level field in the order first seen, typed from its BSON type: int32 →
//!   Int32, int64 → Int64, double → Float64, decimal128 → exact decimal text, string → Text,
//!   bool → Bool, date → TimestampTz (UTC µs), ObjectId → Text (hex), binary → Bytes (UUID
//!   subtype 4 → Uuid), timestamp → Text `t:i`, regex → Text `/pattern/flags`, JavaScript →
//!   Text; an embedded document → Json (its relaxed extended JSON); an array → List of its
//!   element type when every element has one primitive type, else Json;
//! * a field whose documents disagree widens: int32 with int64 → Int64, otherwise → Json (the
//!   value's extended JSON), a new schema version with a new file; nothing is dropped;
//! * last, `_doc`: the whole document as relaxed extended JSON, so nothing is lost whatever the
//!   inferred columns say.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use mongodb::bson::{Bson, Document, spec::BinarySubtype};
use serde::{Deserialize, Serialize};

use crate::event::{Column, ColumnType, Row, Value};

pub(crate) const ID: &str = "_id";
pub(crate) const DOC: &str = "_doc";

/// A collection's inferred fields (besides `_id` and `_doc`), in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSchema {
    pub(crate) fields: Vec<(String, ColumnType)>,
}

/// The inferred schemas of every captured collection, by `db.collection`.
pub(crate) type Schemas = BTreeMap<String, CollectionSchema>;

impl CollectionSchema {
    /// Widen the schema to hold `doc`. Returns whether it changed (a new schema version).
    pub fn observe(&mut self, doc: &Document) -> bool {
        let mut changed = false;
        for (name, value) in doc {
            if name == ID || name == DOC {
                continue;
            }
            let Some(ty) = type_of(value) else {
                continue; // null, or an empty array: nothing to learn
            };
            match self.fields.iter_mut().find(|(n, _)| n == name) {
                Some((_, current)) => {
                    let wide = widen(current, &ty);
                    if wide != *current {
                        *current = wide;
                        changed = true;
                    }
                }
                None => {
                    self.fields.push((name.clone(), ty));
                    changed = true;
                }
            }
        }
        changed
    }

    /// The lake columns: `_id`, the fields, `_doc`.
    pub fn columns(&self) -> Vec<Column> {
        let col = |name: &str, ty: ColumnType, key: bool| Column {
            name: name.to_string(),
            source_type: type_name(&ty),
            ty,
            nullable: !key,
            key,
        };
        let mut out = vec![col(ID, ColumnType::Text, true)];
        out.extend(self.fields.iter().map(|(n, t)| col(n, t.clone(), false)));
        out.push(col(DOC, ColumnType::Json, false));
        out
    }

    /// A document as a row of this schema's columns.
    pub fn row(&self, doc: &Document) -> Row {
        let mut row = Vec::with_capacity(self.fields.len() + 2);
        row.push(
            doc.get(ID)
                .map_or(Value::Null, |id| Value::Text(id_text(id))),
        );
        for (name, ty) in &self.fields {
            row.push(doc.get(name).map_or(Value::Null, |v| value_of(v, ty)));
        }
        row.push(Value::Text(extjson(&Bson::Document(doc.clone()))));
        row
    }

    /// A row that holds only the key (a delete or update without a before image).
    pub fn key_row(&self, id: &Bson) -> Row {
        let mut row = vec![Value::Null; self.fields.len() + 2];
        row[0] = Value::Text(id_text(id));
        row
    }
}

fn type_name(ty: &ColumnType) -> String {
    format!("{ty:?}").to_lowercase()
}

/// The lake type a BSON value suggests; None when it says nothing (null, empty array).
pub(crate) fn type_of(v: &Bson) -> Option<ColumnType> {
    Some(match v {
        Bson::Null | Bson::Undefined => return None,
        Bson::Double(_) => ColumnType::Float64,
        Bson::Int32(_) => ColumnType::Int32,
        Bson::Int64(_) => ColumnType::Int64,
        Bson::Decimal128(_) => ColumnType::Numeric,
        Bson::String(_) | Bson::Symbol(_) | Bson::JavaScriptCode(_) => ColumnType::Text,
        Bson::ObjectId(_) | Bson::Timestamp(_) | Bson::RegularExpression(_) => ColumnType::Text,
        Bson::Boolean(_) => ColumnType::Bool,
        Bson::DateTime(_) => ColumnType::TimestampTz,
        Bson::Binary(b) if b.subtype == BinarySubtype::Uuid && b.bytes.len() == 16 => {
            ColumnType::Uuid
        }
        Bson::Binary(_) => ColumnType::Bytes,
        Bson::Array(items) => {
            let mut elem: Option<ColumnType> = None;
            for item in items {
                let Some(t) = type_of(item) else { continue };
                elem = Some(match elem {
                    None => t,
                    Some(e) => widen(&e, &t),
                });
            }
            match elem {
                None => return None,
                Some(ColumnType::Json) | Some(ColumnType::List(_)) => ColumnType::Json,
                Some(e) => ColumnType::List(Box::new(e)),
            }
        }
        Bson::Document(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::MinKey
        | Bson::MaxKey
        | Bson::DbPointer(_) => ColumnType::Json,
    })
}

/// The narrowest type holding values of both.
pub(crate) fn widen(a: &ColumnType, b: &ColumnType) -> ColumnType {
    use ColumnType as T;
    match (a, b) {
        _ if a == b => a.clone(),
        (T::Int32, T::Int64) | (T::Int64, T::Int32) => T::Int64,
        (T::List(x), T::List(y)) => match widen(x, y) {
            T::Json => T::Json,
            e => T::List(Box::new(e)),
        },
        _ => T::Json,
    }
}

/// A BSON value typed as `ty` (the schema may be wider than the value).
pub(crate) fn value_of(v: &Bson, ty: &ColumnType) -> Value {
    use ColumnType as T;
    match (ty, v) {
        (_, Bson::Null | Bson::Undefined) => Value::Null,
        (T::Json, v) => Value::Text(extjson(v)),
        (T::Float64, Bson::Double(f)) => Value::Float(*f),
        (T::Int32 | T::Int64, Bson::Int32(i)) => Value::Int(*i as i64),
        (T::Int64, Bson::Int64(i)) => Value::Int(*i),
        (T::Numeric, Bson::Decimal128(d)) => Value::Text(decimal_text(&d.to_string())),
        (T::Bool, Bson::Boolean(b)) => Value::Bool(*b),
        (T::TimestampTz, Bson::DateTime(d)) => {
            Value::Temporal(d.timestamp_millis().saturating_mul(1000))
        }
        (T::Uuid, Bson::Binary(b)) => Value::Text(uuid_text(&b.bytes)),
        (T::Bytes, Bson::Binary(b)) => Value::Bytes(b.bytes.clone()),
        (T::Text, v) => Value::Text(scalar_text(v)),
        (T::List(elem), Bson::Array(items)) => {
            Value::List(items.iter().map(|i| value_of(i, elem)).collect())
        }
        // A value the column type does not describe (a schema wider than this document):
        // its extended JSON as text, nothing lost.
        (_, v) => Value::Text(extjson(v)),
    }
}

/// Text of a scalar for a Text column.
fn scalar_text(v: &Bson) -> String {
    match v {
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => s.clone(),
        Bson::ObjectId(o) => o.to_hex(),
        Bson::Timestamp(t) => format!("{}:{}", t.time, t.increment),
        Bson::RegularExpression(r) => format!("/{}/{}", r.pattern, r.options),
        other => extjson(other),
    }
}

/// `_id` as the key's text: ObjectId hex, a string as itself, numbers in decimal, anything else
/// as relaxed extended JSON.
pub fn id_text(id: &Bson) -> String {
    match id {
        Bson::ObjectId(o) => o.to_hex(),
        Bson::String(s) => s.clone(),
        Bson::Int32(i) => i.to_string(),
        Bson::Int64(i) => i.to_string(),
        Bson::Double(f) => f.to_string(),
        other => extjson(other),
    }
}

/// Relaxed extended JSON text (what `mongoexport` and Debezium print).
pub(crate) fn extjson(v: &Bson) -> String {
    v.clone().into_relaxed_extjson().to_string()
}

fn uuid_text(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Decimal128's text (`1.23E+5`, `-0.001`, `Infinity`, `NaN`) as plain decimal digits, exact.
pub(crate) fn decimal_text(s: &str) -> String {
    let (mantissa, exponent) = match s.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i64>().unwrap_or(0)),
        None => (s, 0),
    };
    if !mantissa
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return s.to_string(); // NaN, Infinity
    }
    if exponent == 0 {
        return mantissa.to_string();
    }
    let (neg, m) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    let digits = format!("{int}{frac}");
    // The decimal point sits after `point` digits.
    let point = int.len() as i64 + exponent;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    let body = body.trim_start_matches('0');
    let body = if body.is_empty() || body.starts_with('.') {
        format!("0{body}")
    } else {
        body.to_string()
    };
    if neg { format!("-{body}") } else { body }
}

/// MongoDB's order of values (BSON comparison order): by type bracket, then within it. Enough
/// to place `_id`s in the ranges the snapshot read them in.
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let rank = |v: &Bson| match v {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::DbPointer(_) => 12,
        Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => 13,
        Bson::MaxKey => 14,
    };
    let number = |v: &Bson| match v {
        Bson::Int32(i) => *i as f64,
        Bson::Int64(i) => *i as f64,
        Bson::Double(f) => *f,
        Bson::Decimal128(d) => decimal_text(&d.to_string()).parse().unwrap_or(f64::NAN),
        _ => 0.0,
    };
    match rank(a).cmp(&rank(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => x.cmp(y),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::Binary(x), Bson::Binary(y)) => (x.bytes.len(), u8::from(x.subtype), &x.bytes)
            .cmp(&(y.bytes.len(), u8::from(y.subtype), &y.bytes)),
        (Bson::Document(x), Bson::Document(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                let c = compare(va, vb).then_with(|| ka.cmp(kb));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (va, vb) in x.iter().zip(y.iter()) {
                let c = compare(va, vb);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ if rank(a) == 2 => number(a).partial_cmp(&number(b)).unwrap_or(Ordering::Equal),
        _ => extjson(a).cmp(&extjson(b)),
    }
}

/// The document after an update: the pre-image with the update description applied (what the
/// event's post-image is, exactly; a looked-up document may already be a later version).
pub fn apply_update(
    pre: &Document,
    updated: &Document,
    removed: &[String],
    truncated: &[(String, usize)],
) -> Result<Document, String> {
    let mut doc = Bson::Document(pre.clone());
    for (path, size) in truncated {
        if let Some(Bson::Array(items)) = navigate(&mut doc, path, false)? {
            items.truncate(*size);
        }
    }
    for path in removed {
        let (parent, last) = split_path(path);
        let target = match parent {
            None => Some(&mut doc),
            Some(p) => navigate(&mut doc, p, false)?,
        };
        match target {
            Some(Bson::Document(d)) => {
                d.remove(last);
            }
            Some(Bson::Array(items)) => {
                if let Some(slot) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    *slot = Bson::Null;
                }
            }
            _ => {}
        }
    }
    for (path, value) in updated {
        let (parent, last) = split_path(path);
        let target = match parent {
            None => Some(&mut doc),
            Some(p) => navigate(&mut doc, p, true)?,
        };
        match target {
            Some(Bson::Document(d)) => {
                d.insert(last.to_string(), value.clone());
            }
            Some(Bson::Array(items)) => {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("`{path}`: `{last}` is not an array index"))?;
                if i >= items.len() {
                    items.resize(i + 1, Bson::Null);
                }
                items[i] = value.clone();
            }
            _ => {
                return Err(format!(
                    "`{path}`: its parent is not a document or an array"
                ));
            }
        }
    }
    match doc {
        Bson::Document(d) => Ok(d),
        _ => Err("the document became something else".into()),
    }
}

fn split_path(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once('.') {
        Some((parent, last)) => (Some(parent), last),
        None => (None, path),
    }
}

/// The value at a dotted path; `create` makes missing documents on the way (as `$set` does).
fn navigate<'a>(
    root: &'a mut Bson,
    path: &str,
    create: bool,
) -> Result<Option<&'a mut Bson>, String> {
    let mut cur = root;
    for part in path.split('.') {
        cur = match cur {
            Bson::Document(d) => {
                if !d.contains_key(part) {
                    if !create {
                        return Ok(None);
                    }
                    d.insert(part.to_string(), Bson::Document(Document::new()));
                }
                d.get_mut(part)
                    .ok_or_else(|| format!("`{path}`: no `{part}`"))?
            }
            Bson::Array(items) => {
                let i: usize = part
                    .parse()
                    .map_err(|_| format!("`{path}`: `{part}` is not an array index"))?;
                match items.get_mut(i) {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
    }
    Ok(Some(cur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{Decimal128, doc, oid::ObjectId};

    #[test]
    fn schemas_are_inferred_and_widened() {
        let mut s = CollectionSchema::default();
        assert!(s.observe(
            &doc! {"_id": 1, "n": 1i32, "name": "a", "tags": ["x", "y"], "sub": {"a": 1}}
        ));
        assert!(
            !s.observe(&doc! {"_id": 2, "n": 2i32, "name": "b"}),
            "nothing new"
        );
        assert!(
            s.observe(&doc! {"_id": 3, "n": 3i64}),
            "int32 with int64 widens"
        );
        assert!(
            s.observe(&doc! {"_id": 4, "name": 5}),
            "a string and a number: JSON"
        );
        let types: Vec<(&str, ColumnType)> = s
            .fields
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("n", ColumnType::Int64),
                ("name", ColumnType::Json),
                ("tags", ColumnType::List(Box::new(ColumnType::Text))),
                ("sub", ColumnType::Json),
            ]
        );
        let cols: Vec<String> = s.columns().iter().map(|c| c.name.clone()).collect();
        assert_eq!(cols, ["_id", "n", "name", "tags", "sub", "_doc"]);
        let row = s.row(&doc! {"_id": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(), "name": "z", "n": 7i32});
        assert_eq!(row[0], Value::Text("65a1b2c3d4e5f60718293a4b".into()));
        assert_eq!(row[1], Value::Int(7));
        assert_eq!(
            row[2],
            Value::Text("\"z\"".into()),
            "JSON text of the string"
        );
        assert_eq!(row[3], Value::Null);
        assert!(matches!(&row[5], Value::Text(t) if t.contains("\"$oid\"")));
    }

    #[test]
    fn bson_values_map_to_lake_values() {
        let d = doc! {"dec": Decimal128::from_bytes([0; 16]), "when": mongodb::bson::DateTime::from_millis(1_500),
        "re": mongodb::bson::Regex { pattern: "a+".into(), options: "i".into() }};
        let mut s = CollectionSchema::default();
        s.observe(&d);
        let row = s.row(&d);
        assert_eq!(row[2], Value::Temporal(1_500_000));
        assert_eq!(row[3], Value::Text("/a+/i".into()));
        assert_eq!(decimal_text("1.23E+5"), "123000");
        assert_eq!(decimal_text("-1.5E-3"), "-0.0015");
        assert_eq!(decimal_text("12.50"), "12.50");
        assert_eq!(decimal_text("0E+2"), "0");
        assert_eq!(decimal_text("NaN"), "NaN");
    }

    #[test]
    fn bson_order_follows_mongodb() {
        let oid = Bson::ObjectId(ObjectId::new());
        let mut values = vec![
            oid.clone(),
            Bson::String("b".into()),
            Bson::Int32(3),
            Bson::Double(1.5),
            Bson::String("a".into()),
            Bson::Document(doc! {"x": 1}),
            Bson::Null,
        ];
        values.sort_by(compare);
        assert_eq!(
            values,
            vec![
                Bson::Null,
                Bson::Double(1.5),
                Bson::Int32(3),
                Bson::String("a".into()),
                Bson::String("b".into()),
                Bson::Document(doc! {"x": 1}),
                oid
            ]
        );
        assert_eq!(
            compare(&Bson::Int64(2), &Bson::Double(2.0)),
            Ordering::Equal
        );
    }

    #[test]
    fn updates_apply_to_the_pre_image() {
        let pre = doc! {"_id": 1, "v": 1, "a": {"b": 1}, "arr": [1, 2, 3], "gone": true};
        let post = apply_update(
            &pre,
            &doc! {"v": 2, "a.b": 5, "a.c.d": "new", "arr.1": 20},
            &["gone".to_string()],
            &[("arr".to_string(), 2)],
        )
        .unwrap();
        assert_eq!(
            post,
            doc! {"_id": 1, "v": 2, "a": {"b": 5, "c": {"d": "new"}}, "arr": [1, 20]}
        );
        assert!(apply_update(&doc! {"v": 1}, &doc! {"v.x": 1}, &[], &[]).is_err());
    }
}
