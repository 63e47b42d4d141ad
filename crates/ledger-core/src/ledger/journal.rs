//! Statement journals: per entry, what every event that touched it left behind, with
//! their compact checkpoint encoding (causes written once, amounts in binary).

use super::*;

/// The statement journal: every line written, numbered per entry, waiting in write
/// order until [`Ledger::drain_journal`] takes it (all of them, if it is never called).
/// One flat list rather than a list per entry: a caller that drains every few events
/// (the service, its rebuild) hands the lines on in the order they came without
/// gathering them, and a statement of the lines still held filters a short list.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Journal {
    /// Per entry, the lines ever written to it: the next line's number.
    pub(super) written: HashMap<EntryKey, u64>,
    pub(super) pending: Vec<PendingLine>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct PendingLine {
    pub(super) key: EntryKey,
    pub(super) number: u64,
    pub(super) line: JournalLine,
}

/// One journal line taken out of the ledger: its entry (an index into
/// [`crate::replay::Drained::entries`]) and its number in that entry's journal (from 0,
/// in log order).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainedLine {
    pub entry: u32,
    pub number: u64,
    pub line: JournalLine,
}

/// An entry as drained journal lines name it: (partner id, program id, period label).
pub type EntryIds = (Text, Text, Text);

impl Journal {
    pub(super) fn push(&mut self, key: EntryKey, line: JournalLine) {
        let written = self.written.entry(key).or_default();
        self.pending.push(PendingLine {
            key,
            number: *written,
            line,
        });
        *written += 1;
    }

    /// The lines of `key` still held, and the number of the first of them (the number
    /// of lines written so far when none is held).
    pub(super) fn lines_of(&self, key: EntryKey) -> (Vec<JournalLine>, u64) {
        let mut first = None;
        let lines = self
            .pending
            .iter()
            .filter(|p| p.key == key)
            .inspect(|p| {
                first.get_or_insert(p.number);
            })
            .map(|p| p.line.clone())
            .collect();
        let written = self.written.get(&key).copied().unwrap_or(0);
        (lines, first.unwrap_or(written))
    }
}

impl Ledger {
    /// Takes the journal lines written since the last call (none without a journal),
    /// in the order written, with the entries they are of (each once); statements then
    /// hold only the lines written since. O(lines taken).
    pub fn drain_journal(&mut self) -> (Vec<EntryIds>, Vec<DrainedLine>) {
        let Ledger {
            journal,
            programs,
            syms,
            ..
        } = self;
        let Some(journal) = journal.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        let mut numbered: HashMap<EntryKey, u32> = HashMap::default();
        let mut entries = Vec::new();
        let mut lines = Vec::with_capacity(journal.pending.len());
        // Drained in place: the list keeps its capacity for the next lines.
        for p in journal.pending.drain(..) {
            let entry = match numbered.entry(p.key) {
                std::collections::hash_map::Entry::Occupied(o) => *o.get(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let Some(program) = programs.get(&p.key.program) else {
                        unreachable!("a journal's entry is of a known program");
                    };
                    entries.push((
                        Text::from(syms.name(p.key.partner)),
                        Text::from(syms.name(p.key.program)),
                        program.period_kind().label(p.key.period),
                    ));
                    let n = u32::try_from(entries.len() - 1);
                    *v.insert(n.expect("a drain's entries are numbered in u32"))
                }
            };
            lines.push(DrainedLine {
                entry,
                number: p.number,
                line: p.line,
            });
        }
        (entries, lines)
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
    use super::{Cause, Journal as Lines};
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

    type Journal = Option<Lines>;

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

    /// Every (line, cause) of every journal, by entry, in order.
    fn journal_lines(ledger: &Ledger) -> Vec<(EntryKey, Vec<JournalLine>)> {
        let journal = ledger.journal.as_ref().unwrap();
        let mut all: Vec<_> = journal
            .written
            .keys()
            .map(|k| (*k, journal.lines_of(*k).0))
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
