//! Which positions in the databases this lake made: `_sluice/claims/<source>.json` names the
//! replication slot (or other server-side position) a source created for this lake, written
//! *before* it is created. It is the proof a source needs before it may drop or recreate such a
//! position that the lake holds no committed position for: without it, the slot may be another
//! pipeline's (the same source name with another sink path, a staging copy), and dropping it
//! would destroy that pipeline's place in the log.

use std::io;

use serde::{Deserialize, Serialize};

use super::store::Store;

/// A server-side position a source made for this lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PositionClaim {
    /// What it is: `postgres_slot`.
    pub(crate) kind: String,
    /// Its name on the server (the slot's name).
    pub(crate) name: String,
    pub(crate) created_at_ms: i64,
}

/// The claims of a lake.
pub(crate) struct PositionClaims {
    store: Store,
}

impl PositionClaims {
    pub(crate) fn open(lake_path: &str) -> io::Result<PositionClaims> {
        Ok(PositionClaims {
            store: Store::open(lake_path)?,
        })
    }

    fn path(source: &str) -> String {
        format!("_sluice/claims/{}.json", super::path_segment(source))
    }

    /// Record, durably, that `source` is about to create `claim` for this lake.
    pub(crate) fn record(&self, source: &str, claim: &PositionClaim) -> io::Result<()> {
        self.store.mkdirs("_sluice/claims")?;
        let bytes = serde_json::to_vec_pretty(claim).map_err(io::Error::other)?;
        self.store.put_atomic(&Self::path(source), &bytes)
    }

    /// Whether this lake made the position `kind`/`name` for `source`.
    pub(crate) fn made(&self, source: &str, kind: &str, name: &str) -> io::Result<bool> {
        let path = Self::path(source);
        if !self.store.exists(&path)? {
            return Ok(false);
        }
        let claim: PositionClaim = serde_json::from_slice(&self.store.get(&path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
        Ok(claim.kind == kind && claim.name == name)
    }

    /// Where the lake is, for messages.
    pub(crate) fn location(&self) -> String {
        self.store.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_names_its_source_kind_and_slot() {
        let dir = tempfile::tempdir().unwrap();
        let claims = PositionClaims::open(dir.path().to_str().unwrap()).unwrap();
        assert!(!claims.made("shop", "postgres_slot", "sluice_shop").unwrap());
        let claim = PositionClaim {
            kind: "postgres_slot".into(),
            name: "sluice_shop".into(),
            created_at_ms: 1,
        };
        claims.record("shop", &claim).unwrap();
        assert!(claims.made("shop", "postgres_slot", "sluice_shop").unwrap());
        assert!(!claims.made("shop", "postgres_slot", "other").unwrap());
        assert!(
            !claims
                .made("billing", "postgres_slot", "sluice_shop")
                .unwrap()
        );
    }
}
