//! A disk store for the fold's lookups that grow with the log ([`ledger_core::store`]):
//! sale records, used business ids and identities, moved out of memory in batches.
//!
//! [`LookupStore::temporary`] keeps them as [`crate::runs`] in a fresh temporary
//! directory, removed when the store is dropped: what `replay --events` folds with, so
//! that a file larger than memory can be replayed. The store is derived data — rebuilt
//! by any replay — so nothing here is fsynced.

use crate::runs::{RunError, RunStats, RunStore};
use ledger_core::store::{Backing, Flush, StoreError};
use std::path::Path;

/// The lookups moved out of the fold's memory, on disk.
pub struct LookupStore {
    runs: RunStore,
}

impl std::fmt::Debug for LookupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupStore")
            .field("stats", &self.stats())
            .finish()
    }
}

impl LookupStore {
    /// A store in a new directory under `parent` (the system's temporary directory when
    /// `None`), removed when the store is dropped.
    pub fn temporary(parent: Option<&Path>) -> Result<LookupStore, RunError> {
        Ok(LookupStore {
            runs: RunStore::temporary(parent)?,
        })
    }

    /// Writes what a replay moved out of memory, as one run.
    pub fn write(&self, flush: &Flush) -> Result<(), RunError> {
        self.runs.write(flush.records())
    }

    /// Runs, records, bytes on disk and in memory.
    pub fn stats(&self) -> RunStats {
        self.runs.stats()
    }
}

impl Backing for LookupStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.runs
            .get(key)
            .map_err(|e| StoreError::new("reading the lookup store failed", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::gen::{GenConfig, Generator};
    use ledger_core::Replay;
    use std::sync::Arc;

    /// A replay whose lookups went to disk every few hundred inputs equals one that kept
    /// them in memory, and the temporary directory is gone after the store.
    #[test]
    fn a_replay_over_the_disk_store_equals_one_in_memory() {
        let lines: Vec<String> = Generator::new(GenConfig::new(5, 3000)).collect();
        let mut plain = Replay::new();
        for (i, l) in lines.iter().enumerate() {
            plain.push(l.as_bytes(), i as u64 + 1);
        }
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(LookupStore::temporary(Some(parent.path())).unwrap());
        let mut replay = Replay::new();
        replay.attach_backing(store.clone());
        for (i, l) in lines.iter().enumerate() {
            replay.try_push(l.as_bytes(), i as u64 + 1).unwrap();
            if replay.lookups_in_memory() >= 300 {
                let flush = replay.take_recent();
                store.write(&flush).unwrap();
                replay.flushed();
            }
        }
        assert!(store.stats().records > 1000, "{:?}", store.stats());
        assert_eq!(replay.document(), plain.document());
        drop(replay);
        drop(store);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
