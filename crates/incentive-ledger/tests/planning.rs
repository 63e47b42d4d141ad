//! `simulate` and `report` from the command line: a simulation equals `replay --events`
//! of the transformed file, reports are read-only and clear about what they refuse.

mod common;

use common::{bin, root, succeeded};
use std::path::Path;

fn ingest(dir: &Path, events: &Path) {
    succeeded(
        bin()
            .args(["ingest", "--data-dir"])
            .arg(dir)
            .arg("--events")
            .arg(events),
    );
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every file under `dir`'s `history/` and `lookups/`, with its bytes.
fn derived_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["history", "lookups"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            files.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    files.sort();
    files
}

/// The README's worked example: tier 2 of the rebate fixture raised from 3 % to 4 %
/// from the start, as `simulate` shows it and as a replay of the rewritten file does.
#[test]
fn the_worked_example_equals_a_replay_of_the_rewritten_file() {
    let tmp = tempfile::tempdir().unwrap();
    let events = root().join("replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    let data = tmp.path().join("data");
    ingest(&data, &events);
    // A checkpoint, as the service leaves one: the simulation resumes from it read-only.
    succeeded(bin().arg("replay").arg("--data-dir").arg(&data));
    let text = std::fs::read_to_string(&events).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut draft = first["data"].clone();
    draft["rules"]["tiers"][1]["rate"] = "0.04".into();
    let draft_file = tmp.path().join("draft.json");
    std::fs::write(&draft_file, draft.to_string()).unwrap();
    let before = derived_files(&data);
    let out = succeeded(
        bin()
            .args(["simulate", "--format", "json", "--data-dir"])
            .arg(&data)
            .arg("--program")
            .arg(&draft_file),
    );
    assert_eq!(
        before,
        derived_files(&data),
        "simulate wrote into the directory"
    );
    let s = json(&out);
    // The rewritten file: the one logged version (position 1) with the draft's fields.
    let mut rewritten = first.clone();
    rewritten["data"] = draft.clone();
    rewritten["data"]["version"] = 1.into();
    let file = tmp.path().join("rewritten.ndjson");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[0] = rewritten.to_string();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let expected = common::document(&file);
    assert_eq!(s["digests"]["simulated"], expected["digest"]);
    assert_eq!(s["events"]["simulated"], expected["events"]);
    let actual = common::replay("--data-dir", &data);
    assert_eq!(s["digests"]["actual"], actual["digest"]);
    // What it would have cost, and who gains.
    assert_eq!(s["programs"][0]["earned_difference"], "2250.02");
    assert_eq!(s["programs"][0]["paid_difference"], "1250.00");
    assert_eq!(s["programs"][0]["partners_gain"], 1);
    assert_eq!(s["programs"][0]["partners_same"], 1);
    assert_eq!(s["partners"][0]["partner_id"], "P-100");
    // The table and CSV forms.
    let table = succeeded(
        bin()
            .args(["simulate", "--data-dir"])
            .arg(&data)
            .arg("--program")
            .arg(&draft_file),
    );
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("REB-EMEA-2026") && table.contains("2250.02"),
        "{table}"
    );
    let csv = succeeded(
        bin()
            .args(["simulate", "--format", "csv", "--data-dir"])
            .arg(&data)
            .arg("--program")
            .arg(&draft_file),
    );
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("P-100,REB-EMEA-2026,2026-Q1,"));
}

#[test]
fn bad_inputs_are_refused_clearly_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let events = root().join("replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    let data = tmp.path().join("data");
    ingest(&data, &events);
    let draft_file = tmp.path().join("draft.json");
    std::fs::write(&draft_file, r#"{"program_id":"X","kind":"rebate"}"#).unwrap();
    let missing = tmp.path().join("no-such-dir");
    for args in [
        vec!["simulate", "--program", draft_file.to_str().unwrap()],
        vec!["report"],
    ] {
        let out = bin()
            .args(&args)
            .arg("--data-dir")
            .arg(&missing)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no data directory"), "{err}");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    let out = bin()
        .args(["simulate", "--data-dir"])
        .arg(&data)
        .arg("--program")
        .arg(&draft_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("draft program is refused (invalid_data)"),
        "{err}"
    );
    let out = bin()
        .args(["report", "--program", "NOPE", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no program NOPE"));
}

#[test]
fn reports_as_json_csv_and_as_of_a_position() {
    let tmp = tempfile::tempdir().unwrap();
    let events = root().join("replay-fixtures/mdf_claims_fifo_expiry/events.ndjson");
    let data = tmp.path().join("data");
    ingest(&data, &events);
    let r = json(&succeeded(
        bin()
            .args(["report", "--format", "json", "--data-dir"])
            .arg(&data),
    ));
    assert_eq!(r["position"], 26);
    assert_eq!(r["accruals"][1]["program_id"], "MDF-2026");
    assert_eq!(r["accruals"][1]["accrued_liability"], "600.00");
    let early = json(&succeeded(
        bin()
            .args([
                "report",
                "--format",
                "json",
                "--program",
                "MDF-2026",
                "--as-of-seq",
                "5",
                "--data-dir",
            ])
            .arg(&data),
    ));
    assert_eq!(early["position"], 5);
    // s1 and s2 only: 2000.00 + 3000.00 (capped) accrued, nothing claimed yet.
    assert_eq!(early["programs"][0]["totals"]["earned"], "5000.00");
    assert_eq!(early["programs"][0]["claims"]["submitted"]["count"], 0);
    let csv = succeeded(
        bin()
            .args(["report", "--format", "csv", "--data-dir"])
            .arg(&data),
    );
    let csv = String::from_utf8_lossy(&csv.stdout);
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("program_id,kind,currency,period,closed"),
        "{header}"
    );
    assert!(
        csv.contains("MDF-2026,mdf,EUR,total,false,3,3,150000,15,6500.00,4900.00,600.00,0.0433"),
        "{csv}"
    );
}

/// `program check` prints what the ledger understood, in plain words, or intake's
/// refusal with exit 1; `program publish` wraps the data in a CloudEvent that the
/// ledger applies, with an id made of the program and the version.
#[test]
fn programs_are_checked_in_plain_words_and_published_as_events() {
    let examples = root().join("examples/programs");
    let out = succeeded(
        bin()
            .args(["program", "check"])
            .arg(examples.join("rebate.json")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("OK: a valid program.published"), "{text}");
    assert!(
        text.contains("retroactive rebate on net amount: 2 % from 0.00 EUR, 3 % from 100,000.00 EUR, 4 % from 250,000.00 EUR"),
        "{text}"
    );
    assert!(
        text.contains("product families switches, routers; regions EMEA"),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    let mut data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(examples.join("spif.json")).unwrap())
            .unwrap();
    data["rules"]["rate"] = "0.05".into(); // per_unit and rate together
    std::fs::write(&bad, data.to_string()).unwrap();
    let out = bin().args(["program", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused: invalid_data: data.rules"), "{err}");
    // Publish as version 2: one line, deterministic id, applied by a replay after v1.
    let v1 = succeeded(
        bin()
            .args(["program", "publish"])
            .arg(examples.join("rebate.json")),
    );
    let v2 = succeeded(
        bin()
            .args(["program", "publish", "--version", "2"])
            .arg(examples.join("rebate.json")),
    );
    let again = succeeded(
        bin()
            .args(["program", "publish", "--version", "2"])
            .arg(examples.join("rebate.json")),
    );
    assert_eq!(v2.stdout, again.stdout, "the same event every time");
    let event: serde_json::Value = serde_json::from_slice(&v2.stdout).unwrap();
    assert_eq!(event["id"], "program:REB-EMEA-2026:v2");
    assert_eq!(event["data"]["version"], 2);
    let file = tmp.path().join("programs.ndjson");
    std::fs::write(&file, [v1.stdout, v2.stdout].concat()).unwrap();
    let doc = common::document(&file);
    assert_eq!(doc["events"]["applied"], 2, "{doc}");
    // A whole event is checked as it is.
    let whole = tmp.path().join("event.json");
    std::fs::write(&whole, event.to_string()).unwrap();
    let out = succeeded(bin().args(["program", "check"]).arg(&whole));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REB-EMEA-2026 version 2"));
}
