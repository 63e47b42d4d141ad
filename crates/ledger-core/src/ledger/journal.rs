//! Statement journals: per entry, what every event that touched it left behind, with
//! their compact checkpoint encoding (causes written once, amounts in binary).

use super::*;

/// Journal lines held per chunk: a busy entry's journal grows without re-allocating and
/// copying every line it already holds.
pub(super) const JOURNAL_CHUNK: usize = 128;

/// One entry's journal lines, in log order, in chunks of at most [`JOURNAL_CHUNK`]: the
/// lines since the last [`Ledger::drain_journal`] (all of them, if it is never called).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct EntryJournal {
    pub(super) chunks: Vec<Vec<JournalLine>>,
    /// Lines taken by [`Ledger::drain_journal`]: the number of the first line held.
    pub(super) drained: u64,
}

/// One journal line taken out of the ledger, with its entry and its number in that
/// entry's journal (from 0, in log order).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainedLine {
    pub partner_id: Text,
    pub program_id: Text,
    /// The period's label.
    pub period: Text,
    pub number: u64,
    pub line: JournalLine,
}

impl Ledger {
    /// Takes the journal lines written since the last call (none without a journal),
    /// for a caller that keeps them elsewhere; statements then hold only the lines
    /// written since. O(lines taken): only the entries written to are visited.
    pub fn drain_journal(&mut self) -> Vec<DrainedLine> {
        let Some(journal) = self.journal.as_mut() else {
            return Vec::new();
        };
        // Each entry's lines, taken once, then handed out in the order written.
        let mut taken: HashMap<EntryKey, (std::vec::IntoIter<JournalLine>, [Text; 3])> =
            HashMap::default();
        let mut out = Vec::with_capacity(self.journal_pending.len());
        for key in self.journal_pending.drain(..) {
            let Some(j) = journal.get_mut(&key) else {
                unreachable!("a pending journal line's entry has a journal");
            };
            let (lines, ids) = match taken.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let Some(program) = self.programs.get(&key.program) else {
                        unreachable!("a journal's entry is of a known program");
                    };
                    let ids = [
                        Text::from(self.syms.name(key.partner)),
                        Text::from(self.syms.name(key.program)),
                        program.period_kind().label(key.period),
                    ];
                    let lines: Vec<JournalLine> = std::mem::take(&mut j.chunks)
                        .into_iter()
                        .flatten()
                        .collect();
                    v.insert((lines.into_iter(), ids))
                }
            };
            let Some(line) = lines.next() else {
                unreachable!("an entry holds a line for each time it is pending");
            };
            out.push(DrainedLine {
                partner_id: ids[0].clone(),
                program_id: ids[1].clone(),
                period: ids[2].clone(),
                number: j.drained,
                line,
            });
            j.drained += 1;
        }
        debug_assert!(taken.values_mut().all(|(lines, _)| lines.next().is_none()));
        out
    }
}

impl EntryJournal {
    pub(super) fn push(&mut self, line: JournalLine) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < JOURNAL_CHUNK => chunk.push(line),
            _ => {
                // Most entries see few events: the first chunk starts small (and grows
                // up to a chunk as a plain vector would).
                let capacity = if self.chunks.is_empty() {
                    4
                } else {
                    JOURNAL_CHUNK
                };
                let mut chunk = Vec::with_capacity(capacity);
                chunk.push(line);
                self.chunks.push(chunk);
            }
        }
    }

    pub(super) fn lines(&self) -> impl Iterator<Item = &JournalLine> {
        self.chunks.iter().flatten()
    }
}

/// The event behind journal lines, shared by every line it left (one allocation per
/// event, not four strings per line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cause {
    pub source: Text,
    pub id: Text,
    pub event_type: crate::event::EventType,
    pub time: Text,
}

/// One line of an entry's statement: the event that touched it and the entry after it.
/// Checkpoints hold millions of these: their amounts are encoded in binary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JournalLine {
    #[serde(with = "journal_causes::cause")]
    pub cause: Arc<Cause>,
    #[serde(with = "crate::values::bin_decimal")]
    pub basis: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub adjustments: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub earned: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub paid: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub reserved: Decimal,
    /// The payout the event issued for this entry, if any.
    #[serde(with = "journal_payout")]
    pub payout: Option<(uuid::Uuid, Decimal, PayoutReason)>,
}

/// Journals in checkpoints: the lines an event left share one [`Cause`], and so do they
/// in a checkpoint — a cause is written in full where it first comes up, and as its
/// number after that; reading gives the lines of one cause one shared `Arc` again.
/// (Written per line, causes had been most of a checkpoint's size, and a restored
/// journal held a copy of its cause per line.) The numbering lives for one journal's
/// encoding or decoding, on this thread.
pub(super) mod journal_causes {
    use super::{Cause, EntryJournal, EntryKey, HashMap};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::cell::RefCell;
    use std::sync::Arc;

    enum Table {
        Writing(std::collections::HashMap<*const Cause, u32>),
        Reading(Vec<Arc<Cause>>),
    }

    thread_local! {
        static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
    }

    /// Installs a table for the duration of one journal's encoding or decoding.
    struct Scope(Option<Table>);

    impl Scope {
        fn enter(table: Table) -> Scope {
            Scope(TABLE.with(|t| t.borrow_mut().replace(table)))
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            let outer = self.0.take();
            TABLE.with(|t| *t.borrow_mut() = outer);
        }
    }

    type Journal = Option<HashMap<EntryKey, EntryJournal>>;

    pub fn serialize<S: Serializer>(value: &Journal, serializer: S) -> Result<S::Ok, S::Error> {
        let _scope = Scope::enter(Table::Writing(Default::default()));
        value.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Journal, D::Error> {
        let _scope = Scope::enter(Table::Reading(Vec::new()));
        Journal::deserialize(deserializer)
    }

    #[derive(Serialize)]
    enum Written<'a> {
        Full(&'a Cause),
        Seen(u32),
    }

    #[derive(Deserialize)]
    enum Read {
        Full(Cause),
        Seen(u32),
    }

    /// `with` for [`super::JournalLine::cause`].
    pub mod cause {
        use super::*;

        pub fn serialize<S: Serializer>(
            value: &Arc<Cause>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let written = TABLE.with(|t| match t.borrow_mut().as_mut() {
                Some(Table::Writing(seen)) => {
                    let next = seen.len() as u32;
                    match seen.entry(Arc::as_ptr(value)) {
                        std::collections::hash_map::Entry::Occupied(n) => Written::Seen(*n.get()),
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(next);
                            Written::Full(value)
                        }
                    }
                }
                // A line encoded on its own: its cause in full.
                _ => Written::Full(value),
            });
            written.serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Arc<Cause>, D::Error> {
            let read = Read::deserialize(deserializer)?;
            TABLE.with(|t| {
                let mut table = t.borrow_mut();
                let causes = match table.as_mut() {
                    Some(Table::Reading(causes)) => Some(causes),
                    _ => None,
                };
                match (read, causes) {
                    (Read::Full(cause), causes) => {
                        let cause = Arc::new(cause);
                        if let Some(causes) = causes {
                            causes.push(cause.clone());
                        }
                        Ok(cause)
                    }
                    (Read::Seen(n), causes) => causes
                        .and_then(|c| c.get(n as usize).cloned())
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!(
                                "journal line refers to cause {n}, which precedes it nowhere"
                            ))
                        }),
                }
            })
        }
    }
}

/// [`JournalLine::payout`] with its amount in the checkpoint form of every other
/// amount (`bin_decimal`).
pub(super) mod journal_payout {
    use super::PayoutReason;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Held = Option<(uuid::Uuid, Decimal, PayoutReason)>;

    #[derive(Serialize, Deserialize)]
    struct Paid(
        uuid::Uuid,
        #[serde(with = "crate::values::bin_decimal")] Decimal,
        PayoutReason,
    );

    pub fn serialize<S: Serializer>(value: &Held, serializer: S) -> Result<S::Ok, S::Error> {
        value
            .map(|(id, amount, reason)| Paid(id, amount, reason))
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Held, D::Error> {
        let held = Option::<Paid>::deserialize(deserializer)?;
        Ok(held.map(|Paid(id, amount, reason)| (id, amount, reason)))
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    fn line(n: u64, cause: &Arc<Cause>) -> JournalLine {
        JournalLine {
            cause: cause.clone(),
            basis: Decimal::from(n),
            adjustments: Decimal::ZERO,
            earned: Decimal::ZERO,
            paid: Decimal::ZERO,
            reserved: Decimal::ZERO,
            payout: None,
        }
    }

    #[test]
    fn a_journal_keeps_every_line_in_order_across_chunks() {
        let cause = Arc::new(Cause {
            source: "erp".into(),
            id: "e1".into(),
            event_type: crate::event::EventType::SaleRecorded,
            time: "2026-01-01T00:00:00Z".into(),
        });
        let mut journal = EntryJournal::default();
        let n = 3 * JOURNAL_CHUNK as u64 + 5;
        for i in 0..n {
            journal.push(line(i, &cause));
        }
        let bases: Vec<Decimal> = journal.lines().map(|l| l.basis).collect();
        assert_eq!(bases, (0..n).map(Decimal::from).collect::<Vec<_>>());
        assert_eq!(journal.chunks.len(), 4, "three full chunks, then the rest");
        assert!(journal.chunks.iter().all(|c| c.len() <= JOURNAL_CHUNK));
        assert!(
            journal.chunks[1].capacity() == JOURNAL_CHUNK,
            "later chunks never grow"
        );
        // Lines of one event share its cause.
        assert_eq!(Arc::strong_count(&cause), n as usize + 1);
    }

    /// Every (line, cause) of every journal, by entry, in order.
    fn journal_lines(ledger: &Ledger) -> Vec<(EntryKey, Vec<JournalLine>)> {
        let mut all: Vec<_> = ledger
            .journal
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, j)| (*k, j.lines().cloned().collect::<Vec<_>>()))
            .collect();
        all.sort_by_key(|(k, _)| (k.partner.0, k.program.0, k.period));
        all
    }

    #[test]
    fn a_checkpointed_journal_shares_each_cause_again_and_writes_it_once() {
        let mut ledger = Ledger::new();
        ledger.enable_journal();
        let mut payouts = Vec::new();
        for line in crate::gen::Generator::new(crate::gen::GenConfig::new(9, 3000)) {
            if let Ok(accepted) = crate::intake::check(line.as_bytes()) {
                ledger.apply_into(&accepted.event, &mut payouts);
            }
        }
        let before = journal_lines(&ledger);
        let lines: usize = before.iter().map(|(_, l)| l.len()).sum();
        let mut causes = std::collections::HashSet::new();
        for (_, l) in &before {
            causes.extend(l.iter().map(|line| Arc::as_ptr(&line.cause)));
        }
        assert!(
            lines > 2 * causes.len(),
            "{lines} lines, {} causes",
            causes.len()
        );

        let bytes = postcard::to_allocvec(&ledger).unwrap();
        let back: Ledger = postcard::from_bytes(&bytes).unwrap();
        let after = journal_lines(&back);
        assert_eq!(after, before);
        // One `Arc` per cause again, shared by all its lines.
        let mut restored = std::collections::HashSet::new();
        for (_, l) in &after {
            restored.extend(l.iter().map(|line| Arc::as_ptr(&line.cause)));
        }
        assert_eq!(restored.len(), causes.len());

        // Each cause is written once: the encoding is smaller than with every line's
        // cause in full, by about the size of the causes it did not repeat.
        let full: usize = before
            .iter()
            .flat_map(|(_, l)| l)
            .map(|line| postcard::to_allocvec(&line).unwrap().len())
            .sum();
        let lines_alone: usize = bytes.len();
        assert!(
            lines_alone < full,
            "checkpoint {lines_alone} bytes, the lines with full causes alone {full}"
        );
    }

    #[test]
    fn a_line_referring_to_an_unknown_cause_is_refused() {
        // A line outside a journal encodes its cause in full and reads back alone.
        let cause = Arc::new(Cause {
            source: "erp".into(),
            id: "e1".into(),
            event_type: crate::event::EventType::SaleRecorded,
            time: "2026-01-01T00:00:00Z".into(),
        });
        let bytes = postcard::to_allocvec(&line(1, &cause)).unwrap();
        let back: JournalLine = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, line(1, &cause));
        // A reference (variant 1, cause 0) with no cause before it.
        let mut bad = bytes.clone();
        let mut reference = postcard::to_allocvec(&(1u32, 0u32)).unwrap();
        let full_cause = postcard::to_allocvec(&*cause).unwrap();
        reference.extend_from_slice(&bad[1 + full_cause.len()..]);
        bad = reference;
        let err = postcard::from_bytes::<JournalLine>(&bad);
        assert!(err.is_err());
    }
}
