//! DDL in the binlog's QUERY events, applied to the schema history.
//!
//! The binlog's rows events carry no column names, so sluice keeps every captured table's
//! definition itself (the history) and changes it as the binlog's DDL says, in binlog order:
//! a row is then decoded with the definition of its own time, even when catching up far behind
//! the database. Statements are parsed with `sqlparser` (MySQL dialect). What it cannot parse,
//! or an ALTER operation sluice does not model, is reported by the caller and the affected
//! tables are re-read from the catalog, never guessed.

use std::collections::BTreeMap;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, CreateTableLikeKind,
    MySQLColumnPosition, ObjectName, ObjectType, RenameTableNameKind, Statement, TableConstraint,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::schema::MyTableDef;
use super::types::{MyColumn, canonical_type};

/// What the start of a QUERY event says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Begin,
    Commit,
    Rollback,
    /// XA START/END/PREPARE/COMMIT/ROLLBACK, SAVEPOINT and similar: no table change.
    TransactionControl,
    /// CREATE/ALTER/DROP/RENAME/TRUNCATE TABLE or DROP DATABASE: may change captured tables.
    TableDdl,
    /// Anything else (GRANT, CREATE USER, a statement-logged DML, …).
    Other,
}

/// Classify a statement by its first keywords (comments and whitespace skipped).
pub fn classify(sql: &str) -> QueryKind {
    let words = first_words(sql, 4);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "BEGIN" => QueryKind::Begin,
        "START" if w(1) == "TRANSACTION" => QueryKind::Begin,
        "COMMIT" => QueryKind::Commit,
        "ROLLBACK" if w(1) == "TO" => QueryKind::TransactionControl,
        "ROLLBACK" => QueryKind::Rollback,
        "XA" | "SAVEPOINT" | "RELEASE" => QueryKind::TransactionControl,
        "ALTER" | "RENAME" | "TRUNCATE"
            if words.iter().any(|x| x == "TABLE") || w(0) == "TRUNCATE" =>
        {
            QueryKind::TableDdl
        }
        "CREATE" | "DROP" if words.iter().any(|x| x == "TABLE") => QueryKind::TableDdl,
        "DROP" if matches!(w(1), "DATABASE" | "SCHEMA") => QueryKind::TableDdl,
        _ => QueryKind::Other,
    }
}

/// The first `n` words, upper-cased, skipping comments.
fn first_words(sql: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut rest = sql;
    while out.len() < n {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
            continue;
        }
        if rest.starts_with("--") || rest.starts_with('#') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_ascii_uppercase());
        rest = &rest[end..];
    }
    out
}

/// What a DDL statement did to the tracked tables (names are `db.table`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DdlEffects {
    /// Tracked tables whose definition changed (the new one is in the history).
    pub(crate) changed: Vec<String>,
    /// Tables to read from the catalog: created from another table or a query, or altered in a
    /// way sluice does not model.
    pub(crate) reread: Vec<String>,
    /// Tables that lost their rows: truncated, dropped, replaced, or renamed away.
    pub(crate) emptied: Vec<String>,
    /// Captured names that now hold rows the stream never saw (a table renamed into them).
    pub(crate) unsnapshotted: Vec<String>,
}

/// Why a DDL statement could not be applied; the caller re-reads the tables it names (or all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsed {
    pub(crate) reason: String,
    /// Tables the statement names, as far as a tokenizer can tell.
    pub(crate) tables: Vec<String>,
}

/// The schema history's tracked tables, by `db.table`.
pub type Tables = BTreeMap<String, MyTableDef>;

/// Everything DDL application needs to know from outside.
pub struct DdlContext<'a> {
    /// The QUERY event's default database.
    pub default_db: &'a str,
    /// Whether sluice captures `db.table`.
    pub captured: &'a dyn Fn(&str) -> bool,
    /// A database's default charset (for tables created without one).
    pub db_charset: &'a dyn Fn(&str) -> String,
}

/// Apply one table DDL statement to `tables`.
pub fn apply(tables: &mut Tables, sql: &str, ctx: &DdlContext<'_>) -> Result<DdlEffects, Unparsed> {
    let statements = Parser::parse_sql(&MySqlDialect {}, sql).map_err(|e| Unparsed {
        reason: e.to_string(),
        tables: named_tables(sql, ctx.default_db),
    })?;
    let mut fx = DdlEffects::default();
    for statement in statements {
        apply_statement(tables, statement, ctx, &mut fx).map_err(|reason| Unparsed {
            reason,
            tables: named_tables(sql, ctx.default_db),
        })?;
    }
    Ok(fx)
}

fn apply_statement(
    tables: &mut Tables,
    statement: Statement,
    ctx: &DdlContext<'_>,
    fx: &mut DdlEffects,
) -> Result<(), String> {
    match statement {
        Statement::CreateTable(create) => {
            if create.temporary {
                return Ok(()); // temporary tables are not replicated as rows
            }
            let name = qualify(&create.name, ctx.default_db)?;
            if !(ctx.captured)(&name) {
                return Ok(());
            }
            if tables.contains_key(&name) {
                if create.if_not_exists {
                    return Ok(());
                }
                fx.emptied.push(name.clone()); // CREATE OR REPLACE
            }
            if let Some(like) = &create.like {
                let source = match like {
                    CreateTableLikeKind::Parenthesized(l) | CreateTableLikeKind::Plain(l) => {
                        qualify(&l.name, ctx.default_db)?
                    }
                };
                match tables.get(&source).cloned() {
                    Some(def) => {
                        tables.insert(name.clone(), def);
                        fx.changed.push(name);
                    }
                    None => fx.reread.push(name),
                }
                return Ok(());
            }
            if create.query.is_some() || create.columns.is_empty() {
                fx.reread.push(name);
                return Ok(());
            }
            let db = name.split_once('.').map_or(ctx.default_db, |(d, _)| d);
            let charset = table_charset(&create.table_options.to_string())
                .unwrap_or_else(|| (ctx.db_charset)(db));
            let mut columns: Vec<MyColumn> = create
                .columns
                .iter()
                .map(|c| column_from_def(c, &charset))
                .collect();
            for constraint in &create.constraints {
                if let TableConstraint::PrimaryKey(pk) = constraint {
                    set_primary_key(&mut columns, &pk_columns(pk));
                }
            }
            tables.insert(name.clone(), MyTableDef { columns, charset });
            fx.changed.push(name);
        }
        Statement::AlterTable(alter) => {
            let name = qualify(&alter.name, ctx.default_db)?;
            let Some(before) = tables.get(&name).cloned() else {
                return Ok(()); // not tracked: nothing to change
            };
            let mut def = before.clone();
            let mut renamed_to = None;
            for op in alter.operations {
                match alter_op(&mut def, op, ctx.default_db)? {
                    AlterResult::Done => {}
                    AlterResult::Renamed(to) => renamed_to = Some(to),
                    AlterResult::Unmodelled => {
                        fx.reread.push(name.clone());
                        return Ok(());
                    }
                }
            }
            match renamed_to {
                Some(to) => rename(tables, &name, &to, def, ctx, fx),
                None if def != before => {
                    tables.insert(name.clone(), def);
                    fx.changed.push(name);
                }
                None => {}
            }
        }
        Statement::Drop {
            object_type,
            names,
            temporary,
            ..
        } => match object_type {
            ObjectType::Table if !temporary => {
                for n in &names {
                    let name = qualify(n, ctx.default_db)?;
                    if tables.remove(&name).is_some() {
                        fx.emptied.push(name);
                    }
                }
            }
            ObjectType::Database | ObjectType::Schema => {
                for n in &names {
                    let db = object_parts(n)?.join(".");
                    let gone: Vec<String> = tables
                        .keys()
                        .filter(|k| k.split_once('.').is_some_and(|(d, _)| d == db))
                        .cloned()
                        .collect();
                    for name in gone {
                        tables.remove(&name);
                        fx.emptied.push(name);
                    }
                }
            }
            _ => {}
        },
        Statement::RenameTable(renames) => {
            for r in renames {
                let from = qualify(&r.old_name, ctx.default_db)?;
                let to = qualify(&r.new_name, ctx.default_db)?;
                match tables.get(&from).cloned() {
                    Some(def) => rename(tables, &from, &to, def, ctx, fx),
                    None if (ctx.captured)(&to) => {
                        fx.reread.push(to.clone());
                        fx.unsnapshotted.push(to);
                    }
                    None => {}
                }
            }
        }
        Statement::Truncate(t) => {
            for target in &t.table_names {
                let name = qualify(&target.name, ctx.default_db)?;
                if tables.contains_key(&name) {
                    fx.emptied.push(name);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A tracked table renamed: the old stream empties; the new name is tracked if captured, and
/// its stream has never seen the rows it now holds.
fn rename(
    tables: &mut Tables,
    from: &str,
    to: &str,
    def: MyTableDef,
    ctx: &DdlContext<'_>,
    fx: &mut DdlEffects,
) {
    tables.remove(from);
    fx.emptied.push(from.to_string());
    if (ctx.captured)(to) {
        tables.insert(to.to_string(), def);
        fx.changed.push(to.to_string());
        fx.unsnapshotted.push(to.to_string());
    }
}

enum AlterResult {
    Done,
    Renamed(String),
    Unmodelled,
}

fn alter_op(
    def: &mut MyTableDef,
    op: AlterTableOperation,
    default_db: &str,
) -> Result<AlterResult, String> {
    use AlterTableOperation as A;
    let charset = def.charset.clone();
    match op {
        A::AddColumn {
            column_def,
            column_position,
            if_not_exists,
            ..
        } => {
            let column = column_from_def(&column_def, &charset);
            match find(&def.columns, &column.name) {
                Some(_) if if_not_exists => {}
                // The column exists already (the catalog was read after this DDL): replace.
                Some(i) => def.columns[i] = column,
                None => {
                    let at = position(&def.columns, column_position.as_ref(), def.columns.len())?;
                    def.columns.insert(at, column);
                }
            }
        }
        A::DropColumn {
            column_names,
            if_exists,
            ..
        } => {
            for name in column_names {
                match find(&def.columns, &name.value) {
                    Some(i) => {
                        def.columns.remove(i);
                    }
                    None if if_exists => {}
                    None => {} // already gone (catalog read after this DDL)
                }
            }
        }
        A::RenameColumn {
            old_column_name,
            new_column_name,
        } => {
            if let Some(i) = find(&def.columns, &old_column_name.value) {
                def.columns[i].name = new_column_name.value;
            }
        }
        A::ChangeColumn {
            old_name,
            new_name,
            data_type,
            options,
            column_position,
        } => {
            let col = ColumnDef {
                name: new_name,
                data_type,
                options: options
                    .into_iter()
                    .map(|option| sqlparser::ast::ColumnOptionDef { name: None, option })
                    .collect(),
            };
            replace_column(
                def,
                &old_name.value,
                col,
                column_position.as_ref(),
                &charset,
            )?;
        }
        A::ModifyColumn {
            col_name,
            data_type,
            options,
            column_position,
        } => {
            let col = ColumnDef {
                name: col_name.clone(),
                data_type,
                options: options
                    .into_iter()
                    .map(|option| sqlparser::ast::ColumnOptionDef { name: None, option })
                    .collect(),
            };
            replace_column(
                def,
                &col_name.value,
                col,
                column_position.as_ref(),
                &charset,
            )?;
        }
        A::AlterColumn { column_name, op } => {
            let Some(i) = find(&def.columns, &column_name.value) else {
                return Ok(AlterResult::Done);
            };
            match op {
                AlterColumnOperation::SetNotNull => def.columns[i].nullable = false,
                AlterColumnOperation::DropNotNull => def.columns[i].nullable = true,
                AlterColumnOperation::SetDefault { .. } | AlterColumnOperation::DropDefault => {}
                _ => return Ok(AlterResult::Unmodelled),
            }
        }
        A::RenameTable { table_name } => {
            let name = match table_name {
                RenameTableNameKind::As(n) | RenameTableNameKind::To(n) => n,
            };
            return Ok(AlterResult::Renamed(qualify(&name, default_db)?));
        }
        A::AddConstraint {
            constraint: TableConstraint::PrimaryKey(pk),
            ..
        } => set_primary_key(&mut def.columns, &pk_columns(&pk)),
        A::DropPrimaryKey { .. } => {
            for c in &mut def.columns {
                c.key = false;
            }
        }
        // Indexes, constraints, partitions and table options leave the columns as they are.
        A::AddConstraint { .. }
        | A::DropConstraint { .. }
        | A::DropForeignKey { .. }
        | A::DropIndex { .. }
        | A::RenameConstraint { .. }
        | A::Algorithm { .. }
        | A::Lock { .. }
        | A::AutoIncrement { .. }
        | A::AddPartitions { .. }
        | A::DropPartitions { .. }
        | A::RenamePartitions { .. }
        | A::AttachPartition { .. }
        | A::DetachPartition { .. } => {}
        _ => return Ok(AlterResult::Unmodelled),
    }
    Ok(AlterResult::Done)
}

fn replace_column(
    def: &mut MyTableDef,
    old: &str,
    col: ColumnDef,
    position_spec: Option<&MySQLColumnPosition>,
    charset: &str,
) -> Result<(), String> {
    let Some(i) = find(&def.columns, old) else {
        return Ok(()); // not there (catalog read after this DDL)
    };
    let mut column = column_from_def(&col, charset);
    // MODIFY/CHANGE restate the whole column, but a key stays a key.
    column.key |= def.columns[i].key;
    def.columns.remove(i);
    let at = match position_spec {
        None => i,
        Some(p) => position(&def.columns, Some(p), i)?,
    };
    def.columns.insert(at.min(def.columns.len()), column);
    Ok(())
}

/// Where FIRST / AFTER c puts a column; `default` without a position.
fn position(
    columns: &[MyColumn],
    spec: Option<&MySQLColumnPosition>,
    default: usize,
) -> Result<usize, String> {
    Ok(match spec {
        None => default,
        Some(MySQLColumnPosition::First) => 0,
        Some(MySQLColumnPosition::After(c)) => {
            find(columns, &c.value).ok_or_else(|| format!("AFTER {}: no such column", c.value))? + 1
        }
    })
}

/// Column names are case-insensitive in MySQL.
fn find(columns: &[MyColumn], name: &str) -> Option<usize> {
    columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(name))
}

fn set_primary_key(columns: &mut [MyColumn], key: &[String]) {
    for c in columns.iter_mut() {
        c.key = key.iter().any(|k| k.eq_ignore_ascii_case(&c.name));
        if c.key {
            c.nullable = false;
        }
    }
}

fn pk_columns(pk: &sqlparser::ast::PrimaryKeyConstraint) -> Vec<String> {
    pk.columns
        .iter()
        .map(|c| c.column.expr.to_string().trim_matches('`').to_string())
        .collect()
}

/// A column definition from DDL, typed the same way as a catalog column.
fn column_from_def(def: &ColumnDef, table_charset: &str) -> MyColumn {
    let mut nullable = true;
    let mut key = false;
    let mut charset = None;
    for o in &def.options {
        match &o.option {
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Null => nullable = true,
            ColumnOption::PrimaryKey(_) => {
                key = true;
                nullable = false;
            }
            ColumnOption::CharacterSet(name) => {
                charset = Some(name.to_string().to_ascii_lowercase())
            }
            ColumnOption::Collation(name) if charset.is_none() => {
                charset = Some(charset_of_collation(&name.to_string()))
            }
            _ => {}
        }
    }
    let column_type = canonical_type(&def.data_type.to_string());
    let is_text = super::types::parse_type(&column_type).is_some_and(|s| {
        matches!(
            s.name.as_str(),
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        )
    });
    MyColumn {
        name: def.name.value.clone(),
        column_type,
        charset: is_text.then(|| charset.unwrap_or_else(|| table_charset.to_string())),
        nullable,
        key,
    }
}

/// `utf8mb4_unicode_ci` → `utf8mb4`; `binary` → `binary`.
pub(crate) fn charset_of_collation(collation: &str) -> String {
    let c = collation.trim_matches('`').to_ascii_lowercase();
    c.split('_').next().unwrap_or(&c).to_string()
}

/// The default charset in a CREATE TABLE's options (`DEFAULT CHARSET=latin1`, `COLLATE=…`).
fn table_charset(options: &str) -> Option<String> {
    let upper = options.to_ascii_uppercase();
    let value_after = |key: &str| -> Option<String> {
        let at = upper.find(key)? + key.len();
        let rest = options[at..]
            .trim_start()
            .trim_start_matches('=')
            .trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '`' || c == '\''))
            .unwrap_or(rest.len());
        let v = rest[..end].trim_matches(|c| c == '`' || c == '\'');
        (!v.is_empty()).then(|| v.to_ascii_lowercase())
    };
    value_after("CHARSET")
        .or_else(|| value_after("CHARACTER SET"))
        .or_else(|| value_after("COLLATE").map(|c| charset_of_collation(&c)))
}

fn object_parts(name: &ObjectName) -> Result<Vec<String>, String> {
    name.0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.clone())
                .ok_or_else(|| format!("`{p}` is not a plain name"))
        })
        .collect()
}

/// `t` → `default_db.t`; `d.t` stays.
fn qualify(name: &ObjectName, default_db: &str) -> Result<String, String> {
    let parts = object_parts(name)?;
    match parts.as_slice() {
        [table] => Ok(format!("{default_db}.{table}")),
        [db, table] => Ok(format!("{db}.{table}")),
        _ => Err(format!("`{name}` is not a table name")),
    }
}

/// Tables a statement names, found by tokens after TABLE (and TO, and commas) — for statements
/// the parser refused, so the caller can re-read just those.
pub fn named_tables(sql: &str, default_db: &str) -> Vec<String> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&MySqlDialect {}, sql).tokenize() else {
        return Vec::new();
    };
    let words: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let keyword = |t: &Token, k: &str| matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case(k) && w.quote_style.is_none());
    let skip = ["IF", "NOT", "EXISTS", "ONLY"];
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let starts_name = keyword(&words[i], "TABLE")
            || keyword(&words[i], "TO")
            || (keyword(&words[i], "TRUNCATE")
                && !words.get(i + 1).is_some_and(|t| keyword(t, "TABLE")));
        if !starts_name {
            i += 1;
            continue;
        }
        i += 1;
        while words
            .get(i)
            .is_some_and(|t| skip.iter().any(|k| keyword(t, k)))
        {
            i += 1;
        }
        let mut parts = Vec::new();
        while let Some(Token::Word(w)) = words.get(i) {
            parts.push(w.value.clone());
            if words.get(i + 1) == Some(&Token::Period) {
                i += 2;
            } else {
                i += 1;
                break;
            }
        }
        match parts.as_slice() {
            [t] => out.push(format!("{default_db}.{t}")),
            [d, t] => out.push(format!("{d}.{t}")),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
