//! The program report and the accruals (issue 17) as finance reads them: built from a
//! replay's state (the ledger's figures, the replay's refusal counts) at one position,
//! and written as JSON, a table or CSV.

use crate::ledger::{ProgramReport, RefusalCount};
use crate::values::push_csv_record;
use crate::Replay;
use serde::Serialize;

/// One program's liability (what it owes and has not paid) at the report's position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accrual {
    pub program_id: String,
    pub kind: &'static str,
    pub currency: String,
    pub earned: String,
    pub paid: String,
    pub accrued_liability: String,
    pub budget: Option<String>,
}

impl crate::document::CsvRow for Accrual {
    const HEADER: &'static [&'static str] = &[
        "program_id",
        "kind",
        "currency",
        "earned",
        "paid",
        "accrued_liability",
        "budget",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.program_id.clone(),
            self.kind.to_string(),
            self.currency.clone(),
            self.earned.clone(),
            self.paid.clone(),
            self.accrued_liability.clone(),
            self.budget.clone().unwrap_or_default(),
        ]
    }
}

/// Reports of one or every program, as of one log position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The last log position folded.
    pub position: u64,
    pub accruals: Vec<Accrual>,
    pub programs: Vec<ProgramReport>,
}

/// The report of `program_id` (or of every program) from `replay`'s state at
/// `position`; `None` if the named program does not exist there.
pub fn build(replay: &Replay, position: u64, program_id: Option<&str>) -> Option<Report> {
    let ledger = replay.ledger();
    let ids: Vec<String> = match program_id {
        Some(id) => vec![id.to_string()],
        None => ledger
            .programs()
            .into_iter()
            .map(|p| p.current.program_id.clone())
            .collect(),
    };
    let mut programs = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut r = ledger.program_report(id)?;
        r.refusals = replay
            .refused_in_program(id)
            .into_iter()
            .map(|(code, count)| RefusalCount { code, count })
            .collect();
        programs.push(r);
    }
    Some(Report {
        position,
        accruals: programs.iter().map(accrual).collect(),
        programs,
    })
}

/// The accruals of every program at `position` (no per-period detail kept).
pub fn accruals(replay: &Replay, position: u64) -> Vec<Accrual> {
    build(replay, position, None).map_or_else(Vec::new, |r| r.accruals)
}

fn accrual(r: &ProgramReport) -> Accrual {
    Accrual {
        program_id: r.program_id.clone(),
        kind: r.kind,
        currency: r.currency.clone(),
        earned: r.totals.earned.clone(),
        paid: r.totals.paid.clone(),
        accrued_liability: r.totals.accrued_liability.clone(),
        budget: r.budget.as_ref().map(|b| b.budget.clone()),
    }
}

impl Report {
    /// The form finance reads: accruals, then each program's periods, budget,
    /// attainment, top performers, claims and refusals.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(t, "Report at log position {}\n", self.position);
        let _ = writeln!(
            t,
            "{:<24} {:<8} {:>4} {:>16} {:>16} {:>18} {:>16}",
            "program", "kind", "cur", "earned", "paid", "accrued liability", "budget"
        );
        for a in &self.accruals {
            let _ = writeln!(
                t,
                "{:<24} {:<8} {:>4} {:>16} {:>16} {:>18} {:>16}",
                a.program_id,
                a.kind,
                a.currency,
                a.earned,
                a.paid,
                a.accrued_liability,
                a.budget.as_deref().unwrap_or("-")
            );
        }
        for p in &self.programs {
            let _ = writeln!(
                t,
                "\n== {} — {} ({} in {}, v{}, {} to {}, per {}; as of {})",
                p.program_id,
                p.name,
                p.kind,
                p.currency,
                p.version,
                p.start_date,
                p.end_date,
                p.period_kind,
                p.as_of_date.as_deref().unwrap_or("-")
            );
            let _ = writeln!(t, "partners enrolled now: {}", p.partners_enrolled);
            let _ = writeln!(
                t,
                "{:<10} {:>6} {:>8} {:>8} {:>16} {:>10} {:>14} {:>14} {:>14} {:>8}",
                "period",
                "closed",
                "partners",
                "active",
                "revenue",
                "units",
                "earned",
                "paid",
                "liability",
                "cost"
            );
            for f in p.periods.iter().chain([&p.totals]) {
                let _ = writeln!(
                    t,
                    "{:<10} {:>6} {:>8} {:>8} {:>16} {:>10} {:>14} {:>14} {:>14} {:>8}",
                    f.period,
                    if f.period == "total" {
                        ""
                    } else if f.closed {
                        "yes"
                    } else {
                        "no"
                    },
                    f.partners,
                    f.partners_active,
                    f.revenue,
                    f.units,
                    f.earned,
                    f.paid,
                    f.accrued_liability,
                    f.cost_share.as_deref().unwrap_or("-")
                );
            }
            if let Some(fund) = &p.totals.fund {
                let _ = writeln!(
                    t,
                    "funds: accrued {}, reserved {}, approved {}, expired (unused) {}, available {}, utilization {}",
                    fund.accrued,
                    fund.reserved,
                    fund.approved,
                    fund.expired,
                    fund.available,
                    fund.utilization.as_deref().unwrap_or("-")
                );
            }
            if let Some(c) = &p.claims {
                let _ = writeln!(
                    t,
                    "claims: {} submitted ({}), {} pending ({}), {} approved ({} claimed, {} approved), {} rejected, {} denied",
                    c.submitted.count,
                    c.submitted.amount,
                    c.pending.count,
                    c.pending.amount,
                    c.approved.count,
                    c.approved.amount,
                    c.approved_amount,
                    c.rejected.count,
                    c.denied.count
                );
            }
            if let Some(b) = &p.budget {
                let _ = writeln!(
                    t,
                    "budget {}: committed {} ({}), paid {}, remaining {}; forecast to {}: {} ({})",
                    b.budget,
                    b.committed,
                    b.utilization,
                    b.paid,
                    b.remaining,
                    p.end_date,
                    b.forecast.as_deref().unwrap_or("-"),
                    b.forecast_utilization.as_deref().unwrap_or("-")
                );
            }
            let levels: Vec<String> = p
                .totals
                .attainment
                .iter()
                .map(|l| format!("{} — {}", l.level, l.partners))
                .collect();
            let _ = writeln!(t, "attainment (entries): {}", levels.join("; "));
            let top: Vec<String> = p
                .top_performers
                .iter()
                .map(|x| format!("{} {}", x.partner_id, x.earned))
                .collect();
            let _ = writeln!(t, "top performers: {}", top.join(", "));
            if !p.refusals.is_empty() {
                let r: Vec<String> = p
                    .refusals
                    .iter()
                    .map(|r| format!("{} {}", r.code, r.count))
                    .collect();
                let _ = writeln!(t, "refusals: {}", r.join(", "));
            }
        }
        t
    }

    /// One line per (program, period) and one per program total (period `total`).
    pub fn csv(&self) -> String {
        let mut out = String::new();
        push_csv_record(
            &mut out,
            [
                "program_id",
                "kind",
                "currency",
                "period",
                "closed",
                "partners",
                "partners_active",
                "revenue",
                "units",
                "earned",
                "paid",
                "accrued_liability",
                "cost_share",
                "fund_reserved",
                "fund_expired",
                "fund_available",
                "budget",
            ],
        );
        for p in &self.programs {
            for f in p.periods.iter().chain([&p.totals]) {
                let fund = f.fund.as_ref();
                let units = f.units.to_string();
                let budget = if f.period == "total" {
                    p.budget.as_ref().map(|b| b.budget.as_str())
                } else {
                    None
                };
                push_csv_record(
                    &mut out,
                    [
                        p.program_id.as_str(),
                        p.kind,
                        &p.currency,
                        &f.period,
                        if f.closed { "true" } else { "false" },
                        &f.partners.to_string(),
                        &f.partners_active.to_string(),
                        &f.revenue,
                        &units,
                        &f.earned,
                        &f.paid,
                        &f.accrued_liability,
                        f.cost_share.as_deref().unwrap_or(""),
                        fund.map_or("", |x| x.reserved.as_str()),
                        fund.map_or("", |x| x.expired.as_str()),
                        fund.map_or("", |x| x.available.as_str()),
                        budget.unwrap_or(""),
                    ],
                );
            }
        }
        out
    }
}
