//! A program version in plain words — what `program check` prints, so that whoever
//! writes a program reads back what the ledger understood: "retroactive rebate on net
//! amount: 2 % from 0, 3 % from 100,000 EUR, per quarter …". Pure formatting of a
//! [`ProgramDef`] that passed intake; nothing here decides anything.

use crate::event::ProgramDef;
use crate::rules::{Measure, RebateMode, Rules, SpifPayout, SpifRate};
use crate::values::Currency;
use rust_decimal::Decimal;

/// `d` with its integer part grouped by thousands: `100000` → `100,000`, `1234.5` →
/// `1,234.5`.
pub fn grouped(d: Decimal) -> String {
    let text = d.normalize().to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::with_capacity(text.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!("{sign}{out}{frac}")
}

/// Money in plain words: grouped, with the currency's minor digits, and its code.
fn money(d: Decimal, currency: Currency) -> String {
    let rounded = crate::values::format_money(d, currency);
    let (int, frac) = rounded.split_once('.').unwrap_or((&rounded, ""));
    let int: Decimal = int.parse().unwrap_or_default();
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!("{}{frac} {}", grouped(int), currency.as_str())
}

fn percent(rate: Decimal) -> String {
    format!("{} %", grouped(rate * Decimal::ONE_HUNDRED))
}

fn measure(m: Measure) -> &'static str {
    match m {
        Measure::NetAmount => "net amount",
        Measure::Quantity => "quantity",
    }
}

/// The rules in one sentence.
pub fn rules(def: &ProgramDef) -> String {
    let c = def.currency;
    let per = def.period.as_str();
    let cap = |cap: Option<Decimal>| {
        cap.map(|v| format!(", at most {} per {per}", money(v, c)))
            .unwrap_or_default()
    };
    match &def.rules {
        Rules::Rebate { basis, mode, tiers } => {
            let mode = match mode {
                RebateMode::Retroactive => "retroactive",
                RebateMode::Incremental => "incremental",
            };
            let steps: Vec<String> = tiers
                .iter()
                .map(|t| match basis {
                    Measure::NetAmount => format!("{} from {}", percent(t.rate), money(t.from, c)),
                    Measure::Quantity => format!(
                        "{} per unit from {} units",
                        money(t.rate, c),
                        grouped(t.from)
                    ),
                })
                .collect();
            let whole = match (mode, tiers.len()) {
                ("retroactive", n) if n > 1 => " (the tier reached pays on the whole basis)",
                ("incremental", n) if n > 1 => " (each tier's rate on the part inside it)",
                _ => "",
            };
            format!(
                "{mode} rebate on {}: {}{whole}",
                measure(*basis),
                steps.join(", ")
            )
        }
        Rules::Spif {
            rate,
            cap_per_period,
            payout,
        } => {
            let pays = match rate {
                SpifRate::PerUnit(r) => format!("{} per unit sold", money(*r, c)),
                SpifRate::Rate(r) => format!("{} of net amount", percent(*r)),
            };
            let when = match payout {
                SpifPayout::Immediate => "paid as earned",
                SpifPayout::PeriodClose => "paid when the period closes",
            };
            format!("SPIF: {pays}{}, {when}", cap(*cap_per_period))
        }
        Rules::Bonus {
            measure: m,
            thresholds,
            accelerator,
        } => {
            let steps: Vec<String> = thresholds
                .iter()
                .map(|t| {
                    format!(
                        "{} at {} of target",
                        money(t.payout, c),
                        percent(t.attainment)
                    )
                })
                .collect();
            let extra = accelerator
                .as_ref()
                .map(|a| {
                    format!(
                        "; plus {} of what is above {} of target",
                        percent(a.rate),
                        percent(a.above)
                    )
                })
                .unwrap_or_default();
            format!(
                "bonus on {} against each partner's target: {}{extra}",
                measure(*m),
                steps.join(", ")
            )
        }
        Rules::Training {
            rewards,
            cap_per_period,
        } => {
            let each: Vec<String> = rewards
                .iter()
                .map(|r| format!("{} for {}", money(r.amount, c), r.certification))
                .collect();
            format!(
                "training rewards: {}{}, once per person and certification",
                each.join(", "),
                cap(*cap_per_period)
            )
        }
        Rules::Fund {
            accrual_rate,
            cap_per_period,
            expires_after_periods,
        } => {
            let name = match def.kind {
                crate::rules::Kind::Coop => "co-op funds",
                _ => "MDF funds",
            };
            let expiry = match expires_after_periods {
                0 => "expiring when their own period closes".to_string(),
                1 => format!("expiring when the next {per} closes"),
                n => format!("expiring when the {per} {n} later closes"),
            };
            format!(
                "{name}: {} of net amount accrued{}, {expiry}; paid by approved claims",
                percent(*accrual_rate),
                cap(*cap_per_period)
            )
        }
    }
}

/// The whole version in plain words, one statement a line.
pub fn describe(def: &ProgramDef) -> Vec<String> {
    let mut lines = vec![
        format!("{} version {}: {}", def.program_id, def.version, def.name),
        rules(def),
        format!(
            "per {}, from {} to {}, in {}",
            def.period.as_str(),
            def.start_date,
            def.end_date,
            def.currency.as_str()
        ),
        {
            let what = match def.kind {
                crate::rules::Kind::Training => "completions",
                _ => "sales",
            };
            if def.requires_enrollment {
                format!("counts the {what} of enrolled partners only")
            } else {
                format!("counts every partner's {what}, enrolled or not")
            }
        },
    ];
    let e = &def.eligibility;
    let list = |what: &str, l: &Option<Vec<String>>| {
        l.as_ref().map(|v| match v.len() {
            0 => format!("no {what} (an empty list matches nothing)"),
            _ => format!("{what} {}", v.join(", ")),
        })
    };
    let parts: Vec<String> = [
        list("SKUs", &e.skus),
        list("product families", &e.product_families),
        list("regions", &e.regions),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !matches!(def.kind, crate::rules::Kind::Training) {
        lines.push(if parts.is_empty() {
            format!("every sale line in {} counts", def.currency.as_str())
        } else {
            format!("sale lines count when they match: {}", parts.join("; "))
        });
    }
    if let Some(b) = def.budget {
        lines.push(format!(
            "budget {} (for planning and reports; it changes no payout)",
            money(b, def.currency)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        for (n, text) in [
            ("0", "0"),
            ("999", "999"),
            ("1000", "1,000"),
            ("100000", "100,000"),
            ("1234567.5", "1,234,567.5"),
            ("-25000.00", "-25,000"),
        ] {
            assert_eq!(grouped(n.parse().unwrap()), text);
        }
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(money("100000".parse().unwrap(), eur), "100,000.00 EUR");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(money("1500.5".parse().unwrap(), jpy), "1,500 JPY");
    }
}
