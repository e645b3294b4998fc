//! Binlog TABLE_MAP and rows events, decoded straight into sluice's typed values.
//!
//! mysql_common frames the events; the bodies of TABLE_MAP and WRITE/UPDATE/DELETE_ROWS (v1 and
//! v2) are read here, because the values need the schema history's view of each column (its
//! signedness, charset, enum members) and because decoding straight into [`Value`]s avoids an
//! intermediate value and a column description per row. Every read is bounds-checked: malformed
//! bytes are an error, never a panic (tests/fuzz_decoders.rs feeds random bytes).
//!
//! Formats follow MySQL's `log_event.cc` / `field.cc` (the same in MariaDB): integers little
//! endian, the 5.6+ temporal types (`TIME2`, `DATETIME2`, `TIMESTAMP2`) big endian with a
//! fraction of `(fsp + 1) / 2` bytes, decimals in MySQL's packed binary form.

use crate::event::{Row, Value};

use super::types::{Charset, Kind};

/// Binlog column type codes (`enum_field_types`).
pub mod code {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub(crate) const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub(crate) const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub(crate) const TINY_BLOB: u8 = 249;
    pub(crate) const MEDIUM_BLOB: u8 = 250;
    pub(crate) const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub(crate) const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("event ends early: {what} needs {need} bytes at offset {at}, {left} left")]
    Short {
        what: &'static str,
        need: usize,
        at: usize,
        left: usize,
    },
    #[error("column {column}: binlog type {binlog_type} does not fit the schema's {expected}")]
    TypeMismatch {
        column: usize,
        binlog_type: u8,
        expected: String,
    },
    #[error("column {column}: {message}")]
    BadValue { column: usize, message: String },
    #[error("{0}")]
    Malformed(String),
    /// An event sluice cannot decode correctly, with the server setting to change.
    #[error("{0}")]
    Unsupported(String),
}

/// A bounds-checked little reader over an event body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RowError> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(RowError::Short {
                what,
                need: n,
                at: self.at,
                left,
            });
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.at.min(self.buf.len())..];
        self.at = self.buf.len();
        out
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, RowError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// Little-endian unsigned integer of `n` (≤ 8) bytes.
    pub(crate) fn uint_le(&mut self, n: usize, what: &'static str) -> Result<u64, RowError> {
        let b = self.bytes(n, what)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    /// Big-endian unsigned integer of `n` (≤ 8) bytes.
    pub(crate) fn uint_be(&mut self, n: usize, what: &'static str) -> Result<u64, RowError> {
        let b = self.bytes(n, what)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    /// MySQL's length-encoded integer.
    pub(crate) fn lenenc(&mut self, what: &'static str) -> Result<u64, RowError> {
        match self.u8(what)? {
            n @ 0..=0xfa => Ok(n as u64),
            0xfc => self.uint_le(2, what),
            0xfd => self.uint_le(3, what),
            0xfe => self.uint_le(8, what),
            other => Err(RowError::Malformed(format!(
                "{what}: invalid length-encoded integer prefix {other:#x}"
            ))),
        }
    }

    /// A length prefix of `n` bytes, then that many bytes.
    fn prefixed(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RowError> {
        let len = self.uint_le(n, what)? as usize;
        self.bytes(len, what)
    }
}

/// One column of a TABLE_MAP: its binlog type and metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapColumn {
    /// The real type: for `STRING` columns, the type carried in the metadata (ENUM, SET, STRING).
    pub ty: u8,
    /// Type-specific metadata (length bytes, precision and scale, fsp, max length).
    pub meta: u16,
    pub nullable: bool,
}

/// A TABLE_MAP event: which table a table id stands for and how its columns are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMap {
    pub(crate) table_id: u64,
    pub(crate) db: String,
    pub(crate) table: String,
    pub columns: Vec<MapColumn>,
    /// Column names from the optional metadata (`binlog_row_metadata=FULL`), when present.
    pub(crate) names: Option<Vec<String>>,
}

/// Parse a TABLE_MAP body (after the common header, without the checksum).
pub fn parse_table_map(body: &[u8]) -> Result<TableMap, RowError> {
    let mut r = Reader::new(body);
    let table_id = r.uint_le(6, "table id")?;
    r.bytes(2, "flags")?;
    let db = name(&mut r, "database name")?;
    let table = name(&mut r, "table name")?;
    let count = r.lenenc("column count")? as usize;
    let types = r.bytes(count, "column types")?;
    let meta_len = r.lenenc("metadata length")? as usize;
    let mut meta = Reader::new(r.bytes(meta_len, "metadata")?);
    let nulls = r.bytes(count.div_ceil(8), "null bitmap")?;
    let mut columns = Vec::with_capacity(count);
    for (i, &ty) in types.iter().enumerate() {
        let (ty, meta) = column_meta(ty, &mut meta)?;
        columns.push(MapColumn {
            ty,
            meta,
            nullable: nulls[i / 8] & (1 << (i % 8)) != 0,
        });
    }
    let names = optional_names(&mut r, count)?;
    Ok(TableMap {
        table_id,
        db,
        table,
        columns,
        names,
    })
}

/// A one-byte length, the name, and a NUL.
fn name(r: &mut Reader<'_>, what: &'static str) -> Result<String, RowError> {
    let len = r.u8(what)? as usize;
    let bytes = r.bytes(len, what)?;
    r.bytes(1, what)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| RowError::Malformed(format!("{what} is not UTF-8")))
}

/// The metadata of one column type, and the real type of STRING columns.
fn column_meta(ty: u8, meta: &mut Reader<'_>) -> Result<(u8, u16), RowError> {
    use code::*;
    Ok(match ty {
        FLOAT | DOUBLE | BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | GEOMETRY | JSON
        | TIMESTAMP2 | DATETIME2 | TIME2 | VECTOR => (ty, meta.u8("column metadata")? as u16),
        VARCHAR | VAR_STRING => (ty, meta.uint_le(2, "column metadata")? as u16),
        BIT | NEWDECIMAL => (ty, meta.uint_be(2, "column metadata")? as u16),
        STRING | ENUM | SET => {
            let b = meta.bytes(2, "column metadata")?;
            let (byte0, byte1) = (b[0], b[1] as u16);
            // Long CHAR columns keep two high bits of the length in the type byte (bug #37426).
            if byte0 & 0x30 != 0x30 {
                (
                    byte0 | 0x30,
                    byte1 | ((((byte0 & 0x30) ^ 0x30) as u16) << 4),
                )
            } else {
                (byte0, byte1)
            }
        }
        _ => (ty, 0),
    })
}

/// Column names from the optional metadata block (type 4, COLUMN_NAME), if the server sent it.
fn optional_names(r: &mut Reader<'_>, count: usize) -> Result<Option<Vec<String>>, RowError> {
    const COLUMN_NAME: u8 = 4;
    while !r.is_empty() {
        let kind = r.u8("optional metadata type")?;
        let len = r.lenenc("optional metadata length")? as usize;
        let mut field = Reader::new(r.bytes(len, "optional metadata")?);
        if kind != COLUMN_NAME {
            continue;
        }
        let mut names = Vec::with_capacity(count);
        while !field.is_empty() {
            let len = field.lenenc("column name length")? as usize;
            let bytes = field.bytes(len, "column name")?;
            names.push(String::from_utf8_lossy(bytes).into_owned());
        }
        return Ok(Some(names));
    }
    Ok(None)
}

/// The kind of rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsKind {
    Write,
    Update,
    Delete,
}

/// A rows event body split into its parts; rows are decoded by [`RowsEvent::rows`].
#[derive(Debug, Clone)]
pub struct RowsEvent<'a> {
    pub(crate) kind: RowsKind,
    pub(crate) table_id: u64,
    /// `STMT_END_F`: the last rows event of its statement.
    pub end_of_statement: bool,
    pub(crate) column_count: usize,
    /// Columns present in the before image (update, delete) or the only image (write).
    pub(crate) present: &'a [u8],
    /// Columns present in the after image of an update.
    pub(crate) present_after: Option<&'a [u8]>,
    pub(crate) data: &'a [u8],
}

/// Parse a rows event body. `v2`: the event types 30-32 (a variable-length extra-data header).
pub fn parse_rows_event(body: &[u8], kind: RowsKind, v2: bool) -> Result<RowsEvent<'_>, RowError> {
    let mut r = Reader::new(body);
    let table_id = r.uint_le(6, "table id")?;
    let flags = r.uint_le(2, "flags")?;
    if v2 {
        let extra = r.uint_le(2, "extra data length")? as usize;
        r.bytes(extra.saturating_sub(2), "extra data")?;
    }
    let column_count = r.lenenc("column count")? as usize;
    let width = column_count.div_ceil(8);
    let present = r.bytes(width, "columns bitmap")?;
    let present_after = match kind {
        RowsKind::Update => Some(r.bytes(width, "after-image columns bitmap")?),
        _ => None,
    };
    Ok(RowsEvent {
        kind,
        table_id,
        end_of_statement: flags & 1 != 0,
        column_count,
        present,
        present_after,
        data: r.rest(),
    })
}

/// What decoding noticed that the lake should count: values it could not represent exactly.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lossy {
    /// Zero or partial dates (`0000-00-00`), written as null.
    pub(crate) zero_dates: u64,
    /// Bytes that were not valid in the column's charset, replaced by U+FFFD.
    pub(crate) bad_text: u64,
    /// Columns missing from a row image (`binlog_row_image` not FULL), written as null.
    pub(crate) missing_columns: u64,
}

/// A row image decoder for one table: the TABLE_MAP's storage and the schema's kinds.
pub struct RowDecoder<'a> {
    pub(crate) map: &'a TableMap,
    pub(crate) kinds: &'a [Kind],
    pub(crate) lossy: Lossy,
}

impl<'a> RowDecoder<'a> {
    pub fn new(map: &'a TableMap, kinds: &'a [Kind]) -> Result<RowDecoder<'a>, RowError> {
        if map.columns.len() != kinds.len() {
            return Err(RowError::Malformed(format!(
                "the binlog has {} columns for {}.{} but the schema has {}",
                map.columns.len(),
                map.db,
                map.table,
                kinds.len()
            )));
        }
        Ok(RowDecoder {
            map,
            kinds,
            lossy: Lossy::default(),
        })
    }

    /// Every (before, after) pair of a rows event, in order.
    pub fn rows(
        &mut self,
        ev: &RowsEvent<'_>,
        mut each: impl FnMut(Option<Row>, Option<Row>),
    ) -> Result<(), RowError> {
        if ev.column_count != self.kinds.len() {
            return Err(RowError::Malformed(format!(
                "rows event has {} columns, the table map {}",
                ev.column_count,
                self.kinds.len()
            )));
        }
        let mut r = Reader::new(ev.data);
        let present = Image::new(ev.present, self.kinds.len());
        let present_after = ev.present_after.map(|a| Image::new(a, self.kinds.len()));
        while !r.is_empty() {
            let at = r.at;
            let first = self.image(&mut r, &present)?;
            if r.at == at {
                // Nothing read (no columns, or only NULL-typed ones): never loop on a malformed
                // event.
                return Err(RowError::Malformed(
                    "a row image that holds no bytes".into(),
                ));
            }
            match (ev.kind, &present_after) {
                (RowsKind::Write, _) => each(None, Some(first)),
                (RowsKind::Delete, _) => each(Some(first), None),
                (RowsKind::Update, Some(after_image)) => {
                    let after = after_image.bits;
                    let mut second = self.image(&mut r, after_image)?;
                    // A column the after image leaves out is unchanged (binlog_row_image=NOBLOB).
                    for (i, v) in second.iter_mut().enumerate() {
                        if !bit(after, i) && bit(ev.present, i) {
                            *v = first[i].clone();
                            self.lossy.missing_columns -= 1;
                        }
                    }
                    each(Some(first), Some(second))
                }
                (RowsKind::Update, None) => {
                    return Err(RowError::Malformed("update without after image".into()));
                }
            }
        }
        Ok(())
    }

    /// One row image: the null bitmap over the present columns, then their values.
    fn image(&mut self, r: &mut Reader<'_>, present: &Image<'_>) -> Result<Row, RowError> {
        let n = self.kinds.len();
        let nulls = r.bytes(present.count.div_ceil(8), "null bitmap")?;
        let mut row = Vec::with_capacity(n);
        let mut slot = 0;
        for i in 0..n {
            if !bit(present.bits, i) {
                self.lossy.missing_columns += 1;
                row.push(Value::Null);
                continue;
            }
            let null = bit(nulls, slot);
            slot += 1;
            row.push(if null { Value::Null } else { self.value(r, i)? });
        }
        Ok(row)
    }

    fn value(&mut self, r: &mut Reader<'_>, i: usize) -> Result<Value, RowError> {
        let col = self.map.columns[i];
        let kind = &self.kinds[i];
        decode_value(r, col, kind, i, &mut self.lossy)
    }
}

/// The columns a row image holds: its bitmap and how many are set.
struct Image<'a> {
    bits: &'a [u8],
    count: usize,
}

impl<'a> Image<'a> {
    fn new(bits: &'a [u8], columns: usize) -> Image<'a> {
        let count = (0..columns).filter(|&i| bit(bits, i)).count();
        Image { bits, count }
    }
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Decode one non-null value stored as `col` and typed as `kind`.
pub fn decode_value(
    r: &mut Reader<'_>,
    col: MapColumn,
    kind: &Kind,
    i: usize,
    lossy: &mut Lossy,
) -> Result<Value, RowError> {
    use code::*;
    let mismatch = || RowError::TypeMismatch {
        column: i,
        binlog_type: col.ty,
        expected: format!("{kind:?}"),
    };
    let meta = col.meta;
    Ok(match col.ty {
        TINY | SHORT | INT24 | LONG | LONGLONG => {
            let width = match col.ty {
                TINY => 1,
                SHORT => 2,
                INT24 => 3,
                LONG => 4,
                _ => 8,
            };
            let raw = r.uint_le(width, "integer")?;
            match kind {
                Kind::Int { unsigned: true, .. } if width == 8 => Value::Decimal(raw as i128),
                Kind::Int { unsigned: true, .. } => Value::Int(raw as i64),
                Kind::Int { .. } => Value::Int(sign_extend(raw, width)),
                // MariaDB logs `bool`/`boolean` as tinyint; a bit(1) arrives as BIT.
                Kind::Year if col.ty == TINY => Value::Int(year(raw as u8)),
                _ => return Err(mismatch()),
            }
        }
        FLOAT => match kind {
            Kind::Float | Kind::Double => {
                Value::Float(f32::from_bits(r.uint_le(4, "float")? as u32) as f64)
            }
            _ => return Err(mismatch()),
        },
        DOUBLE => match kind {
            Kind::Float | Kind::Double => Value::Float(f64::from_bits(r.uint_le(8, "double")?)),
            _ => return Err(mismatch()),
        },
        NEWDECIMAL => {
            let (precision, scale) = ((meta >> 8) as u8, (meta & 0xff) as u8);
            match kind {
                Kind::Decimal { scale: s, .. } if *s == scale => {
                    decimal_value(r, precision, scale, i)?
                }
                _ => return Err(mismatch()),
            }
        }
        YEAR => match kind {
            Kind::Year | Kind::Int { .. } => Value::Int(year(r.u8("year")?)),
            _ => return Err(mismatch()),
        },
        DATE | NEWDATE => {
            let v = r.uint_le(3, "date")?;
            let (y, m, d) = ((v >> 9) as i32, ((v >> 5) & 15) as u32, (v & 31) as u32);
            match kind {
                Kind::Date => days(y, m, d).map_or_else(|| zero(lossy), Value::Temporal),
                _ => return Err(mismatch()),
            }
        }
        TIME2 => {
            let us = read_time2(r, meta as u8)?;
            match kind {
                Kind::Time => Value::Temporal(us),
                _ => return Err(mismatch()),
            }
        }
        TIME => {
            // Pre-5.6: HHMMSS as a signed 3-byte integer.
            let v = sign_extend(r.uint_le(3, "time")?, 3);
            let (sign, v) = (v.signum(), v.abs());
            let secs = (v / 10000) * 3600 + (v / 100 % 100) * 60 + v % 100;
            match kind {
                Kind::Time => Value::Temporal(sign * secs * 1_000_000),
                _ => return Err(mismatch()),
            }
        }
        DATETIME2 => {
            let packed = read_packed(r, 5, 0x80_0000_0000, meta as u8, "datetime")?;
            match kind {
                Kind::DateTime => {
                    datetime2_micros(packed).map_or_else(|| zero(lossy), Value::Temporal)
                }
                _ => return Err(mismatch()),
            }
        }
        DATETIME => {
            // Pre-5.6: YYYYMMDDhhmmss as an 8-byte integer.
            let v = r.uint_le(8, "datetime")?;
            let (date, time) = (v / 1_000_000, v % 1_000_000);
            let micros = days(
                (date / 10000) as i32,
                (date / 100 % 100) as u32,
                (date % 100) as u32,
            )
            .map(|d| {
                d * 86_400_000_000
                    + ((time / 10000) * 3600 + (time / 100 % 100) * 60 + time % 100) as i64
                        * 1_000_000
            });
            match kind {
                Kind::DateTime => micros.map_or_else(|| zero(lossy), Value::Temporal),
                _ => return Err(mismatch()),
            }
        }
        TIMESTAMP2 => {
            let secs = r.uint_be(4, "timestamp")? as i64;
            let frac = read_fraction(r, meta as u8)?;
            match kind {
                // 0 is MySQL's zero timestamp (its range starts one second after the epoch).
                Kind::Timestamp if secs == 0 && frac == 0 => zero(lossy),
                Kind::Timestamp => Value::Temporal(secs * 1_000_000 + frac),
                _ => return Err(mismatch()),
            }
        }
        TIMESTAMP => {
            let secs = r.uint_le(4, "timestamp")? as i64;
            match kind {
                Kind::Timestamp if secs == 0 => zero(lossy),
                Kind::Timestamp => Value::Temporal(secs * 1_000_000),
                _ => return Err(mismatch()),
            }
        }
        VARCHAR | VAR_STRING => {
            let prefix = if meta < 256 { 1 } else { 2 };
            let bytes = r.prefixed(prefix, "varchar")?;
            bytes_value(bytes, kind, lossy).ok_or_else(mismatch)?
        }
        STRING => {
            let prefix = if meta > 255 { 2 } else { 1 };
            let bytes = r.prefixed(prefix, "char")?;
            bytes_value(bytes, kind, lossy).ok_or_else(mismatch)?
        }
        ENUM => {
            let index = r.uint_le((meta as usize).clamp(1, 2), "enum")? as usize;
            match kind {
                // Index 0 is MySQL's error value: the empty string.
                Kind::Enum(members) => Value::Text(match index {
                    0 => String::new(),
                    n => members
                        .get(n - 1)
                        .cloned()
                        .ok_or_else(|| RowError::BadValue {
                            column: i,
                            message: format!("enum index {n} beyond the {} members", members.len()),
                        })?,
                }),
                _ => return Err(mismatch()),
            }
        }
        SET => {
            let mask = r.uint_le((meta as usize).clamp(1, 8), "set")?;
            match kind {
                Kind::Set(members) => Value::Text(
                    members
                        .iter()
                        .enumerate()
                        .filter(|(b, _)| *b < 64 && mask & (1 << b) != 0)
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => return Err(mismatch()),
            }
        }
        BIT => {
            let (bits, bytes) = ((meta >> 8) as usize, (meta & 0xff) as usize);
            let raw = r.bytes(bytes + usize::from(bits > 0), "bit")?;
            match kind {
                Kind::Bit { bits: 1 } => Value::Bool(raw.iter().any(|b| *b != 0)),
                Kind::Bit { .. } => Value::Bytes(raw.to_vec()),
                _ => return Err(mismatch()),
            }
        }
        BLOB | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | VECTOR => {
            let bytes = r.prefixed((meta as usize).clamp(1, 4), "blob")?;
            bytes_value(bytes, kind, lossy).ok_or_else(mismatch)?
        }
        GEOMETRY => {
            let bytes = r.prefixed((meta as usize).clamp(1, 4), "geometry")?;
            match kind {
                // MySQL's internal form: a 4-byte SRID, then WKB.
                Kind::Geometry => Value::Bytes(bytes.get(4..).unwrap_or_default().to_vec()),
                Kind::Bytes | Kind::Other(_) => Value::Bytes(bytes.to_vec()),
                _ => return Err(mismatch()),
            }
        }
        JSON => {
            let bytes = r.prefixed((meta as usize).clamp(1, 4), "json")?;
            match kind {
                Kind::Json | Kind::Text(_) | Kind::Other(_) => Value::Text(
                    json_text(bytes)
                        .map_err(|message| RowError::BadValue { column: i, message })?,
                ),
                _ => return Err(mismatch()),
            }
        }
        NULL => Value::Null,
        other => {
            return Err(RowError::Malformed(format!(
                "column {i}: binlog column type {other} is not supported"
            )));
        }
    })
}

fn zero(lossy: &mut Lossy) -> Value {
    lossy.zero_dates += 1;
    Value::Null
}

fn year(v: u8) -> i64 {
    if v == 0 { 0 } else { 1900 + v as i64 }
}

fn sign_extend(raw: u64, width: usize) -> i64 {
    let shift = 64 - 8 * width as u32;
    ((raw << shift) as i64) >> shift
}

/// Days since 1970-01-01 of a calendar date; None for MySQL's zero or partial dates. (Howard
/// Hinnant's days-from-civil: a few integer operations per value, on the hot path of every
/// DATE and DATETIME.)
fn days(y: i32, m: u32, d: u32) -> Option<i64> {
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m)
        || d == 0
        || d > month_days[m as usize - 1]
        || !(0..=9999).contains(&y)
    {
        return None;
    }
    let y = if m <= 2 { y as i64 - 1 } else { y as i64 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Bytes of a string or blob column as the kind says: text in its charset, bytes, or an
/// unmapped type as text (hex when it is not UTF-8). None: the kind is not a byte-string kind.
fn bytes_value(bytes: &[u8], kind: &Kind, lossy: &mut Lossy) -> Option<Value> {
    Some(match kind {
        Kind::Text(charset) => Value::Text(decode_text(bytes, *charset, lossy)),
        Kind::Json => Value::Text(decode_text(bytes, Charset::Utf8, lossy)),
        Kind::Bytes => Value::Bytes(bytes.to_vec()),
        Kind::FixedBinary(n) => {
            let mut b = bytes.to_vec();
            if b.len() < *n as usize {
                b.resize(*n as usize, 0);
            }
            Value::Bytes(b)
        }
        Kind::Other(_) => Value::Text(match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }),
        _ => return None,
    })
}

pub(crate) fn decode_text(bytes: &[u8], charset: Charset, lossy: &mut Lossy) -> String {
    match charset {
        Charset::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => {
                lossy.bad_text += 1;
                String::from_utf8_lossy(bytes).into_owned()
            }
        },
        Charset::Legacy(encoding) => {
            let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
            if had_errors {
                lossy.bad_text += 1;
            }
            text.into_owned()
        }
    }
}

/// The fraction of a 5.6+ temporal value, in microseconds.
fn read_fraction(r: &mut Reader<'_>, fsp: u8) -> Result<i64, RowError> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => r.uint_be(1, "fraction")? as i64 * 10_000,
        3 | 4 => r.uint_be(2, "fraction")? as i64 * 100,
        5 | 6 => r.uint_be(3, "fraction")? as i64,
        other => {
            return Err(RowError::Malformed(format!(
                "fractional second precision {other} (at most 6)"
            )));
        }
    })
}

/// A 5.6+ packed temporal value: `int_bytes` big-endian bytes minus `offset`, shifted left 24
/// bits, plus the fraction (MySQL's `my_*_packed_from_binary`).
fn read_packed(
    r: &mut Reader<'_>,
    int_bytes: usize,
    offset: i64,
    fsp: u8,
    what: &'static str,
) -> Result<i64, RowError> {
    let int = r.uint_be(int_bytes, what)? as i64 - offset;
    let frac = read_fraction(r, fsp)?;
    Ok((int << 24) + frac)
}

/// DATETIME2 packed → microseconds since the epoch (no zone); None for zero dates.
fn datetime2_micros(packed: i64) -> Option<i64> {
    let frac = packed % (1 << 24);
    let ymdhms = packed >> 24;
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms % (1 << 17);
    let (day, month, year) = ((ymd % 32) as u32, (ym % 13) as u32, (ym / 13) as i32);
    let (hour, minute, second) = (hms >> 12, (hms >> 6) % 64, hms % 64);
    let d = days(year, month, day)?;
    Some(d * 86_400_000_000 + (hour * 3600 + minute * 60 + second) * 1_000_000 + frac)
}

/// TIME2 → signed microseconds (`-838:59:59` .. `838:59:59`).
fn read_time2(r: &mut Reader<'_>, fsp: u8) -> Result<i64, RowError> {
    const INT_OFFSET: i64 = 0x80_0000;
    let packed = match fsp {
        0 => (r.uint_be(3, "time")? as i64 - INT_OFFSET) << 24,
        1..=4 => {
            let mut int = r.uint_be(3, "time")? as i64 - INT_OFFSET;
            let (width, unit) = if fsp <= 2 { (1, 10_000) } else { (2, 100) };
            let mut frac = r.uint_be(width, "time fraction")? as i64;
            if int < 0 && frac != 0 {
                // Negative values keep the fraction as a complement of the next integer.
                int += 1;
                frac -= 1 << (8 * width);
            }
            (int << 24) + frac * unit
        }
        5 | 6 => r.uint_be(6, "time")? as i64 - 0x8000_0000_0000,
        other => {
            return Err(RowError::Malformed(format!(
                "fractional second precision {other} (at most 6)"
            )));
        }
    };
    let (neg, packed) = (packed < 0, packed.abs());
    let hms = packed >> 24;
    let micros = ((hms >> 12) % 1024 * 3600 + (hms >> 6) % 64 * 60 + hms % 64) * 1_000_000
        + packed % (1 << 24);
    Ok(if neg { -micros } else { micros })
}

/// A packed decimal's digits: sign and the decimal digits of the integer and fraction parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecimalDigits {
    pub(crate) negative: bool,
    /// Integer part digits (no leading zeros, may be empty).
    pub(crate) int: String,
    /// Exactly `scale` fraction digits.
    pub(crate) frac: String,
}

const DIG_PER_WORD: usize = 9;
const DIG_TO_BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Walk MySQL's packed binary decimal of `precision` digits, `scale` after the point: `visit`
/// gets each group of digits in order (integer part, then fraction) with its digit count.
/// Returns whether the number is negative.
fn decimal_words(
    r: &mut Reader<'_>,
    precision: u8,
    scale: u8,
    column: usize,
    mut visit: impl FnMut(u64, usize),
) -> Result<bool, RowError> {
    let (precision, scale) = (precision as usize, scale as usize);
    if scale > precision || precision == 0 || precision > 65 {
        return Err(RowError::BadValue {
            column,
            message: format!("decimal({precision},{scale}) is not a valid decimal type"),
        });
    }
    let intg = precision - scale;
    let (intg0, intg0x) = (intg / DIG_PER_WORD, intg % DIG_PER_WORD);
    let (frac0, frac0x) = (scale / DIG_PER_WORD, scale % DIG_PER_WORD);
    let size = intg0 * 4 + DIG_TO_BYTES[intg0x] + frac0 * 4 + DIG_TO_BYTES[frac0x];
    let raw = r.bytes(size, "decimal")?;
    // The sign is the inverted top bit; negative numbers are stored with every bit inverted.
    let negative = raw[0] & 0x80 == 0;
    let mut at = 0;
    let mut word = |n: usize, digits: usize| -> Result<(), RowError> {
        let mut v = raw[at..at + n]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64);
        if at == 0 {
            v ^= 0x80 << (8 * (n - 1));
        }
        if negative {
            v = !v & ((1u64 << (8 * n)) - 1);
        }
        at += n;
        if v >= 10u64.pow(digits as u32) {
            return Err(RowError::BadValue {
                column,
                message: "a decimal word holds more digits than it may".into(),
            });
        }
        visit(v, digits);
        Ok(())
    };
    if intg0x > 0 {
        word(DIG_TO_BYTES[intg0x], intg0x)?;
    }
    for _ in 0..intg0 {
        word(4, DIG_PER_WORD)?;
    }
    for _ in 0..frac0 {
        word(4, DIG_PER_WORD)?;
    }
    if frac0x > 0 {
        word(DIG_TO_BYTES[frac0x], frac0x)?;
    }
    Ok(negative)
}

/// Read a packed decimal as its digits (any precision).
pub(crate) fn read_decimal(
    r: &mut Reader<'_>,
    precision: u8,
    scale: u8,
    column: usize,
) -> Result<DecimalDigits, RowError> {
    let mut digits = String::with_capacity(precision as usize);
    let negative = decimal_words(r, precision, scale, column, |v, n| {
        use std::fmt::Write;
        let _ = write!(digits, "{v:0n$}");
    })?;
    let (int, frac) = digits.split_at(digits.len() - scale as usize);
    let int = int.trim_start_matches('0').to_string();
    Ok(DecimalDigits {
        negative: negative && digits.bytes().any(|d| d != b'0'),
        int,
        frac: frac.to_string(),
    })
}

/// A decimal of at most 38 digits as its unscaled integer; wider ones as exact text.
fn decimal_value(
    r: &mut Reader<'_>,
    precision: u8,
    scale: u8,
    column: usize,
) -> Result<Value, RowError> {
    if precision > 38 {
        let d = read_decimal(r, precision, scale, column)?;
        let mut s = String::new();
        if d.negative {
            s.push('-');
        }
        s.push_str(if d.int.is_empty() { "0" } else { &d.int });
        if !d.frac.is_empty() {
            s.push('.');
            s.push_str(&d.frac);
        }
        return Ok(Value::Text(s));
    }
    // At most 38 digits: the unscaled value fits an i128 all the way.
    let mut unscaled: i128 = 0;
    let negative = decimal_words(r, precision, scale, column, |v, n| {
        unscaled = unscaled * 10i128.pow(n as u32) + v as i128;
    })?;
    Ok(Value::Decimal(if negative { -unscaled } else { unscaled }))
}

/// MySQL 8 binary JSON → its text (see json.rs).
pub fn json_text(bytes: &[u8]) -> Result<String, String> {
    super::json::to_text(bytes)
}

#[cfg(test)]
mod tests;
