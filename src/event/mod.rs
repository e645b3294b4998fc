//! The change-event model every stage speaks: typed values with the table schema attached.
//!
//! A [`ChangeEvent`] is one row change (or snapshot row, or truncate) of one table. Values are
//! stored in a compact [`Value`] whose meaning is fixed by the column's [`ColumnType`] (an `Int`
//! in an `Int16` column is a smallint, a `Decimal` carries the unscaled integer of the column's
//! scale), so an event costs one small allocation per text value and nothing else.

pub(crate) mod dead_letter;
pub mod debezium;
pub(crate) mod seq;

use std::sync::Arc;

pub use seq::Seq;

/// The logical type of a column, independent of the source database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ColumnType {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// Exact decimal with at most 38 digits.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// Exact decimal of any precision and scale (Postgres `numeric` without a typmod, or wider
    /// than 38 digits), carried as its decimal text; `NaN` and `±Infinity` as those words.
    Numeric,
    Text,
    /// JSON document, carried as its text.
    Json,
    Uuid,
    Bytes,
    /// Days since 1970-01-01.
    Date,
    /// Microseconds since midnight.
    Time,
    /// A signed span of time in microseconds (MySQL `TIME`, which runs from -838:59:59 to
    /// 838:59:59, so it is not a time of day).
    Duration,
    /// Time of day with a zone, normalised to UTC, as text `HH:MM:SS[.ffffff]Z`.
    TimeTz,
    /// A duration, as ISO-8601 text (`P1Y2M3DT4H5M6S`): months, days and time stay separate, so
    /// nothing is approximated.
    Interval,
    /// A one-dimensional array of the element type.
    List(Box<ColumnType>),
    /// Microseconds since the epoch, no time zone.
    Timestamp,
    /// Microseconds since the epoch, UTC.
    TimestampTz,
    /// A type sluice does not map yet, carried as the database's text form; the string is the
    /// database's type name.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// Part of the primary key (or replica identity).
    pub key: bool,
    /// The source database's name for the type, e.g. `numeric(12,2)`.
    pub source_type: String,
}

/// Where a table lives and what its raw stream is called.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub source: String,
    /// Postgres schema, MySQL/Mongo database.
    pub namespace: String,
    pub table: String,
}

impl TableId {
    /// `<source>.<schema-or-db>.<table>`: the raw stream (and Kafka topic) name.
    pub(crate) fn stream(&self) -> String {
        format!("{}.{}.{}", self.source, self.namespace, self.table)
    }
}

/// The schema of a table at one point in its history. A change of columns makes a new
/// `TableSchema` with a higher `version`; events point at the schema they were decoded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub(crate) id: TableId,
    pub(crate) stream: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) version: u32,
    pub(crate) source_info: SourceInfo,
}

impl TableSchema {
    pub fn new(id: TableId, columns: Vec<Column>, version: u32, source_info: SourceInfo) -> Self {
        let stream = id.stream();
        Self {
            id,
            stream,
            columns,
            version,
            source_info,
        }
    }

    pub(crate) fn key_columns(&self) -> impl Iterator<Item = (usize, &Column)> {
        self.columns.iter().enumerate().filter(|(_, c)| c.key)
    }

    /// Same columns (names, types, nullability, keys), ignoring the version.
    pub(crate) fn same_shape(&self, other: &TableSchema) -> bool {
        self.columns == other.columns
    }
}

/// What the Debezium `source` block needs that is fixed per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// `postgresql`, `mysql`, `mongodb`: Debezium's connector names.
    pub connector: &'static str,
    /// The database name (Postgres: the database connected to).
    pub db: String,
    /// Rows carry a whole document in their `_doc` column (a MongoDB collection's raw stream):
    /// the envelope's `before`/`after` are that document's extended JSON, as Debezium's MongoDB
    /// connector writes them.
    pub documents: bool,
}

/// One value of one column. Interpretation depends on the column type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Int16, Int32, Int64.
    Int(i64),
    /// Float32, Float64.
    Float(f64),
    /// Unscaled value of a Decimal column (value = unscaled / 10^scale).
    Decimal(i128),
    /// Text, Json, Uuid, Other.
    Text(String),
    Bytes(Vec<u8>),
    /// Date: days; Time: micros of day; Duration: micros; Timestamp(Tz): micros since the epoch.
    Temporal(i64),
    /// Elements of a List column.
    List(Vec<Value>),
}

/// `infinity` / `-infinity` dates and timestamps: the largest and smallest values, as DuckDB
/// represents them.
pub(crate) const DATE_INFINITY: i64 = i32::MAX as i64;
pub(crate) const DATE_NEG_INFINITY: i64 = -(i32::MAX as i64);
pub(crate) const TIMESTAMP_INFINITY: i64 = i64::MAX;
pub(crate) const TIMESTAMP_NEG_INFINITY: i64 = -i64::MAX;

pub(crate) type Row = Vec<Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A row read by a snapshot (Debezium `r`).
    Read,
    Create,
    Update,
    Delete,
    Truncate,
}

impl Op {
    /// Debezium's one-letter code.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// Where in the source's log an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// Postgres: the change's LSN and its transaction's commit LSN.
    PgLsn { lsn: u64, commit_lsn: u64 },
    /// MySQL/MariaDB: the binlog file and the offset where the change's transaction starts,
    /// the row's index in its rows event, the originating server and the transaction's GTID
    /// (Debezium's `file`, `pos`, `row`, `server_id`, `gtid`).
    Binlog {
        file: Arc<str>,
        pos: u64,
        row: u32,
        server_id: u32,
        gtid: Option<Arc<str>>,
    },
    /// MongoDB: the change's cluster time (seconds << 32 | increment), its transaction number,
    /// and the document's `_id` as relaxed extended JSON (Debezium's key `{"id": …}`).
    Mongo {
        time: u64,
        txn_number: Option<i64>,
        id: Arc<str>,
    },
}

impl ChangeOrigin {
    /// Human form for the lake's `_source_pos` column.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    /// `render` into a buffer the caller reuses (the sink writes one per row).
    pub(crate) fn render_into(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            ChangeOrigin::PgLsn { lsn, .. } => {
                write!(out, "{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
            }
            ChangeOrigin::Binlog { file, pos, .. } => write!(out, "{file}:{pos}"),
            ChangeOrigin::Mongo { time, .. } => {
                write!(out, "{}:{}", time >> 32, time & 0xffff_ffff)
            }
        };
    }
}

/// Postgres's `X/Y` notation.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// One change of one row.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub table: Arc<TableSchema>,
    pub op: Op,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// The before image holds only the key (other columns null): Postgres's REPLICA IDENTITY
    /// DEFAULT for deletes and key-changing updates.
    pub partial_before: bool,
    /// Increases in commit order per table; snapshot rows sort before the changes that follow.
    pub seq: Seq,
    /// Commit time (snapshot: when the snapshot was taken), microseconds since the epoch.
    pub commit_ts_us: i64,
    pub pos: ChangeOrigin,
    pub tx_id: Option<u64>,
    /// True for snapshot rows (and the last one carries Debezium's `last`).
    pub snapshot: bool,
}

impl Value {
    /// Bytes the value holds on the heap (text, bytes, list elements).
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Value::Text(s) => s.capacity(),
            Value::Bytes(b) => b.capacity(),
            Value::List(items) => {
                items.capacity() * std::mem::size_of::<Value>()
                    + items.iter().map(Value::heap_bytes).sum::<usize>()
            }
            _ => 0,
        }
    }
}

impl ChangeEvent {
    /// Roughly the memory the event holds: what batches and buffers are sized by, so memory in
    /// flight stays bounded however wide the rows are.
    pub(crate) fn approx_bytes(&self) -> usize {
        let row = |r: &Option<Row>| {
            r.as_ref().map_or(0, |r| {
                r.capacity() * std::mem::size_of::<Value>()
                    + r.iter().map(Value::heap_bytes).sum::<usize>()
            })
        };
        std::mem::size_of::<ChangeEvent>() + row(&self.before) + row(&self.after)
    }

    /// An update that changed the row's primary key.
    pub(crate) fn changes_key(&self) -> bool {
        let (Op::Update, Some(before), Some(after)) = (self.op, &self.before, &self.after) else {
            return false;
        };
        self.table
            .key_columns()
            .any(|(i, _)| before.get(i) != after.get(i))
    }

    /// A change log holds rows by key, so an update that changed the key is a delete of the old
    /// key and a create of the new one (as Debezium emits it). Both keep the update's sequence;
    /// the source gives them consecutive ones ([`crate::contract::batch::Batcher::push_change`]). Any
    /// other event stays as it is.
    pub(crate) fn split_key_change(self) -> (Option<ChangeEvent>, ChangeEvent) {
        if !self.changes_key() {
            return (None, self);
        }
        let delete = ChangeEvent {
            op: Op::Delete,
            after: None,
            ..self.clone()
        };
        let create = ChangeEvent {
            op: Op::Create,
            before: None,
            partial_before: false,
            ..self
        };
        (Some(delete), create)
    }

    /// The image that describes the row in a change log: after, or before for deletes.
    pub(crate) fn row_image(&self) -> Option<&Row> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

/// A Postgres table `source.namespace.table` of `(name, type, is key)` columns, for tests.
#[cfg(test)]
pub(crate) fn test_table(
    (source, namespace, table): (&str, &str, &str),
    columns: &[(&str, ColumnType, bool)],
) -> Arc<TableSchema> {
    Arc::new(TableSchema::new(
        TableId {
            source: source.into(),
            namespace: namespace.into(),
            table: table.into(),
        },
        columns
            .iter()
            .map(|(name, ty, key)| Column {
                name: (*name).into(),
                ty: ty.clone(),
                nullable: !key,
                key: *key,
                source_type: String::new(),
            })
            .collect(),
        1,
        SourceInfo {
            connector: "postgresql",
            db: source.into(),
            documents: false,
        },
    ))
}

/// Now, in microseconds since the epoch (the unit of every timestamp in the model).
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        let col = |name: &str, key: bool| Column {
            name: name.into(),
            ty: ColumnType::Int64,
            nullable: !key,
            key,
            source_type: String::new(),
        };
        let table = TableSchema::new(
            TableId {
                source: "s".into(),
                namespace: "d".into(),
                table: "t".into(),
            },
            vec![col("id", true), col("v", false)],
            1,
            SourceInfo {
                connector: "mysql",
                db: "d".into(),
                documents: false,
            },
        );
        ChangeEvent {
            table: Arc::new(table),
            op,
            before,
            after,
            partial_before: false,
            seq: Seq::new(7, 1),
            commit_ts_us: 0,
            pos: ChangeOrigin::PgLsn {
                lsn: 1,
                commit_lsn: 1,
            },
            tx_id: None,
            snapshot: false,
        }
    }

    #[test]
    fn a_key_change_is_a_delete_and_a_create() {
        let row = |id, v| Some(vec![Value::Int(id), Value::Int(v)]);
        let (delete, create) = event(Op::Update, row(1, 5), row(2, 5)).split_key_change();
        let delete = delete.expect("the old key is deleted");
        assert_eq!(
            (delete.op, delete.row_image()),
            (Op::Delete, row(1, 5).as_ref())
        );
        assert_eq!(
            (create.op, create.row_image()),
            (Op::Create, row(2, 5).as_ref())
        );
        assert_eq!((delete.seq, create.seq), (Seq::new(7, 1), Seq::new(7, 1)));
        let (none, update) = event(Op::Update, row(1, 5), row(1, 6)).split_key_change();
        assert!(none.is_none() && update.op == Op::Update);
        let (none, _) = event(Op::Update, None, row(1, 6)).split_key_change();
        assert!(none.is_none(), "without a before image nothing tells");
        assert!(event(Op::Create, None, row(1, 1)).approx_bytes() > 2 * 32);
    }
}
