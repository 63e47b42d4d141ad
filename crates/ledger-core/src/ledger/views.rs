//! Read-only views of the state: balances, claims and programs in the document's order.

use super::*;

/// One row of `balances` (SPEC §7), with exact values; formatting is the document's job.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub period_index: i64,
    pub kind: Kind,
    pub currency: Currency,
    pub basis: Decimal,
    pub earned: Decimal,
    pub paid: Decimal,
    pub closed: bool,
    /// Counted net amounts and quantities less returns, whatever `basis` measures
    /// (reports; not part of the replay document).
    pub revenue: Decimal,
    pub units: i64,
    /// MDF/co-op buckets only.
    pub fund: Option<FundBalance>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FundBalance {
    pub reserved: Decimal,
    pub expired: Decimal,
    pub available: Decimal,
    pub expired_bucket: bool,
}

/// One row of `claims` (SPEC §7).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimView {
    pub claim_id: String,
    pub partner_id: String,
    pub program_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub status: ClaimStatus,
    pub approved_amount: Option<Decimal>,
}

impl Ledger {
    /// Every entry, sorted by partner_id, program_id and period index (SPEC §7).
    pub fn balances(&self) -> Vec<Balance> {
        self.balances_iter().collect()
    }

    /// [`Ledger::balances`] one at a time: only the entries' keys are held (sorted),
    /// not every balance — for a caller that writes or hashes them as they come.
    pub fn balances_iter(&self) -> impl Iterator<Item = Balance> + '_ {
        let mut keys: Vec<EntryKey> = self.entries.keys().copied().collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        keys.into_iter()
            .filter_map(move |key| self.balances_of(&[key]).pop())
    }

    /// One partner's entries, in the order of `balances()` — without visiting the others.
    pub fn partner_balances(&self, partner_id: &str) -> Vec<Balance> {
        self.balances_of(&self.partner_keys(partner_id))
    }

    /// One partner's entry keys, in the order of `balances()`.
    pub(super) fn partner_keys(&self, partner_id: &str) -> Vec<EntryKey> {
        let Some(partner) = self.syms.get(partner_id) else {
            return Vec::new();
        };
        let mut keys: Vec<EntryKey> = self
            .program_order
            .iter()
            .filter_map(|&program| {
                self.partner_entries
                    .get(&(partner, program))
                    .map(|periods| (program, periods))
            })
            .flat_map(|(program, periods)| {
                periods.iter().map(move |&period| EntryKey {
                    partner,
                    program,
                    period,
                })
            })
            .collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        keys
    }

    pub(super) fn balances_of(&self, keys: &[EntryKey]) -> Vec<Balance> {
        keys.iter()
            .filter_map(|&key| {
                let entry = self.entries.get(&key)?;
                let program = self.programs.get(&key.program)?;
                let kind = program.kind();
                Some(Balance {
                    partner_id: self.syms.name(key.partner).to_string(),
                    program_id: self.syms.name(key.program).to_string(),
                    period: program.period_kind().label(key.period).into(),
                    period_index: key.period,
                    kind,
                    currency: program.currency(),
                    basis: entry.basis,
                    earned: self.earned(key, entry),
                    paid: entry.paid,
                    closed: program.closed.contains_key(&key.period),
                    revenue: entry.revenue,
                    units: entry.units,
                    fund: kind.is_fund().then(|| self.fund_balance(key, entry)),
                })
            })
            .collect()
    }

    /// One claim, found by its id (no scan of the others).
    pub fn claim(&self, claim_id: &str) -> Option<ClaimView> {
        let (id, c) = self.claims.get_key_value(claim_id)?;
        let currency = self.programs.get(&c.program)?.currency();
        Some(ClaimView {
            claim_id: id.to_string(),
            partner_id: self.syms.name(c.partner).to_string(),
            program_id: self.syms.name(c.program).to_string(),
            amount: c.amount,
            currency,
            status: c.status,
            approved_amount: c.approved_amount,
        })
    }

    /// The entries of one program's period (by its label), in the order of
    /// `balances()`; `None` if there is no such program. Visits the program's partners,
    /// not every entry.
    pub fn period_balances(&self, program_id: &str, period: &str) -> Option<Vec<Balance>> {
        let (program, p) = self.program_by_name(program_id)?;
        let Some(label) = PeriodLabel::parse(period).filter(|l| l.kind == p.period_kind()) else {
            return Some(Vec::new());
        };
        let mut keys: Vec<EntryKey> = self
            .partner_entries
            .iter()
            .filter(|((_, prog), periods)| *prog == program && periods.contains(&label.index))
            .map(|(&(partner, _), _)| EntryKey {
                partner,
                program,
                period: label.index,
            })
            .collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        Some(self.balances_of(&keys))
    }

    /// Every claim, sorted by claim_id.
    pub fn claims(&self) -> Vec<ClaimView> {
        self.claims_iter().collect()
    }

    /// [`Ledger::claims`] one at a time (only their ids are held, sorted).
    pub fn claims_iter(&self) -> impl Iterator<Item = ClaimView> + '_ {
        let mut ids: Vec<&Text> = self.claims.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.claim(id))
    }
}

/// A program as the query API shows it: the current version, every version, the closed
/// periods.
#[derive(Debug, Clone)]
pub struct ProgramView {
    pub current: Arc<ProgramDef>,
    pub versions: Vec<Arc<ProgramDef>>,
    /// Labels of the closed periods, in period order.
    pub closed_periods: Vec<String>,
}

impl Ledger {
    /// Every program, sorted by program_id.
    pub fn programs(&self) -> Vec<ProgramView> {
        let mut out: Vec<ProgramView> = self.programs.values().map(program_view).collect();
        out.sort_by(|a, b| a.current.program_id.cmp(&b.current.program_id));
        out
    }

    /// One program, if it exists.
    pub fn program(&self, program_id: &str) -> Option<ProgramView> {
        self.program_by_name(program_id)
            .map(|(_, p)| program_view(p))
    }
}

fn program_view(p: &Program) -> ProgramView {
    let mut closed: Vec<i64> = p.closed.keys().copied().collect();
    closed.sort_unstable();
    ProgramView {
        current: Arc::clone(p.current()),
        versions: p.versions.clone(),
        closed_periods: closed
            .into_iter()
            .map(|i| p.period_kind().label(i).into())
            .collect(),
    }
}
