//! A disk store for the fold's lookups that grow with the log ([`ledger_core::store`]):
//! sale records, used business ids and identities, moved out of memory in batches.
//!
//! [`LookupStore::temporary`] is a store in a fresh temporary directory, removed when
//! the store is dropped: what `replay --events` folds with, so that a file larger than
//! memory can be replayed. The store is derived data — rebuilt by any replay — so
//! nothing here is fsynced.
//!
//! Why sled: it is already the log's engine, it keeps a bounded page cache
//! (`cache_bytes`), and a batch of sorted keys is one atomic `apply_batch`.

use crate::log::StorageError;
use ledger_core::store::{Backing, Flush, StoreError};
use std::path::Path;

/// The lookups moved out of the fold's memory, on disk.
pub struct LookupStore {
    tree: sled::Tree,
    /// Keeps the database open as long as the tree is used.
    _db: sled::Db,
    /// Where a temporary store lives; removed on drop (after the database closed).
    _dir: Option<tempfile::TempDir>,
    records: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LookupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupStore")
            .field("records", &self.records())
            .finish()
    }
}

/// Bytes of sled's page cache for a temporary store unless told otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

impl LookupStore {
    /// A store in a new directory under `parent` (the system's temporary directory when
    /// `None`), removed when the store is dropped.
    pub fn temporary(parent: Option<&Path>, cache_bytes: u64) -> Result<LookupStore, StorageError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("incentive-ledger-lookups-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .map_err(|e| StorageError::from_io(e, "cannot create a temporary lookup store"))?;
        let db = sled::Config::new()
            .path(dir.path())
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            // Derived data: nothing to make durable, sled may write when it likes.
            .flush_every_ms(None)
            .open()
            .map_err(StorageError::from)?;
        let tree = db.open_tree("lookups").map_err(StorageError::from)?;
        Ok(LookupStore {
            tree,
            _db: db,
            _dir: Some(dir),
            records: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Writes what a replay moved out of memory (one atomic batch).
    pub fn write(&self, flush: &Flush) -> Result<(), StorageError> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = flush.records().collect();
        // Sorted, the batch walks the tree's leaves in order.
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut batch = sled::Batch::default();
        for (key, value) in &records {
            assert!(!key.is_empty(), "every lookup key starts with its space");
            batch.insert(key.as_slice(), value.as_slice());
        }
        self.tree.apply_batch(batch).map_err(StorageError::from)?;
        self.records
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Records written so far (a key written twice counts twice).
    pub fn records(&self) -> u64 {
        self.records.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Backing for LookupStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.tree.get(key) {
            Ok(v) => Ok(v.map(|v| v.to_vec())),
            Err(e) => Err(StoreError::new(
                "reading the lookup store failed",
                StorageError::from(e),
            )),
        }
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.tree
            .contains_key(key)
            .map_err(|e| StoreError::new("reading the lookup store failed", StorageError::from(e)))
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
        let store = Arc::new(LookupStore::temporary(Some(parent.path()), 1 << 20).unwrap());
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
        assert!(store.records() > 1000, "{} records", store.records());
        assert_eq!(replay.document(), plain.document());
        drop(replay);
        drop(store);
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
