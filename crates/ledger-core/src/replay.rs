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
use crate::ledger::{Ledger, Payout};
use crate::refusal::Code;

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

impl Rejection {
    /// `quarantine` for refusals at intake, `business` for refusals by the fold.
    pub fn stage(&self) -> &'static str {
        if self.code.is_intake() {
            "quarantine"
        } else {
            "business"
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

/// An in-memory `(source, id) → content digest` index of the logged events.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct IdentityIndex {
    seen: std::collections::HashMap<[u8; 16], [u8; 32], foldhash::fast::FixedState>,
}

/// The key of an event's `(source, id)`: the one the durable log stores.
fn identity_key(event: &Event) -> [u8; 16] {
    crate::ids::identity_key(&event.source, &event.id)
}

impl IdentityIndex {
    pub fn check(&self, event: &Event, content_digest: &[u8; 32]) -> Identity {
        match self.seen.get(&identity_key(event)) {
            None => Identity::New,
            Some(d) if d == content_digest => Identity::ExactDuplicate,
            Some(_) => Identity::Conflict,
        }
    }

    pub fn insert(&mut self, event: &Event, content_digest: [u8; 32]) {
        self.seen.insert(identity_key(event), content_digest);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Replay {
    ledger: Ledger,
    identities: IdentityIndex,
    counts: Counts,
    payouts: Vec<Payout>,
    rejected: Vec<Rejection>,
    /// Per event type (None: the type could not be read): applied, refused, duplicates.
    by_type: std::collections::BTreeMap<Option<EventType>, [u64; 3]>,
}

impl Replay {
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Runs one raw input through intake, the identity check and the fold. `line` is its
    /// 1-based line (or arrival) number, shown for refusals without an identity.
    pub fn push(&mut self, raw: &[u8], line: u64) -> Step {
        match intake::check(raw) {
            Err(refusal) => self.record_quarantined(refusal, line),
            Ok(Accepted {
                event,
                content_digest,
            }) => match self.identities.check(&event, &content_digest) {
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
                    self.identities.insert(&event, content_digest);
                    self.apply_logged(&event, line)
                }
            },
        }
    }

    /// Counts an input refused before the log.
    pub fn record_quarantined(&mut self, refusal: IntakeRefusal, line: u64) -> Step {
        self.counts.received += 1;
        self.counts.rejected += 1;
        self.by_type.entry(refusal.event_type).or_default()[1] += 1;
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

    /// Folds an event that is in the log.
    pub fn apply_logged(&mut self, event: &Event, line: u64) -> Step {
        self.counts.received += 1;
        let first = self.payouts.len();
        let refusal = self.ledger.apply_into(event, &mut self.payouts);
        let slot = self.by_type.entry(Some(event.event_type())).or_default();
        slot[usize::from(refusal.is_some())] += 1;
        match refusal {
            Some(r) => {
                self.counts.rejected += 1;
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
        }
    }

    /// Rebuilds what the fold derives and does not store (after a checkpoint load).
    pub fn restore_derived(&mut self) {
        self.ledger.restore_derived();
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Keeps per-entry journals from now on (for statements).
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

    /// The replay document of the state so far.
    pub fn document(&self) -> Document {
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
