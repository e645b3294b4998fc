//! MySQL/MariaDB column types: from the type as `information_schema.COLUMNS.COLUMN_TYPE` spells
//! it (or a DDL's column definition printed the same way) to how a binlog value is interpreted
//! and how the lake types it. One parser serves the catalog and the DDL tracker, so a column
//! typed from either is the same column.
//!
//! The mapping (documented in docs/types.md):
//!
//! | MySQL | lake (`ColumnType`) |
//! |---|---|
//! | tinyint, smallint (signed) | Int16 |
//! | tinyint unsigned | Int16; smallint unsigned, mediumint, int → Int32; int unsigned → Int64 |
//! | bigint | Int64; bigint unsigned → Decimal(20,0) (no overflow) |
//! | decimal(p,s) | Decimal(p,s) up to 38 digits, exact decimal text beyond |
//! | float / double | Float32 / Float64 |
//! | char, varchar, text (any charset) | Text, converted to UTF-8 from the column's charset |
//! | binary, varbinary, blob, char … CHARACTER SET binary | Bytes |
//! | date | Date; time(fsp) → Duration (may be negative or over 24 h); year → Int32 |
//! | datetime(fsp) | Timestamp (no zone); timestamp(fsp) → TimestampTz (UTC) |
//! | json (MySQL binary JSON) | Json text; MariaDB's JSON is longtext → Text |
//! | enum, set | Text (the member names; a set comma-separated) |
//! | bit(1) | Bool; bit(n) → Bytes, big-endian |
//! | geometry and its subtypes | Bytes: WKB (the SRID prefix is dropped) |
//! | anything else | Other: text, or lower-case hex when the value is not valid text |

use serde::{Deserialize, Serialize};

use crate::event::{Column, ColumnType};

/// One column as the schema history keeps it: enough to type and decode its binlog values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyColumn {
    pub name: String,
    /// The type as COLUMN_TYPE spells it: `int(10) unsigned`, `enum('a','b')`, `datetime(6)`.
    pub column_type: String,
    /// Character set of a text column (`utf8mb4`, `latin1`, `binary`); None for other types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    pub nullable: bool,
    /// Part of the primary key.
    pub key: bool,
}

/// How a column's binlog (and snapshot) values are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// tinyint (1 byte) .. bigint (8 bytes).
    Int {
        bytes: u8,
        unsigned: bool,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Text(Charset),
    Bytes,
    /// `binary(n)`: MariaDB's binlog leaves out trailing zero bytes, which come back as padding.
    FixedBinary(u32),
    Date,
    Time,
    DateTime,
    Timestamp,
    Year,
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit {
        bits: u16,
    },
    Geometry,
    Other(String),
}

/// The character set a text column's bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    /// Converted with the WHATWG encoding of that name (MySQL's latin1 is windows-1252).
    Legacy(&'static encoding_rs::Encoding),
}

/// A column type split into its name, arguments and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpec {
    /// Lower case, synonyms folded (`integer` → `int`, `boolean` → `tinyint`).
    pub(crate) name: String,
    /// The arguments in parentheses, quotes removed (`enum('a','b')` → `a`, `b`).
    pub(crate) args: Vec<String>,
    pub(crate) unsigned: bool,
}

/// Parse `name[(args)] [unsigned] [zerofill]`. Returns None for text that is not a type.
pub fn parse_type(text: &str) -> Option<TypeSpec> {
    let text = text.trim();
    let name_end = text
        .find(|c: char| c == '(' || c.is_whitespace())
        .unwrap_or(text.len());
    let mut name = text[..name_end].to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let mut rest = text[name_end..].trim_start();
    let mut args = Vec::new();
    if let Some(inner) = rest.strip_prefix('(') {
        let (parsed, after) = parse_args(inner)?;
        args = parsed;
        rest = after;
    }
    let words: Vec<String> = rest
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let unsigned = words.iter().any(|w| w == "unsigned");
    // Two-word names: `double precision`, `character varying`, `long varchar`.
    match (name.as_str(), words.first().map(String::as_str)) {
        ("double", Some("precision")) => name = "double".into(),
        ("character", Some("varying")) | ("char", Some("varying")) => name = "varchar".into(),
        ("long", Some("varchar")) | ("long", Some("varbinary")) => {
            name = if words[0] == "varchar" {
                "mediumtext".into()
            } else {
                "mediumblob".into()
            }
        }
        _ => {}
    }
    let name = match name.as_str() {
        "integer" => "int",
        "int1" => "tinyint",
        "int2" => "smallint",
        "int3" | "middleint" => "mediumint",
        "int4" => "int",
        "int8" => "bigint",
        "bool" | "boolean" => "tinyint",
        "dec" | "numeric" | "fixed" => "decimal",
        "real" | "float8" => "double",
        "float4" => "float",
        "character" | "nchar" => "char",
        "nvarchar" => "varchar",
        "long" => "mediumtext",
        "geomcollection" => "geometrycollection",
        other => other,
    }
    .to_string();
    Some(TypeSpec {
        name,
        args,
        unsigned,
    })
}

/// Arguments up to the closing parenthesis: comma-separated numbers or quoted strings (quotes
/// doubled or backslash-escaped inside). Returns them and the text after `)`.
fn parse_args(s: &str) -> Option<(Vec<String>, &str)> {
    let mut args = Vec::new();
    let mut chars = s.char_indices().peekable();
    let mut current = String::new();
    let mut quoted = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                if current.trim().is_empty() {
                    current.clear(); // the blank after a comma
                }
                quoted = true;
                let quote = c;
                loop {
                    let (_, c) = chars.next()?;
                    if c == '\\' {
                        current.push(chars.next()?.1);
                    } else if c == quote {
                        if chars.peek().is_some_and(|(_, n)| *n == quote) {
                            chars.next();
                            current.push(quote);
                        } else {
                            break;
                        }
                    } else {
                        current.push(c);
                    }
                }
            }
            ',' => {
                args.push(finish_arg(&mut current, quoted));
                quoted = false;
            }
            ')' => {
                if !current.trim().is_empty() || quoted || !args.is_empty() {
                    args.push(finish_arg(&mut current, quoted));
                }
                return Some((args, &s[i + 1..]));
            }
            c => current.push(c),
        }
    }
    None
}

fn finish_arg(current: &mut String, quoted: bool) -> String {
    let arg = std::mem::take(current);
    if quoted { arg } else { arg.trim().to_string() }
}

impl TypeSpec {
    fn arg(&self, i: usize) -> Option<u32> {
        self.args.get(i).and_then(|a| a.trim().parse().ok())
    }
}

/// The one spelling of a type that the catalog's COLUMN_TYPE and a DDL's column definition both
/// come to, so the same column read either way compares equal: lower-case name and synonyms
/// folded, integer display widths dropped (they change nothing), defaults written out
/// (`decimal` → `decimal(10,0)`, `char` → `char(1)`), fsp 0 omitted, enum members re-quoted.
pub fn canonical_type(text: &str) -> String {
    let Some(spec) = parse_type(text) else {
        return text.trim().to_ascii_lowercase();
    };
    let name = spec.name.as_str();
    let unsigned = if spec.unsigned { " unsigned" } else { "" };
    let quoted = || {
        spec.args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",")
    };
    match name {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => format!("{name}{unsigned}"),
        "float" if spec.args.len() == 1 && spec.arg(0).is_some_and(|p| p > 24) => {
            format!("double{unsigned}")
        }
        "float" | "double" => format!("{name}{unsigned}"),
        "decimal" => format!(
            "decimal({},{}){unsigned}",
            spec.arg(0).unwrap_or(10),
            spec.arg(1).unwrap_or(0)
        ),
        "char" | "binary" | "bit" => format!("{name}({})", spec.arg(0).unwrap_or(1)),
        "datetime" | "timestamp" | "time" => match spec.arg(0) {
            Some(fsp) if fsp > 0 => format!("{name}({fsp})"),
            _ => name.to_string(),
        },
        "year" | "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob"
        | "mediumblob" | "longblob" | "json" | "date" => name.to_string(),
        "enum" | "set" => format!("{name}({})", quoted()),
        _ if spec.args.is_empty() => format!("{name}{unsigned}"),
        _ => format!("{name}({}){unsigned}", spec.args.join(",")),
    }
}

impl MyColumn {
    /// How this column's values are read. Unknown type names read as text (Kind::Other).
    pub(crate) fn kind(&self) -> Kind {
        let Some(spec) = parse_type(&self.column_type) else {
            return Kind::Other(self.column_type.clone());
        };
        let charset = self.charset.as_deref().unwrap_or("utf8mb4");
        let text = || match charset_of(charset) {
            Some(cs) => Kind::Text(cs),
            None if charset.eq_ignore_ascii_case("binary") => Kind::Bytes,
            None => Kind::Other(format!("{} character set {charset}", spec.name)),
        };
        let int = |bytes| Kind::Int {
            bytes,
            unsigned: spec.unsigned,
        };
        match spec.name.as_str() {
            "tinyint" => int(1),
            "smallint" => int(2),
            "mediumint" => int(3),
            "int" => int(4),
            "bigint" | "serial" => Kind::Int {
                bytes: 8,
                unsigned: spec.unsigned || spec.name == "serial",
            },
            // float(p) with p > 24 is a double.
            "float" if spec.arg(0).is_some_and(|p| p > 24) && spec.args.len() == 1 => Kind::Double,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "decimal" => Kind::Decimal {
                precision: spec.arg(0).unwrap_or(10).min(65) as u8,
                scale: spec.arg(1).unwrap_or(0).min(38) as u8,
            },
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => text(),
            "binary" => Kind::FixedBinary(spec.arg(0).unwrap_or(1)),
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "vector" => Kind::Bytes,
            "date" => Kind::Date,
            "time" => Kind::Time,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "year" => Kind::Year,
            "json" => Kind::Json,
            "enum" => Kind::Enum(spec.args.clone()),
            "set" => Kind::Set(spec.args.clone()),
            "bit" => Kind::Bit {
                bits: spec.arg(0).unwrap_or(1).clamp(1, 64) as u16,
            },
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => Kind::Geometry,
            other => Kind::Other(other.to_string()),
        }
    }

    /// The lake column.
    pub fn column(&self) -> Column {
        Column {
            name: self.name.clone(),
            ty: column_type(&self.kind()),
            nullable: self.nullable,
            key: self.key,
            source_type: self.column_type.clone(),
        }
    }
}

/// The lake type of a kind (see the table at the top of this file).
pub(crate) fn column_type(kind: &Kind) -> ColumnType {
    match kind {
        Kind::Int {
            bytes,
            unsigned: false,
        } => match bytes {
            1 | 2 => ColumnType::Int16,
            3 | 4 => ColumnType::Int32,
            _ => ColumnType::Int64,
        },
        Kind::Int {
            bytes,
            unsigned: true,
        } => match bytes {
            1 => ColumnType::Int16,
            2 | 3 => ColumnType::Int32,
            4 => ColumnType::Int64,
            _ => ColumnType::Decimal {
                precision: 20,
                scale: 0,
            },
        },
        Kind::Float => ColumnType::Float32,
        Kind::Double => ColumnType::Float64,
        Kind::Decimal { precision, scale } if *precision <= 38 => ColumnType::Decimal {
            precision: (*precision).max(1),
            scale: *scale as i8,
        },
        Kind::Decimal { .. } => ColumnType::Numeric,
        Kind::Text(_) | Kind::Enum(_) | Kind::Set(_) => ColumnType::Text,
        Kind::Bytes | Kind::FixedBinary(_) | Kind::Geometry => ColumnType::Bytes,
        Kind::Date => ColumnType::Date,
        Kind::Time => ColumnType::Duration,
        Kind::DateTime => ColumnType::Timestamp,
        Kind::Timestamp => ColumnType::TimestampTz,
        Kind::Year => ColumnType::Int32,
        Kind::Json => ColumnType::Json,
        Kind::Bit { bits: 1 } => ColumnType::Bool,
        Kind::Bit { .. } => ColumnType::Bytes,
        Kind::Other(name) => ColumnType::Other(name.clone()),
    }
}

/// MySQL character set names → how to read them. None: `binary`, or a set sluice cannot convert.
pub fn charset_of(name: &str) -> Option<Charset> {
    let name = name.to_ascii_lowercase();
    let legacy = |label: &[u8]| encoding_rs::Encoding::for_label(label).map(Charset::Legacy);
    match name.as_str() {
        "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => Some(Charset::Utf8),
        // MySQL's latin1 is Windows-1252 (its 0x80-0x9f are cp1252's characters).
        "latin1" => legacy(b"windows-1252"),
        "latin2" => legacy(b"iso-8859-2"),
        "latin7" => legacy(b"iso-8859-13"),
        "cp1250" => legacy(b"windows-1250"),
        "cp1251" => legacy(b"windows-1251"),
        "cp1256" => legacy(b"windows-1256"),
        "cp1257" => legacy(b"windows-1257"),
        "cp866" => legacy(b"ibm866"),
        "greek" => legacy(b"iso-8859-7"),
        "hebrew" => legacy(b"iso-8859-8"),
        "koi8r" => legacy(b"koi8-r"),
        "koi8u" => legacy(b"koi8-u"),
        "gbk" | "gb2312" => legacy(b"gbk"),
        "gb18030" => legacy(b"gb18030"),
        "big5" => legacy(b"big5"),
        "sjis" | "cp932" => legacy(b"shift_jis"),
        "ujis" | "eucjpms" => legacy(b"euc-jp"),
        "euckr" => legacy(b"euc-kr"),
        "tis620" => legacy(b"windows-874"),
        "macroman" => legacy(b"macintosh"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: &str, charset: Option<&str>) -> MyColumn {
        MyColumn {
            name: "c".into(),
            column_type: ty.into(),
            charset: charset.map(String::from),
            nullable: true,
            key: false,
        }
    }

    #[test]
    fn column_types_parse_with_arguments_and_attributes() {
        let spec = parse_type("int(10) unsigned zerofill").unwrap();
        assert_eq!((spec.name.as_str(), spec.unsigned), ("int", true));
        assert_eq!(spec.args, vec!["10"]);
        let e = parse_type("enum('a','it''s','x,y', 'b\\'c')").unwrap();
        assert_eq!(e.args, vec!["a", "it's", "x,y", "b'c"]);
        assert_eq!(parse_type("DECIMAL(12, 2)").unwrap().args, vec!["12", "2"]);
        assert_eq!(parse_type("DOUBLE PRECISION").unwrap().name, "double");
        assert_eq!(parse_type("BOOLEAN").unwrap().name, "tinyint");
        assert!(parse_type("enum('unterminated").is_none());
        assert!(parse_type("").is_none());
    }

    #[test]
    fn kinds_map_to_lake_types() {
        let ty = |t: &str| col(t, None).column().ty;
        assert_eq!(ty("tinyint(1)"), ColumnType::Int16);
        assert_eq!(ty("tinyint unsigned"), ColumnType::Int16);
        assert_eq!(ty("smallint unsigned"), ColumnType::Int32);
        assert_eq!(ty("int unsigned"), ColumnType::Int64);
        assert_eq!(
            ty("bigint(20) unsigned"),
            ColumnType::Decimal {
                precision: 20,
                scale: 0
            }
        );
        assert_eq!(
            ty("decimal(12,2)"),
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(ty("decimal(65,30)"), ColumnType::Numeric);
        assert_eq!(ty("float(30)"), ColumnType::Float64);
        assert_eq!(ty("time(3)"), ColumnType::Duration);
        assert_eq!(ty("timestamp(6)"), ColumnType::TimestampTz);
        assert_eq!(ty("bit(1)"), ColumnType::Bool);
        assert_eq!(ty("bit(12)"), ColumnType::Bytes);
        assert_eq!(ty("point"), ColumnType::Bytes);
        assert_eq!(ty("inet6"), ColumnType::Other("inet6".into()));
        assert_eq!(col("varchar(10)", Some("binary")).kind(), Kind::Bytes);
        assert!(matches!(
            col("varchar(10)", Some("latin1")).kind(),
            Kind::Text(Charset::Legacy(_))
        ));
        assert!(matches!(
            col("text", Some("armscii8")).kind(),
            Kind::Other(_)
        ));
    }
}
