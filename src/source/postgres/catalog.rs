//! What the Postgres catalog tells us: which tables match the configured names, their columns
//! and keys, and the publication and slot sluice uses.

use tokio_postgres::{Client, GenericClient};

use super::error::PgError;
use crate::event::{Column, ColumnType, SourceInfo, TableId, TableSchema};

/// Session settings that make every text value unambiguous (see `text.rs`).
pub(crate) const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3 -c IntervalStyle=iso_8601";

/// A captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgTable {
    pub(crate) relid: u32,
    pub(crate) schema: String,
    pub(crate) name: String,
    /// `d` default (primary key), `f` full, `i` index, `n` nothing.
    pub(crate) replica_identity: char,
    pub(crate) has_primary_key: bool,
}

impl PgTable {
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
    pub(crate) fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    /// Updates and deletes can be told apart by key only with a key to identify the row.
    pub(crate) fn identifiable(&self) -> bool {
        match self.replica_identity {
            'f' | 'i' => true,
            'd' => self.has_primary_key,
            _ => false,
        }
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Tables matching `patterns` (`schema.table`, globs allowed). A pattern without glob characters
/// that matches nothing is reported, as it is almost always a typo.
pub(crate) async fn resolve_tables(
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
pub(crate) async fn table_schema<C: GenericClient>(
    client: &C,
    source: &str,
    db: &str,
    table: &PgTable,
    version: u32,
) -> Result<(TableSchema, Vec<u32>), PgError> {
    let rows = client
        .query(
            "SELECT a.attname,
                    bt.oid,
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                    a.attnotnull,
                    format_type(a.atttypid, a.atttypmod),
                    COALESCE(a.attnum = ANY (i.indkey), false),
                    a.atttypid,
                    bt.typtype::text,
                    bt.typcategory::text,
                    bt.typelem,
                    COALESCE(et.typtype::text, ''),
                    COALESCE(format_type(bt.typelem, NULL), '')
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             LEFT JOIN pg_type et ON et.oid = bt.typelem
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table.relid],
        )
        .await
        .map_err(PgError::query("reading table columns"))?;
    let mut oids = Vec::with_capacity(rows.len());
    let columns: Vec<Column> = rows
        .iter()
        .map(|r| {
            let source_type: String = r.get(4);
            oids.push(r.get::<_, u32>(6));
            let info = PgTypeInfo {
                oid: r.get(1),
                typmod: r.get(2),
                name: source_type.clone(),
                typtype: first_char(r.get(7)),
                category: first_char(r.get(8)),
                elem_oid: r.get(9),
                elem_typtype: first_char(r.get(10)),
                elem_name: r.get(11),
            };
            Column {
                name: r.get(0),
                ty: info.column_type(),
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
    for c in columns
        .iter()
        .filter(|c| matches!(c.ty, ColumnType::Other(_)))
    {
        tracing::warn!(table = %id.stream(), column = %c.name, r#type = %c.source_type, "type not mapped: carried as its text form");
        metrics::gauge!(crate::metrics::SOURCE_UNMAPPED_TYPES, "table" => id.stream(), "type" => c.source_type.clone()).set(1.0);
    }
    let info = SourceInfo {
        connector: "postgresql",
        db: db.to_string(),
        documents: false,
    };
    Ok((TableSchema::new(id, columns, version, info), oids))
}

fn first_char(s: String) -> char {
    s.chars().next().unwrap_or(' ')
}

/// What the catalog says about a column's type (domains already resolved to their base type).
#[derive(Debug, Clone)]
pub(crate) struct PgTypeInfo {
    pub(crate) oid: u32,
    pub(crate) typmod: i32,
    pub(crate) name: String,
    /// `b` base, `e` enum, `c` composite, `r` range, …
    pub(crate) typtype: char,
    /// `A` for arrays.
    pub(crate) category: char,
    pub(crate) elem_oid: u32,
    pub(crate) elem_typtype: char,
    pub(crate) elem_name: String,
}

impl PgTypeInfo {
    pub(crate) fn column_type(&self) -> ColumnType {
        if self.category == 'A' && self.elem_oid != 0 {
            let elem = if self.elem_typtype == 'e' {
                ColumnType::Text
            } else {
                map_type(self.elem_oid, self.typmod, &self.elem_name)
            };
            return ColumnType::List(Box::new(elem));
        }
        if self.typtype == 'e' {
            return ColumnType::Text;
        }
        map_type(self.oid, self.typmod, &self.name)
    }
}

/// Postgres scalar type → sluice column type. `typmod` gives numeric precision and scale.
pub(crate) fn map_type(oid: u32, typmod: i32, type_name: &str) -> ColumnType {
    match oid {
        16 => ColumnType::Bool,
        17 => ColumnType::Bytes,
        20 => ColumnType::Int64,
        21 => ColumnType::Int16,
        23 => ColumnType::Int32,
        26 => ColumnType::Int64,
        // char, name, text, bpchar, varchar; and types whose text form is their natural value:
        // xml, cidr, macaddr8, macaddr, money, inet, bit, varbit.
        18 | 19 | 25 | 1042 | 1043 | 142 | 650 | 774 | 829 | 790 | 869 | 1560 | 1562 => {
            ColumnType::Text
        }
        114 | 3802 => ColumnType::Json,
        700 => ColumnType::Float32,
        701 => ColumnType::Float64,
        1082 => ColumnType::Date,
        1083 => ColumnType::Time,
        1266 => ColumnType::TimeTz,
        1186 => ColumnType::Interval,
        1114 => ColumnType::Timestamp,
        1184 => ColumnType::TimestampTz,
        2950 => ColumnType::Uuid,
        1700 => match numeric_precision_scale(typmod) {
            Some((p, s)) if p <= 38 => ColumnType::Decimal {
                precision: p as u8,
                scale: s as i8,
            },
            // Unconstrained or wider than 38 digits: exact text, never a rounded float.
            _ => ColumnType::Numeric,
        },
        _ if type_name == "citext" => ColumnType::Text,
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
pub(crate) async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[PgTable],
    patterns: &[String],
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
        let what = match publication_scope(patterns) {
            // Globs: publish whole schemas, so tables created later stream from their first row.
            // Postgres lets only superusers do this; others get the tables that exist now.
            Some(scope) if is_superuser(client).await? => scope,
            _ => format!("TABLE {list}"),
        };
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR {what}",
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

/// For table globs, the publication scope that also covers tables created later:
/// `TABLES IN SCHEMA a, b` (plus the literal tables elsewhere), or `ALL TABLES` when a schema
/// part is itself a glob. `None` when every pattern is a literal name.
pub(crate) fn publication_scope(patterns: &[String]) -> Option<String> {
    let is_glob = |s: &str| s.contains(['*', '?', '[']);
    let split: Vec<(&str, &str)> = patterns.iter().filter_map(|p| p.split_once('.')).collect();
    if !split.iter().any(|(_, t)| is_glob(t)) && !split.iter().any(|(s, _)| is_glob(s)) {
        return None;
    }
    if split.iter().any(|(s, _)| is_glob(s)) {
        return Some("ALL TABLES".into());
    }
    let mut schemas: Vec<&str> = split
        .iter()
        .filter(|(_, t)| is_glob(t))
        .map(|(s, _)| *s)
        .collect();
    schemas.sort();
    schemas.dedup();
    let literals: Vec<String> = split
        .iter()
        .filter(|(s, t)| !is_glob(t) && !schemas.contains(s))
        .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
        .collect();
    let mut scope = format!(
        "TABLES IN SCHEMA {}",
        schemas
            .iter()
            .map(|s| quote_ident(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !literals.is_empty() {
        scope.push_str(&format!(", TABLE {}", literals.join(", ")));
    }
    Some(scope)
}

pub(crate) async fn is_superuser(client: &Client) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(PgError::query("reading the user's attributes"))?;
    Ok(row.get(0))
}

/// Whether the publication covers tables created later (schema-wide or all tables).
pub(crate) async fn publication_covers_new_tables(
    client: &Client,
    name: &str,
) -> Result<Option<bool>, PgError> {
    let row = client
        .query_opt(
            "SELECT p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_namespace pn WHERE pn.pnpubid = p.oid)
             FROM pg_publication p WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .map_err(PgError::query("reading the publication"))?;
    Ok(row.map(|r| r.get(0)))
}

/// The slot's state: `None` if it does not exist.
pub(crate) async fn slot_confirmed_lsn(
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

/// Drops an uncommitted start's slot. One that is already gone is fine: a killed start's
/// walsender abandons a slot it had not finished creating.
pub(crate) async fn drop_slot(client: &Client, slot: &str) -> Result<(), PgError> {
    match client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
    {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => Ok(()),
        done => done
            .map(drop)
            .map_err(PgError::query("dropping an unfinished snapshot's slot")),
    }
}

/// `X/Y` → u64.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// `SET TRANSACTION SNAPSHOT` needs the name as a literal.
pub(crate) fn set_snapshot_sql(snapshot: &str) -> String {
    format!("SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot))
}

/// `COPY (SELECT <columns> FROM <table> <suffix>) TO STDOUT`; `suffix` adds WHERE/ORDER/LIMIT.
pub(crate) fn copy_query_sql(table: &PgTable, schema: &TableSchema, suffix: &str) -> String {
    let cols = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "COPY (SELECT {cols} FROM {} {suffix}) TO STDOUT",
        table.qualified()
    )
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
        assert_eq!(map_type(1700, -1, "numeric"), ColumnType::Numeric);
        assert_eq!(
            map_type(1700, ((60 << 16) | 2) + 4, "numeric(60,2)"),
            ColumnType::Numeric
        );
    }

    #[test]
    fn publication_scopes() {
        let p =
            |v: &[&str]| publication_scope(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["public.a", "public.b"]), None);
        assert_eq!(
            p(&["public.orders_*"]).as_deref(),
            Some("TABLES IN SCHEMA \"public\"")
        );
        assert_eq!(
            p(&["public.*", "sales.x", "public.y"]).as_deref(),
            Some("TABLES IN SCHEMA \"public\", TABLE \"sales\".\"x\"")
        );
        assert_eq!(p(&["*.orders"]).as_deref(), Some("ALL TABLES"));
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
