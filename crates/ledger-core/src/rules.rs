//! Program rules per kind and their formulas (SPEC §4.1, §4.2).
//!
//! Each formula is a pure function of the rules, the basis and (for bonuses) the target;
//! it returns the *unrounded* value. Rounding and adjustments are applied by the caller
//! (`earned = round(formula) + adjustments`). Arithmetic is exact `Decimal` arithmetic;
//! a product too large for `Decimal` (beyond 7.9 × 10^28, which amounts within the
//! spec's bounds reach only with per-unit rates above 10^13) saturates instead of
//! panicking — see docs/DECISIONS.md.

use crate::event::Text;
use rust_decimal::Decimal;

/// The six kinds of incentive program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Rebate,
    Mdf,
    Coop,
    Spif,
    Bonus,
    Training,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "rebate" => Kind::Rebate,
            "mdf" => Kind::Mdf,
            "coop" => Kind::Coop,
            "spif" => Kind::Spif,
            "bonus" => Kind::Bonus,
            "training" => Kind::Training,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Rebate => "rebate",
            Kind::Mdf => "mdf",
            Kind::Coop => "coop",
            Kind::Spif => "spif",
            Kind::Bonus => "bonus",
            Kind::Training => "training",
        }
    }

    /// MDF and co-op programs hold funds in buckets that only claims pay out.
    pub fn is_fund(&self) -> bool {
        matches!(self, Kind::Mdf | Kind::Coop)
    }

    /// Kinds into which sale lines count (SPEC §3 `sale.recorded`).
    pub fn counts_sales(&self) -> bool {
        !matches!(self, Kind::Training)
    }
}

/// What a sale line contributes to a basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Measure {
    NetAmount,
    Quantity,
}

impl Measure {
    pub fn as_str(&self) -> &'static str {
        match self {
            Measure::NetAmount => "net_amount",
            Measure::Quantity => "quantity",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RebateMode {
    Retroactive,
    Incremental,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tier {
    pub from: Decimal,
    pub rate: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SpifRate {
    PerUnit(Decimal),
    Rate(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SpifPayout {
    Immediate,
    PeriodClose,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Threshold {
    pub attainment: Decimal,
    pub payout: Decimal,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accelerator {
    pub above: Decimal,
    pub rate: Decimal,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reward {
    pub certification: String,
    pub amount: Decimal,
}

/// The rules of one program version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Rules {
    Rebate {
        basis: Measure,
        mode: RebateMode,
        tiers: Vec<Tier>,
    },
    Spif {
        rate: SpifRate,
        cap_per_period: Option<Decimal>,
        payout: SpifPayout,
    },
    Bonus {
        measure: Measure,
        thresholds: Vec<Threshold>,
        accelerator: Option<Accelerator>,
    },
    Training {
        rewards: Vec<Reward>,
        cap_per_period: Option<Decimal>,
    },
    /// MDF and co-op.
    Fund {
        accrual_rate: Decimal,
        cap_per_period: Option<Decimal>,
        expires_after_periods: u64,
    },
}

/// What an entry has accumulated, as the formulas read it.
#[derive(Debug, Clone, Copy)]
pub struct BasisView<'a> {
    /// Net amounts or quantities counted, less returns; for training, the number of
    /// completions.
    pub basis: Decimal,
    /// For training: the completions counted, as (certification, how many).
    pub certifications: &'a [(Text, u64)],
}

/// Counts one completion with `certification` in a training entry's tally
/// ([`BasisView::certifications`]), keeping certifications in first-seen order.
pub(crate) fn count_completion(tally: &mut Vec<(Text, u64)>, certification: &str) {
    match tally.iter_mut().find(|(c, _)| c == certification) {
        Some((_, n)) => *n += 1,
        None => tally.push((Text::from(certification), 1)),
    }
}

fn mul(a: Decimal, b: Decimal) -> Decimal {
    a.checked_mul(b)
        .unwrap_or(if a.is_sign_negative() != b.is_sign_negative() {
            Decimal::MIN
        } else {
            Decimal::MAX
        })
}

fn add(a: Decimal, b: Decimal) -> Decimal {
    a.checked_add(b).unwrap_or(if b.is_sign_negative() {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
}

/// The level "earning" (any positive basis) and, with a cap, the cap.
fn cap_level(cap: Option<Decimal>, rate: Decimal, measure: Measure) -> Vec<Level> {
    let mut levels = vec![Level {
        label: "earning".into(),
        basis: Decimal::ZERO,
        strict: true,
    }];
    if let Some(b) = cap.and_then(|c| basis_for(c, rate, measure)) {
        levels.push(Level {
            label: format!("cap: {}", cap.unwrap_or_default().normalize()),
            basis: b,
            strict: false,
        });
    }
    levels
}

/// A rebate tier's rate in plain words: a percentage of net amounts, an amount per unit.
fn percent_or_amount(rules: &Rules, rate: Decimal) -> String {
    match rules {
        Rules::Rebate {
            basis: Measure::Quantity,
            ..
        } => format!("{} per unit", rate.normalize()),
        _ => percent(rate),
    }
}

fn capped(value: Decimal, cap: Option<Decimal>) -> Decimal {
    match cap {
        Some(c) if c < value => c,
        _ => value,
    }
}

/// A step of attainment the rules of a program define: a rebate tier, a bonus
/// threshold or accelerator, a cap. Reached when the basis is at least `basis` (more
/// than it, when `strict`).
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// In plain words: "tier 2: 3 % from 100000".
    pub label: String,
    pub basis: Decimal,
    pub strict: bool,
}

impl Level {
    pub fn reached_by(&self, basis: Decimal) -> bool {
        if self.strict {
            basis > self.basis
        } else {
            basis >= self.basis
        }
    }
}

/// A rate as a percentage in plain words ("3 %", "2.5 %").
fn percent(rate: Decimal) -> String {
    format!("{} %", (rate * Decimal::ONE_HUNDRED).normalize())
}

/// The least basis of `measure` at which `rate × basis ≥ cap`: whole units for a
/// quantity, 6 decimal places (the finest a sale's amount has) for a net amount.
fn basis_for(cap: Decimal, rate: Decimal, measure: Measure) -> Option<Decimal> {
    if rate <= Decimal::ZERO {
        return None;
    }
    let exact = cap.checked_div(rate)?;
    let dp = match measure {
        Measure::Quantity => 0,
        Measure::NetAmount => 6,
    };
    let mut b =
        exact.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::ToPositiveInfinity);
    // The division may have rounded below the exact quotient: step up until it pays.
    let step = Decimal::new(1, dp);
    for _ in 0..2 {
        if mul(rate, b) >= cap {
            break;
        }
        b += step;
    }
    Some(b)
}

impl Rules {
    /// The levels of attainment these rules define, in increasing order of basis (with
    /// the partner's `target` for a bonus; none without one). Training has none.
    pub fn levels(&self, target: Option<Decimal>) -> Vec<Level> {
        match self {
            Rules::Rebate { tiers, .. } => tiers
                .iter()
                .enumerate()
                .map(|(i, t)| Level {
                    label: format!(
                        "tier {}: {} from {}",
                        i + 1,
                        percent_or_amount(self, t.rate),
                        t.from.normalize()
                    ),
                    basis: t.from,
                    // The first tier starts at 0 but pays only on a positive basis.
                    strict: t.from.is_zero(),
                })
                .collect(),
            Rules::Bonus {
                thresholds,
                accelerator,
                ..
            } => {
                let Some(t) = target else {
                    return Vec::new();
                };
                let mut levels: Vec<Level> = thresholds
                    .iter()
                    .enumerate()
                    .map(|(i, th)| Level {
                        label: format!(
                            "threshold {}: {} of target pays {}",
                            i + 1,
                            percent(th.attainment),
                            th.payout.normalize()
                        ),
                        basis: mul(th.attainment, t),
                        strict: false,
                    })
                    .collect();
                if let Some(acc) = accelerator {
                    levels.push(Level {
                        label: format!(
                            "accelerator: {} of what is above {} of target",
                            percent(acc.rate),
                            percent(acc.above)
                        ),
                        basis: mul(acc.above, t),
                        strict: true,
                    });
                }
                levels.sort_by_key(|a| a.basis);
                levels
            }
            Rules::Spif {
                rate,
                cap_per_period,
                ..
            } => {
                let (r, measure) = match rate {
                    SpifRate::PerUnit(r) => (*r, Measure::Quantity),
                    SpifRate::Rate(r) => (*r, Measure::NetAmount),
                };
                cap_level(*cap_per_period, r, measure)
            }
            Rules::Fund {
                accrual_rate,
                cap_per_period,
                ..
            } => cap_level(*cap_per_period, *accrual_rate, Measure::NetAmount),
            Rules::Training { .. } => Vec::new(),
        }
    }

    /// The measure sale lines contribute to this program's basis; `None` for training.
    pub fn measure(&self) -> Option<Measure> {
        match self {
            Rules::Rebate { basis, .. } => Some(*basis),
            Rules::Spif { rate, .. } => Some(match rate {
                SpifRate::PerUnit(_) => Measure::Quantity,
                SpifRate::Rate(_) => Measure::NetAmount,
            }),
            Rules::Bonus { measure, .. } => Some(*measure),
            Rules::Training { .. } => None,
            Rules::Fund { .. } => Some(Measure::NetAmount),
        }
    }

    /// Whether an entry evaluated with these rules is paid by the settlement sweep
    /// while open (SPEC §5: immediate SPIFs and training).
    pub fn always_payable(&self) -> bool {
        matches!(
            self,
            Rules::Training { .. }
                | Rules::Spif {
                    payout: SpifPayout::Immediate,
                    ..
                }
        )
    }

    /// Whether `certification` earns anything under these rules.
    pub fn rewards(&self, certification: &str) -> bool {
        match self {
            Rules::Training { rewards, .. } => {
                rewards.iter().any(|r| r.certification == certification)
            }
            _ => false,
        }
    }

    /// The unrounded formula of SPEC §4 for `b` (and the partner's target `T`).
    pub fn formula(&self, b: BasisView<'_>, target: Option<Decimal>) -> Decimal {
        let basis = b.basis;
        match self {
            Rules::Rebate { mode, tiers, .. } => {
                if basis <= Decimal::ZERO {
                    return Decimal::ZERO;
                }
                match mode {
                    RebateMode::Retroactive => {
                        let rate = tiers
                            .iter()
                            .rev()
                            .find(|t| t.from <= basis)
                            .map_or(Decimal::ZERO, |t| t.rate);
                        mul(rate, basis)
                    }
                    RebateMode::Incremental => {
                        let mut total = Decimal::ZERO;
                        for (i, tier) in tiers.iter().enumerate() {
                            let upper = match tiers.get(i + 1) {
                                Some(next) if next.from < basis => next.from,
                                _ => basis,
                            };
                            let span = upper - tier.from;
                            if span > Decimal::ZERO {
                                total = add(total, mul(tier.rate, span));
                            }
                        }
                        total
                    }
                }
            }
            Rules::Spif {
                rate,
                cap_per_period,
                ..
            } => {
                if basis <= Decimal::ZERO {
                    return Decimal::ZERO;
                }
                let raw = match rate {
                    SpifRate::PerUnit(r) | SpifRate::Rate(r) => mul(*r, basis),
                };
                capped(raw, *cap_per_period)
            }
            Rules::Bonus {
                thresholds,
                accelerator,
                ..
            } => {
                let Some(t) = target else {
                    return Decimal::ZERO;
                };
                let step = thresholds
                    .iter()
                    .rev()
                    .find(|th| basis >= mul(th.attainment, t))
                    .map_or(Decimal::ZERO, |th| th.payout);
                let extra = match accelerator {
                    Some(acc) => {
                        let over = basis - mul(acc.above, t);
                        if over > Decimal::ZERO {
                            mul(acc.rate, over)
                        } else {
                            Decimal::ZERO
                        }
                    }
                    None => Decimal::ZERO,
                };
                add(step, extra)
            }
            Rules::Training {
                rewards,
                cap_per_period,
            } => {
                let mut total = Decimal::ZERO;
                // Amounts are non-negative, so summing per certification saturates
                // exactly where summing completion by completion would.
                for (cert, count) in b.certifications {
                    if let Some(r) = rewards.iter().find(|r| r.certification == *cert) {
                        total = add(total, mul(r.amount, Decimal::from(*count)));
                    }
                }
                capped(total, *cap_per_period)
            }
            Rules::Fund {
                accrual_rate,
                cap_per_period,
                ..
            } => {
                if basis <= Decimal::ZERO {
                    return Decimal::ZERO;
                }
                capped(mul(*accrual_rate, basis), *cap_per_period)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Rule tables: one row a case, hand-computed.
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn tiers(list: &[(&str, &str)]) -> Vec<Tier> {
        list.iter()
            .map(|(f, r)| Tier {
                from: d(f),
                rate: d(r),
            })
            .collect()
    }

    fn eval(rules: &Rules, basis: &str, target: Option<&str>) -> Decimal {
        rules.formula(
            BasisView {
                basis: d(basis),
                certifications: &[],
            },
            target.map(d),
        )
    }

    #[test]
    fn rebate_retroactive_table() {
        let r = Rules::Rebate {
            basis: Measure::NetAmount,
            mode: RebateMode::Retroactive,
            tiers: tiers(&[("0", "0.02"), ("100000", "0.03"), ("250000", "0.04")]),
        };
        let rows = [
            ("0", "0"),
            ("-5", "0"),
            ("99999.99", "1999.9998"),
            ("100000", "3000"),
            ("125000", "3750"),
            ("249999", "7499.97"),
            ("250000", "10000"),
            ("260000", "10400"),
        ];
        for (b, want) in rows {
            assert_eq!(eval(&r, b, None), d(want), "B = {b}");
        }
    }

    #[test]
    fn rebate_incremental_table() {
        let r = Rules::Rebate {
            basis: Measure::Quantity,
            mode: RebateMode::Incremental,
            tiers: tiers(&[("0", "1.50"), ("100", "2.00"), ("250", "2.50")]),
        };
        let rows = [
            ("0", "0"),
            ("7", "10.50"),
            ("100", "150"),
            ("200", "350"),
            ("250", "450"),
            ("300", "575"),
        ];
        for (b, want) in rows {
            assert_eq!(eval(&r, b, None), d(want), "B = {b}");
        }
    }

    #[test]
    fn spif_table() {
        let capped_rate = Rules::Spif {
            rate: SpifRate::Rate(d("0.05")),
            cap_per_period: Some(d("500.00")),
            payout: SpifPayout::Immediate,
        };
        let per_unit = Rules::Spif {
            rate: SpifRate::PerUnit(d("333.5")),
            cap_per_period: None,
            payout: SpifPayout::PeriodClose,
        };
        let rows = [
            (&capped_rate, "4000", "200"),
            (&capped_rate, "11000", "500.00"),
            (&capped_rate, "9000", "450"),
            (&capped_rate, "0", "0"),
            (&per_unit, "3", "1000.5"),
            (&per_unit, "-1", "0"),
        ];
        for (rules, b, want) in rows {
            assert_eq!(eval(rules, b, None), d(want), "B = {b}");
        }
        assert!(capped_rate.always_payable());
        assert!(!per_unit.always_payable());
    }

    #[test]
    fn bonus_table() {
        let r = Rules::Bonus {
            measure: Measure::NetAmount,
            thresholds: vec![
                Threshold {
                    attainment: d("0.8"),
                    payout: d("1000.00"),
                },
                Threshold {
                    attainment: d("1.0"),
                    payout: d("2500.00"),
                },
            ],
            accelerator: Some(Accelerator {
                above: d("1.0"),
                rate: d("0.05"),
            }),
        };
        let rows = [
            ("90000", Some("100000"), "1000"),
            ("79999.99", Some("100000"), "0"),
            ("80000", Some("100000"), "1000"),
            ("120000", Some("100000"), "3500"),
            ("130000", Some("100000"), "4000"),
            ("12000", Some("10000"), "2600"),
            ("170000", Some("200000"), "1000"),
            ("170000", None, "0"),
            ("0", Some("1"), "0"),
        ];
        for (b, t, want) in rows {
            assert_eq!(eval(&r, b, t), d(want), "B = {b}, T = {t:?}");
        }
    }

    #[test]
    fn training_table() {
        let r = Rules::Training {
            rewards: vec![
                Reward {
                    certification: "CERT-A".into(),
                    amount: d("250.00"),
                },
                Reward {
                    certification: "CERT-B".into(),
                    amount: d("100.00"),
                },
            ],
            cap_per_period: Some(d("300.00")),
        };
        let rows: [(&[&str], &str); 6] = [
            (&["CERT-A"], "250"),
            (&["CERT-A", "CERT-B"], "300"),
            (&["CERT-C"], "0"),
            (&["CERT-B", "CERT-C"], "100"),
            // Two people with one certification: each completion counts.
            (&["CERT-B", "CERT-C", "CERT-B"], "200"),
            (&["CERT-A", "CERT-A"], "300"),
        ];
        for (certs, want) in rows {
            let mut tally: Vec<(Text, u64)> = Vec::new();
            for c in certs {
                count_completion(&mut tally, c);
            }
            let got = r.formula(
                BasisView {
                    basis: Decimal::from(certs.len()),
                    certifications: &tally,
                },
                None,
            );
            assert_eq!(got, d(want), "{certs:?}");
        }
    }

    #[test]
    fn fund_table() {
        let r = Rules::Fund {
            accrual_rate: d("0.05"),
            cap_per_period: Some(d("3000.00")),
            expires_after_periods: 1,
        };
        let rows = [
            ("40000", "2000"),
            ("80000", "3000"),
            ("0", "0"),
            ("-10", "0"),
        ];
        for (b, want) in rows {
            assert_eq!(eval(&r, b, None), d(want), "B = {b}");
        }
    }

    #[test]
    fn overflow_saturates_instead_of_panicking() {
        let r = Rules::Spif {
            rate: SpifRate::PerUnit(d("999999999999999.999999")),
            cap_per_period: None,
            payout: SpifPayout::Immediate,
        };
        assert_eq!(eval(&r, "1000000000000000", None), Decimal::MAX);
    }
}
