//! The fold: the ledger's state and how each logged event changes it (SPEC §3–§5).
//!
//! [`Ledger::apply`] takes one event that passed intake and returns what happened — a
//! business refusal, or the payouts the event caused — as values. It reads no clock, no
//! randomness and no hash-map iteration order: every iteration that can influence a
//! result goes through sorted or insertion-ordered collections.
//!
//! The settlement sweep of SPEC §5 ("after every applied event, every entry, in order")
//! is incremental: an entry's `earned − paid` can only become non-zero and payable when
//! the event touched the entry, changed the rules or target it is evaluated with, or
//! closed its period. Each handler marks exactly those entries dirty, and only they are
//! swept — sorted by (partner_id, program_id, period index) — which gives the same
//! payouts as sweeping everything, because after each sweep every payable entry has
//! `earned = paid`.

use crate::event::{Event, EventData, ProgramDef, Return, Sale, Text};
use crate::refusal::{Code, Refusal};
use crate::rules::{BasisView, Kind, Measure, Rules};
use crate::store::StoreError;
use crate::values::{basis_limit, round_money, Currency, PeriodKind, PeriodLabel};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Hash maps of the fold: a fast hasher with a fixed seed, so that the same history
/// leaves the same maps and a checkpoint's bytes are a function of the log (its
/// encoding walks them). Nothing iterates them where order could reach a result (see
/// the module docs).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

mod adjustments;
mod audit;
mod claims;
mod enrollment;
mod journal;
mod lookups;
mod payouts;
mod plan;
mod programs;
mod sales;
mod settle;
mod state;
mod statement;
mod training;
mod views;

use journal::*;
use programs::*;
use state::*;

pub(crate) use lookups::Recent;

pub use audit::Fingerprint;
pub use journal::{Cause, DrainedLine, EntryIds, JournalLine};
pub use payouts::{payout_id, Applied, Payout, PayoutReason};
pub use plan::{
    BudgetFigures, ClaimCount, ClaimFigures, FundFigures, LevelCount, Opportunity, Performer,
    PeriodFigures, ProgramReport, RefusalCount,
};
pub use state::ClaimStatus;
pub use statement::{Explanation, Statement};
pub use views::{Balance, ClaimView, FundBalance, ProgramView};

/// The folded state of a log.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    syms: Interner,
    programs: HashMap<Sym, Program>,
    /// Programs in first-publication order, the order sales and completions visit them.
    program_order: Vec<Sym>,
    /// The programs of `program_order` a sale can count for: their kind counts sales and
    /// has a measure, neither of which a later version may change. Derived from
    /// `program_order`: dropped when a program is added, rebuilt at the next sale (and
    /// after a checkpoint load, as it is not stored).
    #[serde(skip)]
    sale_programs: Option<Vec<Sym>>,
    enrollments: HashMap<(Sym, Sym), Enrollment>,
    entries: HashMap<EntryKey, Entry>,
    /// The period indexes of each (partner, program)'s entries, in creation order.
    partner_entries: HashMap<(Sym, Sym), Vec<i64>>,
    claims: HashMap<Text, Claim>,
    /// The latest business date (UTC) of an applied event: "now" for a report's
    /// forecast, a function of the log like everything else.
    latest_date: Option<chrono::NaiveDate>,
    /// Sale records and used business ids written since the last checkpoint moved them
    /// to the backing store (all of them, without one): see [`crate::store`].
    recent: Recent,
    /// The lookup tiers below `recent`.
    #[serde(skip)]
    lower: lookups::Lower,
    /// Entries the current event may have changed; drained by the sweep.
    #[serde(skip)]
    dirty: Vec<EntryKey>,
    /// Per entry, what every event that touched it left behind (for statements); kept
    /// only when enabled, as it grows with the log.
    #[serde(with = "journal_causes")]
    journal: Option<Journal>,
    /// Derived: the claims of each (partner, program), by claim id — what a fund
    /// statement lists without visiting every claim. Not stored: rebuilt by
    /// [`Ledger::restore_derived`] after a checkpoint load.
    #[serde(skip)]
    claims_by_pair: HashMap<(Sym, Sym), std::collections::BTreeSet<Text>>,
    /// Whether the derived fields above still need [`Ledger::restore_derived`] (true
    /// right after decoding; a new ledger has none to restore).
    #[serde(skip, default = "stale")]
    derived_stale: bool,
}

fn stale() -> bool {
    true
}

pub(super) fn refuse(code: Code, message: String) -> Applied {
    Applied {
        refusal: Some(Refusal::new(code, message)),
        payouts: Vec::new(),
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Rebuilds what the ledger derives and does not store (after a checkpoint load).
    pub fn restore_derived(&mut self) {
        self.claims_by_pair.clear();
        for (id, c) in &self.claims {
            self.claims_by_pair
                .entry((c.partner, c.program))
                .or_default()
                .insert(id.clone());
        }
        self.derived_stale = false;
    }

    /// Keeps a journal per entry from now on (what statements explain).
    pub fn enable_journal(&mut self) {
        if self.journal.is_none() {
            self.journal = Some(Journal::default());
        }
    }

    /// Keeps no journal from now on, and drops the one kept.
    pub fn disable_journal(&mut self) {
        self.journal = None;
    }

    pub fn journal_enabled(&self) -> bool {
        self.journal.is_some()
    }

    /// Applies one event that passed intake, at the next position of the log. For a
    /// ledger without a backing store (whose lookups cannot fail).
    pub fn apply(&mut self, event: &Event) -> Applied {
        let mut payouts = Vec::new();
        let refusal = self.apply_into(event, &mut payouts);
        Applied { refusal, payouts }
    }

    /// [`Ledger::apply`], appending the payouts to `payouts` (a replay's growing list)
    /// instead of a vector of their own. On a refusal nothing is appended.
    pub fn apply_into(&mut self, event: &Event, payouts: &mut Vec<Payout>) -> Option<Refusal> {
        assert!(
            !self.has_backing(),
            "a ledger with a backing store folds with try_apply_into"
        );
        crate::store::held_in_memory(self.try_apply_into(event, payouts))
    }

    /// [`Ledger::apply_into`] for a ledger whose lookups may fail (a backing store): on
    /// an error the event changed nothing and can be applied again.
    pub fn try_apply_into(
        &mut self,
        event: &Event,
        payouts: &mut Vec<Payout>,
    ) -> Result<Option<Refusal>, StoreError> {
        debug_assert!(self.dirty.is_empty());
        #[cfg(debug_assertions)]
        let before = self.fingerprint();
        let applied = match &event.data {
            EventData::ProgramPublished(def) => Ok(self.program_published(def)),
            EventData::PartnerEnrolled {
                partner_id,
                program_id,
                target,
            } => Ok(self.partner_enrolled(partner_id, program_id, *target)),
            EventData::PartnerWithdrawn {
                partner_id,
                program_id,
            } => Ok(self.partner_withdrawn(partner_id, program_id)),
            EventData::SaleRecorded(sale) => self.sale_recorded(event, sale),
            EventData::SaleReturned(ret) => self.sale_returned(ret),
            EventData::TrainingCompleted {
                partner_id,
                person_id,
                certification,
                ..
            } => self.training_completed(event, partner_id, person_id, certification.as_deref()),
            EventData::ClaimSubmitted {
                claim_id,
                partner_id,
                program_id,
                amount,
                ..
            } => Ok(self.claim_submitted(claim_id, partner_id, program_id, *amount)),
            EventData::ClaimDecided {
                claim_id,
                approved,
                approved_amount,
            } => Ok(self.claim_decided(event, claim_id, *approved, *approved_amount)),
            EventData::PeriodClosed { program_id, period } => {
                Ok(self.period_closed(program_id, period))
            }
            EventData::AdjustmentPosted {
                adjustment_id,
                partner_id,
                program_id,
                period,
                amount,
                ..
            } => self.adjustment_posted(adjustment_id, partner_id, program_id, period, *amount),
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(e) => {
                // Every handler reads its lookups before it changes anything.
                debug_assert!(self.dirty.is_empty(), "a failed lookup left entries dirty");
                #[cfg(debug_assertions)]
                assert_eq!(
                    before,
                    self.fingerprint(),
                    "a failed lookup changed the state"
                );
                self.dirty.clear();
                return Err(e);
            }
        };
        if applied.refusal.is_some() {
            debug_assert!(self.dirty.is_empty(), "a refused event changed entries");
            #[cfg(debug_assertions)]
            assert_eq!(
                before,
                self.fingerprint(),
                "a refused event changed the state"
            );
            self.dirty.clear();
        } else {
            payouts.extend(applied.payouts);
            self.sweep(event, payouts);
            self.latest_date = self.latest_date.max(Some(event.date));
        }
        Ok(applied.refusal)
    }

    /// The latest business date of an applied event, if any.
    pub fn latest_date(&self) -> Option<chrono::NaiveDate> {
        self.latest_date
    }

    /// The program an event is about, where it names one (directly, or through its
    /// claim): what refusals are counted per program by.
    pub fn program_of<'a>(&'a self, event: &'a Event) -> Option<&'a str> {
        match &event.data {
            EventData::ProgramPublished(def) => Some(&def.program_id),
            EventData::PartnerEnrolled { program_id, .. }
            | EventData::PartnerWithdrawn { program_id, .. }
            | EventData::ClaimSubmitted { program_id, .. }
            | EventData::PeriodClosed { program_id, .. }
            | EventData::AdjustmentPosted { program_id, .. } => Some(program_id),
            EventData::ClaimDecided { claim_id, .. } => self
                .claims
                .get(claim_id.as_str())
                .map(|c| self.syms.name(c.program)),
            EventData::SaleRecorded(_)
            | EventData::SaleReturned(_)
            | EventData::TrainingCompleted { .. } => None,
        }
    }

    // ----- lookups -------------------------------------------------------------------

    fn program_by_name(&self, program_id: &str) -> Option<(Sym, &Program)> {
        let sym = self.syms.get(program_id)?;
        self.programs.get(&sym).map(|p| (sym, p))
    }

    fn is_enrolled(&self, partner: Sym, program: Sym) -> bool {
        self.enrollments
            .get(&(partner, program))
            .is_some_and(|e| e.enrolled)
    }

    fn counts_for(&self, partner: Option<Sym>, program: Sym, p: &Program) -> bool {
        !p.current().requires_enrollment || partner.is_some_and(|s| self.is_enrolled(s, program))
    }

    fn entry_or_create(&mut self, key: EntryKey) -> &mut Entry {
        match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                if let Some(p) = self.programs.get_mut(&key.program) {
                    p.periods.entry(key.period).or_default().push(key.partner);
                }
                self.partner_entries
                    .entry((key.partner, key.program))
                    .or_default()
                    .push(key.period);
                v.insert(Entry::default())
            }
        }
    }

    /// Entry order (SPEC §7): partner_id, program_id, period index. Names are compared
    /// only where the symbols differ, so keys of one partner sort without string work.
    fn entry_order(&self, a: &EntryKey, b: &EntryKey) -> std::cmp::Ordering {
        let by_name = |x: Sym, y: Sym| {
            if x == y {
                std::cmp::Ordering::Equal
            } else {
                self.syms.name(x).cmp(self.syms.name(y))
            }
        };
        by_name(a.partner, b.partner)
            .then_with(|| by_name(a.program, b.program))
            .then(a.period.cmp(&b.period))
    }

    /// The program version an entry is evaluated with and the partner's target for it:
    /// the frozen copy if its period is closed, else the current one (SPEC §3, §4).
    fn evaluation(&self, key: EntryKey) -> Option<(&ProgramDef, Option<Decimal>)> {
        let program = self.programs.get(&key.program)?;
        let current_target = self
            .enrollments
            .get(&(key.partner, key.program))
            .and_then(|e| e.target);
        Some(match program.closed.get(&key.period) {
            Some(frozen) => (
                frozen.def.as_ref(),
                frozen.targets.get(&key.partner).copied().or(current_target),
            ),
            None => (program.current().as_ref(), current_target),
        })
    }

    fn earned(&self, key: EntryKey, entry: &Entry) -> Decimal {
        match self.evaluation(key) {
            Some((def, target)) => earned_by(def, target, entry),
            None => entry.adjustments,
        }
    }

    /// Reserved, paid, expired and available of an MDF/co-op bucket (SPEC §4.2).
    fn fund_balance(&self, key: EntryKey, entry: &Entry) -> FundBalance {
        let earned = self.earned(key, entry);
        let expired_bucket = self
            .programs
            .get(&key.program)
            .is_some_and(|p| p.bucket_expired(key.period));
        let unspent = earned - entry.reserved - entry.paid;
        let expired = if expired_bucket {
            unspent.max(Decimal::ZERO)
        } else {
            Decimal::ZERO
        };
        FundBalance {
            reserved: entry.reserved,
            expired,
            available: unspent - expired,
            expired_bucket,
        }
    }

    /// The partner's buckets in a fund program, oldest period first.
    fn buckets(&self, partner: Sym, program: Sym) -> Vec<i64> {
        let mut periods = self
            .partner_entries
            .get(&(partner, program))
            .cloned()
            .unwrap_or_default();
        periods.sort_unstable();
        periods
    }
}
