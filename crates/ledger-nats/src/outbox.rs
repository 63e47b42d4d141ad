//! The payout outbox: which of the fold's payouts are still to be published. Each fold
//! step records the range of payouts it issued, with the log position it folded to, in
//! the data directory; the publisher encodes them from the projection, publishes them
//! to JetStream, and removes a range when JetStream acknowledged all of it. After a
//! crash the fold is rebuilt from the log, the payouts beyond the recorded count are
//! recorded, and every range still in the outbox is published again — with the same
//! ids and bytes, so JetStream and subscribers drop repeats.
//!
//! A payout is a pure function of the log (its id is a uuid v5 of its cause), so the
//! outbox keeps which payouts, not their bytes (DECISIONS 26b): the bytes would be the
//! same when rebuilt, and writing them once more cost a third of what the service wrote
//! to disk.
//!
//! Layout of the `outbox` tree: `n` → payouts recorded (u64 BE); `P` + index of a
//! range's first payout (u64 BE) → its count (u32 BE), then the log position the fold
//! step reached (u64 BE). A fold step's payouts are cut into ranges of at most
//! `RANGE_PAYOUTS`, so that a long backlog is acknowledged as it is published. Entries an
//! earlier version wrote (the count, then the encoded payouts) are read as their count:
//! the payouts they hold are the same range of the fold.

use ledger_core::document::write_payout_cloudevent;
use ledger_core::Payout;

const RECORDED: &[u8] = b"n";
const ENTRY: u8 = b'P';
/// Payouts per outbox range.
const RANGE_PAYOUTS: u64 = 4096;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Why payouts could not be recorded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Storage(#[from] sled::Error),
    /// Not expected (the event holds only strings), but never a payout silently dropped.
    #[error("payout {payout_id} cannot be encoded: {source}")]
    Encode {
        payout_id: uuid::Uuid,
        #[source]
        source: serde_json::Error,
    },
}

/// One payout message ready to publish (its payload shared, so that sending it again
/// copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub subject: String,
    pub payout_id: String,
    pub payload: bytes::Bytes,
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

#[derive(Clone)]
pub struct Outbox {
    tree: ledger_log::TreeHandle,
    subject_prefix: String,
    /// Payouts recorded and not yet acknowledged (counted once, then kept up to date).
    backlog: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Outbox {
    pub fn new(tree: ledger_log::TreeHandle, subject_prefix: &str) -> Outbox {
        let outbox = Outbox {
            tree,
            subject_prefix: subject_prefix.to_string(),
            backlog: Default::default(),
        };
        outbox.recount();
        outbox
    }

    /// Counts the backlog from the stored entries (at start and after a re-open).
    pub fn recount(&self) {
        let count = self.tree.get().map_or(0, |tree| {
            tree.scan_prefix([ENTRY])
                .filter_map(|item| item.ok())
                .map(|(_, v)| entry_count(&v))
                .sum::<u64>()
        });
        self.backlog
            .store(count as usize, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many payouts of the fold have been recorded.
    pub fn recorded(&self) -> Result<u64, sled::Error> {
        Ok(self
            .tree
            .get()?
            .get(RECORDED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Records the fold's payouts `first .. first + count`, issued by a fold step that
    /// reached log `position` (one atomic sled batch), and counts them in the backlog.
    /// Not flushed on its own: the ranges are a function of the log, so after a crash
    /// the ones lost with the page cache are recorded again from the rebuilt fold.
    pub fn record(&self, first: u64, count: u64, position: u64) -> Result<(), OutboxError> {
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
        self.tree.get()?.apply_batch(batch)?;
        self.backlog
            .fetch_add(count as usize, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The oldest recorded range not yet acknowledged.
    pub fn next_range(&self) -> Result<Option<Range>, sled::Error> {
        let Some(item) = self.tree.get()?.scan_prefix([ENTRY]).next() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let first = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0; 8]));
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

    /// The message of one payout: its subject, its id, its `payout.issued` event.
    pub fn entry(&self, p: &Payout) -> Result<OutboxEntry, OutboxError> {
        let mut payload = Vec::with_capacity(512);
        write_payout_cloudevent(p, &mut payload).map_err(|source| OutboxError::Encode {
            payout_id: p.payout_id,
            source,
        })?;
        let mut id = uuid::Uuid::encode_buffer();
        Ok(OutboxEntry {
            subject: format!("{}.{}", self.subject_prefix, p.kind.as_str()),
            payout_id: p.payout_id.hyphenated().encode_lower(&mut id).to_string(),
            payload: payload.into(),
        })
    }

    /// Number of payouts waiting for a JetStream acknowledgement.
    pub fn backlog(&self) -> usize {
        self.backlog.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes a range whose payouts JetStream has all acknowledged.
    pub fn acknowledge(&self, first: u64) -> Result<(), sled::Error> {
        if let Some(removed) = self.tree.get()?.remove(entry_key(first))? {
            let n = entry_count(&removed) as usize;
            let _ = self.backlog.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |b| Some(b.saturating_sub(n)),
            );
        }
        Ok(())
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

    fn folded(payouts_at_least: usize) -> ledger_core::Replay {
        let mut replay = ledger_core::Replay::new();
        for (i, line) in
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(2, 30_000))
                .enumerate()
        {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        assert!(
            replay.payouts().len() > payouts_at_least,
            "{} payouts",
            replay.payouts().len()
        );
        replay
    }

    #[test]
    fn a_large_step_is_split_into_ranges_that_drain_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let replay = folded(2 * RANGE_PAYOUTS as usize);
        let payouts = replay.payouts();
        let n = payouts.len() as u64;
        let outbox = Outbox::new(log.tree_handle("outbox").unwrap(), "incentive.payouts");
        outbox.record(0, 10, 7).unwrap();
        outbox.record(10, n - 10, 30_000).unwrap();
        assert_eq!(outbox.recorded().unwrap(), n);
        assert_eq!(outbox.backlog(), n as usize);
        let entries = log.tree_handle("outbox").unwrap().get().unwrap();
        let keys = entries.scan_prefix([ENTRY]).count() as u64;
        assert_eq!(keys, 1 + (n - 10).div_ceil(RANGE_PAYOUTS));
        // Draining gives every payout once, in order, with the step's position; the
        // backlog counts down to zero.
        let mut drained = Vec::new();
        while let Some(range) = outbox.next_range().unwrap() {
            assert_eq!(range.first, drained.len() as u64);
            assert!(range.count <= RANGE_PAYOUTS);
            let position = if range.first == 0 { 7 } else { 30_000 };
            assert_eq!(range.position, Some(position));
            drained.extend(range.first..range.first + range.count);
            outbox.acknowledge(range.first).unwrap();
            assert_eq!(outbox.backlog(), payouts.len() - drained.len());
        }
        assert_eq!(drained, (0..n).collect::<Vec<_>>());
        // A fresh count from the stored entries agrees.
        outbox.recount();
        assert_eq!(outbox.backlog(), 0);
    }

    #[test]
    fn an_entry_is_the_payout_cloudevent_on_its_kind_subject() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let replay = folded(1);
        let outbox = Outbox::new(log.tree_handle("outbox").unwrap(), "acme.payouts");
        for p in replay.payouts().iter().take(50) {
            let e = outbox.entry(p).unwrap();
            assert_eq!(e.subject, format!("acme.payouts.{}", p.kind.as_str()));
            assert_eq!(e.payout_id, p.payout_id.to_string());
            let mut expected = Vec::new();
            write_payout_cloudevent(p, &mut expected).unwrap();
            assert_eq!(e.payload, expected);
        }
    }

    /// An earlier version stored the encoded payouts after the count: such an entry is
    /// the same range, published from the fold.
    #[test]
    fn an_entry_of_an_earlier_version_is_read_as_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let tree = log.tree_handle("outbox").unwrap();
        let mut old = 3u32.to_be_bytes().to_vec();
        for part in [&b"incentive.payouts.rebate"[..], b"id", b"{}"].repeat(3) {
            old.extend_from_slice(&(part.len() as u32).to_be_bytes());
            old.extend_from_slice(part);
        }
        tree.get().unwrap().insert(entry_key(5), old).unwrap();
        tree.get()
            .unwrap()
            .insert(RECORDED, &8u64.to_be_bytes())
            .unwrap();
        let outbox = Outbox::new(tree, "incentive.payouts");
        assert_eq!(outbox.backlog(), 3);
        assert_eq!(
            outbox.next_range().unwrap(),
            Some(Range {
                first: 5,
                count: 3,
                position: None
            })
        );
        outbox.acknowledge(5).unwrap();
        assert_eq!(outbox.backlog(), 0);
        assert_eq!(outbox.next_range().unwrap(), None);
    }
}
