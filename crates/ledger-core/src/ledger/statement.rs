//! Statements: everything that explains one entry's numbers — its balance, every event
//! that moved it (from the journal), and how the rules read its basis now. Typed values
//! only: the query API decides how they are written.

use super::*;
use crate::rules::{Accelerator, RebateMode, Reward, SpifPayout, SpifRate, Threshold, Tier};

/// Everything that explains one entry's numbers.
#[derive(Debug, Clone)]
pub struct Statement {
    pub balance: Balance,
    /// Every event that touched the entry, in log order (empty unless the journal is
    /// on) — since line `first_line`: the lines before it were taken by
    /// [`Ledger::drain_journal`] and are kept by the caller.
    pub lines: Vec<JournalLine>,
    pub first_line: u64,
    /// How the formula reads the basis now: tiers, target and attainment, cap, expiry…
    pub explanation: Explanation,
    /// What the next tier, threshold or cap takes and would pay (open rebate, bonus
    /// and SPIF entries below their last level).
    pub opportunity: Option<super::Opportunity>,
}

/// How the rules in effect read an entry's basis (SPEC §4), per kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Explanation {
    Rebate {
        basis_measure: Measure,
        mode: RebateMode,
        /// The highest tier whose `from` the basis reached.
        tier_reached: Option<Tier>,
        /// The next tier up, and how much basis it still needs.
        next_tier: Option<(Tier, Decimal)>,
    },
    Bonus {
        measure: Measure,
        target: Option<Decimal>,
        /// Basis ÷ target, to 6 decimal places (absent without a non-zero target).
        attainment: Option<Decimal>,
        /// The next threshold not reached, and how much basis it still needs.
        next_threshold: Option<(Threshold, Decimal)>,
        accelerator: Option<Accelerator>,
    },
    Spif {
        rate: SpifRate,
        cap_per_period: Option<Decimal>,
        payout: SpifPayout,
    },
    Training {
        /// The certification of every completion counted, in order.
        completions: Vec<Text>,
        rewards: Vec<Reward>,
        cap_per_period: Option<Decimal>,
    },
    Fund {
        accrual_rate: Decimal,
        cap_per_period: Option<Decimal>,
        expires_after_periods: u64,
        /// The label of the period whose close expires this bucket.
        expires_when_closed: Option<String>,
        expired: bool,
        /// The claims of this partner and program that reserved from this bucket, by
        /// claim id, with what each took from it.
        claims_reserving: Vec<(String, Decimal)>,
    },
}

impl Ledger {
    /// The statement of (partner, program, period label), if that entry exists.
    pub fn statement(&self, partner_id: &str, program_id: &str, period: &str) -> Option<Statement> {
        let partner = self.syms.get(partner_id)?;
        let program_sym = self.syms.get(program_id)?;
        let program = self.programs.get(&program_sym)?;
        let label = PeriodLabel::parse(period).filter(|l| l.kind == program.period_kind())?;
        let key = EntryKey {
            partner,
            program: program_sym,
            period: label.index,
        };
        let entry = self.entries.get(&key)?;
        let balance = self.balances_of(&[key]).into_iter().next()?;
        let (def, target) = self.evaluation(key)?;
        let explanation = match &def.rules {
            Rules::Fund {
                accrual_rate,
                cap_per_period,
                expires_after_periods,
            } => {
                let expires_index = i128::from(label.index) + i128::from(*expires_after_periods);
                Explanation::Fund {
                    accrual_rate: *accrual_rate,
                    cap_per_period: *cap_per_period,
                    expires_after_periods: *expires_after_periods,
                    expires_when_closed: i64::try_from(expires_index)
                        .ok()
                        .map(|i| program.period_kind().label(i).into()),
                    expired: program.bucket_expired(label.index),
                    claims_reserving: self.claims_reserving(partner, program_sym, label.index),
                }
            }
            rules => explain(rules, entry, target),
        };
        let (lines, first_line) = self
            .journal
            .as_ref()
            .map_or((Vec::new(), 0), |j| j.lines_of(key));
        Some(Statement {
            balance,
            lines,
            first_line,
            explanation,
            opportunity: self.opportunity(key),
        })
    }

    /// The claims of (partner, program) that reserved from bucket `period`, by claim id:
    /// from the per-pair index (every claim only if the index is not restored yet).
    fn claims_reserving(&self, partner: Sym, program: Sym, period: i64) -> Vec<(String, Decimal)> {
        let took = |id: &Text| {
            let c = self.claims.get(id)?;
            let (_, amount) = c.reservations.iter().find(|(p, _)| *p == period)?;
            (c.partner == partner && c.program == program).then(|| (id.to_string(), *amount))
        };
        if self.derived_stale {
            let mut ids: Vec<&Text> = self.claims.keys().collect();
            ids.sort();
            return ids.into_iter().filter_map(took).collect();
        }
        self.claims_by_pair
            .get(&(partner, program))
            .map_or_else(Vec::new, |ids| ids.iter().filter_map(took).collect())
    }
}

/// The explanation of a non-fund entry with basis `entry.basis` and the partner's target.
fn explain(rules: &Rules, entry: &Entry, target: Option<Decimal>) -> Explanation {
    let b = entry.basis;
    match rules {
        Rules::Rebate { basis, mode, tiers } => Explanation::Rebate {
            basis_measure: *basis,
            mode: *mode,
            tier_reached: tiers.iter().rev().find(|t| t.from <= b).cloned(),
            next_tier: tiers
                .iter()
                .find(|t| t.from > b)
                .map(|t| (t.clone(), t.from - b)),
        },
        Rules::Bonus {
            measure,
            thresholds,
            accelerator,
        } => Explanation::Bonus {
            measure: *measure,
            target,
            attainment: target.filter(|t| !t.is_zero()).map(|t| (b / t).round_dp(6)),
            next_threshold: target.and_then(|t| {
                thresholds
                    .iter()
                    .find(|th| b < th.attainment * t)
                    .map(|th| (th.clone(), th.attainment * t - b))
            }),
            accelerator: accelerator.clone(),
        },
        Rules::Spif {
            rate,
            cap_per_period,
            payout,
        } => Explanation::Spif {
            rate: *rate,
            cap_per_period: *cap_per_period,
            payout: *payout,
        },
        Rules::Training {
            rewards,
            cap_per_period,
        } => Explanation::Training {
            completions: entry.completions.clone(),
            rewards: rewards.clone(),
            cap_per_period: *cap_per_period,
        },
        Rules::Fund { .. } => unreachable!("fund entries are explained with their claims"),
    }
}
