//! Planning and evaluation (issue 17): program reports hand-checked on fixtures (the
//! arithmetic is in each fixture's README), budgets parsed and refused and never
//! changing a number, and opportunities checked by appending the suggested sale.

use ledger_core::gen::{GenConfig, Generator};
use ledger_core::replay::{ndjson_lines, Replay, Step};
use ledger_core::report::{self, Report};
use ledger_core::Code;
use serde_json::Value;

fn fixture(name: &str) -> Replay {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures")
        .join(name)
        .join("events.ndjson");
    let bytes = std::fs::read(path).unwrap();
    let mut r = Replay::new();
    for (n, line) in ndjson_lines(&bytes, 1) {
        r.push(line, n);
    }
    r
}

fn report_of(name: &str, program: &str) -> Value {
    let r = fixture(name);
    let report: Report = report::build(&r, 99, Some(program)).unwrap();
    serde_json::to_value(&report.programs[0]).unwrap()
}

/// The figures of one period (or `total`) as (revenue, units, earned, paid, liability,
/// cost share).
/// The figures of one period of a report, or its totals (`total`).
fn period<'a>(report: &'a Value, period: &str) -> &'a Value {
    if period == "total" {
        return &report["totals"];
    }
    report["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["period"] == period)
        .unwrap()
}

fn figures(report: &Value, label: &str) -> (String, i64, String, String, String, String) {
    let f = period(report, label);
    let s = |k: &str| f[k].as_str().unwrap_or("-").to_string();
    (
        s("revenue"),
        f["units"].as_i64().unwrap(),
        s("earned"),
        s("paid"),
        s("accrued_liability"),
        s("cost_share"),
    )
}

fn attainment(report: &Value, label: &str) -> Vec<(String, u64)> {
    period(report, label)["attainment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap().to_string(),
                l["partners"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn t(
    r: &str,
    u: i64,
    e: &str,
    p: &str,
    l: &str,
    c: &str,
) -> (String, i64, String, String, String, String) {
    (r.into(), u, e.into(), p.into(), l.into(), c.into())
}

/// replay-fixtures/rebate_retroactive_tiers/README.md, "Report".
#[test]
fn the_rebate_report_matches_the_hand_arithmetic() {
    let r = report_of("rebate_retroactive_tiers", "REB-EMEA-2026");
    assert_eq!(
        figures(&r, "2026-Q1"),
        t("385000", 35, "14150.00", "14150.00", "0.00", "0.0368")
    );
    assert_eq!(
        figures(&r, "2026-Q2"),
        t("100001.5", 8, "3000.04", "0.00", "3000.04", "0.0300")
    );
    assert_eq!(
        figures(&r, "total"),
        t("485001.5", 43, "17150.04", "14150.00", "3000.04", "0.0354")
    );
    assert_eq!(
        attainment(&r, "2026-Q1"),
        [
            ("tier 2: 3 % from 100000".into(), 1),
            ("tier 3: 4 % from 250000".into(), 1)
        ]
    );
    assert_eq!(r["partners_enrolled"], 2);
    assert_eq!(r["top_performers"][0]["partner_id"], "P-200");
    assert_eq!(r["top_performers"][1]["earned"], "6750.04");
    assert_eq!(
        r["refusals"],
        serde_json::json!([{"code": "invalid_period", "count": 2}, {"code": "period_already_closed", "count": 1}])
    );
    assert_eq!(r["periods"][0]["partners_active"], 2);
}

/// replay-fixtures/mdf_claims_fifo_expiry/README.md, "Report".
#[test]
fn the_mdf_report_matches_the_hand_arithmetic() {
    let r = report_of("mdf_claims_fifo_expiry", "MDF-2026");
    assert_eq!(
        figures(&r, "2026-Q1"),
        t("50000", 5, "2500.00", "1500.00", "0.00", "0.0500")
    );
    assert_eq!(
        figures(&r, "2026-Q2"),
        t("80000", 8, "3000.00", "3000.00", "0.00", "0.0375")
    );
    assert_eq!(
        figures(&r, "2026-Q3"),
        t("20000", 2, "1000.00", "400.00", "600.00", "0.0500")
    );
    assert_eq!(
        figures(&r, "total"),
        t("150000", 15, "6500.00", "4900.00", "600.00", "0.0433")
    );
    let fund = &r["totals"]["fund"];
    assert_eq!(
        (
            &fund["expired"],
            &fund["available"],
            &fund["reserved"],
            &fund["utilization"]
        ),
        (
            &Value::from("1000.00"),
            &Value::from("600.00"),
            &Value::from("0.00"),
            &Value::from("0.7538")
        )
    );
    assert_eq!(
        attainment(&r, "total"),
        [("earning".into(), 2), ("cap: 3000".into(), 1)]
    );
    let c = &r["claims"];
    assert_eq!(
        (
            c["submitted"]["count"].as_u64(),
            c["submitted"]["amount"].as_str()
        ),
        (Some(5), Some("10500.00"))
    );
    assert_eq!(
        (
            c["approved"]["count"].as_u64(),
            c["approved"]["amount"].as_str()
        ),
        (Some(3), Some("6500.00"))
    );
    assert_eq!(c["approved_amount"], "4900.00");
    assert_eq!(
        (
            c["rejected"]["count"].as_u64(),
            c["denied"]["count"].as_u64(),
            c["pending"]["count"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    // d4 and d5 decide claims of MDF-2026; d6's CLM-99 names no program.
    assert_eq!(
        r["refusals"],
        serde_json::json!([{"code": "claim_not_pending", "count": 2}])
    );
    let coop = report_of("mdf_claims_fifo_expiry", "COOP-1");
    assert_eq!(
        figures(&coop, "2026"),
        t("10000", 1, "1000.00", "450.00", "0.00", "0.1000")
    );
    assert_eq!(coop["totals"]["fund"]["expired"], "550.00");
}

/// replay-fixtures/program_budget/README.md, "Report".
#[test]
fn the_budget_report_matches_the_hand_arithmetic() {
    let r = report_of("program_budget", "REB-B");
    let b = &r["budget"];
    assert_eq!(b["budget"], "80000.00", "the current version's budget");
    assert_eq!(b["committed"], "600.00");
    assert_eq!(b["paid"], "600.00");
    assert_eq!(b["remaining"], "79400.00");
    assert_eq!(b["utilization"], "0.0075");
    // Latest business date 2026-04-01: 91 of 365 days → 600.00 × 365 / 91.
    assert_eq!(r["as_of_date"], "2026-04-01");
    assert_eq!(b["forecast"], "2406.59");
    assert_eq!(b["forecast_utilization"], "0.0301");
    assert_eq!(report_of("program_budget", "SPIF-B")["budget"], Value::Null);
    let all = report::build(&fixture("program_budget"), 8, None).unwrap();
    let accruals: Vec<(&str, Option<&str>)> = all
        .accruals
        .iter()
        .map(|a| (a.program_id.as_str(), a.budget.as_deref()))
        .collect();
    assert_eq!(accruals, [("REB-B", Some("80000.00")), ("SPIF-B", None)]);
    assert!(
        report::build(&fixture("program_budget"), 8, Some("REB-Z")).is_none(),
        "refused: never created"
    );
}

/// `budget` is an optional amount > 0, refused otherwise with a message naming it.
#[test]
fn a_malformed_budget_is_refused_and_names_the_field() {
    let program = |budget: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"p","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{{"program_id":"P","version":1,"name":"n","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","budget":{budget},"rules":{{"basis":"net_amount","mode":"retroactive","tiers":[{{"from":"0","rate":"0.02"}}]}}}}}}"#
        )
    };
    for ok in [r#""1""#, r#""50000.00""#, r#""0.000001""#, "null"] {
        assert!(ledger_core::check(program(ok).as_bytes()).is_ok(), "{ok}");
    }
    for bad in [
        r#""0""#,
        r#""-5.00""#,
        "5",
        r#""abc""#,
        r#""1.0000001""#,
        r#""""#,
        "true",
        r#""1e3""#,
    ] {
        let refusal = ledger_core::check(program(bad).as_bytes()).unwrap_err();
        assert_eq!(refusal.code, Code::InvalidData, "{bad}");
        assert!(
            refusal.message.contains("budget"),
            "{bad}: {}",
            refusal.message
        );
    }
}

/// A budget changes no number: over generated logs, giving every program version a
/// budget (or taking it away) leaves the document and its digest as they were.
#[test]
fn budgets_never_change_the_digest() {
    for seed in 1..=3 {
        let lines: Vec<String> = Generator::new(GenConfig::new(seed, 3000)).collect();
        let budgeted: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| match serde_json::from_str::<Value>(l) {
                Ok(mut v) if v["type"] == "program.published" && v["data"].is_object() => {
                    v["data"]["budget"] = Value::from(format!("{}.00", 1000 + i));
                    serde_json::to_string(&v).unwrap()
                }
                _ => l.clone(),
            })
            .collect();
        let run = |ls: &[String]| {
            let mut r = Replay::new();
            for (i, l) in ls.iter().enumerate() {
                r.push(l.as_bytes(), i as u64 + 1);
            }
            r
        };
        let (a, b) = (run(&lines), run(&budgeted));
        assert_ne!(lines, budgeted);
        let (da, db) = (a.document(), b.document());
        assert_eq!(da.digest, db.digest, "seed {seed}");
        assert_eq!(da.balances, db.balances);
        assert!(b.ledger().budgets().len() > 2, "the budgets are there");
    }
}

/// The sale an opportunity suggests, for its entry: a line that counts for the program
/// (its eligibility's first values), in the entry's period, of exactly the additional
/// basis.
fn suggested_sale(
    n: usize,
    o: &ledger_core::ledger::Opportunity,
    def: &ledger_core::event::ProgramDef,
) -> String {
    let label = ledger_core::values::PeriodLabel::parse(&o.period).unwrap();
    let date = match label.kind.date_range(label.index) {
        Some((first, _)) => first.max(def.start_date),
        None => def.start_date,
    };
    let first = |l: &Option<Vec<String>>| l.as_ref().and_then(|v| v.first().cloned());
    let sku = first(&def.eligibility.skus).unwrap_or_else(|| "SKU-ANY".into());
    let family = first(&def.eligibility.product_families)
        .map(|f| format!(r#","product_family":"{f}""#))
        .unwrap_or_default();
    let region = first(&def.eligibility.regions)
        .map(|r| format!(r#","region":"{r}""#))
        .unwrap_or_default();
    let (quantity, amount) = match o.measure {
        "quantity" => (o.additional_basis.clone(), "1.00".to_string()),
        _ => ("1".to_string(), o.additional_basis.clone()),
    };
    format!(
        r#"{{"specversion":"1.0","id":"opp-{n}","source":"test","type":"sale.recorded","time":"{date}T12:00:00Z","data":{{"sale_id":"OPP-{n}","partner_id":"{}"{region},"lines":[{{"line_id":"1","sku":"{sku}"{family},"quantity":{quantity},"net_amount":"{amount}","currency":"{}"}}]}}}}"#,
        o.partner_id, o.currency
    )
}

/// Opportunities are checked by appending the sale they suggest: where it counts into
/// the entry (the partner still enrolled, the period's dates inside the program's), the
/// entry reaches the next level and earns exactly what the opportunity said.
#[test]
fn appending_the_suggested_sale_reaches_the_level_and_earns_what_was_said() {
    let mut checked = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 1..=4 {
        let lines: Vec<String> = Generator::new(GenConfig::new(seed, 2500)).collect();
        let mut base = Replay::new();
        for (i, l) in lines.iter().enumerate() {
            base.push(l.as_bytes(), i as u64 + 1);
        }
        let partners: std::collections::BTreeSet<String> = base
            .ledger()
            .balances()
            .into_iter()
            .map(|b| b.partner_id)
            .collect();
        for partner in partners.iter().take(12) {
            for (n, o) in base.ledger().opportunities(partner).into_iter().enumerate() {
                let def = base.ledger().program(&o.program_id).unwrap().current;
                let mut after = base.clone();
                let step = after.push(suggested_sale(n, &o, &def).as_bytes(), 999_999);
                assert!(matches!(step, Step::Applied(_)), "{o:?}: {step:?}");
                let st = after
                    .ledger()
                    .statement(&o.partner_id, &o.program_id, &o.period)
                    .unwrap();
                let moved = ledger_core::values::format_exact(st.balance.basis);
                let expected: rust_decimal::Decimal =
                    o.basis.parse::<rust_decimal::Decimal>().unwrap()
                        + o.additional_basis.parse::<rust_decimal::Decimal>().unwrap();
                if moved != ledger_core::values::format_exact(expected) {
                    continue; // the sale does not count into this entry (not enrolled now…)
                }
                let earned =
                    ledger_core::values::format_money(st.balance.earned, st.balance.currency);
                assert_eq!(earned, o.earned_then, "{o:?}");
                // The level is reached: the next opportunity of the entry, if any, is a
                // higher one (or none is left).
                let again = after
                    .ledger()
                    .opportunities(&o.partner_id)
                    .into_iter()
                    .find(|x| x.program_id == o.program_id && x.period == o.period);
                assert!(
                    again.as_ref().is_none_or(|x| x.next_level != o.next_level),
                    "{o:?} → {again:?}"
                );
                // The least basis: one unit less (a unit, or 0.000001 of an amount) does
                // not reach the level.
                let unit = match o.measure {
                    "quantity" => rust_decimal::Decimal::ONE,
                    _ => rust_decimal::Decimal::new(1, 6),
                };
                let additional: rust_decimal::Decimal = o.additional_basis.parse().unwrap();
                if additional > unit {
                    let mut short = o.clone();
                    short.additional_basis = ledger_core::values::format_exact(additional - unit);
                    let mut before = base.clone();
                    before.push(suggested_sale(n, &short, &def).as_bytes(), 999_999);
                    let still = before
                        .ledger()
                        .opportunities(&o.partner_id)
                        .into_iter()
                        .find(|x| x.program_id == o.program_id && x.period == o.period)
                        .unwrap();
                    assert_eq!(still.next_level, o.next_level, "{o:?}");
                    assert_eq!(
                        still.additional_basis,
                        ledger_core::values::format_exact(unit)
                    );
                }
                checked += 1;
                kinds.insert(o.kind);
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} opportunities could be checked"
    );
    assert!(kinds.len() >= 2, "{kinds:?}");
}

/// Every example program (`examples/programs/`) passes intake and is applied as a
/// first version; every example draft is a usable simulation plan.
#[test]
fn the_example_programs_pass_intake_and_fold() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut kinds = std::collections::BTreeSet::new();
    let mut replay = Replay::new();
    for (i, entry) in std::fs::read_dir(root.join("programs"))
        .unwrap()
        .enumerate()
    {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let data: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let event = serde_json::json!({
            "specversion": "1.0", "id": format!("example-{i}"), "source": "examples",
            "type": "program.published", "time": "2026-01-01T00:00:00Z", "data": data,
        });
        let step = replay.push(event.to_string().as_bytes(), i as u64 + 1);
        assert!(
            matches!(step, Step::Applied(_)),
            "{}: {step:?} {:?}",
            path.display(),
            replay.rejections()
        );
        kinds.insert(data["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.len(), 6, "one example per kind: {kinds:?}");
    for entry in std::fs::read_dir(root.join("drafts")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            ledger_core::simulate::Plan::new(&bytes, None, vec![]).is_ok(),
            "{}",
            path.display()
        );
    }
}
