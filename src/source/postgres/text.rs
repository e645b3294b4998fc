//! Postgres text-format values → [`Value`], shared by the snapshot (COPY text format) and the
//! stream (pgoutput text tuples). Sessions pin `DateStyle=ISO`, `TimeZone=UTC`,
//! `extra_float_digits=3` so the text is unambiguous. Parsers return errors, never panic.

use crate::event::{ColumnType, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot read a {ty} value: {reason}")]
pub struct ValueError {
    pub ty: String,
    pub reason: &'static str,
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
        ColumnType::Float32 | ColumnType::Float64 => {
            Value::Float(s.parse().map_err(|_| err(ty, "not a number"))?)
        }
        ColumnType::Decimal { scale, .. } => Value::Decimal(
            parse_decimal(s, *scale).ok_or_else(|| err(ty, "not a decimal of this scale"))?,
        ),
        ColumnType::Text | ColumnType::Json | ColumnType::Uuid | ColumnType::Other(_) => {
            Value::Text(s.to_owned())
        }
        ColumnType::Bytes => Value::Bytes(parse_bytea(s).ok_or_else(|| err(ty, "not \\x hex"))?),
        ColumnType::Date => {
            Value::Temporal(parse_date(s).ok_or_else(|| err(ty, "not a date"))? as i64)
        }
        ColumnType::Time => Value::Temporal(parse_time(s).ok_or_else(|| err(ty, "not a time"))?),
        ColumnType::Timestamp => {
            Value::Temporal(parse_timestamp(s, false).ok_or_else(|| err(ty, "not a timestamp"))?)
        }
        ColumnType::TimestampTz => {
            Value::Temporal(parse_timestamp(s, true).ok_or_else(|| err(ty, "not a timestamptz"))?)
        }
    })
}

/// `-123.45` at scale 2 → `-12345`. Refuses values that need more digits than the scale (they
/// cannot occur in a `numeric(p,s)` column) and NaN/Infinity, which a Decimal cannot hold.
pub fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
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

/// `YYYY-MM-DD` → days since 1970-01-01 (proleptic Gregorian, as Postgres). BC dates refused.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    days_from_civil(y, m, d)
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
pub fn parse_time(s: &str) -> Option<i64> {
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
pub fn parse_timestamp(s: &str, with_zone: bool) -> Option<i64> {
    let (date, rest) = s.split_once(' ')?;
    let days = parse_date(date)? as i64;
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
        let inputs: [&[u8]; 10] = [
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
