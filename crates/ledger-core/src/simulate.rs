//! What-if simulation (issue 17): a draft program applied to the real log.
//!
//! A simulation is a replay of a *transformed* log, nothing else: the same fold, the
//! same refusals. The transformation, given a draft (the `data` of a
//! `program.published`, SPEC §3), a position `N` (default 1) and optional extra events:
//! - every version of the draft's program that the log *applied* at a position ≥ `N`
//!   is folded with the draft's fields instead, its version number and position kept
//!   (refused `program.published` events stay as they are);
//! - at `N` (before the record at `N`; after the last record when `N` is beyond the
//!   log) the draft is inserted as a new version when the program exists there (its
//!   current version + 1), or as version 1 when the log never applied the program; then
//!   the extra events, in file order.
//!
//! Inserted drafts get the source [`SOURCE`] and the `time` of the record they precede
//! (or of the last record). This module is the pure part: the [`Plan`] (draft and extra
//! events, checked as intake checks them), the [`Transformer`] that rewrites the log's
//! inputs one at a time, and the [`Comparer`] that sets the two folds side by side.
//! Reading the log and folding are the caller's (`ledger_log::simulation`).

use crate::document::Counts;
use crate::intake;
use crate::ledger::{Balance, Ledger, Payout};
use crate::refusal::Code;
use crate::values::{format_exact, format_money, Currency};
use crate::{Event, EventData};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The `source` of the `program.published` events a simulation inserts.
pub const SOURCE: &str = "incentive-ledger/simulation";

/// Why a simulation cannot start: its inputs, never the log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the draft program is refused ({code}): {message}")]
    Draft { code: Code, message: String },
    #[error("extra event on line {line} is refused at intake ({code}): {message}")]
    Extra {
        line: u64,
        code: Code,
        message: String,
    },
    #[error("extra events on lines {first} and {second} have the same source and id")]
    ExtraTwice { first: u64, second: u64 },
    #[error("extra event on line {line} has the source and id of the log's record at position {seq}: give it an id of its own")]
    ExtraInLog { line: u64, seq: u64 },
    #[error("the position to simulate from must be 1 or more (the log's first record is 1)")]
    FromSeq,
}

/// An extra event: its bytes (they passed intake) and where it came from.
#[derive(Debug, Clone)]
struct Extra {
    raw: Vec<u8>,
    line: u64,
    identity: [u8; 16],
    source: String,
    id: String,
    event_type: &'static str,
}

/// What to simulate: the draft, the position, the extra events — each checked.
#[derive(Debug, Clone)]
pub struct Plan {
    program_id: String,
    draft: Map<String, Value>,
    from_seq: u64,
    extras: Vec<Extra>,
}

impl Plan {
    /// Checks the draft (the data of a `program.published`, its `version` ignored) and
    /// the extra events (`(line, bytes)`, each a CloudEvent) as intake would.
    pub fn new(
        draft: &[u8],
        from_seq: Option<u64>,
        extras: Vec<(u64, Vec<u8>)>,
    ) -> Result<Plan, PlanError> {
        let from_seq = from_seq.unwrap_or(1);
        if from_seq == 0 {
            return Err(PlanError::FromSeq);
        }
        let not_data = |message: String| PlanError::Draft {
            code: Code::InvalidData,
            message,
        };
        // The draft's own bytes must be I-JSON, as an event's would.
        crate::json::parse(draft).map_err(|e| PlanError::Draft {
            code: Code::MalformedJson,
            message: e.to_string(),
        })?;
        let object: Map<String, Value> = match serde_json::from_slice(draft) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                return Err(not_data(format!(
                    "a draft is the data object of a program.published event, not {}",
                    json_type(&other)
                )))
            }
            Err(e) => return Err(not_data(e.to_string())),
        };
        let mut plan = Plan {
            program_id: String::new(),
            draft: object,
            from_seq,
            extras: Vec::new(),
        };
        let checked = plan.published(1, envelope("draft-check", "2000-01-01T00:00:00Z"));
        match intake::check_event(&checked) {
            Ok(Event {
                data: EventData::ProgramPublished(def),
                ..
            }) => plan.program_id = def.program_id.clone(),
            Ok(_) => unreachable!("a program.published envelope reads as one"),
            Err(r) => {
                return Err(PlanError::Draft {
                    code: r.code,
                    message: r.message,
                })
            }
        }
        for (line, raw) in extras {
            let event = intake::check_event(&raw).map_err(|r| PlanError::Extra {
                line,
                code: r.code,
                message: r.message,
            })?;
            let identity = crate::identity_key(&event.source, &event.id);
            if let Some(first) = plan.extras.iter().find(|e| e.identity == identity) {
                return Err(PlanError::ExtraTwice {
                    first: first.line,
                    second: line,
                });
            }
            plan.extras.push(Extra {
                raw,
                line,
                identity,
                source: event.source.to_string(),
                id: event.id.to_string(),
                event_type: event.event_type().as_str(),
            });
        }
        Ok(plan)
    }

    pub fn program_id(&self) -> &str {
        &self.program_id
    }

    pub fn from_seq(&self) -> u64 {
        self.from_seq
    }

    pub fn has_extras(&self) -> bool {
        !self.extras.is_empty()
    }

    /// The line of the extra event with this identity key, if there is one.
    pub fn extra_with(&self, identity: &[u8; 16]) -> Option<u64> {
        self.extras
            .iter()
            .find(|e| &e.identity == identity)
            .map(|e| e.line)
    }

    /// The draft as a `program.published` CloudEvent: `envelope` with `data` = the
    /// draft at `version`.
    fn published(&self, version: u64, mut envelope: Map<String, Value>) -> Vec<u8> {
        let mut data = self.draft.clone();
        data.insert("version".into(), Value::from(version));
        envelope.insert("type".into(), Value::from("program.published"));
        envelope.insert("data".into(), Value::Object(data));
        serde_json::to_vec(&Value::Object(envelope)).unwrap_or_default()
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn envelope(id: &str, time: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("specversion".into(), Value::from("1.0"));
    m.insert("id".into(), Value::from(id));
    m.insert("source".into(), Value::from(SOURCE));
    m.insert("time".into(), Value::from(time));
    m
}

/// What the transformation did at one position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The log position: of the replaced record, or the one an insertion precedes
    /// (one past the last record when at the end).
    pub position: u64,
    /// `replaced` (a logged version folded with the draft's fields), `inserted` (the
    /// draft as a new version) or `extra` (an event of the extra file).
    pub action: &'static str,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub source: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The simulation's refusal of this event, if it refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<ChangeRefused>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRefused {
    #[serde(serialize_with = "crate::refusal::serialize_as_str")]
    pub code: Code,
    pub message: String,
}

/// An event the transformation puts into the log.
#[derive(Debug, Clone)]
pub struct Inserted {
    pub raw: Vec<u8>,
    pub change: Change,
}

/// Rewrites the log's inputs one record at a time, in order.
#[derive(Debug)]
pub struct Transformer<'a> {
    plan: &'a Plan,
    /// The program's `program.published` records folded alone: which of them the log
    /// applied (their refusals depend on the program's earlier versions only).
    versions: Ledger,
    /// Whether the real log applies the program at some position.
    exists_in_log: bool,
    inserted: bool,
}

impl<'a> Transformer<'a> {
    /// `exists_in_log`: whether the real log's fold knows the draft's program.
    pub fn new(plan: &'a Plan, exists_in_log: bool) -> Transformer<'a> {
        Transformer {
            plan,
            versions: Ledger::new(),
            exists_in_log,
            inserted: false,
        }
    }

    /// The events to fold before the log's record `seq` (whose event's `time` is
    /// `time`): the draft and the extra events when `seq` is the plan's position.
    pub fn before(&mut self, seq: u64, time: &str) -> Vec<Inserted> {
        if self.inserted || seq < self.plan.from_seq {
            return Vec::new();
        }
        self.insertions(seq, time)
    }

    /// The events to fold after the last record, at `position` (the last record's) with
    /// its `time` (`None` for an empty log), if the plan's position lies beyond it.
    pub fn at_end(&mut self, position: u64, time: Option<&str>) -> Vec<Inserted> {
        if self.inserted {
            return Vec::new();
        }
        self.insertions(position + 1, time.unwrap_or("1970-01-01T00:00:00Z"))
    }

    fn insertions(&mut self, position: u64, time: &str) -> Vec<Inserted> {
        self.inserted = true;
        let mut out = Vec::new();
        let current = self
            .versions
            .program(&self.plan.program_id)
            .map(|p| p.current.version);
        let version = match current {
            Some(v) => Some(v + 1),
            None if !self.exists_in_log => Some(1),
            None => None,
        };
        if let Some(version) = version {
            let id = format!("draft:{}:v{version}:at:{position}", self.plan.program_id);
            out.push(Inserted {
                raw: self.plan.published(version, envelope(&id, time)),
                change: Change {
                    position,
                    action: "inserted",
                    event_type: "program.published",
                    source: SOURCE.into(),
                    id,
                    version: Some(version),
                    refused: None,
                },
            });
        }
        out.extend(self.plan.extras.iter().map(|e| Inserted {
            raw: e.raw.clone(),
            change: Change {
                position,
                action: "extra",
                event_type: e.event_type,
                source: e.source.clone(),
                id: e.id.clone(),
                version: None,
                refused: None,
            },
        }));
        out
    }

    /// Whether record `seq` must be read whole and given to [`Transformer::replace`]:
    /// a `program.published` of the draft's program.
    pub fn concerns(&self, event: &Event) -> bool {
        matches!(&event.data, EventData::ProgramPublished(def) if def.program_id == self.plan.program_id)
    }

    /// Notes record `seq`'s event; for one that [`Transformer::concerns`], `raw` (its
    /// bytes) gives the replacement to fold instead, if the log applied it at or after
    /// the plan's position.
    pub fn replace(&mut self, seq: u64, event: &Event, raw: Option<&[u8]>) -> Option<Inserted> {
        if !self.concerns(event) {
            return None;
        }
        let EventData::ProgramPublished(def) = &event.data else {
            return None;
        };
        let applied = self.versions.apply(event).refusal.is_none();
        if !applied || seq < self.plan.from_seq {
            return None;
        }
        let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(raw?) else {
            return None;
        };
        Some(Inserted {
            raw: self.plan.published(def.version, envelope),
            change: Change {
                position: seq,
                action: "replaced",
                event_type: "program.published",
                source: event.source.to_string(),
                id: event.id.to_string(),
                version: Some(def.version),
                refused: None,
            },
        })
    }
}

/// Earned and paid in the log and in the simulation, and the differences (simulated −
/// actual), with the currency's minor digits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compared {
    pub actual_earned: String,
    pub simulated_earned: String,
    pub earned_difference: String,
    pub actual_paid: String,
    pub simulated_paid: String,
    pub paid_difference: String,
}

impl Compared {
    /// From `[actual earned, simulated earned, actual paid, simulated paid]`.
    fn of(currency: Currency, [ae, se, ap, sp]: [Decimal; 4]) -> Compared {
        let money = |d: Decimal| format_money(d, currency);
        Compared {
            actual_earned: money(ae),
            simulated_earned: money(se),
            earned_difference: money(se - ae),
            actual_paid: money(ap),
            simulated_paid: money(sp),
            paid_difference: money(sp - ap),
        }
    }
}

/// One entry whose `earned` or `paid` differs between the log and the simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryDiff {
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub kind: String,
    pub currency: String,
    pub actual_basis: String,
    pub simulated_basis: String,
    #[serde(flatten)]
    pub figures: Compared,
}

/// A program's totals on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramTotals {
    pub program_id: String,
    pub currency: String,
    #[serde(flatten)]
    pub figures: Compared,
    /// Partners whose total earned in the program goes up, down, or stays.
    pub partners_gain: u64,
    pub partners_lose: u64,
    pub partners_same: u64,
}

/// A partner's totals in one currency, where they differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartnerTotals {
    pub partner_id: String,
    pub currency: String,
    #[serde(flatten)]
    pub figures: Compared,
}

/// A payout issued on one side only, or with another amount.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayoutDiff {
    pub payout_id: String,
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub currency: String,
    pub reason: String,
    pub cause_source: String,
    pub cause_id: String,
    pub actual: Option<String>,
    pub simulated: Option<String>,
    pub difference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusalDiff {
    #[serde(serialize_with = "crate::refusal::serialize_as_str")]
    pub code: Code,
    pub actual: u64,
    pub simulated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side<T> {
    pub actual: T,
    pub simulated: T,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayoutsCompared {
    /// Payouts that differ (issued on one side only, or with another amount).
    pub differing: u64,
    /// The first of them, in the order they happened; `truncated` when not all.
    pub listed: Vec<PayoutDiff>,
    pub truncated: bool,
}

/// The result: the log and the simulation side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    pub program_id: String,
    pub from_seq: u64,
    /// The last log position both sides folded.
    pub position: u64,
    pub changes: Vec<Change>,
    pub events: Side<Counts>,
    pub programs: Vec<ProgramTotals>,
    pub partners: Vec<PartnerTotals>,
    pub entries: Vec<EntryDiff>,
    pub refusals: Vec<RefusalDiff>,
    pub payouts: PayoutsCompared,
    pub digests: Side<String>,
}

/// Sets the payouts of the two folds side by side, event by event, and the two final
/// states at the end.
#[derive(Debug)]
pub struct Comparer {
    max_listed: usize,
    payouts: PayoutsCompared,
    changes: Vec<Change>,
}

impl Comparer {
    /// Lists at most `max_listed` differing payouts (all are counted).
    pub fn new(max_listed: usize) -> Comparer {
        Comparer {
            max_listed,
            payouts: PayoutsCompared {
                differing: 0,
                listed: Vec::new(),
                truncated: false,
            },
            changes: Vec::new(),
        }
    }

    /// Records what the transformation did (and the simulation's refusal of it).
    pub fn change(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// The payouts one event caused in the log and in the simulation (an inserted
    /// event has none in the log). Ids are deterministic of the cause and the entry
    /// (SPEC §5), so payouts pair up by id.
    pub fn event(&mut self, actual: &[Payout], simulated: &[Payout]) {
        if actual == simulated {
            return;
        }
        for a in actual {
            let other = simulated.iter().find(|s| s.payout_id == a.payout_id);
            if other.map(|s| s.amount) != Some(a.amount) {
                self.differ(a, Some(a.amount), other.map(|s| s.amount));
            }
        }
        for s in simulated {
            if !actual.iter().any(|a| a.payout_id == s.payout_id) {
                self.differ(s, None, Some(s.amount));
            }
        }
    }

    fn differ(&mut self, p: &Payout, actual: Option<Decimal>, simulated: Option<Decimal>) {
        self.payouts.differing += 1;
        if self.payouts.listed.len() >= self.max_listed {
            self.payouts.truncated = true;
            return;
        }
        let money = |d: Decimal| format_money(d, p.currency);
        let zero = Decimal::ZERO;
        self.payouts.listed.push(PayoutDiff {
            payout_id: p.payout_id.to_string(),
            partner_id: p.partner_id.to_string(),
            program_id: p.program_id.to_string(),
            period: p.period.to_string(),
            currency: p.currency.to_string(),
            reason: p.reason.as_str().to_string(),
            cause_source: p.cause_source.to_string(),
            cause_id: p.cause_id.to_string(),
            actual: actual.map(money),
            simulated: simulated.map(money),
            difference: money(simulated.unwrap_or(zero) - actual.unwrap_or(zero)),
        });
    }

    /// The comparison of the two final states (`actual` and `simulated` ledgers and
    /// their counts, refusals per code and digests), folded through `position`.
    pub fn finish(self, plan: &Plan, position: u64, sides: Finished<'_>) -> Simulation {
        let mut entries = Vec::new();
        // Per program (currency, earned, paid) and per (program, partner) earned,
        // both sides; per (partner, currency) earned and paid.
        let mut programs: BTreeMap<String, ProgramSums> = BTreeMap::new();
        let mut partners: BTreeMap<(String, Currency), [Decimal; 4]> = BTreeMap::new();
        let mut actual = sides.actual.balances_iter().peekable();
        let mut simulated = sides.simulated.balances_iter().peekable();
        loop {
            let order = match (actual.peek(), simulated.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(s)) => entry_key(a).cmp(&entry_key(s)),
            };
            let (a, s) = match order {
                std::cmp::Ordering::Less => (actual.next(), None),
                std::cmp::Ordering::Greater => (None, simulated.next()),
                std::cmp::Ordering::Equal => (actual.next(), simulated.next()),
            };
            let Some(any) = a.as_ref().or(s.as_ref()) else {
                break;
            };
            let currency = any.currency;
            let value = |b: &Option<Balance>, f: fn(&Balance) -> Decimal| {
                b.as_ref().map_or(Decimal::ZERO, f)
            };
            let (ae, se) = (value(&a, |b| b.earned), value(&s, |b| b.earned));
            let (ap, sp) = (value(&a, |b| b.paid), value(&s, |b| b.paid));
            let sums = programs
                .entry(any.program_id.clone())
                .or_insert_with(|| ProgramSums::new(currency));
            sums.add(&any.partner_id, [ae, se, ap, sp]);
            let partner = partners
                .entry((any.partner_id.clone(), currency))
                .or_default();
            for (total, v) in partner.iter_mut().zip([ae, se, ap, sp]) {
                *total += v;
            }
            if ae != se || ap != sp {
                let basis = |b: &Option<Balance>| format_exact(value(b, |b| b.basis));
                entries.push(EntryDiff {
                    partner_id: any.partner_id.clone(),
                    program_id: any.program_id.clone(),
                    period: any.period.clone(),
                    kind: any.kind.as_str().into(),
                    currency: currency.to_string(),
                    actual_basis: basis(&a),
                    simulated_basis: basis(&s),
                    figures: Compared::of(currency, [ae, se, ap, sp]),
                });
            }
        }
        let programs = programs
            .into_iter()
            .filter(|(id, sums)| id == plan.program_id() || sums.differs())
            .map(|(id, sums)| sums.totals(id))
            .collect();
        let partners = partners
            .into_iter()
            .filter(|(_, [ae, se, ap, sp])| ae != se || ap != sp)
            .map(|((partner_id, currency), sums)| PartnerTotals {
                partner_id,
                currency: currency.to_string(),
                figures: Compared::of(currency, sums),
            })
            .collect();
        let mut codes: BTreeMap<Code, (u64, u64)> = BTreeMap::new();
        for (code, n) in sides.actual_refusals {
            codes.entry(*code).or_default().0 = *n;
        }
        for (code, n) in sides.simulated_refusals {
            codes.entry(*code).or_default().1 = *n;
        }
        Simulation {
            program_id: plan.program_id().to_string(),
            from_seq: plan.from_seq(),
            position,
            changes: self.changes,
            events: Side {
                actual: sides.actual_counts,
                simulated: sides.simulated_counts,
            },
            programs,
            partners,
            entries,
            refusals: codes
                .into_iter()
                .filter(|(_, (a, s))| a != s)
                .map(|(code, (actual, simulated))| RefusalDiff {
                    code,
                    actual,
                    simulated,
                })
                .collect(),
            payouts: self.payouts,
            digests: sides.digests,
        }
    }
}

/// The two folds' final states, for [`Comparer::finish`].
pub struct Finished<'a> {
    pub actual: &'a Ledger,
    pub simulated: &'a Ledger,
    pub actual_counts: Counts,
    pub simulated_counts: Counts,
    pub actual_refusals: &'a BTreeMap<Code, u64>,
    pub simulated_refusals: &'a BTreeMap<Code, u64>,
    pub digests: Side<String>,
}

fn entry_key(b: &Balance) -> (&str, &str, i64) {
    (&b.partner_id, &b.program_id, b.period_index)
}

/// A program's sums on both sides: earned and paid, and earned per partner.
struct ProgramSums {
    currency: Currency,
    /// actual earned, simulated earned, actual paid, simulated paid
    totals: [Decimal; 4],
    /// Per partner: actual earned, simulated earned.
    partners: BTreeMap<String, [Decimal; 2]>,
}

impl ProgramSums {
    fn new(currency: Currency) -> ProgramSums {
        ProgramSums {
            currency,
            totals: [Decimal::ZERO; 4],
            partners: BTreeMap::new(),
        }
    }

    fn add(&mut self, partner: &str, values: [Decimal; 4]) {
        for (t, v) in self.totals.iter_mut().zip(values) {
            *t += v;
        }
        let p = self.partners.entry(partner.to_string()).or_default();
        p[0] += values[0];
        p[1] += values[1];
    }

    fn differs(&self) -> bool {
        let [ae, se, ap, sp] = self.totals;
        ae != se || ap != sp || self.partners.values().any(|[a, s]| a != s)
    }

    fn totals(self, program_id: String) -> ProgramTotals {
        let count = |f: fn(&Decimal, &Decimal) -> bool| {
            self.partners.values().filter(|[a, s]| f(s, a)).count() as u64
        };
        ProgramTotals {
            program_id,
            currency: self.currency.to_string(),
            figures: Compared::of(self.currency, self.totals),
            partners_gain: count(|s, a| s > a),
            partners_lose: count(|s, a| s < a),
            partners_same: count(|s, a| s == a),
        }
    }
}

impl Simulation {
    /// The form a channel manager reads: what changed, the totals, who gains and
    /// loses, the entries that differ (at most `max_rows`).
    pub fn table(&self, max_rows: usize) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Simulation of {} from position {} (log folded through position {})",
            self.program_id, self.from_seq, self.position
        );
        for c in &self.changes {
            let version = c.version.map(|v| format!(" v{v}")).unwrap_or_default();
            let _ = write!(
                t,
                "  {:<8} {}{version} at {} ({}, {})",
                c.action, c.event_type, c.position, c.source, c.id
            );
            match &c.refused {
                Some(r) => {
                    let _ = writeln!(t, " — REFUSED {}: {}", r.code, r.message);
                }
                None => t.push('\n'),
            }
        }
        if self.changes.is_empty() {
            t.push_str("  (the log has no applied version of the program at or after that position, and nothing was inserted)\n");
        }
        let _ = writeln!(
            t,
            "\nEvents: actual {} applied / {} refused; simulated {} applied / {} refused",
            self.events.actual.applied,
            self.events.actual.rejected,
            self.events.simulated.applied,
            self.events.simulated.rejected
        );
        t.push_str("\nPrograms\n");
        let _ = writeln!(
            t,
            "  {:<24} {:>4} {:>16} {:>16} {:>16} {:>16} {:>16}  gain/lose/same",
            "program", "cur", "earned", "simulated", "difference", "paid", "simulated paid"
        );
        for p in &self.programs {
            let _ = writeln!(
                t,
                "  {:<24} {:>4} {:>16} {:>16} {:>16} {:>16} {:>16}  {}/{}/{}",
                p.program_id,
                p.currency,
                p.figures.actual_earned,
                p.figures.simulated_earned,
                p.figures.earned_difference,
                p.figures.actual_paid,
                p.figures.simulated_paid,
                p.partners_gain,
                p.partners_lose,
                p.partners_same
            );
        }
        let _ = writeln!(t, "\nPartners whose totals differ: {}", self.partners.len());
        for p in self.partners.iter().take(max_rows) {
            let _ = writeln!(
                t,
                "  {:<24} {:>4} earned {:>16} → {:>16} ({:>16})   paid {:>16} → {:>16}",
                p.partner_id,
                p.currency,
                p.figures.actual_earned,
                p.figures.simulated_earned,
                p.figures.earned_difference,
                p.figures.actual_paid,
                p.figures.simulated_paid
            );
        }
        if self.partners.len() > max_rows {
            let _ = writeln!(t, "  … {} more", self.partners.len() - max_rows);
        }
        let _ = writeln!(t, "\nEntries that differ: {}", self.entries.len());
        for e in self.entries.iter().take(max_rows) {
            let _ = writeln!(
                t,
                "  {:<16} {:<20} {:<8} earned {:>14} → {:>14} ({:>14})   paid {:>14} → {:>14}",
                e.partner_id,
                e.program_id,
                e.period,
                e.figures.actual_earned,
                e.figures.simulated_earned,
                e.figures.earned_difference,
                e.figures.actual_paid,
                e.figures.simulated_paid
            );
        }
        if self.entries.len() > max_rows {
            let _ = writeln!(t, "  … {} more", self.entries.len() - max_rows);
        }
        if !self.refusals.is_empty() {
            t.push_str("\nRefusals that differ (code: actual → simulated)\n");
            for r in &self.refusals {
                let _ = writeln!(t, "  {}: {} → {}", r.code, r.actual, r.simulated);
            }
        }
        let _ = writeln!(t, "\nPayouts that would differ: {}", self.payouts.differing);
        let shown = max_rows.min(self.payouts.listed.len());
        for p in &self.payouts.listed[..shown] {
            let _ = writeln!(
                t,
                "  {:<16} {:<20} {:<8} {:<10} {:>14} → {:>14}   cause {} {}",
                p.partner_id,
                p.program_id,
                p.period,
                p.reason,
                p.actual.as_deref().unwrap_or("(none)"),
                p.simulated.as_deref().unwrap_or("(none)"),
                p.cause_source,
                p.cause_id
            );
        }
        if self.payouts.differing > shown as u64 {
            let _ = writeln!(
                t,
                "  … {} more (the JSON form lists up to --max-payouts)",
                self.payouts.differing - shown as u64
            );
        }
        let _ = writeln!(
            t,
            "\nDigest: actual {}\n        simulated {}",
            self.digests.actual, self.digests.simulated
        );
        t
    }

    /// The entries that differ as CSV (RFC 4180, a header line): what tools load.
    pub fn csv(&self) -> String {
        crate::document::to_csv(&self.entries)
    }
}

impl crate::document::CsvRow for EntryDiff {
    const HEADER: &'static [&'static str] = &[
        "partner_id",
        "program_id",
        "period",
        "kind",
        "currency",
        "actual_basis",
        "simulated_basis",
        "actual_earned",
        "simulated_earned",
        "earned_difference",
        "actual_paid",
        "simulated_paid",
        "paid_difference",
    ];
    fn fields(&self) -> Vec<String> {
        let f = &self.figures;
        [
            &self.partner_id,
            &self.program_id,
            &self.period,
            &self.kind,
            &self.currency,
            &self.actual_basis,
            &self.simulated_basis,
            &f.actual_earned,
            &f.simulated_earned,
            &f.earned_difference,
            &f.actual_paid,
            &f.simulated_paid,
            &f.paid_difference,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

#[cfg(test)]
mod tests;
