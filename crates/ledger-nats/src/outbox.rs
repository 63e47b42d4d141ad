//! The payout outbox: payouts are recorded in the data directory (with the number of
//! payouts of the fold recorded so far), published to JetStream after, and removed when
//! JetStream acknowledges them. After a crash, the fold is rebuilt from the log, the
//! payouts beyond the recorded count are recorded, and everything still in the outbox
//! is published again — with the same ids, so JetStream and subscribers drop repeats.
//!
//! Layout of the `outbox` tree: `n` → payouts recorded (u64 BE); `P` + index of its
//! first payout (u64 BE) → the payouts of one fold step: a count (u32 BE), then per
//! payout `subject`, `payout id`, `payload`, each a u32 BE length and the bytes. A fold
//! step's payouts go under a few keys of at most `ENTRY_BYTES` each — few writes per
//! batch, and values small enough for sled to keep in its log (larger ones go to blob
//! files, which every flush then has to fsync).

use ledger_core::document::write_payout_cloudevent;
use ledger_core::Payout;

const RECORDED: &[u8] = b"n";
const ENTRY: u8 = b'P';
/// Bytes per outbox entry before a step is continued under another key.
const ENTRY_BYTES: usize = 48 << 10;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Why payouts could not be recorded.
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

/// One payout message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub subject: String,
    pub payout_id: String,
    pub payload: Vec<u8>,
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
                .sum()
        });
        self.backlog
            .store(count, std::sync::atomic::Ordering::Relaxed);
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

    /// Records `payouts`, the fold's payouts from index `first` on. Not flushed on its
    /// own: the entries are a function of the log, so after a crash the ones lost with
    /// the page cache are recorded again, identically, from the rebuilt fold.
    pub fn record(&self, first: u64, payouts: &[Payout]) -> Result<(), OutboxError> {
        let mut step = self.step(first);
        for p in payouts {
            step.add(p)?;
        }
        self.write(step)
    }

    /// Starts a step of payouts from the fold's index `first` on: add them (encoding is
    /// the costly part, and needs only the payouts), then [`Outbox::write`] it.
    pub fn step(&self, first: u64) -> OutboxStep {
        OutboxStep {
            subject_prefix: self.subject_prefix.clone(),
            first,
            added: 0,
            closed: Vec::new(),
            entry: Vec::new(),
            entry_first: first,
            count: 0,
        }
    }

    /// Writes a step (one atomic sled batch) and counts it in the backlog.
    pub fn write(&self, mut step: OutboxStep) -> Result<(), OutboxError> {
        if step.added == 0 {
            return Ok(());
        }
        step.close();
        let mut batch = sled::Batch::default();
        for (first, entry) in step.closed {
            batch.insert(&entry_key(first), entry);
        }
        batch.insert(RECORDED, &(step.first + step.added).to_be_bytes());
        self.tree.get()?.apply_batch(batch)?;
        self.backlog
            .fetch_add(step.added as usize, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The oldest recorded step not yet acknowledged: its key and its payouts.
    pub fn next_step(&self) -> Result<Option<(u64, Vec<OutboxEntry>)>, sled::Error> {
        let Some(item) = self.tree.get()?.scan_prefix([ENTRY]).next() else {
            return Ok(None);
        };
        let (k, v) = item?;
        let first = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0; 8]));
        Ok(Some((first, decode_step(&v))))
    }

    /// Number of payouts waiting for a JetStream acknowledgement.
    pub fn backlog(&self) -> usize {
        self.backlog.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes an entry whose payouts JetStream has all acknowledged.
    pub fn acknowledge(&self, first: u64) -> Result<(), sled::Error> {
        if let Some(removed) = self.tree.get()?.remove(entry_key(first))? {
            let n = entry_count(&removed);
            let _ = self.backlog.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |b| Some(b.saturating_sub(n)),
            );
        }
        Ok(())
    }
}

/// Payouts of one fold step, encoded into outbox entries of at most about
/// `ENTRY_BYTES` each, not yet written.
pub struct OutboxStep {
    subject_prefix: String,
    /// The fold's index of the step's first payout.
    first: u64,
    added: u64,
    /// Finished entries: the index of their first payout, their bytes.
    closed: Vec<(u64, Vec<u8>)>,
    entry: Vec<u8>,
    entry_first: u64,
    count: u32,
}

impl OutboxStep {
    /// Encodes the next payout of the step: its subject, id and `payout.issued` event.
    /// On an error the step is as it was before the call.
    pub fn add(&mut self, p: &Payout) -> Result<(), OutboxError> {
        if self.entry.len() > ENTRY_BYTES {
            self.close();
            self.entry_first = self.first + self.added;
        }
        if self.entry.is_empty() {
            self.entry.extend_from_slice(&[0; 4]);
        }
        let start = self.entry.len();
        let subject = format!("{}.{}", self.subject_prefix, p.kind.as_str());
        let mut id = uuid::Uuid::encode_buffer();
        let id = p.payout_id.hyphenated().encode_lower(&mut id);
        for part in [subject.as_bytes(), id.as_bytes()] {
            self.entry
                .extend_from_slice(&(part.len() as u32).to_be_bytes());
            self.entry.extend_from_slice(part);
        }
        // The payload's length goes before it: reserve it, write, then fill it in.
        let at = self.entry.len();
        self.entry.extend_from_slice(&[0; 4]);
        if let Err(source) = write_payout_cloudevent(p, &mut self.entry) {
            self.entry.truncate(start);
            return Err(OutboxError::Encode {
                payout_id: p.payout_id,
                source,
            });
        }
        let len = (self.entry.len() - at - 4) as u32;
        self.entry[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.count += 1;
        self.added += 1;
        Ok(())
    }

    /// Payouts added so far.
    pub fn len(&self) -> u64 {
        self.added
    }

    pub fn is_empty(&self) -> bool {
        self.added == 0
    }

    fn close(&mut self) {
        if self.count == 0 {
            return;
        }
        self.entry[..4].copy_from_slice(&self.count.to_be_bytes());
        self.closed
            .push((self.entry_first, std::mem::take(&mut self.entry)));
        self.count = 0;
    }
}

/// The number of payouts an entry holds.
fn entry_count(v: &[u8]) -> usize {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes) as usize
}

fn decode_step(v: &[u8]) -> Vec<OutboxEntry> {
    let mut out = Vec::new();
    let mut at = 4;
    let take = |at: &mut usize| -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(v.get(*at..*at + 4)?.try_into().ok()?) as usize;
        let bytes = v.get(*at + 4..*at + 4 + len)?.to_vec();
        *at += 4 + len;
        Some(bytes)
    };
    while at < v.len() {
        let (Some(subject), Some(id), Some(payload)) =
            (take(&mut at), take(&mut at), take(&mut at))
        else {
            break;
        };
        out.push(OutboxEntry {
            subject: String::from_utf8_lossy(&subject).into_owned(),
            payout_id: String::from_utf8_lossy(&id).into_owned(),
            payload,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_step_is_split_and_drains_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let mut replay = ledger_core::Replay::new();
        for (i, line) in
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(2, 4000)).enumerate()
        {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let payouts = replay.payouts();
        assert!(payouts.len() > 500, "{} payouts", payouts.len());
        let outbox = Outbox::new(log.tree_handle("outbox").unwrap(), "incentive.payouts");
        outbox.record(0, &payouts[..10]).unwrap();
        outbox.record(10, &payouts[10..]).unwrap();
        assert_eq!(outbox.recorded().unwrap(), payouts.len() as u64);
        assert_eq!(outbox.backlog(), payouts.len());
        let entries = log.tree_handle("outbox").unwrap().get().unwrap();
        let keys = entries.scan_prefix([ENTRY]).count();
        assert!(keys > 3, "the large step was not split: {keys} entries");
        // Draining gives every payout once, in order; the backlog counts down to zero.
        let mut drained = Vec::new();
        while let Some((first, step)) = outbox.next_step().unwrap() {
            assert_eq!(first, drained.len() as u64);
            drained.extend(step.into_iter().map(|e| e.payout_id));
            outbox.acknowledge(first).unwrap();
            assert_eq!(outbox.backlog(), payouts.len() - drained.len());
        }
        let expected: Vec<String> = payouts.iter().map(|p| p.payout_id.to_string()).collect();
        assert_eq!(drained, expected);
        // A fresh count from the stored entries agrees.
        outbox.recount();
        assert_eq!(outbox.backlog(), 0);
    }
}
