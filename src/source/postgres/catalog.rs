//! What the Postgres catalog tells us: which tables match the configured names, their columns
//! and keys, and the publication and slot sluice uses.

use tokio_postgres::{Client, GenericClient};

use super::error::PgError;
use crate::event::{Column, ColumnType, SourceInfo, TableId, TableSchema};

/// Session settings that make every text value unambiguous (see `text.rs`).
pub const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3 -c IntervalStyle=iso_8601";

/// A captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTable {
    pub relid: u32,
    pub schema: String,
    pub name: String,
    /// `d` default (primary key), `f` full, `i` index, `n` nothing.
    pub replica_identity: char,
    pub has_primary_key: bool,
}

impl PgTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    /// Updates and deletes can be told apart by key only with a key to identify the row.
    pub fn identifiable(&self) -> bool {
        match self.replica_identity {
            'f' | 'i' => true,
            'd' => self.has_primary_key,
            _ => false,
        }
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Tables matching `patterns` (`schema.table`, globs allowed). A pattern without glob characters
/// that matches nothing is reported, as it is almost always a typo.
pub async fn resolve_tables(
    client: &Client,
    patterns: &[String],
) -> Result<(Vec<PgTable>, Vec<String>), PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%'
             ORDER BY n.nspname, c.relname",
            &[],
        )
        .await
        .map_err(PgError::query("listing tables"))?;
    let all: Vec<PgTable> = rows
        .iter()
        .map(|r| PgTable {
            relid: r.get::<_, u32>(0),
            schema: r.get(1),
            name: r.get(2),
            replica_identity: r.get::<_, String>(3).chars().next().unwrap_or('d'),
            has_primary_key: r.get(4),
        })
        .collect();
    let mut matched = Vec::new();
    let mut missing = Vec::new();
    for pattern in patterns {
        let glob = glob::Pattern::new(pattern)
            .map_err(|e| PgError::Setup(format!("table pattern `{pattern}`: {e}")))?;
        let before = matched.len();
        for t in &all {
            if glob.matches(&t.display()) && !matched.contains(t) {
                matched.push(t.clone());
            }
        }
        if matched.len() == before && !pattern.contains(['*', '?', '[']) {
            missing.push(pattern.clone());
        }
    }
    Ok((matched, missing))
}

/// The table's current columns, with keys and nullability, as a schema.
pub async fn table_schema<C: GenericClient>(
    client: &C,
    source: &str,
    db: &str,
    table: &PgTable,
    version: u32,
) -> Result<(TableSchema, Vec<u32>), PgError> {
    let rows = client
        .query(
            "SELECT a.attname,
                    CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                    a.attnotnull,
                    format_type(a.atttypid, a.atttypmod),
                    COALESCE(a.attnum = ANY (i.indkey), false),
                    a.atttypid
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table.relid],
        )
        .await
        .map_err(PgError::query("reading table columns"))?;
    let mut oids = Vec::with_capacity(rows.len());
    let columns = rows
        .iter()
        .map(|r| {
            let source_type: String = r.get(4);
            oids.push(r.get::<_, u32>(6));
            Column {
                name: r.get(0),
                ty: map_type(r.get(1), r.get(2), &source_type),
                nullable: !r.get::<_, bool>(3),
                key: r.get(5),
                source_type,
            }
        })
        .collect();
    let id = TableId {
        source: source.to_string(),
        namespace: table.schema.clone(),
        table: table.name.clone(),
    };
    let info = SourceInfo {
        connector: "postgresql",
        db: db.to_string(),
    };
    Ok((TableSchema::new(id, columns, version, info), oids))
}

/// Postgres type → sluice column type. `typmod` gives numeric precision and scale.
pub fn map_type(oid: u32, typmod: i32, type_name: &str) -> ColumnType {
    match oid {
        16 => ColumnType::Bool,
        17 => ColumnType::Bytes,
        20 => ColumnType::Int64,
        21 => ColumnType::Int16,
        23 => ColumnType::Int32,
        26 => ColumnType::Int64,
        18 | 19 | 25 | 1042 | 1043 => ColumnType::Text,
        114 | 3802 => ColumnType::Json,
        700 => ColumnType::Float32,
        701 => ColumnType::Float64,
        1082 => ColumnType::Date,
        1083 => ColumnType::Time,
        1114 => ColumnType::Timestamp,
        1184 => ColumnType::TimestampTz,
        2950 => ColumnType::Uuid,
        1700 => match numeric_precision_scale(typmod) {
            Some((p, s)) if p <= 38 => ColumnType::Decimal {
                precision: p as u8,
                scale: s as i8,
            },
            // Unconstrained or wider than 38 digits: exact text, never a rounded float.
            _ => ColumnType::Other(type_name.to_string()),
        },
        _ => ColumnType::Other(type_name.to_string()),
    }
}

fn numeric_precision_scale(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    Some(((t >> 16) & 0xffff, t & 0xffff))
}

/// Make sure the publication exists and publishes exactly what we capture (adding missing
/// tables; never dropping tables a user added by hand).
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[PgTable],
) -> Result<(), PgError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(PgError::query("looking up the publication"))?
        .is_some();
    let list = tables
        .iter()
        .map(PgTable::qualified)
        .collect::<Vec<_>>()
        .join(", ");
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {list}",
                quote_ident(name)
            ))
            .await
            .map_err(PgError::query("creating the publication"))?;
        return Ok(());
    }
    let published = client
        .query(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(PgError::query("listing the publication's tables"))?;
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| {
            !published
                .iter()
                .any(|r| r.get::<_, String>(0) == t.schema && r.get::<_, String>(1) == t.name)
        })
        .map(PgTable::qualified)
        .collect();
    if !missing.is_empty() {
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(name),
                missing.join(", ")
            ))
            .await
            .map_err(PgError::query("adding tables to the publication"))?;
    }
    Ok(())
}

/// The slot's state: `None` if it does not exist.
pub async fn slot_confirmed_lsn(
    client: &Client,
    slot: &str,
) -> Result<Option<Option<u64>>, PgError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, plugin FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(PgError::query("looking up the replication slot"))?;
    Ok(row.map(|r| r.get::<_, Option<String>>(0).and_then(|s| parse_lsn(&s))))
}

pub async fn drop_slot(client: &Client, slot: &str) -> Result<(), PgError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(PgError::query("dropping an unfinished snapshot's slot"))?;
    Ok(())
}

/// `X/Y` → u64.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// `SET TRANSACTION SNAPSHOT` needs the name as a literal.
pub fn set_snapshot_sql(snapshot: &str) -> String {
    format!("SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot))
}

pub fn copy_sql(table: &PgTable, schema: &TableSchema) -> String {
    let cols = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!("COPY (SELECT {cols} FROM {}) TO STDOUT", table.qualified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmods() {
        // numeric(12,2) has typmod ((12 << 16) | 2) + 4
        assert_eq!(
            map_type(1700, ((12 << 16) | 2) + 4, "numeric(12,2)"),
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(
            map_type(1700, -1, "numeric"),
            ColumnType::Other("numeric".into())
        );
        assert_eq!(
            map_type(1700, ((60 << 16) | 2) + 4, "numeric(60,2)"),
            ColumnType::Other("numeric(60,2)".into())
        );
    }

    #[test]
    fn lsns_and_quoting() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("junk"), None);
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            set_snapshot_sql("00000003-1"),
            "SET TRANSACTION SNAPSHOT '00000003-1'"
        );
    }
}
