//! Planning and evaluation views of the state (issue 17): a program's report (what it
//! earned, paid and owes per period, its attainment, its budget) and a partner's
//! next-tier opportunities. Read-only: nothing here changes the fold, and nothing is
//! re-derived beside it — attainment reads the rules' own levels, and what a level
//! would pay is the fold's own evaluation of a copy of the entry with the extra basis.

use super::*;
use crate::rules::Level;
use crate::values::{format_exact, format_money};

/// What reaching the next level of one open entry takes and pays.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Opportunity {
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub kind: &'static str,
    pub currency: String,
    /// `net_amount` or `quantity`: what the basis (and the additional basis) counts.
    pub measure: &'static str,
    pub basis: String,
    pub level_reached: Option<String>,
    pub next_level: String,
    /// The least additional basis that reaches the next level.
    pub additional_basis: String,
    pub earned_now: String,
    /// What the entry would earn with the additional basis (retroactive tiers on the
    /// whole basis), as the fold evaluates it.
    pub earned_then: String,
    pub pays_more: String,
}

/// A program as finance evaluates it, at the position it was built from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgramReport {
    pub program_id: String,
    pub name: String,
    pub kind: &'static str,
    pub currency: String,
    pub version: u64,
    pub period_kind: &'static str,
    pub start_date: String,
    pub end_date: String,
    /// The latest business date the log has reached (the forecast's "today").
    pub as_of_date: Option<String>,
    /// Partners enrolled now (the ledger keeps current enrollment, not its history).
    pub partners_enrolled: u64,
    pub totals: PeriodFigures,
    pub periods: Vec<PeriodFigures>,
    pub budget: Option<BudgetFigures>,
    /// By earned over the whole program, highest first (at most 10).
    pub top_performers: Vec<Performer>,
    /// MDF and co-op programs: their claims by status.
    pub claims: Option<ClaimFigures>,
    /// Business refusals of events about this program, by code (filled by the caller,
    /// which counts them).
    pub refusals: Vec<RefusalCount>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeriodFigures {
    /// A period label, or `total`.
    pub period: String,
    pub closed: bool,
    /// Partners with an entry; of them, with a positive basis.
    pub partners: u64,
    pub partners_active: u64,
    /// Counted net amounts and units less returns (whatever the basis measures).
    pub revenue: String,
    pub units: i64,
    pub earned: String,
    pub paid: String,
    /// Earned − paid (funds: − expired too): owed, not yet paid — what finance books.
    pub accrued_liability: String,
    /// Earned ÷ revenue, 4 decimal places (absent without revenue).
    pub cost_share: Option<String>,
    /// Partners per highest level reached ("none" first).
    pub attainment: Vec<LevelCount>,
    /// MDF/co-op buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fund: Option<FundFigures>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LevelCount {
    pub level: String,
    pub partners: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FundFigures {
    /// Accrued (earned), reserved by pending claims, approved (paid), expired unused.
    pub accrued: String,
    pub reserved: String,
    pub approved: String,
    pub expired: String,
    pub available: String,
    /// Approved ÷ accrued, 4 decimal places.
    pub utilization: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClaimFigures {
    pub submitted: ClaimCount,
    pub pending: ClaimCount,
    pub approved: ClaimCount,
    /// What the approved claims were approved for (≤ what they claimed).
    pub approved_amount: String,
    pub rejected: ClaimCount,
    pub denied: ClaimCount,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClaimCount {
    pub count: u64,
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetFigures {
    pub budget: String,
    /// Earned so far over every period (what the program has committed).
    pub committed: String,
    pub paid: String,
    pub remaining: String,
    /// Committed ÷ budget, 4 decimal places.
    pub utilization: String,
    /// Committed at the same daily rate through the end date (absent before the start).
    pub forecast: Option<String>,
    pub forecast_utilization: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Performer {
    pub partner_id: String,
    pub earned: String,
    pub paid: String,
    pub revenue: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RefusalCount {
    #[serde(serialize_with = "crate::refusal::serialize_as_str")]
    pub code: Code,
    pub count: u64,
}

/// A ratio to 4 decimal places, if the denominator is positive.
fn ratio(num: Decimal, den: Decimal) -> Option<String> {
    (den > Decimal::ZERO)
        .then(|| num.checked_div(den))
        .flatten()
        .map(|r| format!("{:.4}", r.round_dp(4)))
}

/// Exact sums of one period (or of all of them).
#[derive(Default)]
struct Sums {
    partners: u64,
    active: u64,
    revenue: Decimal,
    units: i64,
    earned: Decimal,
    paid: Decimal,
    reserved: Decimal,
    expired: Decimal,
    available: Decimal,
    /// (level index, label) → partners; index -1 is "none".
    levels: BTreeMap<(i64, String), u64>,
}

impl Sums {
    fn add(&mut self, b: &Balance, level: (i64, String)) {
        self.partners += 1;
        self.active += u64::from(b.basis > Decimal::ZERO);
        self.revenue += b.revenue;
        self.units = self.units.saturating_add(b.units);
        self.earned += b.earned;
        self.paid += b.paid;
        if let Some(f) = &b.fund {
            self.reserved += f.reserved;
            self.expired += f.expired;
            self.available += f.available;
        }
        *self.levels.entry(level).or_default() += 1;
    }

    fn figures(
        &self,
        period: String,
        closed: bool,
        currency: Currency,
        fund: bool,
    ) -> PeriodFigures {
        let money = |d| format_money(d, currency);
        PeriodFigures {
            period,
            closed,
            partners: self.partners,
            partners_active: self.active,
            revenue: format_exact(self.revenue),
            units: self.units,
            earned: money(self.earned),
            paid: money(self.paid),
            accrued_liability: money(self.earned - self.paid - self.expired),
            cost_share: ratio(self.earned, self.revenue),
            attainment: self
                .levels
                .iter()
                .map(|((_, label), n)| LevelCount {
                    level: label.clone(),
                    partners: *n,
                })
                .collect(),
            fund: fund.then(|| FundFigures {
                accrued: money(self.earned),
                reserved: money(self.reserved),
                approved: money(self.paid),
                expired: money(self.expired),
                available: money(self.available),
                utilization: ratio(self.paid, self.earned),
            }),
        }
    }
}

impl Ledger {
    /// The report of one program, if it exists (refusals left to the caller).
    pub fn program_report(&self, program_id: &str) -> Option<ProgramReport> {
        let (sym, program) = self.program_by_name(program_id)?;
        let def = program.current();
        let currency = def.currency;
        let fund = def.kind.is_fund();
        let money = |d| format_money(d, currency);
        let mut total = Sums::default();
        let mut periods = Vec::new();
        let mut by_partner: HashMap<Sym, [Decimal; 3]> = HashMap::default();
        for (&period, partners) in &program.periods {
            let mut sums = Sums::default();
            let mut keys: Vec<EntryKey> = partners
                .iter()
                .map(|&partner| EntryKey {
                    partner,
                    program: sym,
                    period,
                })
                .collect();
            keys.sort_by(|a, b| self.entry_order(a, b));
            for (key, b) in keys.iter().zip(self.balances_of(&keys)) {
                let level = self.level_reached(*key, &b);
                total.add(&b, level.clone());
                sums.add(&b, level);
                let p = by_partner.entry(key.partner).or_default();
                p[0] += b.earned;
                p[1] += b.paid;
                p[2] += b.revenue;
            }
            periods.push(sums.figures(
                program.period_kind().label(period).into(),
                program.closed.contains_key(&period),
                currency,
                fund,
            ));
        }
        let mut top: Vec<(Sym, [Decimal; 3])> = by_partner.into_iter().collect();
        top.sort_by(|a, b| {
            b.1[0]
                .cmp(&a.1[0])
                .then_with(|| self.syms.name(a.0).cmp(self.syms.name(b.0)))
        });
        let partners_enrolled = program
            .enrolled_partners
            .iter()
            .filter(|&&p| self.is_enrolled(p, sym))
            .count() as u64;
        Some(ProgramReport {
            program_id: def.program_id.clone(),
            name: def.name.clone(),
            kind: def.kind.as_str(),
            currency: currency.to_string(),
            version: def.version,
            period_kind: def.period.as_str(),
            start_date: def.start_date.to_string(),
            end_date: def.end_date.to_string(),
            as_of_date: self.latest_date.map(|d| d.to_string()),
            partners_enrolled,
            budget: def
                .budget
                .map(|budget| self.budget_figures(def, budget, &total)),
            totals: total.figures("total".into(), false, currency, fund),
            periods,
            top_performers: top
                .into_iter()
                .take(10)
                .map(|(p, [earned, paid, revenue])| Performer {
                    partner_id: self.syms.name(p).to_string(),
                    earned: money(earned),
                    paid: money(paid),
                    revenue: format_exact(revenue),
                })
                .collect(),
            claims: fund.then(|| self.claim_figures(sym, currency)),
            refusals: Vec::new(),
        })
    }

    /// The budget against what the program committed, and a run-rate forecast to its
    /// end date from the latest business date of the log.
    fn budget_figures(&self, def: &ProgramDef, budget: Decimal, total: &Sums) -> BudgetFigures {
        let money = |d| format_money(d, def.currency);
        let committed = total.earned;
        let days = (def.end_date - def.start_date).num_days() + 1;
        let forecast = self.latest_date.and_then(|today| {
            if today < def.start_date {
                return None;
            }
            let elapsed = ((today - def.start_date).num_days() + 1).min(days);
            let f = committed
                .checked_mul(Decimal::from(days))?
                .checked_div(Decimal::from(elapsed))?;
            Some(round_money(f, def.currency))
        });
        BudgetFigures {
            budget: money(budget),
            committed: money(committed),
            paid: money(total.paid),
            remaining: money(budget - committed),
            utilization: ratio(committed, budget).unwrap_or_default(),
            forecast: forecast.map(money),
            forecast_utilization: forecast.and_then(|f| ratio(f, budget)),
        }
    }

    /// Budget, committed (earned) and utilization of every program with a budget, by
    /// program id (what `/metrics` exposes): visits those programs' entries only.
    pub fn budgets(&self) -> Vec<(String, Decimal, Decimal)> {
        let mut out: Vec<(String, Decimal, Decimal)> = self
            .programs
            .iter()
            .filter_map(|(&sym, p)| {
                let budget = p.current().budget?;
                let committed = p
                    .periods
                    .iter()
                    .flat_map(|(&period, partners)| {
                        partners.iter().map(move |&partner| EntryKey {
                            partner,
                            program: sym,
                            period,
                        })
                    })
                    .filter_map(|key| Some(self.earned(key, self.entries.get(&key)?)))
                    .sum();
                Some((p.current().program_id.clone(), budget, committed))
            })
            .collect();
        out.sort();
        out
    }

    fn claim_figures(&self, program: Sym, currency: Currency) -> ClaimFigures {
        let mut counts = [(0u64, Decimal::ZERO); 5];
        let mut approved_amount = Decimal::ZERO;
        for c in self.claims.values().filter(|c| c.program == program) {
            let slot = match c.status {
                ClaimStatus::Pending => 1,
                ClaimStatus::Approved => 2,
                ClaimStatus::Rejected => 3,
                ClaimStatus::Denied => 4,
            };
            for i in [0, slot] {
                counts[i].0 += 1;
                counts[i].1 += c.amount;
            }
            approved_amount += c.approved_amount.unwrap_or_default();
        }
        let count = |i: usize| ClaimCount {
            count: counts[i].0,
            amount: format_money(counts[i].1, currency),
        };
        ClaimFigures {
            submitted: count(0),
            pending: count(1),
            approved: count(2),
            approved_amount: format_money(approved_amount, currency),
            rejected: count(3),
            denied: count(4),
        }
    }

    /// The highest level of the rules in effect the entry's basis reached, as (index,
    /// label); (-1, "none") below the first. Without levels (training), whether it
    /// earns.
    fn level_reached(&self, key: EntryKey, b: &Balance) -> (i64, String) {
        let Some((def, target)) = self.evaluation(key) else {
            return (-1, "none".into());
        };
        let levels = def.rules.levels(target);
        if levels.is_empty() {
            return match (&def.rules, target) {
                (Rules::Bonus { .. }, None) => (-2, "no target".into()),
                _ if b.earned > Decimal::ZERO => (0, "earning".into()),
                _ => (-1, "none".into()),
            };
        }
        levels
            .iter()
            .enumerate()
            .rev()
            .find(|(_, l)| l.reached_by(b.basis))
            .map_or((-1, "none".into()), |(i, l)| (i as i64, l.label.clone()))
    }

    /// The partner's opportunities: for each open rebate, bonus or SPIF entry below
    /// its last level, what the next level takes and pays.
    pub fn opportunities(&self, partner_id: &str) -> Vec<Opportunity> {
        self.partner_keys(partner_id)
            .into_iter()
            .filter_map(|k| self.opportunity(k))
            .collect()
    }

    /// The opportunity of one entry, if it is open, of a kind with levels, and below
    /// its last reachable one.
    pub(super) fn opportunity(&self, key: EntryKey) -> Option<Opportunity> {
        let program = self.programs.get(&key.program)?;
        if program.closed.contains_key(&key.period) {
            return None;
        }
        let entry = self.entries.get(&key)?;
        let (def, target) = self.evaluation(key)?;
        if !matches!(def.kind, Kind::Rebate | Kind::Bonus | Kind::Spif) {
            return None;
        }
        let measure = def.rules.measure()?;
        let levels = def.rules.levels(target);
        let reached = levels.iter().rev().find(|l| l.reached_by(entry.basis));
        // Strict levels (the first tier's "any sale", an accelerator) have no least
        // basis that reaches them: the next is the first level one can land on.
        let next: &Level = levels.iter().find(|l| !l.strict && l.basis > entry.basis)?;
        let additional = next.basis - entry.basis;
        let earned_now = earned_by(def, target, entry);
        let earned_then = self.what_if(def, target, entry, additional, measure);
        let money = |d| format_money(d, def.currency);
        Some(Opportunity {
            partner_id: self.syms.name(key.partner).to_string(),
            program_id: self.syms.name(key.program).to_string(),
            period: program.period_kind().label(key.period).into(),
            kind: def.kind.as_str(),
            currency: def.currency.to_string(),
            measure: measure.as_str(),
            basis: format_exact(entry.basis),
            level_reached: reached.map(|l| l.label.clone()),
            next_level: next.label.clone(),
            additional_basis: format_exact(additional),
            earned_now: money(earned_now),
            earned_then: money(earned_then),
            pays_more: money(earned_then - earned_now),
        })
    }

    /// What the entry would earn after a sale adding `additional` to its basis: the
    /// fold's own evaluation ([`earned_by`]) of a copy of the entry with the sale
    /// counted in — never a formula written again beside it.
    fn what_if(
        &self,
        def: &ProgramDef,
        target: Option<Decimal>,
        entry: &Entry,
        additional: Decimal,
        measure: Measure,
    ) -> Decimal {
        let mut copy = entry.clone();
        copy.basis += additional;
        match measure {
            Measure::NetAmount => copy.revenue += additional,
            Measure::Quantity => {
                copy.units = copy
                    .units
                    .saturating_add(i64::try_from(additional).unwrap_or(i64::MAX))
            }
        }
        earned_by(def, target, &copy)
    }
}
