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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// How far the fold's payouts are recorded, and the oldest one not yet
    /// acknowledged: the backlog is their difference. Both only grow (`fetch_max`), so
    /// the count cannot drift however the projector's recording and the publisher's
    /// acknowledging interleave. (A counter added to after the store was written and
    /// taken from by the publisher, clamped at zero, could: a range acknowledged before
    /// its addition was lost from the subtraction and stayed in the count for ever — a
    /// soak showed 446 payouts "waiting" with the stream holding every one, and the
    /// stalled-outbox alarm raised.)
    recorded: Arc<AtomicU64>,
    oldest: Arc<AtomicU64>,
}

impl Outbox {
    pub fn new(store: OutboxStore, subject_prefix: &str, source: &str) -> Result<Outbox, LogError> {
        let outbox = Outbox {
            store,
            subject_prefix: subject_prefix.to_string(),
            source: source.to_string(),
            recorded: Default::default(),
            oldest: Default::default(),
        };
        outbox.recount()?;
        Ok(outbox)
    }

    /// Counts the backlog from the stored entries (at start, after a re-open, after
    /// acknowledgements): how far payouts are recorded, then the oldest not yet
    /// acknowledged (`recorded`, read before it, when none is pending). Ranges are
    /// recorded one after the other and acknowledged from the oldest, so everything
    /// from it to `recorded` is pending.
    pub fn recount(&self) -> Result<(), LogError> {
        let recorded = self.store.recorded()?;
        self.recorded.fetch_max(recorded, Ordering::Relaxed);
        let oldest = self.store.next_range()?.map_or(recorded, |r| r.first);
        self.oldest.fetch_max(oldest, Ordering::Relaxed);
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
        self.counted(first + count);
        Ok(())
    }

    /// Counts payouts up to `recorded` as recorded (after the store holds them: the
    /// publisher may have acknowledged them in between).
    fn counted(&self, recorded: u64) {
        self.recorded.fetch_max(recorded, Ordering::Relaxed);
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
            if range.first + range.count <= next {
                self.store.acknowledge(range.first)?;
            } else if range.first < next {
                self.store.trim(range.first, next)?;
            } else {
                break;
            }
        }
        self.recount()
    }

    /// Number of payouts waiting for the transport.
    pub fn backlog(&self) -> usize {
        let recorded = self.recorded.load(Ordering::Relaxed);
        // The oldest may be read past a recording whose maximum is not set yet: 0
        // for that moment, never a count that stays.
        recorded.saturating_sub(self.oldest.load(Ordering::Relaxed)) as usize
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

    /// The projector records a range and counts it; the publisher may see the range in
    /// the store and acknowledge it before it is counted. The backlog must not keep it
    /// (a counter added to after the acknowledgement's clamped subtraction did: a soak
    /// showed 446 payouts "waiting" for ever with the stream holding every one).
    #[test]
    fn a_range_acknowledged_before_it_was_counted_leaves_no_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let log = ledger_log::Log::open(dir.path()).unwrap();
        let store = log.outbox().unwrap();
        let outbox = Outbox::new(store.clone(), "incentive.payouts", "ledger").unwrap();
        outbox.record(0, 10, 1).unwrap();
        // The projector's next range: in the store, not yet counted...
        store.record(10, 7, 2).unwrap();
        // ...when the publisher acknowledges everything the store holds.
        outbox.acknowledge_below(17).unwrap();
        outbox.counted(17);
        assert_eq!(store.pending().unwrap(), 0);
        assert_eq!(outbox.backlog(), 0, "the count agrees with the store");
        outbox.record(17, 5, 3).unwrap();
        assert_eq!(outbox.backlog(), 5);
        // And the other way round: acknowledged after it was counted.
        outbox.acknowledge_below(20).unwrap();
        assert_eq!(outbox.backlog(), 2);
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
