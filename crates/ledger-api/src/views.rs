//! The API's own response shapes. Internal Rust types never reach the wire as they are:
//! programs and rules are written in the spec's own words (the shape of
//! `program.published`), amounts in the spec's formats, statements field by field.

use ledger_core::document::{BalanceRow, PayoutRow};
use ledger_core::event::ProgramDef;
use ledger_core::ledger::{Explanation, JournalLine, ProgramView};
use ledger_core::rules::{RebateMode, Rules, SpifPayout, SpifRate};
use ledger_core::values::Currency;
use ledger_core::values::{format_exact, format_money};
use serde::Serialize;
use serde_json::{json, Value};

/// One program version, as `program.published` states it.
#[derive(Debug, Serialize)]
pub struct ProgramVersion {
    pub program_id: String,
    pub version: u64,
    pub name: String,
    pub kind: &'static str,
    pub currency: String,
    pub start_date: String,
    pub end_date: String,
    pub period: &'static str,
    pub requires_enrollment: bool,
    /// Which lines count (SPEC §3): each list present must contain the line's value;
    /// absent when the program takes every line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eligibility: Option<Value>,
    /// The planned cost, when the program states one (SPEC §3, v1.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    pub rules: Value,
}

/// A program: its current version, its closed periods and, on its own page, every
/// version.
#[derive(Debug, Serialize)]
pub struct Program {
    #[serde(flatten)]
    pub current: ProgramVersion,
    pub closed_periods: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<ProgramVersion>>,
}

impl Program {
    pub fn of(v: &ProgramView, with_history: bool) -> Program {
        Program {
            current: ProgramVersion::of(&v.current),
            closed_periods: v.closed_periods.clone(),
            versions: with_history
                .then(|| v.versions.iter().map(|d| ProgramVersion::of(d)).collect()),
        }
    }
}

impl ProgramVersion {
    pub fn of(d: &ProgramDef) -> ProgramVersion {
        ProgramVersion {
            program_id: d.program_id.clone(),
            version: d.version,
            name: d.name.clone(),
            kind: d.kind.as_str(),
            currency: d.currency.as_str().to_string(),
            start_date: d.start_date.to_string(),
            end_date: d.end_date.to_string(),
            period: d.period.as_str(),
            requires_enrollment: d.requires_enrollment,
            eligibility: eligibility_json(&d.eligibility),
            budget: d.budget.map(format_exact),
            rules: rules_json(&d.rules),
        }
    }
}

/// The eligibility lists a program states, as `program.published` has them.
pub fn eligibility_json(e: &ledger_core::event::Eligibility) -> Option<Value> {
    let mut out = serde_json::Map::new();
    for (name, list) in [
        ("skus", &e.skus),
        ("product_families", &e.product_families),
        ("regions", &e.regions),
    ] {
        if let Some(list) = list {
            out.insert(name.into(), json!(list));
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The rules in the words of SPEC §4: the `rules` object of `program.published`.
pub fn rules_json(rules: &Rules) -> Value {
    let exact = |d| format_exact(d);
    let opt = |d: Option<rust_decimal::Decimal>| d.map(format_exact);
    match rules {
        Rules::Rebate { basis, mode, tiers } => json!({
            "basis": basis.as_str(),
            "mode": match mode { RebateMode::Retroactive => "retroactive", RebateMode::Incremental => "incremental" },
            "tiers": tiers.iter().map(|t| json!({"from": exact(t.from), "rate": exact(t.rate)})).collect::<Vec<_>>(),
        }),
        Rules::Spif {
            rate,
            cap_per_period,
            payout,
        } => {
            let mut out = match rate {
                SpifRate::PerUnit(r) => json!({ "per_unit": exact(*r) }),
                SpifRate::Rate(r) => json!({ "rate": exact(*r) }),
            };
            out["payout"] = json!(match payout {
                SpifPayout::Immediate => "immediate",
                SpifPayout::PeriodClose => "period_close",
            });
            if let Some(cap) = opt(*cap_per_period) {
                out["cap_per_period"] = json!(cap);
            }
            out
        }
        Rules::Bonus {
            measure,
            thresholds,
            accelerator,
        } => {
            let mut out = json!({
                "measure": measure.as_str(),
                "thresholds": thresholds.iter().map(|t| json!({"attainment": exact(t.attainment), "payout": exact(t.payout)})).collect::<Vec<_>>(),
            });
            if let Some(a) = accelerator {
                out["accelerator"] = json!({"above": exact(a.above), "rate": exact(a.rate)});
            }
            out
        }
        Rules::Training {
            rewards,
            cap_per_period,
        } => {
            let mut out = json!({
                "rewards": rewards.iter().map(|r| json!({"certification": r.certification, "amount": exact(r.amount)})).collect::<Vec<_>>(),
            });
            if let Some(cap) = opt(*cap_per_period) {
                out["cap_per_period"] = json!(cap);
            }
            out
        }
        Rules::Fund {
            accrual_rate,
            cap_per_period,
            expires_after_periods,
        } => {
            let mut out = json!({
                "accrual_rate": exact(*accrual_rate),
                "expires_after_periods": expires_after_periods,
            });
            if let Some(cap) = opt(*cap_per_period) {
                out["cap_per_period"] = json!(cap);
            }
            out
        }
    }
}

/// One line of a statement: the event, the entry after it, and what it changed.
#[derive(Debug, Serialize)]
pub struct StatementLine {
    pub cause_source: String,
    pub cause_id: String,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub time: String,
    pub basis: String,
    pub basis_change: String,
    pub earned: String,
    pub earned_change: String,
    pub adjustments: String,
    pub paid: String,
    pub reserved: String,
    pub payout: Option<StatementPayout>,
}

#[derive(Debug, Serialize)]
pub struct StatementPayout {
    pub payout_id: String,
    pub amount: String,
    pub reason: &'static str,
}

/// Everything that explains one entry's numbers.
#[derive(Debug, Serialize)]
pub struct StatementBody {
    pub balance: BalanceRow,
    pub lines: Vec<StatementLine>,
    pub payouts: Vec<PayoutRow>,
    pub explanation: Value,
    /// What the next tier, threshold or cap takes and would pay (open rebate, bonus and
    /// SPIF entries below their last level).
    pub opportunity: Option<ledger_core::ledger::Opportunity>,
}

impl StatementBody {
    pub fn of(s: &ledger_service::EntryStatement) -> StatementBody {
        let st = &s.statement;
        let currency = st.balance.currency;
        let money = |d| format_money(d, currency);
        let mut previous: Option<&JournalLine> = None;
        let lines = st
            .lines
            .iter()
            .map(|l| {
                let (db, de) = match previous {
                    Some(prev) => (l.basis - prev.basis, l.earned - prev.earned),
                    None => (l.basis, l.earned),
                };
                previous = Some(l);
                StatementLine {
                    cause_source: l.cause.source.to_string(),
                    cause_id: l.cause.id.to_string(),
                    event_type: l.cause.event_type.as_str(),
                    time: l.cause.time.to_string(),
                    basis: format_exact(l.basis),
                    basis_change: format_exact(db),
                    earned: money(l.earned),
                    earned_change: money(de),
                    adjustments: money(l.adjustments),
                    paid: money(l.paid),
                    reserved: money(l.reserved),
                    payout: l.payout.map(|(id, amount, reason)| StatementPayout {
                        payout_id: id.to_string(),
                        amount: money(amount),
                        reason: reason.as_str(),
                    }),
                }
            })
            .collect();
        StatementBody {
            balance: BalanceRow::from(&st.balance),
            lines,
            payouts: s.payouts.clone(),
            explanation: explanation_json(&st.explanation, currency),
            opportunity: st.opportunity.clone(),
        }
    }
}

/// How the rules read the entry's basis, as the statement shows it: amounts of money in
/// the currency's minor units, bases, rates and attainments exact.
fn explanation_json(e: &Explanation, currency: Currency) -> Value {
    let money = |d| format_money(d, currency);
    let exact = |d| format_exact(d);
    match e {
        Explanation::Rebate {
            basis_measure,
            mode,
            tier_reached,
            next_tier,
        } => json!({
            "basis_measure": basis_measure.as_str(),
            "mode": match mode { RebateMode::Retroactive => "retroactive", RebateMode::Incremental => "incremental" },
            "tier_reached": tier_reached.as_ref().map(|t| json!({"from": exact(t.from), "rate": exact(t.rate)})),
            "next_tier": next_tier.as_ref().map(|(t, need)| json!({"from": exact(t.from), "rate": exact(t.rate), "still_needed": exact(*need)})),
        }),
        Explanation::Bonus {
            measure,
            target,
            attainment,
            next_threshold,
            accelerator,
        } => json!({
            "measure": measure.as_str(),
            "target": target.map(exact),
            "attainment": attainment.map(exact),
            "next_threshold": next_threshold.as_ref().map(|(th, need)| json!({"attainment": exact(th.attainment), "payout": money(th.payout), "still_needed": exact(*need)})),
            "accelerator": accelerator.as_ref().map(|a| json!({"above": exact(a.above), "rate": exact(a.rate)})),
        }),
        Explanation::Spif {
            rate,
            cap_per_period,
            payout,
        } => json!({
            "rate": match rate { SpifRate::PerUnit(r) => json!({"per_unit": exact(*r)}), SpifRate::Rate(r) => json!({"rate": exact(*r)}) },
            "cap_per_period": cap_per_period.map(money),
            "payout": match payout { SpifPayout::Immediate => "immediate", SpifPayout::PeriodClose => "period_close" },
        }),
        Explanation::Training {
            completions,
            rewards,
            cap_per_period,
        } => json!({
            "completions": completions.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "rewards": rewards.iter().map(|r| json!({"certification": r.certification, "amount": money(r.amount)})).collect::<Vec<_>>(),
            "cap_per_period": cap_per_period.map(money),
        }),
        Explanation::Fund {
            accrual_rate,
            cap_per_period,
            expires_after_periods,
            expires_when_closed,
            expired,
            claims_reserving,
        } => json!({
            "accrual_rate": exact(*accrual_rate),
            "cap_per_period": cap_per_period.map(money),
            "expires_after_periods": expires_after_periods,
            "expires_when_closed": expires_when_closed,
            "expired": expired,
            "pending_claims_reserving": claims_reserving.iter().map(|(id, reserved)| json!({"claim_id": id, "reserved": money(*reserved)})).collect::<Vec<_>>(),
        }),
    }
}
