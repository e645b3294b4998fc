//! Where sources keep the state a position depends on besides the position itself (the MySQL
//! schema history, the MongoDB inferred schemas): content-addressed files in the lake, written
//! before any position naming them reaches the sink, so a commit record names them by a short
//! hash and stays small.

use std::collections::HashSet;
use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::store::Store;

/// Content-addressed snapshots of a source's schema history in the lake,
/// `_sluice/schemas/<source>/<id>.json`, the id being a hash of the content.
pub(crate) struct HistoryStore {
    store: Store,
    dir: String,
    /// Ids known to be durable (written or read in this run): never written again.
    saved: HashSet<String>,
}

impl HistoryStore {
    pub(crate) fn open(lake_path: &str, source: &str) -> io::Result<HistoryStore> {
        let store = Store::open(lake_path)?;
        let dir = format!("_sluice/schemas/{source}");
        store.mkdirs(&dir)?;
        Ok(HistoryStore {
            store,
            dir,
            saved: HashSet::new(),
        })
    }

    /// Make `value` durable; returns its id. Written to a temporary name and renamed, so a
    /// file under its final name is always whole.
    pub(crate) fn save<T: Serialize>(&mut self, value: &T) -> io::Result<String> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        let id = history_id(&bytes);
        if self.saved.contains(&id) {
            return Ok(id);
        }
        let path = format!("{}/{id}.json", self.dir);
        if !self.store.exists(&path)? {
            self.store.put_atomic(&path, &bytes)?;
        }
        self.saved.insert(id.clone());
        Ok(id)
    }

    pub(crate) fn load<T: DeserializeOwned>(&mut self, id: &str) -> io::Result<T> {
        let path = format!("{}/{id}.json", self.dir);
        let bytes = self.store.get(&path)?;
        if history_id(&bytes) != id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: its content does not match its name"),
            ));
        }
        let tables = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
        self.saved.insert(id.to_string());
        Ok(tables)
    }
}

/// First 16 bytes of the SHA-256 of the serialized history, in hex.
fn history_id(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn snapshots_are_saved_once_and_verified_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().to_str().unwrap();
        let mut store = HistoryStore::open(lake, "my").unwrap();
        let tables: BTreeMap<String, Vec<String>> =
            [("d.t".to_string(), vec!["id".to_string()])].into();
        let id = store.save(&tables).unwrap();
        assert_eq!(store.save(&tables).unwrap(), id);
        let mut other = HistoryStore::open(lake, "my").unwrap();
        assert_eq!(
            other.load::<BTreeMap<String, Vec<String>>>(&id).unwrap(),
            tables
        );
        let path = dir.path().join(format!("_sluice/schemas/my/{id}.json"));
        std::fs::write(&path, b"{}").unwrap();
        let mut third = HistoryStore::open(lake, "my").unwrap();
        assert!(
            third.load::<BTreeMap<String, Vec<String>>>(&id).is_err(),
            "a changed file is refused"
        );
    }
}
