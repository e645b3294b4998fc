//! Postgres text-format values → [`Value`], shared by the snapshot (COPY text format) and the
//! stream (pgoutput text tuples). Sessions pin `DateStyle=ISO`, `TimeZone=UTC`,
//! `extra_float_digits=3` so the text is unambiguous. Parsers return errors, never panic.

use crate::event::{
    ColumnType, DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY, TIMESTAMP_NEG_INFINITY, Value,
};
use crate::metrics as m;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot read a {ty} value: {reason}")]
pub struct ValueError {
    pub(crate) ty: String,
    pub(crate) reason: &'static str,
}

fn err(ty: &ColumnType, reason: &'static str) -> ValueError {
    ValueError {
        ty: format!("{ty:?}"),
        reason,
    }
}

/// Parse one value in Postgres's text output format for a column of type `ty`.
pub fn parse_text(ty: &ColumnType, raw: &[u8]) -> Result<Value, ValueError> {
    let s = std::str::from_utf8(raw).map_err(|_| err(ty, "not UTF-8"))?;
    Ok(match ty {
        ColumnType::Bool => match s {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => return Err(err(ty, "expected t or f")),
        },
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => {
            Value::Int(s.parse().map_err(|_| err(ty, "not an integer"))?)
        }
        // No Postgres type maps to a duration (interval is ISO text).
        ColumnType::Duration => return Err(err(ty, "not a Postgres type")),
        ColumnType::Float32 | ColumnType::Float64 => {
            Value::Float(s.parse().map_err(|_| err(ty, "not a number"))?)
        }
        ColumnType::Decimal { .. } if s == "NaN" => {
            // A Decimal cannot hold NaN: said loudly (metric), documented in docs/types.md.
            metrics::counter!(m::SOURCE_LOSSY_VALUES, "reason" => "numeric_nan_in_decimal")
                .increment(1);
            Value::Null
        }
        ColumnType::Decimal { scale, .. } => Value::Decimal(
            parse_decimal(s, *scale).ok_or_else(|| err(ty, "not a decimal of this scale"))?,
        ),
        ColumnType::Numeric => {
            if !matches!(s, "NaN" | "Infinity" | "-Infinity") && !is_decimal_text(s) {
                return Err(err(ty, "not a decimal"));
            }
            Value::Text(s.to_owned())
        }
        ColumnType::Text
        | ColumnType::Json
        | ColumnType::Uuid
        | ColumnType::Interval
        | ColumnType::Other(_) => Value::Text(s.to_owned()),
        ColumnType::Bytes => Value::Bytes(parse_bytea(s).ok_or_else(|| err(ty, "not \\x hex"))?),
        ColumnType::Date => Value::Temporal(match s {
            "infinity" => DATE_INFINITY,
            "-infinity" => DATE_NEG_INFINITY,
            _ => parse_date(s).ok_or_else(|| err(ty, "not a date"))? as i64,
        }),
        ColumnType::Time => Value::Temporal(parse_time(s).ok_or_else(|| err(ty, "not a time"))?),
        ColumnType::TimeTz => Value::Text(parse_timetz(s).ok_or_else(|| err(ty, "not a timetz"))?),
        ColumnType::Timestamp | ColumnType::TimestampTz => Value::Temporal(match s {
            "infinity" => TIMESTAMP_INFINITY,
            "-infinity" => TIMESTAMP_NEG_INFINITY,
            _ => parse_timestamp(s, *ty == ColumnType::TimestampTz)
                .ok_or_else(|| err(ty, "not a timestamp"))?,
        }),
        ColumnType::List(elem) => {
            let (items, nested) = split_array(s).ok_or_else(|| err(ty, "not an array literal"))?;
            if nested {
                // Multi-dimensional values are flattened in row-major order (docs/types.md).
                metrics::counter!(m::SOURCE_LOSSY_VALUES, "reason" => "multidimensional_array")
                    .increment(1);
            }
            let values = items
                .into_iter()
                .map(|item| match item {
                    None => Ok(Value::Null),
                    Some(text) => parse_text(elem, text.as_bytes()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::List(values)
        }
    })
}

/// Decimal text of any length: an optional minus, digits, at most one point.
fn is_decimal_text(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    body.bytes().any(|c| c.is_ascii_digit())
        && body.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && body.matches('.').count() <= 1
}

/// `12:00:00.5+02` → `10:00:00.5Z` (the time of day in UTC).
pub(crate) fn parse_timetz(s: &str) -> Option<String> {
    let at = s.rfind(['+', '-'])?;
    let (time, offset) = s.split_at(at);
    let micros = parse_time(time)? - parse_offset(offset)? * 1_000_000;
    let micros = micros.rem_euclid(86_400_000_000);
    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        out.push_str(format!(".{frac:06}").trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// Split a Postgres array literal (`{1,NULL,"a \"b\""}`, optionally `[1:2]={…}`) into its
/// elements, `None` for NULL. Nested arrays are flattened; the flag says there were any.
pub fn split_array(s: &str) -> Option<(Vec<Option<String>>, bool)> {
    let s = match s.find('=') {
        Some(i) if s.starts_with('[') => &s[i + 1..],
        _ => s,
    };
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut items = Vec::new();
    let (mut depth, mut max_depth, mut i) = (0usize, 0usize, 0usize);
    let mut expect_item = false;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
                expect_item = true;
                i += 1;
            }
            b'}' => {
                depth = depth.checked_sub(1)?;
                expect_item = false;
                i += 1;
                if depth == 0 {
                    return (i == bytes.len()).then_some((items, max_depth > 1));
                }
            }
            b',' => {
                expect_item = true;
                i += 1;
            }
            b'"' => {
                let mut item = Vec::new();
                i += 1;
                loop {
                    match *bytes.get(i)? {
                        b'\\' => {
                            item.push(*bytes.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => break,
                        c => {
                            item.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                items.push(Some(String::from_utf8(item).ok()?));
                expect_item = false;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ if expect_item => {
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b',' | b'}') {
                    i += 1;
                }
                let raw = s[start..i].trim();
                items.push(if raw.eq_ignore_ascii_case("NULL") {
                    None
                } else {
                    Some(raw.to_string())
                });
                expect_item = false;
            }
            _ => return None,
        }
    }
    None
}

/// `-123.45` at scale 2 → `-12345`. Refuses values that need more digits than the scale (they
/// cannot occur in a `numeric(p,s)` column) and NaN/Infinity, which a Decimal cannot hold.
pub(crate) fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let scale = usize::try_from(scale).ok()?;
    if frac_part.len() > scale {
        return None;
    }
    let mut v: i128 = 0;
    for c in int_part.bytes().chain(frac_part.bytes()) {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as i128)?;
    }
    for _ in frac_part.len()..scale {
        v = v.checked_mul(10)?;
    }
    Some(if neg { -v } else { v })
}

fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks_exact(2)
        .map(|p| Some((hex_digit(p[0])? << 4) | hex_digit(p[1])?))
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD[ BC]` → days since 1970-01-01 (proleptic Gregorian, as Postgres; 1 BC is year 0).
pub(crate) fn parse_date(s: &str) -> Option<i32> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    days_from_civil(if bc { 1 - y } else { y }, m, d)
}

/// Howard Hinnant's days_from_civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i32> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146097 + doe - 719468).ok()
}

/// `HH:MM:SS[.ffffff]` → microseconds since midnight.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.splitn(3, ':');
    let (h, m, sec) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    if h > 24 || m > 59 || sec > 60 || frac.len() > 6 || (!frac.is_empty() && num(frac).is_none()) {
        return None;
    }
    let mut us = if frac.is_empty() { 0 } else { num(frac)? };
    for _ in frac.len()..6 {
        us *= 10;
    }
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + us)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]]` → microseconds since the epoch (UTC when an
/// offset is given; as written otherwise).
pub(crate) fn parse_timestamp(s: &str, with_zone: bool) -> Option<i64> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, " BC"),
        None => (s, ""),
    };
    let (date, rest) = s.split_once(' ')?;
    let days = parse_date(&format!("{date}{bc}"))? as i64;
    let (time, offset_secs) = if with_zone {
        let at = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(at);
        (t, parse_offset(off)?)
    } else {
        (rest, 0)
    };
    let micros = parse_time(time)?;
    days.checked_mul(86_400_000_000)?
        .checked_add(micros)?
        .checked_sub(offset_secs * 1_000_000)
}

fn parse_offset(s: &str) -> Option<i64> {
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let mut parts = s[1..].split(':');
    let h = num(parts.next()?)?;
    let m = parts.next().map(num).unwrap_or(Some(0))?;
    let sec = parts.next().map(num).unwrap_or(Some(0))?;
    Some(sign * (h * 3600 + m * 60 + sec))
}

/// Split one line of `COPY … TO STDOUT` text format into its fields, unescaping each; `None`
/// fields are SQL NULL (`\N`). Reuses `fields` to avoid allocating per row.
pub fn split_copy_line(line: &[u8], fields: &mut Vec<Option<Vec<u8>>>) -> Result<(), &'static str> {
    fields.clear();
    for raw in line.split(|&b| b == b'\t') {
        if raw == b"\\N" {
            fields.push(None);
            continue;
        }
        fields.push(Some(unescape_copy(raw)?));
    }
    Ok(())
}

fn unescape_copy(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if !raw.contains(&b'\\') {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let next = *raw
            .get(i + 1)
            .ok_or("COPY field ends in a lone backslash")?;
        i += 2;
        out.push(match next {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut v = (next - b'0') as u32;
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                v as u8
            }
            b'x' => {
                let mut v = 0u8;
                let mut n = 0;
                while n < 2 {
                    match raw.get(i).and_then(|d| hex_digit(*d)) {
                        Some(d) => {
                            v = (v << 4) | d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 { b'x' } else { v }
            }
            other => other,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("1.51", 2), Some(151));
        assert_eq!(parse_decimal("-0.01", 2), Some(-1));
        assert_eq!(parse_decimal("900", 2), Some(90000));
        assert_eq!(parse_decimal("1.5", 2), Some(150));
        assert_eq!(parse_decimal("1.555", 2), None);
        assert_eq!(parse_decimal("NaN", 2), None);
        assert_eq!(parse_decimal("", 2), None);
        assert_eq!(parse_decimal("-", 2), None);
        assert_eq!(parse_decimal(&"9".repeat(60), 0), None);
    }

    #[test]
    fn temporals() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-01-01"), Some(19723));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_time("00:00:01.5"), Some(1_500_000));
        assert_eq!(
            parse_timestamp("2024-01-01 00:00:01.000001", false),
            Some(1704067201000001)
        );
        assert_eq!(
            parse_timestamp("2024-06-01 12:00:00.123456+00", true),
            Some(1717243200123456)
        );
        assert_eq!(
            parse_timestamp("2024-06-01 14:00:00.123456+02", true),
            Some(1717243200123456)
        );
        assert_eq!(
            parse_timestamp("2024-06-01 06:30:00-05:30", true),
            Some(1717243200000000)
        );
        assert_eq!(parse_timestamp("infinity", false), None);
    }

    #[test]
    fn infinities_bc_and_zones() {
        assert_eq!(
            parse_text(&ColumnType::Date, b"infinity"),
            Ok(Value::Temporal(DATE_INFINITY))
        );
        assert_eq!(
            parse_text(&ColumnType::Timestamp, b"-infinity"),
            Ok(Value::Temporal(TIMESTAMP_NEG_INFINITY))
        );
        // 1 BC is year 0, a leap year: 0001-01-01 BC is 366 days before 0001-01-01.
        assert_eq!(
            parse_date("0001-01-01 BC").unwrap() + 366,
            parse_date("0001-01-01").unwrap()
        );
        assert_eq!(
            parse_timestamp("0001-01-01 00:00:00+00 BC", true).unwrap() + 366 * 86_400_000_000,
            parse_timestamp("0001-01-01 00:00:00+00", true).unwrap()
        );
        assert_eq!(
            parse_timetz("12:00:00.5+02").as_deref(),
            Some("10:00:00.5Z")
        );
        assert_eq!(parse_timetz("01:00:00-03:30").as_deref(), Some("04:30:00Z"));
        assert_eq!(parse_timetz("00:30:00+01").as_deref(), Some("23:30:00Z"));
        assert_eq!(
            parse_text(
                &ColumnType::Decimal {
                    precision: 10,
                    scale: 2
                },
                b"NaN"
            ),
            Ok(Value::Null)
        );
        assert_eq!(
            parse_text(&ColumnType::Numeric, b"-Infinity"),
            Ok(Value::Text("-Infinity".into()))
        );
        let long = format!("{}.{}", "9".repeat(60), "1".repeat(30));
        assert_eq!(
            parse_text(&ColumnType::Numeric, long.as_bytes()),
            Ok(Value::Text(long.clone()))
        );
        assert!(parse_text(&ColumnType::Numeric, b"12x").is_err());
        assert!(parse_text(&ColumnType::Numeric, b"-").is_err());
    }

    #[test]
    fn arrays() {
        let ints = ColumnType::List(Box::new(ColumnType::Int32));
        assert_eq!(
            parse_text(&ints, b"{1,NULL,-3}"),
            Ok(Value::List(vec![
                Value::Int(1),
                Value::Null,
                Value::Int(-3)
            ]))
        );
        assert_eq!(parse_text(&ints, b"{}"), Ok(Value::List(vec![])));
        assert_eq!(
            parse_text(&ints, b"{{1,2},{3,4}}")
                .map(|v| matches!(v, Value::List(l) if l.len() == 4)),
            Ok(true)
        );
        assert_eq!(
            parse_text(&ints, b"[0:1]={5,6}"),
            Ok(Value::List(vec![Value::Int(5), Value::Int(6)]))
        );
        let texts = ColumnType::List(Box::new(ColumnType::Text));
        assert_eq!(
            parse_text(&texts, br#"{"a,b","q\"x",NULL,"NULL",plain, sp ace }"#),
            Ok(Value::List(vec![
                Value::Text("a,b".into()),
                Value::Text("q\"x".into()),
                Value::Null,
                Value::Text("NULL".into()),
                Value::Text("plain".into()),
                Value::Text("sp ace".into()),
            ]))
        );
        for bad in [&b"{1,2"[..], b"1,2}", b"{\"open}", b"{1}}", b"", b"}"] {
            assert!(
                parse_text(&ints, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn values_by_type() {
        assert_eq!(parse_text(&ColumnType::Bool, b"t"), Ok(Value::Bool(true)));
        assert_eq!(parse_text(&ColumnType::Int64, b"-42"), Ok(Value::Int(-42)));
        assert_eq!(
            parse_text(&ColumnType::Bytes, b"\\x00ff"),
            Ok(Value::Bytes(vec![0, 255]))
        );
        assert!(parse_text(&ColumnType::Int32, b"x").is_err());
        assert!(parse_text(&ColumnType::Text, &[0xff, 0xfe]).is_err());
        assert_eq!(
            parse_text(&ColumnType::Float64, b"NaN")
                .map(|v| matches!(v, Value::Float(f) if f.is_nan())),
            Ok(true)
        );
    }

    #[test]
    fn copy_lines() {
        let mut f = Vec::new();
        split_copy_line(b"1\t\\N\ta\\tb\\\\c\t\\\\x00ff\t\\101", &mut f).unwrap();
        assert_eq!(
            f,
            vec![
                Some(b"1".to_vec()),
                None,
                Some(b"a\tb\\c".to_vec()),
                Some(b"\\x00ff".to_vec()),
                Some(b"A".to_vec())
            ]
        );
        assert!(split_copy_line(b"bad\\", &mut f).is_err());
    }

    #[test]
    fn never_panics_on_garbage() {
        let types = [
            ColumnType::List(Box::new(ColumnType::Text)),
            ColumnType::List(Box::new(ColumnType::Date)),
            ColumnType::TimeTz,
            ColumnType::Numeric,
            ColumnType::Bool,
            ColumnType::Int16,
            ColumnType::Float64,
            ColumnType::Decimal {
                precision: 38,
                scale: 10,
            },
            ColumnType::Bytes,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
        ];
        let inputs: [&[u8]; 15] = [
            b"{",
            b"{\"\\",
            b"[1:2]=",
            b"12:00+",
            b"{{}",
            b"",
            b"-",
            b"+",
            b"::",
            b"2024-02-30 25:61:61+99",
            b"\\x0",
            b"9999999999-01-01 00:00:00",
            b"1.2.3",
            b" - ",
            b"00:00:00.1234567",
        ];
        for ty in &types {
            for input in inputs {
                let _ = parse_text(ty, input);
            }
        }
    }
}
