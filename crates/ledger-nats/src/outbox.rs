//! The payout outbox: payouts are recorded in the data directory (with the number of
//! payouts of the fold recorded so far), published to JetStream after, and removed when
//! JetStream acknowledges them. After a crash, the fold is rebuilt from the log, the
//! payouts beyond the recorded count are recorded, and everything still in the outbox
//! is published again — with the same ids, so JetStream and subscribers drop repeats.
//!
//! Layout of the `outbox` tree: `n` → payouts recorded (u64 BE); `P` + index of its
//! first payout (u64 BE) → the payouts of one fold step: a count (u32 BE), then per
//! payout `subject`, `payout id`, `payload`, each a u32 BE length and the bytes. One key
//! per step keeps sled's writes per batch, not per payout.

use ledger_core::document::PayoutRow;
use ledger_core::Payout;

const RECORDED: &[u8] = b"n";
const ENTRY: u8 = b'P';

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
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
}

impl Outbox {
    pub fn new(tree: ledger_log::TreeHandle, subject_prefix: &str) -> Outbox {
        Outbox {
            tree,
            subject_prefix: subject_prefix.to_string(),
        }
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
    pub fn record(&self, first: u64, payouts: &[Payout]) -> Result<(), sled::Error> {
        if payouts.is_empty() {
            return Ok(());
        }
        let mut value = Vec::with_capacity(payouts.len() * 600);
        value.extend_from_slice(&(payouts.len() as u32).to_be_bytes());
        for p in payouts {
            let row = PayoutRow::from(p);
            let subject = format!("{}.{}", self.subject_prefix, row.kind);
            let payload = row.cloudevent(&p.cause_time).to_string();
            for part in [
                subject.as_bytes(),
                row.payout_id.as_bytes(),
                payload.as_bytes(),
            ] {
                value.extend_from_slice(&(part.len() as u32).to_be_bytes());
                value.extend_from_slice(part);
            }
        }
        let mut batch = sled::Batch::default();
        batch.insert(&entry_key(first), value);
        batch.insert(RECORDED, &(first + payouts.len() as u64).to_be_bytes());
        self.tree.get()?.apply_batch(batch)
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
        let Ok(tree) = self.tree.get() else {
            return 0;
        };
        tree.scan_prefix([ENTRY])
            .filter_map(|item| item.ok())
            .map(|(_, v)| {
                v.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_be_bytes) as usize
            })
            .sum()
    }

    /// Removes a step whose payouts JetStream has all acknowledged.
    pub fn acknowledge(&self, first: u64) -> Result<(), sled::Error> {
        self.tree.get()?.remove(entry_key(first)).map(|_| ())
    }
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
