//! The stored side of the payout outbox: which of the fold's payouts are still to be
//! published, as ranges of the fold's payout indexes, in a tree of the directory's
//! database of its own. What a payout's message is (its bytes) is the service's
//! business; this only records, lists and removes ranges (DECISIONS 26b).
//!
//! Layout of the `outbox` tree: `n` → payouts recorded (u64 BE); `P` + index of a
//! range's first payout (u64 BE) → its count (u32 BE), then the log position the fold
//! step reached (u64 BE). A fold step's payouts are cut into ranges of at most
//! [`RANGE_PAYOUTS`], so that a long backlog is acknowledged as it is published. Entries
//! an earlier version wrote (the count, then the encoded payouts) are read as their
//! count: the payouts they hold are the same range of the fold.

use crate::log::{storage, TreeHandle};
use crate::LogError;
use std::path::PathBuf;

/// The tree's name.
pub(crate) const TREE: &str = "outbox";
const RECORDED: &[u8] = b"n";
const ENTRY: u8 = b'P';
/// Payouts per outbox range.
pub const RANGE_PAYOUTS: u64 = 4096;

fn entry_key(index: u64) -> [u8; 9] {
    crate::layout::key(ENTRY, index)
}

/// A recorded range of the fold's payouts, not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The fold's index of its first payout.
    pub first: u64,
    pub count: u64,
    /// The log position the fold step that issued them reached (absent in entries of
    /// earlier versions).
    pub position: Option<u64>,
}

/// The outbox's ranges in the data directory; follows [`crate::Log::reopen`].
#[derive(Clone)]
pub struct OutboxStore {
    tree: TreeHandle,
    path: PathBuf,
}

impl OutboxStore {
    pub(crate) fn new(tree: TreeHandle, path: PathBuf) -> OutboxStore {
        OutboxStore { tree, path }
    }

    fn tree(&self) -> Result<sled::Tree, LogError> {
        self.tree.get().map_err(storage(&self.path))
    }

    /// How many of the fold's payouts have been recorded.
    pub fn recorded(&self) -> Result<u64, LogError> {
        let value = self.tree()?.get(RECORDED).map_err(storage(&self.path))?;
        match value {
            None => Ok(0),
            Some(v) => v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(&self.path, "its recorded count is not 8 bytes")),
        }
    }

    /// Records the fold's payouts `first .. first + count`, issued by a fold step that
    /// reached log `position`, in one atomic batch. Not flushed on its own: the ranges
    /// are a function of the log, so after a crash the ones lost with the page cache are
    /// recorded again from the rebuilt fold.
    pub fn record(&self, first: u64, count: u64, position: u64) -> Result<(), LogError> {
        if count == 0 {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut at = first;
        while at < first + count {
            let n = RANGE_PAYOUTS.min(first + count - at);
            let mut value = [0u8; 12];
            value[..4].copy_from_slice(&(n as u32).to_be_bytes());
            value[4..].copy_from_slice(&position.to_be_bytes());
            batch.insert(&entry_key(at), &value);
            at += n;
        }
        batch.insert(RECORDED, &(first + count).to_be_bytes());
        self.tree()?.apply_batch(batch).map_err(storage(&self.path))
    }

    /// The oldest recorded range not yet acknowledged.
    pub fn next_range(&self) -> Result<Option<Range>, LogError> {
        let Some(item) = self.tree()?.scan_prefix([ENTRY]).next() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(storage(&self.path))?;
        let first = crate::layout::key_number(&k, ENTRY)
            .ok_or_else(|| corrupt(&self.path, "a range key has the wrong shape"))?;
        // A 12-byte value is a range; an earlier version's entry holds its payouts.
        let position = (v.len() == 12)
            .then(|| v[4..12].try_into().ok().map(u64::from_be_bytes))
            .flatten();
        Ok(Some(Range {
            first,
            count: entry_count(&v),
            position,
        }))
    }

    /// Removes the range that starts at `first`; returns how many payouts it held (0 if
    /// there was none).
    pub fn acknowledge(&self, first: u64) -> Result<u64, LogError> {
        let removed = self
            .tree()?
            .remove(entry_key(first))
            .map_err(storage(&self.path))?;
        Ok(removed.map_or(0, |v| entry_count(&v)))
    }

    /// Removes the payouts before `next` from the range that starts at `first` and
    /// ends after `next`: the range then starts at `next` (its position kept); the
    /// recorded count is not touched. Returns how many payouts were removed.
    pub fn trim(&self, first: u64, next: u64) -> Result<u64, LogError> {
        let tree = self.tree()?;
        let Some(v) = tree.get(entry_key(first)).map_err(storage(&self.path))? else {
            return Ok(0);
        };
        let count = entry_count(&v);
        assert!(
            first < next && next < first + count,
            "a trim inside the range {first}+{count}, not at {next}"
        );
        let position = (v.len() == 12)
            .then(|| v[4..12].try_into().ok().map(u64::from_be_bytes))
            .flatten()
            .unwrap_or(0);
        let mut value = [0u8; 12];
        value[..4].copy_from_slice(&((first + count - next) as u32).to_be_bytes());
        value[4..].copy_from_slice(&position.to_be_bytes());
        let mut batch = sled::Batch::default();
        batch.remove(&entry_key(first));
        batch.insert(&entry_key(next), &value);
        tree.apply_batch(batch).map_err(storage(&self.path))?;
        Ok(next - first)
    }

    /// Payouts in the recorded ranges, counted from the stored entries.
    pub fn pending(&self) -> Result<u64, LogError> {
        let mut total = 0;
        for item in self.tree()?.scan_prefix([ENTRY]) {
            let (_, v) = item.map_err(storage(&self.path))?;
            total += entry_count(&v);
        }
        Ok(total)
    }
}

fn corrupt(path: &std::path::Path, what: &str) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        what: format!("the payout outbox is damaged: {what}"),
    }
}

/// The number of payouts an entry holds.
fn entry_count(v: &[u8]) -> u64 {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_step_is_split_into_ranges_that_drain_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::Log::open(dir.path()).unwrap();
        let outbox = log.outbox().unwrap();
        let n = 3 * RANGE_PAYOUTS + 17;
        outbox.record(0, 10, 7).unwrap();
        outbox.record(10, n - 10, 30_000).unwrap();
        assert_eq!(outbox.recorded().unwrap(), n);
        assert_eq!(outbox.pending().unwrap(), n);
        let keys = outbox.tree().unwrap().scan_prefix([ENTRY]).count() as u64;
        assert_eq!(keys, 1 + (n - 10).div_ceil(RANGE_PAYOUTS));
        // Draining gives every payout once, in order, with the step's position.
        let mut drained = Vec::new();
        while let Some(range) = outbox.next_range().unwrap() {
            assert_eq!(range.first, drained.len() as u64);
            assert!(range.count <= RANGE_PAYOUTS);
            let position = if range.first == 0 { 7 } else { 30_000 };
            assert_eq!(range.position, Some(position));
            drained.extend(range.first..range.first + range.count);
            assert_eq!(outbox.acknowledge(range.first).unwrap(), range.count);
            assert_eq!(outbox.pending().unwrap(), n - drained.len() as u64);
        }
        assert_eq!(drained, (0..n).collect::<Vec<_>>());
        assert_eq!(outbox.acknowledge(0).unwrap(), 0, "nothing left to remove");
    }

    /// An earlier version stored the encoded payouts after the count: such an entry is
    /// the same range, published from the fold.
    #[test]
    fn an_entry_of_an_earlier_version_is_read_as_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::Log::open(dir.path()).unwrap();
        let outbox = log.outbox().unwrap();
        let mut old = 3u32.to_be_bytes().to_vec();
        for part in [&b"incentive.payouts.rebate"[..], b"id", b"{}"].repeat(3) {
            old.extend_from_slice(&(part.len() as u32).to_be_bytes());
            old.extend_from_slice(part);
        }
        let tree = outbox.tree().unwrap();
        tree.insert(entry_key(5), old).unwrap();
        tree.insert(RECORDED, &8u64.to_be_bytes()).unwrap();
        assert_eq!(outbox.pending().unwrap(), 3);
        assert_eq!(
            outbox.next_range().unwrap(),
            Some(Range {
                first: 5,
                count: 3,
                position: None
            })
        );
        assert_eq!(outbox.acknowledge(5).unwrap(), 3);
        assert_eq!(outbox.next_range().unwrap(), None);
    }
}
