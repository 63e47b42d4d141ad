//! A disk store for the fold's lookups that grow with the log ([`ledger_core::store`]):
//! sale records, used business ids and identities, moved out of memory in batches.
//!
//! [`LookupStore::temporary`] keeps them as [`crate::runs`] in a fresh temporary
//! directory, removed when the store is dropped: what `replay --events` folds with, so
//! that a file larger than memory can be replayed. [`LookupStore::open_dir`] keeps them
//! in the data directory's `lookups/`, the runs a checkpoint names (the service's).

use crate::runs::{RunError, RunName, RunStats, RunStore};
use ledger_core::store::{Backing, Flush, StoreError};
use std::path::Path;

/// The store's directory inside a data directory.
pub const DIR: &str = "lookups";

/// The lookups moved out of the fold's memory, on disk.
pub struct LookupStore {
    runs: RunStore,
    /// Read where `runs` has no value: a data directory's runs, read in place
    /// ([`LookupStore::over`]).
    base: Option<RunStore>,
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
            base: None,
        })
    }

    /// A temporary store over the runs `named` of `data_dir`'s `lookups/`, which are
    /// read in place and never written or deleted: a fold resumed from a checkpoint by
    /// a process that must not write into the directory (simulations, reports).
    pub fn over(data_dir: &Path, named: &[RunName]) -> Result<LookupStore, RunError> {
        Ok(LookupStore {
            runs: RunStore::temporary(None)?,
            base: Some(RunStore::read_only(&data_dir.join(DIR), named)?),
        })
    }

    /// The store of a data directory's `lookups/` with the runs a checkpoint named (none
    /// for a new one); other run files there are deleted.
    pub fn open_dir(data_dir: &Path, named: &[RunName]) -> Result<LookupStore, RunError> {
        Ok(LookupStore {
            runs: RunStore::open_dir(&data_dir.join(DIR), named)?,
            base: None,
        })
    }

    /// The runs as a checkpoint names them.
    pub fn manifest(&self) -> Vec<RunName> {
        self.runs.manifest()
    }

    /// Deletes replaced runs the durable checkpoint (named by `kept`) no longer needs.
    pub fn collect(&self, kept: &[RunName]) {
        self.runs.collect(kept)
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
        let read = |runs: &RunStore| {
            runs.get(key)
                .map_err(|e| StoreError::new("reading the lookup store failed", e))
        };
        match (read(&self.runs)?, &self.base) {
            (None, Some(base)) => read(base),
            (found, _) => Ok(found),
        }
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
