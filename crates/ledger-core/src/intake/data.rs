//! The `data` of each event type (SPEC §3): programs and their rules per kind (§4),
//! enrollments, sales, returns, completions, claims, closes and adjustments.

use super::*;

pub(super) fn event_data<'a>(
    t: EventType,
    members: &'a [(Cow<'a, str>, Json<'a>)],
) -> DResult<EventData> {
    let f = Fields::new(members, Path::root("data"));
    Ok(match t {
        EventType::ProgramPublished => EventData::ProgramPublished(program(&f)?),
        EventType::PartnerEnrolled => EventData::PartnerEnrolled {
            partner_id: f.identifier("partner_id")?,
            program_id: f.identifier("program_id")?,
            target: f.opt_amount("target", AmountRule::Positive)?,
        },
        EventType::PartnerWithdrawn => {
            let partner_id = f.identifier("partner_id")?;
            let program_id = f.identifier("program_id")?;
            // The shape is shared with partner.enrolled; a target here is checked but unused.
            f.opt_amount("target", AmountRule::Positive)?;
            EventData::PartnerWithdrawn {
                partner_id,
                program_id,
            }
        }
        EventType::SaleRecorded => EventData::SaleRecorded(sale(&f)?),
        EventType::SaleReturned => EventData::SaleReturned(sale_return(&f)?),
        EventType::TrainingCompleted => EventData::TrainingCompleted {
            partner_id: f.identifier("partner_id")?,
            person_id: f.identifier("person_id")?,
            course_id: f.identifier("course_id")?,
            certification: f.opt_identifier("certification")?,
        },
        EventType::ClaimSubmitted => EventData::ClaimSubmitted {
            claim_id: f.identifier("claim_id")?,
            partner_id: f.identifier("partner_id")?,
            program_id: f.identifier("program_id")?,
            amount: f.amount("amount", AmountRule::Positive)?,
            activity: f.text("activity", 200)?,
            description: f.opt_text("description", 2000)?,
        },
        EventType::ClaimDecided => EventData::ClaimDecided {
            claim_id: f.identifier("claim_id")?,
            approved: f.choice("decision", &[("approved", true), ("rejected", false)])?,
            approved_amount: f.opt_amount("approved_amount", AmountRule::NonNegative)?,
        },
        EventType::PeriodClosed => EventData::PeriodClosed {
            program_id: f.identifier("program_id")?,
            period: f.period_label("period")?,
        },
        EventType::AdjustmentPosted => EventData::AdjustmentPosted {
            adjustment_id: f.identifier("adjustment_id")?,
            partner_id: f.identifier("partner_id")?,
            program_id: f.identifier("program_id")?,
            period: f.period_label("period")?,
            amount: f.amount("amount", AmountRule::NonZero)?,
            reason: f.text("reason", 500)?,
        },
    })
}

pub(super) fn identifier_list(f: &Fields<'_>, key: &str) -> DResult<Option<Vec<String>>> {
    let Some(v) = f.opt(key) else {
        return Ok(None);
    };
    let items = f.array(key, v, 0, usize::MAX)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(f.identifier_value(&format!("{key}[{i}]"), item)?.into());
    }
    Ok(Some(out))
}

pub(super) fn program(f: &Fields<'_>) -> DResult<ProgramDef> {
    let program_id = f.identifier("program_id")?;
    let version = f.integer("version", 1, u64::MAX)?;
    let name = f.text("name", 200)?;
    let kind = f.choice(
        "kind",
        &[
            ("rebate", Kind::Rebate),
            ("mdf", Kind::Mdf),
            ("coop", Kind::Coop),
            ("spif", Kind::Spif),
            ("bonus", Kind::Bonus),
            ("training", Kind::Training),
        ],
    )?;
    let currency = f.currency("currency")?;
    let start_date = f.date("start_date")?;
    let end_date = f.date("end_date")?;
    if start_date > end_date {
        return f.err(
            "end_date",
            format!("must not be before start_date ({start_date}), got {end_date}"),
        );
    }
    let period = f.choice(
        "period",
        &[
            ("month", PeriodKind::Month),
            ("quarter", PeriodKind::Quarter),
            ("year", PeriodKind::Year),
            ("program", PeriodKind::Program),
        ],
    )?;
    let requires_enrollment = f.boolean("requires_enrollment", true)?;
    let eligibility = match f.opt("eligibility") {
        None => Eligibility::default(),
        Some(v) => {
            let e = f.object("eligibility", v)?;
            e.deny_unknown(&["skus", "product_families", "regions"])?;
            Eligibility {
                skus: identifier_list(&e, "skus")?,
                product_families: identifier_list(&e, "product_families")?,
                regions: identifier_list(&e, "regions")?,
            }
        }
    };
    // SPEC §3 (v1.1): for planning and reporting only — the fold never reads it.
    let budget = f.opt_amount("budget", AmountRule::Positive)?;
    let rules_json = f.req("rules")?;
    let r = f.object("rules", rules_json)?;
    let rules = rules(&r, kind, period)?;
    Ok(ProgramDef {
        program_id: program_id.into(),
        version,
        name: name.into(),
        kind,
        currency,
        start_date,
        end_date,
        period,
        requires_enrollment,
        eligibility,
        rules,
        budget,
    })
}

pub(super) fn measure(r: &Fields<'_>, key: &str) -> DResult<Measure> {
    r.choice(
        key,
        &[
            ("net_amount", Measure::NetAmount),
            ("quantity", Measure::Quantity),
        ],
    )
}

/// Long by design: one arm per program kind (SPEC §4), each reading its rule fields in the
/// spec's order.
pub(super) fn rules(r: &Fields<'_>, kind: Kind, period: PeriodKind) -> DResult<Rules> {
    match kind {
        Kind::Rebate => {
            r.deny_unknown(&["basis", "mode", "tiers"])?;
            let basis = measure(r, "basis")?;
            let mode = r.choice(
                "mode",
                &[
                    ("retroactive", RebateMode::Retroactive),
                    ("incremental", RebateMode::Incremental),
                ],
            )?;
            let items = r.array("tiers", r.req("tiers")?, 1, usize::MAX)?;
            // With a quantity basis, tier rates are amounts per unit without upper bound.
            let rate_rule = match basis {
                Measure::NetAmount => AmountRule::Rate,
                Measure::Quantity => AmountRule::NonNegative,
            };
            let mut tiers: Vec<Tier> = Vec::with_capacity(items.len());
            for t in r.objects("tiers", items)? {
                t.deny_unknown(&["from", "rate"])?;
                let from = t.amount("from", AmountRule::NonNegative)?;
                let rate = t.amount("rate", rate_rule)?;
                match tiers.last() {
                    None if !from.is_zero() => {
                        return t.err(
                            "from",
                            format!("the first tier must start at \"0\", got {from}"),
                        )
                    }
                    Some(prev) if from <= prev.from => {
                        return t.err(
                            "from",
                            format!(
                            "tier starts must be strictly increasing; {from} does not exceed {}",
                            prev.from
                        ),
                        )
                    }
                    _ => {}
                }
                tiers.push(Tier { from, rate });
            }
            Ok(Rules::Rebate { basis, mode, tiers })
        }
        Kind::Spif => {
            r.deny_unknown(&["per_unit", "rate", "cap_per_period", "payout"])?;
            let per_unit = r.opt_amount("per_unit", AmountRule::NonNegative)?;
            let rate = r.opt_amount("rate", AmountRule::Rate)?;
            let rate = match (per_unit, rate) {
                (Some(p), None) => SpifRate::PerUnit(p),
                (None, Some(x)) => SpifRate::Rate(x),
                (Some(_), Some(_)) => {
                    return r.err(
                        "rate",
                        "exactly one of per_unit or rate may be given, got both",
                    )
                }
                (None, None) => {
                    return r.err(
                        "per_unit",
                        "exactly one of per_unit or rate is required, got neither",
                    )
                }
            };
            Ok(Rules::Spif {
                rate,
                cap_per_period: r.opt_amount("cap_per_period", AmountRule::NonNegative)?,
                payout: r.choice(
                    "payout",
                    &[
                        ("immediate", SpifPayout::Immediate),
                        ("period_close", SpifPayout::PeriodClose),
                    ],
                )?,
            })
        }
        Kind::Bonus => {
            r.deny_unknown(&["measure", "thresholds", "accelerator"])?;
            let measure = measure(r, "measure")?;
            let items = r.array("thresholds", r.req("thresholds")?, 1, usize::MAX)?;
            let mut thresholds: Vec<Threshold> = Vec::with_capacity(items.len());
            for t in r.objects("thresholds", items)? {
                t.deny_unknown(&["attainment", "payout"])?;
                let attainment = t.amount("attainment", AmountRule::PositiveRate)?;
                let payout = t.amount("payout", AmountRule::NonNegative)?;
                if let Some(prev) = thresholds.last() {
                    if attainment <= prev.attainment {
                        return t.err(
                            "attainment",
                            format!(
                                "attainments must be strictly increasing; {attainment} does not exceed {}",
                                prev.attainment
                            ),
                        );
                    }
                }
                thresholds.push(Threshold { attainment, payout });
            }
            let accelerator = match r.opt("accelerator") {
                None => None,
                Some(v) => {
                    let a = r.object("accelerator", v)?;
                    a.deny_unknown(&["above", "rate"])?;
                    Some(Accelerator {
                        above: a.amount("above", AmountRule::Rate)?,
                        rate: a.amount("rate", AmountRule::Rate)?,
                    })
                }
            };
            Ok(Rules::Bonus {
                measure,
                thresholds,
                accelerator,
            })
        }
        Kind::Training => {
            r.deny_unknown(&["rewards", "cap_per_period"])?;
            let items = r.array("rewards", r.req("rewards")?, 1, usize::MAX)?;
            let mut rewards: Vec<Reward> = Vec::with_capacity(items.len());
            for w in r.objects("rewards", items)? {
                w.deny_unknown(&["certification", "amount"])?;
                let certification = w.identifier("certification")?;
                if rewards.iter().any(|x| x.certification == certification) {
                    return w.err(
                        "certification",
                        format!("certifications must be unique; {certification:?} appears twice"),
                    );
                }
                rewards.push(Reward {
                    certification: certification.into(),
                    amount: w.amount("amount", AmountRule::NonNegative)?,
                });
            }
            Ok(Rules::Training {
                rewards,
                cap_per_period: r.opt_amount("cap_per_period", AmountRule::NonNegative)?,
            })
        }
        Kind::Mdf | Kind::Coop => {
            r.deny_unknown(&["accrual_rate", "cap_per_period", "expires_after_periods"])?;
            let accrual_rate = r.amount("accrual_rate", AmountRule::Rate)?;
            let cap_per_period = r.opt_amount("cap_per_period", AmountRule::NonNegative)?;
            let expires_after_periods = match (r.opt("expires_after_periods"), period) {
                (None, PeriodKind::Program) => 0,
                (None, _) => 1,
                (Some(_), PeriodKind::Program) => {
                    let e = r.integer("expires_after_periods", 0, u64::MAX)?;
                    if e != 0 {
                        return r.err(
                            "expires_after_periods",
                            format!("must be 0 for a program whose period is \"program\", got {e}"),
                        );
                    }
                    0
                }
                (Some(_), _) => r.integer("expires_after_periods", 0, u64::MAX)?,
            };
            Ok(Rules::Fund {
                accrual_rate,
                cap_per_period,
                expires_after_periods,
            })
        }
    }
}

pub(super) fn sale(f: &Fields<'_>) -> DResult<Sale> {
    let sale_id = f.identifier("sale_id")?;
    let partner_id = f.identifier("partner_id")?;
    let region = f.opt_identifier("region")?;
    let items = f.array("lines", f.req("lines")?, 1, 1000)?;
    let mut lines: Vec<SaleLine> = Vec::with_capacity(items.len());
    for l in f.objects("lines", items)? {
        let line_id = l.identifier("line_id")?;
        if lines.iter().any(|x| x.line_id == line_id) {
            return l.err(
                "line_id",
                format!("line ids must be unique within a sale; {line_id:?} repeats"),
            );
        }
        lines.push(SaleLine {
            line_id,
            sku: l.identifier("sku")?,
            product_family: l.opt_identifier("product_family")?,
            quantity: l.integer("quantity", 1, 1_000_000_000)?,
            net_amount: l.amount("net_amount", AmountRule::NonNegative)?,
            currency: l.currency("currency")?,
        });
    }
    Ok(Sale {
        sale_id,
        partner_id,
        region,
        lines,
    })
}

pub(super) fn sale_return(f: &Fields<'_>) -> DResult<Return> {
    let return_id = f.identifier("return_id")?;
    let sale_id = f.identifier("sale_id")?;
    let partner_id = f.identifier("partner_id")?;
    let items = f.array("lines", f.req("lines")?, 1, 1000)?;
    let mut lines: Vec<ReturnLine> = Vec::with_capacity(items.len());
    for l in f.objects("lines", items)? {
        let line_id = l.identifier("line_id")?;
        if lines.iter().any(|x| x.line_id == line_id) {
            return l.err(
                "line_id",
                format!("a line may appear only once in a return; {line_id:?} repeats"),
            );
        }
        lines.push(ReturnLine {
            line_id,
            quantity: l.integer("quantity", 1, 1_000_000_000)?,
            net_amount: l.amount("net_amount", AmountRule::NonNegative)?,
        });
    }
    Ok(Return {
        return_id,
        sale_id,
        partner_id,
        lines,
    })
}
