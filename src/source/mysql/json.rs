//! MySQL 8's binary JSON (the JSON column's binlog and storage form) → JSON text.
//!
//! The format is `json_binary.h`'s: a type byte, then an object, array, literal, number,
//! string or "opaque" value (a MySQL type such as DECIMAL or DATETIME stored inside JSON).
//! Objects and arrays hold entries that point at their values by offset, or inline small ones.
//! Keys stay in stored order (MySQL's: by length, then bytes), as `SELECT` prints them. Every
//! read is bounds-checked and nesting is limited, so malformed bytes are an error, never a panic
//! or a stack overflow.

use std::fmt::Write;

use super::rows::{Reader, RowError};

/// MySQL's own limit on JSON nesting.
const MAX_DEPTH: usize = 100;

const SMALL_OBJECT: u8 = 0x00;
const LARGE_OBJECT: u8 = 0x01;
const SMALL_ARRAY: u8 = 0x02;
const LARGE_ARRAY: u8 = 0x03;
const LITERAL: u8 = 0x04;
const INT16: u8 = 0x05;
const UINT16: u8 = 0x06;
const INT32: u8 = 0x07;
const UINT32: u8 = 0x08;
const INT64: u8 = 0x09;
const UINT64: u8 = 0x0a;
const DOUBLE: u8 = 0x0b;
const STRING: u8 = 0x0c;
const OPAQUE: u8 = 0x0f;

/// The JSON text of a binary JSON document. An empty document is JSON null (as MySQL reads it).
pub(crate) fn to_text(doc: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(doc.len() * 2);
    if doc.is_empty() {
        out.push_str("null");
        return Ok(out);
    }
    let (&ty, body) = doc.split_first().ok_or("empty")?;
    write_value(&mut out, ty, body, 0).map_err(|e| format!("binary JSON: {e}"))?;
    Ok(out)
}

fn bad(message: &str) -> RowError {
    RowError::Malformed(message.to_string())
}

/// Write the value of type `ty` whose bytes start at `data`.
fn write_value(out: &mut String, ty: u8, data: &[u8], depth: usize) -> Result<(), RowError> {
    if depth > MAX_DEPTH {
        return Err(bad("nested deeper than 100 levels"));
    }
    let mut r = Reader::new(data);
    match ty {
        SMALL_OBJECT | LARGE_OBJECT | SMALL_ARRAY | LARGE_ARRAY => {
            write_container(out, ty, data, depth)?
        }
        LITERAL => write_literal(out, r.u8("literal")?)?,
        INT16 => write_int(out, r.uint_le(2, "int16")? as u16 as i16 as i64),
        UINT16 => write_int(out, r.uint_le(2, "uint16")? as i64),
        INT32 => write_int(out, r.uint_le(4, "int32")? as u32 as i32 as i64),
        UINT32 => write_int(out, r.uint_le(4, "uint32")? as i64),
        INT64 => write_int(out, r.uint_le(8, "int64")? as i64),
        UINT64 => {
            let _ = write!(out, "{}", r.uint_le(8, "uint64")?);
        }
        DOUBLE => write_double(out, f64::from_bits(r.uint_le(8, "double")?)),
        STRING => {
            let len = var_len(&mut r)?;
            write_string(out, r.bytes(len, "string")?)?;
        }
        OPAQUE => {
            let field_type = r.u8("opaque type")?;
            let len = var_len(&mut r)?;
            write_opaque(out, field_type, r.bytes(len, "opaque value")?)?;
        }
        other => return Err(RowError::Malformed(format!("JSON value type {other:#x}"))),
    }
    Ok(())
}

/// An object or array: element count and size, entries, then keys and values.
fn write_container(out: &mut String, ty: u8, data: &[u8], depth: usize) -> Result<(), RowError> {
    let large = ty == LARGE_OBJECT || ty == LARGE_ARRAY;
    let object = ty == SMALL_OBJECT || ty == LARGE_OBJECT;
    let word = if large { 4 } else { 2 };
    let mut r = Reader::new(data);
    let count = r.uint_le(word, "element count")? as usize;
    let size = r.uint_le(word, "container size")? as usize;
    if size > data.len() {
        return Err(bad("a container larger than its document"));
    }
    let data = &data[..size];
    let key_entries = if object { count } else { 0 };
    // Every entry takes bytes of its own: a count beyond them is corrupt (and not a loop bound).
    if (key_entries * (word + 2) + count * (1 + word)) > size {
        return Err(bad("more entries than the container has room for"));
    }
    let mut keys = Vec::with_capacity(key_entries);
    for _ in 0..key_entries {
        let offset = r.uint_le(word, "key offset")? as usize;
        let len = r.uint_le(2, "key length")? as usize;
        let key = data
            .get(offset..offset + len)
            .ok_or_else(|| bad("a key beyond its container"))?;
        keys.push(key);
    }
    out.push(if object { '{' } else { '[' });
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        if let Some(key) = keys.get(i) {
            write_string(out, key)?;
            out.push(':');
        }
        let vty = r.u8("value type")?;
        let inlined =
            matches!(vty, LITERAL | INT16 | UINT16) || (large && matches!(vty, INT32 | UINT32));
        if inlined {
            let bytes = r.bytes(word, "inlined value")?;
            write_value(out, vty, bytes, depth + 1)?;
        } else {
            let offset = r.uint_le(word, "value offset")? as usize;
            let value = data
                .get(offset..)
                .ok_or_else(|| bad("a value beyond its container"))?;
            write_value(out, vty, value, depth + 1)?;
        }
    }
    out.push(if object { '}' } else { ']' });
    Ok(())
}

fn write_literal(out: &mut String, v: u8) -> Result<(), RowError> {
    out.push_str(match v {
        0 => "null",
        1 => "true",
        2 => "false",
        _ => return Err(bad("a literal that is not null, true or false")),
    });
    Ok(())
}

fn write_int(out: &mut String, v: i64) {
    let _ = write!(out, "{v}");
}

fn write_double(out: &mut String, v: f64) {
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"), // JSON has no NaN or infinity; MySQL cannot store them
    }
}

fn write_string(out: &mut String, bytes: &[u8]) -> Result<(), RowError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad("a string that is not UTF-8"))?;
    // serde_json's escaping: the shortest valid JSON string.
    let _ = write!(out, "{}", serde_json::Value::from(text));
    Ok(())
}

/// A length of 7-bit groups, low group first, high bit meaning "more follows" (at most 5 bytes:
/// lengths up to 2^32).
fn var_len(r: &mut Reader<'_>) -> Result<usize, RowError> {
    let mut len = 0usize;
    for i in 0..5 {
        let b = r.u8("length")?;
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(len);
        }
    }
    Err(bad("a length longer than 5 bytes"))
}

/// A MySQL value stored in JSON: decimals as numbers, temporal types as the strings MySQL
/// prints, anything else as `base64:type<N>:<data>` (as MySQL's JSON functions show it).
fn write_opaque(out: &mut String, field_type: u8, data: &[u8]) -> Result<(), RowError> {
    use super::rows::code;
    match field_type {
        code::NEWDECIMAL => {
            let (&precision, rest) = data.split_first().ok_or_else(|| bad("decimal precision"))?;
            let (&scale, packed) = rest.split_first().ok_or_else(|| bad("decimal scale"))?;
            let d = super::rows::read_decimal(&mut Reader::new(packed), precision, scale, 0)?;
            if d.negative {
                out.push('-');
            }
            out.push_str(if d.int.is_empty() { "0" } else { &d.int });
            if !d.frac.is_empty() {
                out.push('.');
                out.push_str(&d.frac);
            }
        }
        code::DATE | code::DATETIME | code::TIMESTAMP | code::TIME => {
            let packed = Reader::new(data).uint_le(8, "packed time")? as i64;
            let text = packed_time_text(field_type, packed);
            write_string(out, text.as_bytes())?;
        }
        other => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(data);
            write_string(out, format!("base64:type{other}:{encoded}").as_bytes())?;
        }
    }
    Ok(())
}

/// MySQL's packed temporal longlong (`TIME_to_longlong_*_packed`) as MySQL prints it.
fn packed_time_text(field_type: u8, packed: i64) -> String {
    use super::rows::code;
    let neg = packed < 0;
    let v = packed.unsigned_abs();
    let frac = v % (1 << 24);
    let int = v >> 24;
    if field_type == code::TIME {
        let (h, m, s) = ((int >> 12) % (1 << 10), (int >> 6) % 64, int % 64);
        let sign = if neg { "-" } else { "" };
        return format!("{sign}{h:02}:{m:02}:{s:02}.{frac:06}");
    }
    let ymd = int >> 17;
    let hms = int % (1 << 17);
    let ym = ymd >> 5;
    let (year, month, day) = (ym / 13, ym % 13, ymd % 32);
    if field_type == code::DATE {
        return format!("{year:04}-{month:02}-{day:02}");
    }
    let (h, m, s) = (hms >> 12, (hms >> 6) % 64, hms % 64);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{frac:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_json_text_in_stored_order() {
        // {"a": 1}: small object, 1 member, 12 bytes; key at 11; INT16 inlined.
        let doc = [
            0x00, 0x01, 0x00, 0x0C, 0x00, 0x0B, 0x00, 0x01, 0x00, 0x05, 0x01, 0x00, b'a',
        ];
        assert_eq!(to_text(&doc).unwrap(), r#"{"a":1}"#);
        // ["x", true, 3.5]: small array, 3 elements; a string and a double by offset.
        let mut arr = vec![0x02, 0x03, 0x00];
        let header = 2 + 2 + 3 * 3;
        let string_at = header as u16;
        let double_at = string_at + 2;
        let size = double_at + 8;
        arr.extend(size.to_le_bytes());
        arr.push(0x0c);
        arr.extend(string_at.to_le_bytes());
        arr.push(0x04);
        arr.extend(1u16.to_le_bytes());
        arr.push(0x0b);
        arr.extend(double_at.to_le_bytes());
        arr.extend([1, b'x']);
        arr.extend(3.5f64.to_bits().to_le_bytes());
        assert_eq!(to_text(&arr).unwrap(), r#"["x",true,3.5]"#);
        assert_eq!(to_text(&[]).unwrap(), "null");
        assert_eq!(to_text(&[0x04, 0x02]).unwrap(), "false");
        assert_eq!(to_text(&[0x0c, 0x02, b'"', b'q']).unwrap(), r#""\"q""#);
    }

    #[test]
    fn opaque_decimals_and_datetimes_print_as_mysql_does() {
        // DECIMAL(4,2) 12.50 stored inside JSON: type, length, precision, scale, packed bytes.
        let doc = [0x0f, 246, 5, 4, 2, 0x8C, 0x32, 0x00];
        assert!(to_text(&doc[..7]).is_err(), "the value is cut short");
        let doc = [0x0f, 246, 4, 4, 2, 0x8C, 0x32];
        assert_eq!(to_text(&doc).unwrap(), "12.50");
        // DATETIME 2024-01-01 00:00:01.000001 packed: ((ymd << 17 | hms) << 24) + frac.
        let ymd: i64 = ((2024 * 13 + 1) << 5) | 1;
        let packed = (((ymd << 17) | 1) << 24) + 1;
        let mut doc = vec![0x0f, 12, 8];
        doc.extend(packed.to_le_bytes());
        assert_eq!(to_text(&doc).unwrap(), r#""2024-01-01 00:00:01.000001""#);
    }

    #[test]
    fn malformed_documents_are_errors() {
        for doc in [
            &[0x00, 0x05, 0x00][..],
            &[0x00, 0xff, 0xff, 0x04, 0x00],
            &[0x0c, 0x80],
            &[0x0f],
            &[0x42],
            &[0x04, 0x07],
            &[0x0c, 0x02, 0xff, 0xfe],
        ] {
            assert!(to_text(doc).is_err(), "{doc:?}");
        }
        // Deep nesting: an array holding an array holding … (each a one-entry array body).
        let mut body = vec![0x00, 0x00, 0x04, 0x00];
        for _ in 0..200 {
            let size = (7 + body.len()) as u16;
            let mut level = vec![0x01, 0x00];
            level.extend(size.to_le_bytes());
            level.extend([0x02, 0x07, 0x00]);
            level.extend(body);
            body = level;
        }
        let mut deep = vec![0x02];
        deep.extend(body.clone());
        assert!(to_text(&deep).unwrap_err().contains("deeper"));
    }
}
