//! Statements: everything that explains one entry's numbers.

use super::*;

/// Everything that explains one entry's numbers.
#[derive(Debug, Clone)]
pub struct Statement {
    pub balance: Balance,
    /// Every event that touched the entry, in log order (empty unless the journal is on).
    pub lines: Vec<JournalLine>,
    /// How the formula reads the basis now: tiers, target and attainment, cap, expiry…
    pub explanation: serde_json::Value,
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
        let b = entry.basis;
        let money = |d: Decimal| crate::values::format_money(d, def.currency);
        let exact = crate::values::format_exact;
        let explanation = match &def.rules {
            Rules::Rebate { basis, mode, tiers } => {
                let current = tiers.iter().rev().find(|t| t.from <= b);
                let next = tiers.iter().find(|t| t.from > b);
                serde_json::json!({
                    "basis_measure": basis.as_str(),
                    "mode": match mode { crate::rules::RebateMode::Retroactive => "retroactive", crate::rules::RebateMode::Incremental => "incremental" },
                    "tier_reached": current.map(|t| serde_json::json!({"from": exact(t.from), "rate": exact(t.rate)})),
                    "next_tier": next.map(|t| serde_json::json!({"from": exact(t.from), "rate": exact(t.rate), "still_needed": exact(t.from - b)})),
                })
            }
            Rules::Bonus {
                measure,
                thresholds,
                accelerator,
            } => {
                let attainment = target.filter(|t| !t.is_zero()).map(|t| b / t);
                let next = target.and_then(|t| {
                    thresholds
                        .iter()
                        .find(|th| b < th.attainment * t)
                        .map(|th| (th, th.attainment * t - b))
                });
                serde_json::json!({
                    "measure": measure.as_str(),
                    "target": target.map(exact),
                    "attainment": attainment.map(|a| exact(a.round_dp(6))),
                    "next_threshold": next.map(|(th, need)| serde_json::json!({"attainment": exact(th.attainment), "payout": money(th.payout), "still_needed": exact(need)})),
                    "accelerator": accelerator.as_ref().map(|a| serde_json::json!({"above": exact(a.above), "rate": exact(a.rate)})),
                })
            }
            Rules::Spif {
                rate,
                cap_per_period,
                payout,
            } => serde_json::json!({
                "rate": match rate { crate::rules::SpifRate::PerUnit(r) => serde_json::json!({"per_unit": exact(*r)}), crate::rules::SpifRate::Rate(r) => serde_json::json!({"rate": exact(*r)}) },
                "cap_per_period": cap_per_period.map(money),
                "payout": match payout { crate::rules::SpifPayout::Immediate => "immediate", crate::rules::SpifPayout::PeriodClose => "period_close" },
            }),
            Rules::Training {
                rewards,
                cap_per_period,
            } => serde_json::json!({
                "completions": entry.completions,
                "rewards": rewards.iter().map(|r| serde_json::json!({"certification": r.certification, "amount": money(r.amount)})).collect::<Vec<_>>(),
                "cap_per_period": cap_per_period.map(money),
            }),
            Rules::Fund {
                accrual_rate,
                cap_per_period,
                expires_after_periods,
            } => {
                let expires_index = i128::from(label.index) + i128::from(*expires_after_periods);
                let claims: Vec<serde_json::Value> = {
                    let mut ids: Vec<&Text> = self.claims.keys().collect();
                    ids.sort();
                    ids.into_iter()
                        .filter_map(|id| {
                            let c = self.claims.get(id)?;
                            let took = c.reservations.iter().find(|(p, _)| *p == label.index)?;
                            (c.partner == partner && c.program == program_sym).then(
                                || serde_json::json!({"claim_id": id, "reserved": money(took.1)}),
                            )
                        })
                        .collect()
                };
                serde_json::json!({
                    "accrual_rate": exact(*accrual_rate),
                    "cap_per_period": cap_per_period.map(money),
                    "expires_after_periods": expires_after_periods,
                    "expires_when_closed": i64::try_from(expires_index).ok().map(|i| program.period_kind().label(i)),
                    "expired": program.bucket_expired(label.index),
                    "pending_claims_reserving": claims,
                })
            }
        };
        let lines = self
            .journal
            .as_ref()
            .and_then(|j| j.get(&key))
            .map(|j| j.lines().cloned().collect())
            .unwrap_or_default();
        Some(Statement {
            balance,
            lines,
            explanation,
        })
    }
}
