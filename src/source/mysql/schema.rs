//! The schema history: every captured table's definition at a binlog position.
//!
//! The history moves with the binlog: the snapshot (or the catalog, when streaming starts
//! without one) gives the first definitions, DDL in the stream changes them (ddl.rs). A source
//! position names the history valid at it by a content hash; the definitions themselves are
//! written once to the lake by the shared [`crate::lake::schema_history::HistoryStore`] before any
//! position naming them is handed to the sink. So a restart at an old position decodes its rows
//! with the definitions of that time, and a commit record stays small however many tables there
//! are.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ddl::Tables;
use super::types::{Kind, MyColumn};
use crate::event::{SourceInfo, TableId, TableSchema};

/// A captured table's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyTableDef {
    pub columns: Vec<MyColumn>,
    /// The table's default charset: columns added later without one get it.
    pub charset: String,
}

/// A tracked table with what decoding and the lake need, derived once per definition.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub(crate) schema: Arc<TableSchema>,
    pub(crate) kinds: Arc<[Kind]>,
}

/// The history in memory: definitions by `db.table`, and their derived schemas.
#[derive(Debug)]
pub(crate) struct History {
    source: String,
    connector: &'static str,
    tables: Tables,
    derived: HashMap<String, Tracked>,
    /// Bumped for every changed definition, so a table's schema versions keep increasing.
    next_version: u32,
}

impl History {
    pub(crate) fn new(source: &str, connector: &'static str, tables: Tables) -> History {
        let mut h = History {
            source: source.to_string(),
            connector,
            tables: Tables::new(),
            derived: HashMap::new(),
            next_version: 1,
        };
        for (name, def) in tables {
            h.set(&name, def);
        }
        h
    }

    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Apply `f` to the definitions (DDL), then re-derive the tables whose definition changed.
    pub(crate) fn edit<T>(&mut self, f: impl FnOnce(&mut Tables) -> T) -> T {
        let before = self.tables.clone();
        let out = f(&mut self.tables);
        let after = std::mem::take(&mut self.tables);
        for name in before.keys() {
            if !after.contains_key(name) {
                self.derived.remove(name);
            }
        }
        for (name, def) in after {
            if before.get(&name) != Some(&def) {
                self.set(&name, def);
            } else {
                self.tables.insert(name, def);
            }
        }
        out
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Tracked> {
        self.derived.get(name)
    }

    pub(crate) fn def(&self, name: &str) -> Option<&MyTableDef> {
        self.tables.get(name)
    }

    /// Track `name` with `def` (a new schema version when it differs from the current one).
    pub(crate) fn set(&mut self, name: &str, def: MyTableDef) {
        if self.tables.get(name) == Some(&def) && self.derived.contains_key(name) {
            return;
        }
        let tracked = self.derive(name, def.clone());
        self.derived.insert(name.to_string(), tracked);
        self.tables.insert(name.to_string(), def);
    }

    /// The schema of `def` with a fresh version, not tracked (a resumed snapshot phase reads
    /// tables as they are at its own point, which may differ from the history's).
    pub(crate) fn derive(&mut self, name: &str, def: MyTableDef) -> Tracked {
        let (db, table) = name.split_once('.').unwrap_or(("", name));
        let id = TableId {
            source: self.source.clone(),
            namespace: db.to_string(),
            table: table.to_string(),
        };
        let columns = def.columns.iter().map(MyColumn::column).collect();
        let info = SourceInfo {
            connector: self.connector,
            db: db.to_string(),
            documents: false,
        };
        let schema = TableSchema::new(id, columns, self.next_version, info);
        self.next_version += 1;
        Tracked {
            schema: Arc::new(schema),
            kinds: def.columns.iter().map(MyColumn::kind).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(cols: &[(&str, &str)]) -> MyTableDef {
        MyTableDef {
            columns: cols
                .iter()
                .map(|(n, t)| MyColumn {
                    name: n.to_string(),
                    column_type: t.to_string(),
                    charset: None,
                    nullable: true,
                    key: *n == "id",
                })
                .collect(),
            charset: "utf8mb4".into(),
        }
    }

    #[test]
    fn versions_increase_only_when_a_definition_changes() {
        let mut h = History::new(
            "my",
            "mariadb",
            [("d.t".to_string(), def(&[("id", "int")]))].into(),
        );
        let v1 = h.get("d.t").unwrap().schema.version;
        h.edit(|t| t.insert("d.t".into(), def(&[("id", "int")])));
        assert_eq!(h.get("d.t").unwrap().schema.version, v1);
        h.edit(|t| t.insert("d.t".into(), def(&[("id", "int"), ("v", "text")])));
        let tracked = h.get("d.t").unwrap();
        assert!(tracked.schema.version > v1);
        assert_eq!(tracked.schema.stream, "my.d.t");
        assert_eq!(tracked.kinds.len(), 2);
        h.edit(|t| t.remove("d.t"));
        assert!(h.get("d.t").is_none());
    }
}
