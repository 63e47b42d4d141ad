//! The payout outbox: which of the fold's payouts are still to be published. Each fold
//! step records the range of payouts it issued, with the log position it folded to, in
//! the data directory ([`ledger_log::OutboxStore`]); the publisher encodes them from the
//! projection, hands them to the transport, and removes a range when the transport has
//! stored all of it. After a crash the fold is rebuilt from the log, the payouts beyond
//! the recorded count are recorded, and every range still in the outbox is published
//! again — with the same ids and bytes, so the stream and subscribers drop repeats.
//!
//! A payout is a pure function of the log (its id is a uuid v5 of its cause), so the
//! outbox keeps which payouts, not their bytes (DECISIONS 26b).

use ledger_core::document::write_payout_cloudevent;
use ledger_core::Payout;
use ledger_log::{LogError, OutboxStore, Range};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a payout could not be turned into its message.
#[derive(Debug, thiserror::Error)]
#[error("payout {payout_id} cannot be encoded")]
pub struct EncodeError {
    pub payout_id: uuid::Uuid,
    #[source]
    pub source: serde_json::Error,
}

/// One payout message ready to publish (its payload shared, so that sending it again
/// copies nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// `<subject_prefix>.<kind>`.
    pub subject: String,
    /// Its index in the fold's issue order (the `Ledger-Payout-Number` header): where
    /// the next active replica resumes when this is the stream's last message.
    pub number: u64,
    pub payout_id: String,
    pub payload: bytes::Bytes,
}

/// The outbox of a data directory, with its backlog counted in memory.
#[derive(Clone)]
pub struct Outbox {
    store: OutboxStore,
    subject_prefix: String,
    /// The `source` of the `payout.issued` events.
    source: String,
    /// Payouts recorded and not yet acknowledged (counted once, then kept up to date).
    backlog: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(store: OutboxStore, subject_prefix: &str, source: &str) -> Result<Outbox, LogError> {
        let outbox = Outbox {
            store,
            subject_prefix: subject_prefix.to_string(),
            source: source.to_string(),
            backlog: Default::default(),
        };
        outbox.recount()?;
        Ok(outbox)
    }

    /// Counts the backlog from the stored entries (at start and after a re-open).
    pub fn recount(&self) -> Result<(), LogError> {
        let pending = self.store.pending()?;
        self.backlog.store(pending as usize, Ordering::Relaxed);
        Ok(())
    }

    /// How many payouts of the fold have been recorded.
    pub fn recorded(&self) -> Result<u64, LogError> {
        self.store.recorded()
    }

    /// Records the fold's payouts `first .. first + count`, issued by a fold step that
    /// reached log `position`, and counts them in the backlog.
    pub fn record(&self, first: u64, count: u64, position: u64) -> Result<(), LogError> {
        self.store.record(first, count, position)?;
        self.backlog.fetch_add(count as usize, Ordering::Relaxed);
        Ok(())
    }

    /// Records the fold's payouts beyond those the outbox has recorded (after a crash or
    /// a storage fault lost the latest entries), and recounts the backlog.
    pub fn record_missing(&self, payouts: u64, position: u64) -> Result<(), LogError> {
        let recorded = self.recorded()?;
        if recorded < payouts {
            self.store.record(recorded, payouts - recorded, position)?;
        }
        self.recount()
    }

    /// The oldest recorded range not yet acknowledged.
    pub fn next_range(&self) -> Result<Option<Range>, LogError> {
        self.store.next_range()
    }

    /// Removes every recorded payout before `next` (the payout stream holds them): whole
    /// ranges, and the head of the range `next` falls in.
    pub fn acknowledge_below(&self, next: u64) -> Result<(), LogError> {
        while let Some(range) = self.next_range()? {
            let n = if range.first + range.count <= next {
                self.store.acknowledge(range.first)?
            } else if range.first < next {
                self.store.trim(range.first, next)?
            } else {
                break;
            };
            let _ = self
                .backlog
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(n as usize))
                });
        }
        Ok(())
    }

    /// Number of payouts waiting for the transport.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The message of the fold's payout `number`: its subject, its id, its
    /// `payout.issued` event.
    pub fn entry(&self, p: &Payout, number: u64) -> Result<OutboxEntry, EncodeError> {
        let mut payload = Vec::with_capacity(512);
        write_payout_cloudevent(p, &self.source, &mut payload).map_err(|source| EncodeError {
            payout_id: p.payout_id,
            source,
        })?;
        let mut id = uuid::Uuid::encode_buffer();
        Ok(OutboxEntry {
            subject: format!("{}.{}", self.subject_prefix, p.kind.as_str()),
            number,
            payout_id: p.payout_id.hyphenated().encode_lower(&mut id).to_string(),
            payload: payload.into(),
        })
    }
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
    fn the_backlog_counts_down_as_ranges_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let n = 2 * ledger_log::outbox::RANGE_PAYOUTS + 5;
        let outbox = Outbox::new(
            log.outbox().unwrap(),
            "incentive.payouts",
            "incentive-ledger",
        )
        .unwrap();
        outbox.record(0, 10, 7).unwrap();
        outbox.record(10, n - 10, 30_000).unwrap();
        assert_eq!(outbox.backlog(), n as usize);
        let mut drained = 0;
        while let Some(range) = outbox.next_range().unwrap() {
            drained += range.count;
            outbox.acknowledge_below(range.first + range.count).unwrap();
            assert_eq!(outbox.backlog(), (n - drained) as usize);
        }
        assert_eq!(drained, n);
        // What the payout stream already holds leaves the outbox, inside a range too.
        outbox.record(n, 100, 30_000).unwrap();
        outbox.acknowledge_below(n + 40).unwrap();
        assert_eq!(outbox.backlog(), 60);
        assert_eq!(
            outbox.next_range().unwrap().map(|r| (r.first, r.count)),
            Some((n + 40, 60))
        );
        outbox.acknowledge_below(n + 100).unwrap();
        assert_eq!(outbox.backlog(), 0);
        assert_eq!(outbox.recorded().unwrap(), n + 100);
        let n = n + 100;
        // A fresh count from the stored entries agrees.
        outbox.recount().unwrap();
        assert_eq!(outbox.backlog(), 0);
        // What a crash lost is recorded again from the fold's count.
        outbox.record_missing(n + 3, 30_001).unwrap();
        assert_eq!(outbox.backlog(), 3);
        assert_eq!(outbox.recorded().unwrap(), n + 3);
    }

    #[test]
    fn an_entry_is_the_payout_cloudevent_on_its_kind_subject() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let replay = folded(1);
        let outbox = Outbox::new(log.outbox().unwrap(), "acme.payouts", "acme/ledger").unwrap();
        for (i, p) in replay.payouts().iter().take(50).enumerate() {
            let e = outbox.entry(p, i as u64).unwrap();
            assert_eq!(e.number, i as u64);
            assert_eq!(e.subject, format!("acme.payouts.{}", p.kind.as_str()));
            assert_eq!(e.payout_id, p.payout_id.to_string());
            let mut expected = Vec::new();
            write_payout_cloudevent(p, "acme/ledger", &mut expected).unwrap();
            assert_eq!(e.payload, expected);
        }
    }
}
