//! Replay: intake, identity, fold and bookkeeping over a stream of inputs, producing
//! the replay document (SPEC §7).
//!
//! [`Replay::push`] is the whole pipeline for one raw input (an NDJSON line or a
//! message) with an in-memory identity index — what `replay --events` runs. Callers that
//! keep their own log and identity index (the durable log) feed already-decided inputs
//! through [`Replay::apply_logged`], [`Replay::record_duplicate`] and
//! [`Replay::record_quarantined`], and get the same document.

use crate::document::{digest, BalanceRow, ClaimRow, Counts, Document, PayoutRow, RejectedRow};
use crate::event::{Event, EventType};
use crate::intake::{self, Accepted, IntakeRefusal};
use crate::ledger::{DrainedLine, Ledger, Payout};
use crate::refusal::Code;
use crate::store::{held_in_memory, Backing, Flush, Space, StoreError};

/// A refusal as the document and the `rejected` listing show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub code: Code,
    pub message: String,
    /// `(source, id)` where known (SPEC §7).
    pub identity: Option<(String, String)>,
    /// The input's line number (or arrival number) — used when there is no identity.
    pub line: u64,
}

/// A refusal as finance lists it: stage, code, message, line, and source and id where
/// it has them (`rejected --json`'s fields).
impl crate::document::CsvRow for Rejection {
    const HEADER: &'static [&'static str] = &["stage", "code", "message", "line", "source", "id"];
    fn fields(&self) -> Vec<String> {
        let (source, id) = self
            .identity
            .as_ref()
            .map_or((String::new(), String::new()), |(s, i)| {
                (s.clone(), i.clone())
            });
        vec![
            self.stage().to_string(),
            self.code.as_str().to_string(),
            self.message.clone(),
            self.line.to_string(),
            source,
            id,
        ]
    }
}

impl Rejection {
    /// `quarantine` for refusals at intake, `business` for refusals by the fold.
    pub fn stage(&self) -> &'static str {
        if self.code.is_intake() {
            "quarantine"
        } else {
            "business"
        }
    }

    /// Who sent the refused input, as listings show it: `source/id`, or `-` when the
    /// input had no readable identity.
    pub fn who(&self) -> String {
        match &self.identity {
            Some((source, id)) => format!("{source}/{id}"),
            None => "-".to_string(),
        }
    }

    /// The refusal with its message, as the listings show it: stage, code, message,
    /// line (or arrival number), and source and id when known.
    pub fn to_json(&self) -> serde_json::Value {
        let mut row = serde_json::json!({
            "stage": self.stage(),
            "code": self.code.as_str(),
            "message": self.message,
            "line": self.line,
        });
        if let Some((source, id)) = &self.identity {
            row["source"] = source.as_str().into();
            row["id"] = id.as_str().into();
        }
        row
    }

    pub fn row(&self) -> RejectedRow {
        match &self.identity {
            Some((source, id)) => RejectedRow {
                source: Some(source.clone()),
                id: Some(id.clone()),
                line: None,
                code: self.code.as_str().to_string(),
            },
            None => RejectedRow {
                source: None,
                id: None,
                line: Some(self.line),
                code: self.code.as_str().to_string(),
            },
        }
    }
}

/// What became of one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Logged and applied; the payouts it caused are `payouts()[range]`.
    Applied(std::ops::Range<usize>),
    /// An exact duplicate of a logged event: counted, otherwise ignored.
    Duplicate,
    /// Refused at intake (quarantined) or by the fold (logged, changed nothing); the
    /// refusal is `rejections()[index]`.
    Rejected(usize),
}

/// What the identity check of SPEC §1 decides for an input that passed checks 1–5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    New,
    ExactDuplicate,
    Conflict,
}

/// `(source, id)` identity key → content digest.
pub(crate) type IdentityMap =
    std::collections::HashMap<[u8; 16], [u8; 32], foldhash::fast::FixedState>;

/// The `(source, id) → content digest` index of the logged events, for replays that
/// decide identities themselves. Held in memory, or — with a backing store attached —
/// in the tiers of [`crate::store`]: the identities added since the last
/// [`Replay::take_recent`] in memory, the others in the store.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct IdentityIndex {
    seen: IdentityMap,
    #[serde(skip)]
    flushing: Option<std::sync::Arc<IdentityMap>>,
    #[serde(skip)]
    backing: Option<std::sync::Arc<dyn Backing>>,
}

impl std::fmt::Debug for IdentityIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityIndex")
            .field("seen", &self.seen.len())
            .field("flushing", &self.flushing.as_ref().map(|m| m.len()))
            .field("backing", &self.backing.is_some())
            .finish()
    }
}

/// The key of an event's `(source, id)`: the one the durable log stores.
fn identity_key(event: &Event) -> [u8; 16] {
    crate::ids::identity_key(&event.source, &event.id)
}

impl IdentityIndex {
    /// The identity check of an index held in memory (no backing store).
    pub fn check(&self, event: &Event, content_digest: &[u8; 32]) -> Identity {
        held_in_memory(self.try_check(event, content_digest))
    }

    /// The identity check, reading the backing store if one is attached.
    pub fn try_check(
        &self,
        event: &Event,
        content_digest: &[u8; 32],
    ) -> Result<Identity, StoreError> {
        let key = identity_key(event);
        let held = self
            .seen
            .get(&key)
            .or_else(|| self.flushing.as_deref().and_then(|m| m.get(&key)))
            .copied();
        let digest = match (held, &self.backing) {
            (Some(d), _) => Some(d),
            (None, None) => None,
            (None, Some(backing)) => match backing.get(&Space::Identity.key(&key))? {
                None => None,
                Some(bytes) => Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    StoreError::msg(format!(
                        "a stored identity holds {} bytes, not a 32-byte digest",
                        bytes.len()
                    ))
                })?),
            },
        };
        Ok(match digest {
            None => Identity::New,
            Some(d) if &d == content_digest => Identity::ExactDuplicate,
            Some(_) => Identity::Conflict,
        })
    }

    pub fn insert(&mut self, event: &Event, content_digest: [u8; 32]) {
        self.seen.insert(identity_key(event), content_digest);
    }

    /// Identities held in memory.
    pub fn len(&self) -> usize {
        self.seen.len() + self.flushing.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The message of a `duplicate_conflict` refusal.
pub fn conflict_message(event: &Event) -> String {
    format!(
        "an event with source {:?} and id {:?} is already in the log with different content; \
         send a new id for a new event, or the identical content for a retry",
        event.source, event.id
    )
}

/// The state of a replay: the fold plus the document's counts, payouts and refusals.
///
/// Payouts and refusals are history: a replay keeps them all (what tests and small
/// logs want) until a caller that keeps history elsewhere takes them with
/// [`Replay::drain_history`]; from then on [`Replay::payouts`] and
/// [`Replay::rejections`] hold only what came since.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Replay {
    ledger: Ledger,
    identities: IdentityIndex,
    counts: Counts,
    payouts: Vec<Payout>,
    rejected: Vec<Rejection>,
    /// Payouts and refusals taken by [`Replay::drain_history`] so far.
    payouts_drained: u64,
    rejected_drained: u64,
    /// Per event type (None: the type could not be read): applied, refused, duplicates.
    by_type: std::collections::BTreeMap<Option<EventType>, [u64; 3]>,
    /// Refusals per code, drained or not.
    by_code: std::collections::BTreeMap<Code, u64>,
    /// Business refusals per program (of events that name one) and code.
    by_program: std::collections::BTreeMap<(crate::Text, Code), u64>,
}

/// History taken out of a [`Replay`]: payouts and refusals in the order they happened,
/// numbered from `first_payout` and `first_rejection` in the replay's whole history,
/// and the statement journal lines written meanwhile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drained {
    pub first_payout: u64,
    pub payouts: Vec<Payout>,
    pub first_rejection: u64,
    pub rejections: Vec<Rejection>,
    /// The entries the journal lines are of, each once.
    pub entries: Vec<crate::ledger::EntryIds>,
    pub journal: Vec<DrainedLine>,
}

impl Drained {
    pub fn is_empty(&self) -> bool {
        self.payouts.is_empty() && self.rejections.is_empty() && self.journal.is_empty()
    }

    /// Appends `later`, drained after this.
    pub fn extend(&mut self, later: Drained) {
        if self.is_empty() {
            *self = later;
            return;
        }
        assert_eq!(
            (
                self.first_payout + self.payouts.len() as u64,
                self.first_rejection + self.rejections.len() as u64
            ),
            (later.first_payout, later.first_rejection),
            "drained history is appended in order"
        );
        self.payouts.extend(later.payouts);
        self.rejections.extend(later.rejections);
        // `later`'s entries, numbered on from this one's (each entry still once).
        let mut numbered: std::collections::HashMap<crate::ledger::EntryIds, u32> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.clone(), i as u32))
            .collect();
        let renumber: Vec<u32> = later
            .entries
            .into_iter()
            .map(|e| {
                let next = self.entries.len() as u32;
                *numbered.entry(e.clone()).or_insert_with(|| {
                    self.entries.push(e);
                    next
                })
            })
            .collect();
        self.journal.extend(later.journal.into_iter().map(|mut l| {
            l.entry = renumber[l.entry as usize];
            l
        }));
    }
}

impl Replay {
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Runs one raw input through intake, the identity check and the fold. `line` is its
    /// 1-based line (or arrival) number, shown for refusals without an identity. For a
    /// replay without a backing store, whose lookups cannot fail.
    pub fn push(&mut self, raw: &[u8], line: u64) -> Step {
        assert!(
            !self.has_backing(),
            "a replay with a backing store pushes with try_push"
        );
        held_in_memory(self.try_push(raw, line))
    }

    /// [`Replay::push`] for a replay whose lookups may fail (a backing store): on an
    /// error the input changed nothing, and can be pushed again.
    pub fn try_push(&mut self, raw: &[u8], line: u64) -> Result<Step, StoreError> {
        Ok(match intake::check(raw) {
            Err(refusal) => self.record_quarantined(refusal, line),
            Ok(Accepted {
                event,
                content_digest,
            }) => match self.identities.try_check(&event, &content_digest)? {
                Identity::ExactDuplicate => self.record_duplicate(Some(event.event_type())),
                Identity::Conflict => {
                    let refusal = IntakeRefusal {
                        code: Code::DuplicateConflict,
                        message: conflict_message(&event),
                        identity: Some((event.source.to_string(), event.id.to_string())),
                        event_type: Some(event.event_type()),
                    };
                    self.record_quarantined(refusal, line)
                }
                Identity::New => {
                    // The fold first: if a lookup fails, the identity stays unrecorded.
                    let step = self.try_apply_logged(&event, line)?;
                    self.identities.insert(&event, content_digest);
                    step
                }
            },
        })
    }

    /// Counts an input refused before the log.
    pub fn record_quarantined(&mut self, refusal: IntakeRefusal, line: u64) -> Step {
        self.counts.received += 1;
        self.counts.rejected += 1;
        self.by_type.entry(refusal.event_type).or_default()[1] += 1;
        *self.by_code.entry(refusal.code).or_default() += 1;
        self.rejected.push(Rejection {
            code: refusal.code,
            message: refusal.message,
            identity: refusal.identity,
            line,
        });
        Step::Rejected(self.rejected.len() - 1)
    }

    /// Counts an exact duplicate (of an event of this type, when known).
    pub fn record_duplicate(&mut self, event_type: Option<EventType>) -> Step {
        self.counts.received += 1;
        self.counts.duplicates += 1;
        self.by_type.entry(event_type).or_default()[2] += 1;
        Step::Duplicate
    }

    /// Folds an event that is in the log (for a replay without a backing store).
    pub fn apply_logged(&mut self, event: &Event, line: u64) -> Step {
        held_in_memory(self.try_apply_logged(event, line))
    }

    /// [`Replay::apply_logged`] for a replay whose lookups may fail: on an error the
    /// event changed nothing and is not counted.
    pub fn try_apply_logged(&mut self, event: &Event, line: u64) -> Result<Step, StoreError> {
        let first = self.payouts.len();
        // Before the fold: a refused event changes nothing, so this is what it was about.
        let program = self.ledger.program_of(event).map(crate::Text::from);
        let refusal = self.ledger.try_apply_into(event, &mut self.payouts)?;
        self.counts.received += 1;
        let slot = self.by_type.entry(Some(event.event_type())).or_default();
        slot[usize::from(refusal.is_some())] += 1;
        Ok(match refusal {
            Some(r) => {
                self.counts.rejected += 1;
                *self.by_code.entry(r.code).or_default() += 1;
                if let Some(program) = program {
                    *self.by_program.entry((program, r.code)).or_default() += 1;
                }
                self.rejected.push(Rejection {
                    code: r.code,
                    message: r.message,
                    identity: Some((event.source.to_string(), event.id.to_string())),
                    line,
                });
                Step::Rejected(self.rejected.len() - 1)
            }
            None => {
                self.counts.applied += 1;
                Step::Applied(first..self.payouts.len())
            }
        })
    }

    /// Takes the payouts, refusals and journal lines recorded since the last call, for
    /// a caller that keeps history outside this replay.
    pub fn drain_history(&mut self) -> Drained {
        let (entries, journal) = self.ledger.drain_journal();
        let drained = Drained {
            first_payout: self.payouts_drained,
            payouts: std::mem::take(&mut self.payouts),
            first_rejection: self.rejected_drained,
            rejections: std::mem::take(&mut self.rejected),
            entries,
            journal,
        };
        self.payouts_drained += drained.payouts.len() as u64;
        self.rejected_drained += drained.rejections.len() as u64;
        drained
    }

    /// Gives a drained replay its history back, read from where it was kept (the
    /// payouts and refusals drained so far, in order), so that it holds all of it
    /// again; its statement journals, which that history does not restore, are
    /// dropped.
    pub fn restore_history(&mut self, mut payouts: Vec<Payout>, mut rejections: Vec<Rejection>) {
        assert_eq!(
            (payouts.len() as u64, rejections.len() as u64),
            (self.payouts_drained, self.rejected_drained),
            "the history restored is the history drained"
        );
        payouts.append(&mut self.payouts);
        rejections.append(&mut self.rejected);
        self.payouts = payouts;
        self.rejected = rejections;
        self.payouts_drained = 0;
        self.rejected_drained = 0;
        self.ledger.disable_journal();
    }

    /// Payouts issued so far, drained or not.
    pub fn payouts_issued(&self) -> u64 {
        self.payouts_drained + self.payouts.len() as u64
    }

    /// Refusals recorded so far, drained or not.
    pub fn rejections_recorded(&self) -> u64 {
        self.rejected_drained + self.rejected.len() as u64
    }

    /// Business refusals of events about `program_id`, per code.
    pub fn refused_in_program(&self, program_id: &str) -> Vec<(Code, u64)> {
        self.by_program
            .iter()
            .filter(|((p, _), _)| p == program_id)
            .map(|((_, code), n)| (*code, *n))
            .collect()
    }

    /// Refusals per code so far, drained or not.
    pub fn refused_by_code(&self) -> &std::collections::BTreeMap<Code, u64> {
        &self.by_code
    }

    /// Whether all of the history is still held here (nothing was drained).
    pub fn holds_all_history(&self) -> bool {
        self.payouts_drained == 0 && self.rejected_drained == 0
    }

    /// Reads lookups (sale records, used business ids, identities) below the ones held
    /// in memory from `backing` from now on.
    pub fn attach_backing(&mut self, backing: std::sync::Arc<dyn Backing>) {
        self.ledger.attach_backing(backing.clone());
        self.identities.backing = Some(backing);
    }

    pub fn has_backing(&self) -> bool {
        self.ledger.has_backing()
    }

    /// Moves the lookups held in memory out, to be written to the backing store; until
    /// [`Replay::flushed`] (or [`Replay::unflush`]) they are read where they are.
    pub fn take_recent(&mut self) -> Flush {
        let mut flush = self.ledger.take_recent();
        assert!(
            self.identities.flushing.is_none(),
            "one set of lookups is written at a time"
        );
        let identities = std::sync::Arc::new(std::mem::take(&mut self.identities.seen));
        self.identities.flushing = Some(identities.clone());
        flush.identities = Some(identities);
        flush
    }

    /// The backing store now holds what [`Replay::take_recent`] moved out.
    pub fn flushed(&mut self) {
        self.ledger.flushed();
        self.identities.flushing = None;
    }

    /// Writing what [`Replay::take_recent`] moved out failed: it is held in memory
    /// again, for the next write.
    pub fn unflush(&mut self) {
        self.ledger.unflush();
        if let Some(older) = self.identities.flushing.take() {
            for (key, digest) in older.iter() {
                self.identities.seen.entry(*key).or_insert(*digest);
            }
        }
    }

    /// Lookups held in memory: what [`Replay::take_recent`] would move out.
    pub fn lookups_in_memory(&self) -> usize {
        self.ledger.lookups_in_memory() + self.identities.len()
    }

    /// Rebuilds what the fold derives and does not store (after a checkpoint load).
    pub fn restore_derived(&mut self) {
        self.ledger.restore_derived();
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Keeps per-entry journals from now on (for statements).
    /// A digest of this replay's final state: its balances and claims hashed row by row
    /// (no copy of them), its payouts to follow ([`PayoutDigest`]).
    pub fn state_digest(&self) -> crate::document::PayoutDigest {
        let mut digest = crate::document::PayoutDigest::new();
        for b in self.ledger.balances_iter() {
            digest.balance(&crate::document::BalanceRow::from(&b));
        }
        for c in self.ledger.claims_iter() {
            digest.claim(&crate::document::ClaimRow::from(&c));
        }
        digest
    }

    /// Keeps no statement journals from now on (a fold that explains nothing).
    pub fn disable_journal(&mut self) {
        self.ledger.disable_journal();
    }

    pub fn enable_journal(&mut self) {
        self.ledger.enable_journal();
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Applied, refused and duplicate inputs per event type (`None`: type unreadable).
    pub fn counts_by_type(&self) -> &std::collections::BTreeMap<Option<EventType>, [u64; 3]> {
        &self.by_type
    }

    pub fn payouts(&self) -> &[Payout] {
        &self.payouts
    }

    pub fn rejections(&self) -> &[Rejection] {
        &self.rejected
    }

    /// What [`Replay::document`]'s digest covers, copied out, so that a caller holding
    /// this replay under a lock can hash it after letting go (hashing costs far more
    /// than copying); [`DigestRows::digest`] hashes it without building the document.
    pub fn digest_rows(&self) -> DigestRows {
        assert!(
            self.holds_all_history(),
            "the digest of a drained replay is its history's"
        );
        DigestRows {
            balances: self
                .ledger
                .balances()
                .iter()
                .map(BalanceRow::from)
                .collect(),
            claims: self.ledger.claims().iter().map(ClaimRow::from).collect(),
            payouts: self.payouts.clone(),
        }
    }

    /// The working state as values — balances, claims, counts, and how much history
    /// was recorded — comparable whether or not the history was drained (what `verify`
    /// compares a checkpoint by).
    pub fn working_state(&self) -> WorkingState {
        WorkingState {
            counts: self.counts,
            by_type: self.by_type.clone(),
            by_code: self.by_code.clone(),
            balances: self.ledger.balances().iter().map(Into::into).collect(),
            claims: self.ledger.claims().iter().map(Into::into).collect(),
            payouts_issued: self.payouts_issued(),
            rejections_recorded: self.rejections_recorded(),
        }
    }

    /// The replay document of the state so far.
    pub fn document(&self) -> Document {
        assert!(
            self.holds_all_history(),
            "the document of a drained replay is its history's"
        );
        let balances: Vec<BalanceRow> = self.ledger.balances().iter().map(Into::into).collect();
        let claims: Vec<ClaimRow> = self.ledger.claims().iter().map(Into::into).collect();
        let payouts: Vec<PayoutRow> = self.payouts.iter().map(Into::into).collect();
        let digest = digest(&balances, &claims, &payouts);
        Document {
            events: self.counts,
            balances,
            claims,
            payouts,
            rejected: self.rejected.iter().map(Rejection::row).collect(),
            digest,
        }
    }
}

/// [`Replay::working_state`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingState {
    pub counts: Counts,
    pub by_type: std::collections::BTreeMap<Option<EventType>, [u64; 3]>,
    pub by_code: std::collections::BTreeMap<Code, u64>,
    pub balances: Vec<BalanceRow>,
    pub claims: Vec<ClaimRow>,
    pub payouts_issued: u64,
    pub rejections_recorded: u64,
}

/// The rows of a replay's digest, owned ([`Replay::digest_rows`]).
#[derive(Debug, Clone)]
pub struct DigestRows {
    balances: Vec<BalanceRow>,
    claims: Vec<ClaimRow>,
    payouts: Vec<Payout>,
}

impl DigestRows {
    /// The digest of the replay they were taken from.
    pub fn digest(&self) -> String {
        crate::document::digest_rows(
            self.balances.iter(),
            self.claims.iter(),
            self.payouts.iter().map(PayoutRow::from),
        )
    }
}

/// Splits NDJSON into inputs: each physical line without its `\n` or `\r\n`, numbered
/// from `first_line`; lines holding only spaces, tabs and carriage returns are skipped
/// (SPEC §1) but keep their number.
pub fn ndjson_lines(bytes: &[u8], first_line: u64) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = if bytes.is_empty() { None } else { Some(bytes) };
    let mut number = first_line;
    std::iter::from_fn(move || loop {
        let chunk = rest?;
        let (line, next) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(&chunk[i + 1..]).filter(|r| !r.is_empty())),
            None => (chunk, None),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let this = number;
        number += 1;
        if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            return Some((this, line));
        }
    })
}

/// Number of physical lines in an NDJSON text (so that files given together number on).
pub fn physical_lines(bytes: &[u8]) -> u64 {
    if bytes.is_empty() {
        return 0;
    }
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    if bytes.last() == Some(&b'\n') {
        newlines
    } else {
        newlines + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_splitting() {
        let text = b"a\r\n\n  \t\r\nb\nc";
        let lines: Vec<(u64, &[u8])> = ndjson_lines(text, 1).collect();
        assert_eq!(lines, vec![(1, &b"a"[..]), (4, &b"b"[..]), (5, &b"c"[..])]);
        assert_eq!(physical_lines(text), 5);
        assert_eq!(physical_lines(b"a\nb\n"), 2);
        assert_eq!(ndjson_lines(b"", 1).count(), 0);
        let numbered: Vec<u64> = ndjson_lines(b"x\ny\n", 7).map(|(n, _)| n).collect();
        assert_eq!(numbered, vec![7, 8]);
    }
}
