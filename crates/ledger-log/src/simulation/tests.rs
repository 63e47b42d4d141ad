//! A simulation is exactly a replay of the transformed log: the transformed log is
//! built here, independently of [`ledger_core::simulate::Transformer`], from the
//! definition in the module docs, and replayed as `replay --events` replays a file.

use super::*;
use crate::log::{Input, Log, Outcome};
use ledger_core::gen::{GenConfig, Generator};
use ledger_core::simulate::{PlanError, SOURCE};
use serde_json::Value;

/// A data directory holding `lines` (appended as one batch), and each line's outcome.
fn directory(lines: &[String]) -> (tempfile::TempDir, Log, Vec<Outcome>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path()).unwrap();
    let inputs: Vec<Input<'_>> = crate::log::tests::inputs(lines);
    let outcomes = log.append_batch(&inputs).unwrap();
    (dir, log, outcomes)
}

/// The transformed log, built from the definition: `lines` with their outcomes in the
/// log, the draft (data object), the position and the extra lines.
fn transformed(
    lines: &[String],
    outcomes: &[Outcome],
    draft: &Value,
    from_seq: u64,
    extras: &[String],
) -> Vec<String> {
    let program = draft["program_id"].as_str().unwrap().to_string();
    // Which lines the real log's fold applied: a replay of the lines says.
    let mut real = Replay::new();
    let applied: Vec<bool> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| matches!(real.push(l.as_bytes(), i as u64 + 1), Step::Applied(_)))
        .collect();
    let ever = real.ledger().program(&program).is_some();
    let is_version = |line: &str| -> Option<u64> {
        let v: Value = serde_json::from_str(line).ok()?;
        (v["type"] == "program.published" && v["data"]["program_id"] == program.as_str())
            .then(|| v["data"]["version"].as_u64())
            .flatten()
    };
    let with_version = |envelope: Value, version: u64| {
        let mut e = envelope;
        let mut data = draft.clone();
        data["version"] = Value::from(version);
        e["data"] = data;
        e["type"] = Value::from("program.published");
        serde_json::to_string(&e).unwrap()
    };
    let mut current: Option<u64> = None;
    let mut inserted = false;
    let mut out = Vec::new();
    let mut last_time = String::from("1970-01-01T00:00:00Z");
    let mut last_seq = 0;
    let insert = |out: &mut Vec<String>, current: Option<u64>, at: u64, time: &str| {
        let version = match current {
            Some(v) => Some(v + 1),
            None if !ever => Some(1),
            None => None,
        };
        if let Some(v) = version {
            let envelope = serde_json::json!({
                "specversion": "1.0",
                "id": format!("draft:{program}:v{v}:at:{at}"),
                "source": SOURCE,
                "time": time,
            });
            out.push(with_version(envelope, v));
        }
        out.extend(extras.iter().cloned());
    };
    for ((line, outcome), applied) in lines.iter().zip(outcomes).zip(&applied) {
        let Outcome::Appended { seq, event, .. } = outcome else {
            out.push(line.clone());
            continue;
        };
        last_seq = *seq;
        last_time = event.time.to_string();
        if !inserted && *seq >= from_seq {
            inserted = true;
            insert(&mut out, current, *seq, &event.time);
        }
        match is_version(line) {
            Some(v) if *applied => {
                current = Some(v);
                if *seq >= from_seq {
                    out.push(with_version(serde_json::from_str(line).unwrap(), v));
                    continue;
                }
            }
            _ => {}
        }
        out.push(line.clone());
    }
    if !inserted {
        insert(&mut out, current, last_seq + 1, &last_time);
    }
    out
}

fn replay_of(lines: &[String]) -> Replay {
    let mut r = Replay::new();
    for (i, l) in lines.iter().enumerate() {
        r.push(l.as_bytes(), i as u64 + 1);
    }
    r
}

/// The first program.published data of `kind` in `lines`, with every rate and amount
/// in its rules raised (a draft that changes what it earns).
fn raised_draft(lines: &[String], kind: &str) -> Option<Value> {
    let data = lines.iter().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["type"] == "program.published" && v["data"]["kind"] == kind && v["data"]["version"] == 1)
            .then(|| v["data"].clone())
    })?;
    let mut data = data;
    fn raise(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match x {
                        Value::String(s)
                            if ["rate", "per_unit", "payout", "amount", "accrual_rate"]
                                .contains(&k.as_str()) =>
                        {
                            // `payout` is also SPIF's `immediate` / `period_close`.
                            if let Ok(d) = s.parse::<rust_decimal::Decimal>() {
                                *s = (d + rust_decimal::Decimal::new(1, 2))
                                    .normalize()
                                    .to_string();
                            }
                        }
                        _ => raise(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(raise),
            _ => {}
        }
    }
    raise(&mut data["rules"]);
    Some(data)
}

fn check(
    lines: &[String],
    draft: &Value,
    from_seq: u64,
    extras: &[String],
    what: &str,
) -> Simulation {
    let (_dir, log, outcomes) = directory(lines);
    let extra_lines = extras
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.as_bytes().to_vec()))
        .collect();
    let plan = Plan::new(draft.to_string().as_bytes(), Some(from_seq), extra_lines).unwrap();
    let simulated = simulate(&log.reader(), &plan, usize::MAX, &mut |_| {})
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let s = simulated.simulation;
    let expected = replay_of(&transformed(lines, &outcomes, draft, from_seq, extras));
    let actual = replay_of(lines);
    let doc = expected.document();
    assert_eq!(s.digests.simulated, doc.digest, "{what}: simulated digest");
    assert_eq!(
        s.digests.actual,
        actual.document().digest,
        "{what}: actual digest"
    );
    assert_eq!(s.events.simulated, doc.events, "{what}: simulated counts");
    assert_eq!(s.events.actual, actual.counts(), "{what}: actual counts");
    // Every differing payout, recomputed from the two documents by id.
    let by_id = |d: &ledger_core::Document| -> std::collections::HashMap<String, String> {
        d.payouts
            .iter()
            .map(|p| (p.payout_id.clone(), p.amount.clone()))
            .collect()
    };
    let (a, b) = (by_id(&actual.document()), by_id(&doc));
    let differing = a
        .iter()
        .filter(|(id, amount)| b.get(*id) != Some(amount))
        .count()
        + b.keys().filter(|id| !a.contains_key(*id)).count();
    assert_eq!(s.payouts.differing, differing as u64, "{what}: payouts");
    assert_eq!(s.payouts.listed.len(), differing, "{what}: listed");
    s
}

/// Property: over generated logs (every kind of program, refusals, duplicates,
/// quarantine), drafts applied from the start, mid-log and beyond the end equal the
/// replay of the transformed log.
#[test]
fn a_simulation_equals_the_replay_of_the_transformed_log() {
    let mut differing = 0;
    for seed in 1..=3 {
        let lines: Vec<String> = Generator::new(GenConfig::new(seed, 2500)).collect();
        for kind in ["rebate", "spif", "bonus", "mdf", "training"] {
            let Some(draft) = raised_draft(&lines, kind) else {
                continue;
            };
            for from_seq in [1, 900, 100_000] {
                let s = check(
                    &lines,
                    &draft,
                    from_seq,
                    &[],
                    &format!("seed {seed} {kind} from {from_seq}"),
                );
                differing += s.entries.len();
            }
        }
    }
    // The drafts do change what is earned: the comparison is not trivially empty.
    assert!(differing > 50, "{differing}");
}

const REBATE_V1: &str = r#"{"specversion":"1.0","id":"p1","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{"program_id":"REB","version":1,"name":"Rebate","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","requires_enrollment":false,"rules":{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"},{"from":"100000","rate":"0.03"}]}}}"#;

fn sale(n: u32, partner: &str, amount: &str, date: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"s{n}","source":"erp","type":"sale.recorded","time":"{date}T10:00:00Z","data":{{"sale_id":"INV-{n}","partner_id":"{partner}","lines":[{{"line_id":"1","sku":"SKU-1","quantity":1,"net_amount":"{amount}","currency":"EUR"}}]}}}}"#
    )
}

fn close(id: &str, period: &str, program: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"finance","type":"period.closed","time":"2026-04-01T00:00:00Z","data":{{"program_id":"{program}","period":"{period}"}}}}"#
    )
}

fn hand_log() -> Vec<String> {
    vec![
        REBATE_V1.to_string(),
        sale(1, "P-1", "80000.00", "2026-01-10"),
        sale(2, "P-1", "40000.00", "2026-02-10"),
        sale(3, "P-2", "50000.00", "2026-02-11"),
        close("c1", "2026-Q1", "REB"),
        sale(4, "P-2", "70000.00", "2026-04-11"),
    ]
}

fn rebate_draft(rate2: &str) -> Value {
    let v: Value = serde_json::from_str(REBATE_V1).unwrap();
    let mut d = v["data"].clone();
    d["rules"]["tiers"][1]["rate"] = Value::from(rate2);
    d
}

/// A rate raised from the start: the worked example of the README, checked by hand.
#[test]
fn a_rate_raised_from_the_start() {
    let s = check(&hand_log(), &rebate_draft("0.04"), 1, &[], "raise tier 2");
    // P-1's Q1: 120,000 → 3 % = 3,600.00 actual, 4 % = 4,800.00 simulated, both paid at
    // the close. P-2 stays in tier 1 in Q1 (50,000 × 2 % = 1,000.00) and Q2 (70,000).
    let p1 = &s.entries;
    assert_eq!(p1.len(), 1, "{p1:?}");
    assert_eq!(
        (p1[0].partner_id.as_str(), p1[0].period.as_str()),
        ("P-1", "2026-Q1")
    );
    assert_eq!(
        (
            p1[0].figures.actual_earned.as_str(),
            p1[0].figures.simulated_earned.as_str()
        ),
        ("3600.00", "4800.00")
    );
    assert_eq!(p1[0].figures.simulated_paid, "4800.00");
    let total = &s.programs[0];
    assert_eq!(
        (
            total.partners_gain,
            total.partners_lose,
            total.partners_same
        ),
        (1, 0, 1)
    );
    assert_eq!(total.figures.earned_difference, "1200.00");
    assert_eq!(s.changes.len(), 1);
    assert_eq!(s.changes[0].action, "replaced");
    assert_eq!(s.payouts.differing, 1);
    assert_eq!(s.payouts.listed[0].difference, "1200.00");
}

/// A new SPIF inserted mid-year with the enrollments of the extra file.
#[test]
fn a_new_spif_inserted_mid_year_with_enrollments() {
    let draft: Value = serde_json::from_str(
        r#"{"program_id":"SPIF-NEW","name":"Spring SPIF","kind":"spif","currency":"EUR","start_date":"2026-02-01","end_date":"2026-06-30","period":"quarter","requires_enrollment":true,"rules":{"per_unit":"25.00","cap_per_period":"1000.00","payout":"immediate"}}"#,
    )
    .unwrap();
    let enroll = |n: u32, partner: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"enr-{n}","source":"crm","type":"partner.enrolled","time":"2026-02-01T00:00:00Z","data":{{"partner_id":"{partner}","program_id":"SPIF-NEW"}}}}"#
        )
    };
    let extras = [enroll(1, "P-2")];
    let s = check(&hand_log(), &draft, 3, &extras, "new spif");
    assert_eq!(
        s.changes.iter().map(|c| c.action).collect::<Vec<_>>(),
        ["inserted", "extra"]
    );
    // P-2's two sales after the insertion count: 1 unit each, 25.00 paid at once.
    let spif: Vec<_> = s
        .entries
        .iter()
        .filter(|e| e.program_id == "SPIF-NEW")
        .collect();
    assert_eq!(spif.len(), 2, "{spif:?}");
    assert!(spif
        .iter()
        .all(|e| e.partner_id == "P-2" && e.figures.simulated_paid == "25.00"));
    assert_eq!(s.payouts.differing, 2);
}

/// A draft inserted before a later logged version: that version, replaced with the
/// draft and its number kept, is refused as a version conflict — reported, not a crash.
#[test]
fn a_draft_refused_as_a_version_conflict_is_reported() {
    let mut lines = hand_log();
    let v2 = REBATE_V1
        .replace(r#""id":"p1""#, r#""id":"p2""#)
        .replace(r#""version":1"#, r#""version":2"#)
        .replace(r#""rate":"0.03""#, r#""rate":"0.035""#);
    lines.insert(4, v2);
    let s = check(&lines, &rebate_draft("0.05"), 3, &[], "conflict");
    let actions: Vec<_> = s
        .changes
        .iter()
        .map(|c| (c.action, c.version, c.refused.as_ref().map(|r| r.code)))
        .collect();
    assert_eq!(
        actions,
        [
            ("inserted", Some(2), None),
            (
                "replaced",
                Some(2),
                Some(ledger_core::Code::ProgramVersionConflict)
            ),
        ]
    );
    assert!(s.refusals.iter().any(
        |r| r.code == ledger_core::Code::ProgramVersionConflict && r.simulated == r.actual + 1
    ));
}

/// Extra events whose identity is in the log are refused before anything is folded;
/// a draft that intake refuses names the field.
#[test]
fn plans_that_do_not_fit_are_refused_clearly() {
    let (_dir, log, _) = directory(&hand_log());
    let plan = Plan::new(
        rebate_draft("0.04").to_string().as_bytes(),
        None,
        vec![(7, sale(2, "P-9", "1.00", "2026-02-10").into_bytes())],
    )
    .unwrap();
    match simulate(&log.reader(), &plan, 10, &mut |_| {}) {
        Err(SimulationError::Plan(PlanError::ExtraInLog { line: 7, seq: 3 })) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an extra event with a logged identity was simulated"),
    }
    let mut bad = rebate_draft("0.04");
    bad["rules"]["tiers"][1]["rate"] = Value::from("11");
    let e = Plan::new(bad.to_string().as_bytes(), None, vec![]).unwrap_err();
    assert!(
        matches!(&e, PlanError::Draft { code: ledger_core::Code::InvalidData, message } if message.contains("rate")),
        "{e}"
    );
}

/// With the service's checkpoint (resumed read-only) or without one, the result is the
/// same, and nothing in the directory changes.
#[test]
fn a_simulation_reads_the_checkpoint_and_writes_nothing() {
    let lines: Vec<String> = Generator::new(GenConfig::new(11, 3000)).collect();
    let draft = raised_draft(&lines, "rebate").unwrap();
    let (dir, log, _) = directory(&lines[..2000]);
    let plan = Plan::new(draft.to_string().as_bytes(), Some(1), vec![]).unwrap();
    let without = simulate(&log.reader(), &plan, 100, &mut |_| {}).unwrap();
    assert!(without.warnings.is_empty(), "{:?}", without.warnings);
    // The service's checkpoint, then more records after it.
    let (rebuilt, _stores) = history::rebuild_archived(&log.reader(), 500, &mut |_| {}).unwrap();
    drop(rebuilt);
    let mut log = log;
    let more: Vec<String> = lines[2000..].to_vec();
    let inputs: Vec<Input<'_>> = more
        .iter()
        .enumerate()
        .map(|(i, l)| Input {
            raw: l.as_bytes(),
            line: Some(2001 + i as u64),
            time_ns: 0,
            transport: crate::Transport::None,
        })
        .collect();
    log.append_batch(&inputs).unwrap();
    let snapshot = || -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in [crate::archive::DIR, crate::lookups::DIR] {
            for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                let p = e.unwrap().path();
                files.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
        files.sort();
        files.push(("checkpoint".into(), log.load_checkpoint().unwrap().unwrap()));
        files
    };
    let before = snapshot();
    let with = simulate(&log.reader(), &plan, 100, &mut |_| {}).unwrap();
    assert_eq!(
        before,
        snapshot(),
        "the simulation wrote into the directory"
    );
    let all = check(&lines, &draft, 1, &[], "whole");
    assert_eq!(with.simulation, all);
}
