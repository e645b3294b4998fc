//! The envelope and key as `serde::Serialize` views of an event, so they can be written
//! straight to JSON text: building a `serde_json::Value` first (an ordered map per row, a string
//! per key) was most of a Kafka record's cost. [`super::envelope_json`] and [`super::key_json`]
//! are these views turned into values, so both forms come from this one description.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{
    CONNECTOR_VERSION, decimal_bytes, non_finite_name, variable_scale_decimal, zoned_timestamp,
};
use crate::event::{ChangeEvent, ChangeOrigin, ColumnType, Row, TableSchema, Value};

/// `{before, after, source, transaction, op, ts_ms, ts_us, ts_ns}` of one event.
pub(crate) struct Envelope<'a> {
    pub(crate) event: &'a ChangeEvent,
    pub(crate) processed_at_us: i64,
}

/// The message key: the primary-key columns (a document's `{"id": …}`).
pub(crate) struct Key<'a>(pub &'a ChangeEvent);

struct Image<'a> {
    schema: &'a TableSchema,
    row: &'a Row,
}

/// One value in Debezium's encoding for its column type.
pub(crate) struct Typed<'a>(pub &'a ColumnType, pub &'a Value);

struct Source<'a>(&'a ChangeEvent);

impl<'e> Serialize for Envelope<'e> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event: &'e ChangeEvent = self.event;
        let schema = &*event.table;
        let documents = schema.source_info.documents;
        let mut map = s.serialize_map(Some(if documents { 9 } else { 8 }))?;
        if documents {
            // Debezium's MongoDB envelope: the documents' extended JSON text (`_doc`).
            let doc = schema.columns.iter().rposition(|c| c.name == "_doc");
            let text = |r: &'e Option<Row>| match (r, doc) {
                (Some(r), Some(i)) => match r.get(i) {
                    Some(Value::Text(t)) => Some(t.as_str()),
                    _ => None,
                },
                _ => None,
            };
            map.serialize_entry("before", &text(&event.before))?;
            map.serialize_entry("after", &text(&event.after))?;
            map.serialize_entry("updateDescription", &())?;
        } else {
            let image = |r: &'e Option<Row>| r.as_ref().map(|row| Image { schema, row });
            map.serialize_entry("before", &image(&event.before))?;
            map.serialize_entry("after", &image(&event.after))?;
        }
        map.serialize_entry("source", &Source(event))?;
        map.serialize_entry("transaction", &())?;
        map.serialize_entry("op", event.op.code())?;
        map.serialize_entry("ts_ms", &self.processed_at_us.div_euclid(1000))?;
        map.serialize_entry("ts_us", &self.processed_at_us)?;
        map.serialize_entry("ts_ns", &(self.processed_at_us as i128 * 1000))?;
        map.end()
    }
}

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let schema = &*event.table;
        if let (true, ChangeOrigin::Mongo { id, .. }) = (schema.source_info.documents, &event.pos) {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry("id", id.as_ref())?;
            return map.end();
        }
        let row = event.row_image();
        let mut map = s.serialize_map(None)?;
        for (i, col) in schema.key_columns() {
            match row {
                Some(r) => map.serialize_entry(&col.name, &Typed(&col.ty, &r[i]))?,
                None => map.serialize_entry(&col.name, &())?,
            }
        }
        map.end()
    }
}

impl Serialize for Image<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.schema.columns.len()))?;
        for (col, v) in self.schema.columns.iter().zip(self.row) {
            map.serialize_entry(&col.name, &Typed(&col.ty, v))?;
        }
        map.end()
    }
}

impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            (_, Value::Null) => s.serialize_unit(),
            (_, Value::Bool(b)) => s.serialize_bool(*b),
            (_, Value::Int(i)) => s.serialize_i64(*i),
            (_, Value::Float(f)) if f.is_finite() => s.serialize_f64(*f),
            (_, Value::Float(f)) => s.serialize_str(non_finite_name(*f)),
            (_, Value::Decimal(u)) => s.serialize_str(&BASE64.encode(decimal_bytes(*u))),
            (ColumnType::Numeric, Value::Text(t)) => variable_scale_decimal(t).serialize(s),
            (_, Value::Text(t)) => s.serialize_str(t),
            (ty, Value::List(items)) => {
                let elem = match ty {
                    ColumnType::List(elem) => elem,
                    _ => &ColumnType::Text,
                };
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Typed(elem, v))?;
                }
                seq.end()
            }
            (_, Value::Bytes(b)) => s.serialize_str(&BASE64.encode(b)),
            (ColumnType::TimestampTz, Value::Temporal(us)) => {
                s.serialize_str(&zoned_timestamp(*us))
            }
            (_, Value::Temporal(t)) => s.serialize_i64(*t),
        }
    }
}

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let schema = &*event.table;
        let ts_us = event.commit_ts_us;
        let ts_ns = ts_us as i128 * 1000;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("version", CONNECTOR_VERSION)?;
        map.serialize_entry("connector", schema.source_info.connector)?;
        map.serialize_entry("name", &schema.id.source)?;
        map.serialize_entry("ts_ms", &ts_us.div_euclid(1000))?;
        map.serialize_entry("snapshot", if event.snapshot { "true" } else { "false" })?;
        map.serialize_entry("db", &schema.source_info.db)?;
        match &event.pos {
            ChangeOrigin::PgLsn { lsn, commit_lsn } => {
                // Debezium: ["<last commit lsn>", "<lsn>"] as a JSON string.
                map.serialize_entry("sequence", &format!("[\"{commit_lsn}\",\"{lsn}\"]"))?;
                map.serialize_entry("ts_us", &ts_us)?;
                map.serialize_entry("ts_ns", &ts_ns)?;
                map.serialize_entry("schema", &schema.id.namespace)?;
                map.serialize_entry("table", &schema.id.table)?;
                map.serialize_entry("txId", &event.tx_id)?;
                map.serialize_entry("lsn", lsn)?;
                map.serialize_entry("xmin", &())?;
                map.serialize_entry("origin", &())?;
                map.serialize_entry("origin_lsn", &())?;
            }
            ChangeOrigin::Binlog {
                file,
                pos,
                row,
                server_id,
                gtid,
            } => {
                map.serialize_entry("sequence", &())?;
                map.serialize_entry("ts_us", &ts_us)?;
                map.serialize_entry("ts_ns", &ts_ns)?;
                map.serialize_entry("table", &schema.id.table)?;
                map.serialize_entry("server_id", server_id)?;
                map.serialize_entry("gtid", &gtid.as_deref())?;
                map.serialize_entry("file", file.as_ref())?;
                map.serialize_entry("pos", pos)?;
                map.serialize_entry("row", row)?;
                map.serialize_entry("thread", &())?;
                map.serialize_entry("query", &())?;
            }
            ChangeOrigin::Mongo {
                time, txn_number, ..
            } => {
                map.serialize_entry("sequence", &())?;
                map.serialize_entry("ts_us", &ts_us)?;
                map.serialize_entry("ts_ns", &ts_ns)?;
                map.serialize_entry("collection", &schema.id.table)?;
                // Debezium's `ord`: the cluster time's increment.
                map.serialize_entry("ord", &(time & 0xffff_ffff))?;
                map.serialize_entry("lsid", &())?;
                map.serialize_entry("txnNumber", txn_number)?;
                map.serialize_entry("wallTime", &ts_us.div_euclid(1000))?;
            }
        }
        map.end()
    }
}
