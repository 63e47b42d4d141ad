//! The payout outbox: payouts are recorded in the data directory (with the number of
//! payouts of the fold recorded so far), published to JetStream after, and removed when
//! JetStream acknowledges them. After a crash, the fold is rebuilt from the log, the
//! payouts beyond the recorded count are recorded, and everything still in the outbox
//! is published again — with the same ids, so JetStream and subscribers drop repeats.
//!
//! Layout of the `outbox` tree: `n` → payouts recorded (u64 BE); `P` + index (u64 BE) →
//! `subject \0 payload`.

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
    pub index: u64,
    pub subject: String,
    pub payout_id: String,
    pub payload: Vec<u8>,
}

pub struct Outbox {
    tree: sled::Tree,
    subject_prefix: String,
}

impl Outbox {
    pub fn new(tree: sled::Tree, subject_prefix: &str) -> Outbox {
        Outbox {
            tree,
            subject_prefix: subject_prefix.to_string(),
        }
    }

    /// How many payouts of the fold have been recorded.
    pub fn recorded(&self) -> Result<u64, sled::Error> {
        Ok(self
            .tree
            .get(RECORDED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Records `payouts`, the fold's payouts from index `first` on, and flushes.
    pub fn record(&self, first: u64, payouts: &[Payout]) -> Result<(), sled::Error> {
        if payouts.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (i, p) in payouts.iter().enumerate() {
            let row = PayoutRow::from(p);
            let subject = format!("{}.{}", self.subject_prefix, row.kind);
            let payload = row.cloudevent(&p.cause_time).to_string();
            let mut value = Vec::with_capacity(subject.len() + 1 + payload.len());
            value.extend_from_slice(subject.as_bytes());
            value.push(0);
            value.extend_from_slice(payload.as_bytes());
            batch.insert(&entry_key(first + i as u64), value);
        }
        batch.insert(RECORDED, &(first + payouts.len() as u64).to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Up to `limit` entries not yet acknowledged, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, sled::Error> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([ENTRY]).take(limit) {
            let (k, v) = item?;
            let index = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0; 8]));
            let split = v.iter().position(|&b| b == 0).unwrap_or(0);
            let subject = String::from_utf8_lossy(&v[..split]).into_owned();
            let payload = v[split + 1..].to_vec();
            let payout_id = serde_json::from_slice::<serde_json::Value>(&payload)
                .ok()
                .and_then(|e| e["id"].as_str().map(str::to_string))
                .unwrap_or_default();
            out.push(OutboxEntry {
                index,
                subject,
                payout_id,
                payload,
            });
        }
        Ok(out)
    }

    /// Number of payouts waiting for a JetStream acknowledgement.
    pub fn backlog(&self) -> usize {
        self.tree.scan_prefix([ENTRY]).count()
    }

    /// Removes acknowledged entries.
    pub fn acknowledge(&self, indexes: &[u64]) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for &i in indexes {
            batch.remove(&entry_key(i));
        }
        self.tree.apply_batch(batch)
    }
}
