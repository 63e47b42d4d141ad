//! The JSON Schemas in `schemas/` and the Rust intake agree: every event the intake
//! accepts validates, and a corpus of bad inputs is refused by both.

use ledger_core::document::PayoutRow;
use ledger_core::replay::{ndjson_lines, Replay};
use ledger_core::{check, Code};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schemas").join(name)).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name} compiles: {e}"))
}

fn fixture_lines() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("replay-fixtures"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for dir in dirs {
        let bytes = std::fs::read(dir.join("events.ndjson")).unwrap();
        for (n, line) in ndjson_lines(&bytes, 1) {
            out.push((format!("{}:{n}", dir.display()), line.to_vec()));
        }
    }
    out
}

#[test]
fn every_accepted_fixture_event_validates() {
    let v = validator("inbound-event.schema.json");
    let mut accepted = 0;
    for (at, line) in fixture_lines() {
        if check(&line).is_ok() {
            accepted += 1;
            let value: Value = serde_json::from_slice(&line).unwrap();
            let errors: Vec<String> = v
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{at}: {errors:?}");
        }
    }
    assert!(accepted > 2500, "{accepted}");
}

#[test]
fn shape_refusals_in_fixtures_are_refused_by_the_schema_too() {
    let v = validator("inbound-event.schema.json");
    let mut refused = 0;
    for (at, line) in fixture_lines() {
        let Err(r) = check(&line) else { continue };
        if !matches!(
            r.code,
            Code::InvalidEnvelope | Code::UnknownType | Code::InvalidData
        ) {
            continue;
        }
        let value: Value = serde_json::from_slice(&line).unwrap();
        // The one shape rule JSON Schema cannot state: integers written with a fraction.
        if r.message.contains("without fraction or exponent") {
            continue;
        }
        if r.message.contains("must be unique") || r.message.contains("repeats") {
            continue; // uniqueness of line ids inside objects: ledger-only (see schema description)
        }
        refused += 1;
        assert!(
            !v.is_valid(&value),
            "{at}: refused by intake ({}) but valid for the schema",
            r.message
        );
    }
    assert!(refused > 20, "{refused}");
}

const BASE_SALE: &str = r#"{"specversion":"1.0","id":"e1","source":"erp","type":"sale.recorded","time":"2026-02-01T10:00:00Z","data":{"sale_id":"S1","partner_id":"P-1","region":"EMEA","lines":[{"line_id":"1","sku":"A","quantity":2,"net_amount":"10.00","currency":"EUR"}]}}"#;
const BASE_PROGRAM: &str = r#"{"specversion":"1.0","id":"p1","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{"program_id":"R","version":1,"name":"R","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","eligibility":{"skus":["A"]},"rules":{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}}}"#;

#[test]
fn a_corpus_of_bad_inputs_is_refused_by_both() {
    let v = validator("inbound-event.schema.json");
    let corpus: Vec<(String, &str)> = vec![
        (BASE_SALE.replace(r#""specversion":"1.0""#, r#""specversion":"0.3""#), "specversion"),
        (BASE_SALE.replace(r#""id":"e1","#, ""), "missing id"),
        (BASE_SALE.replace(r#""id":"e1""#, r#""id":"""#), "empty id"),
        (BASE_SALE.replace(r#""source":"erp""#, r#""source":7"#), "numeric source"),
        (BASE_SALE.replace("2026-02-01T10:00:00Z", "2026-02-01T10:00:00"), "time without offset"),
        (BASE_SALE.replace("2026-02-01T10:00:00Z", "2026-02-01 10:00:00Z"), "time with a space"),
        (BASE_SALE.replace(r#""type":"sale.recorded""#, r#""type":"sale.deleted""#), "unknown type"),
        (BASE_SALE.replace(r#""time""#, r#""datacontenttype":"text/plain","time""#), "datacontenttype"),
        (BASE_SALE.replace(r#""time""#, r#""subject":"","time""#), "empty subject"),
        (BASE_SALE.replace(r#""net_amount":"10.00""#, r#""net_amount":10.0"#), "numeric amount"),
        (BASE_SALE.replace(r#""net_amount":"10.00""#, r#""net_amount":"10.1234567""#), "7 decimals"),
        (BASE_SALE.replace(r#""net_amount":"10.00""#, r#""net_amount":"-10.00""#), "negative net"),
        (BASE_SALE.replace(r#""net_amount":"10.00""#, r#""net_amount":"010.00""#), "leading zero"),
        (BASE_SALE.replace(r#""quantity":2"#, r#""quantity":0"#), "quantity 0"),
        (BASE_SALE.replace(r#""quantity":2"#, r#""quantity":"2""#), "string quantity"),
        (BASE_SALE.replace(r#""currency":"EUR""#, r#""currency":"eur""#), "lower-case currency"),
        (BASE_SALE.replace(r#""partner_id":"P-1""#, r#""partner_id":"P 1""#), "space in identifier"),
        (BASE_SALE.replace(r#""region":"EMEA""#, r#""region":"""#), "empty region"),
        (BASE_SALE.replace(r#""lines":[{"line_id":"1","sku":"A","quantity":2,"net_amount":"10.00","currency":"EUR"}]"#, r#""lines":[]"#), "no lines"),
        (BASE_SALE.replace(r#""sku":"A","#, ""), "missing sku"),
        (BASE_SALE.replace(r#","data":{"#, r#","data":[{"#).replace("]}}", "]}]}"), "data not an object"),
        (BASE_PROGRAM.replace(r#""rate":"0.02""#, r#""rate":"10.5""#), "rate above 10"),
        (BASE_PROGRAM.replace(r#""skus":["A"]"#, r#""colors":["red"]"#), "unknown eligibility key"),
        (BASE_PROGRAM.replace(r#""mode":"retroactive","#, r#""mode":"retroactive","cap":"1","#), "unknown rule key"),
        (BASE_PROGRAM.replace(r#""kind":"rebate""#, r#""kind":"loyalty""#), "unknown kind"),
        (BASE_PROGRAM.replace(r#""period":"quarter""#, r#""period":"week""#), "unknown period kind"),
        (BASE_PROGRAM.replace(r#""version":1"#, r#""version":0"#), "version 0"),
        (BASE_PROGRAM.replace(r#""start_date":"2026-01-01""#, r#""start_date":"2026-13-01""#), "month 13"),
        (BASE_PROGRAM.replace(r#""tiers":[{"from":"0","rate":"0.02"}]"#, r#""tiers":[]"#), "no tiers"),
        (BASE_PROGRAM.replace(r#""kind":"rebate""#, r#""kind":"spif""#).replace(r#""basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]"#, r#""per_unit":"1.00","rate":"0.1","payout":"immediate""#), "spif with both"),
        (BASE_PROGRAM.replace(r#""kind":"rebate""#, r#""kind":"mdf""#).replace(r#""period":"quarter""#, r#""period":"program""#).replace(r#""basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]"#, r#""accrual_rate":"0.1","expires_after_periods":2"#), "program-period fund expiring after 2"),
        (r#"{"specversion":"1.0","id":"c","source":"fin","type":"period.closed","time":"2026-01-01T00:00:00Z","data":{"program_id":"R","period":"2026-13"}}"#.to_string(), "month 13 label"),
        (r#"{"specversion":"1.0","id":"a","source":"fin","type":"adjustment.posted","time":"2026-01-01T00:00:00Z","data":{"adjustment_id":"A","partner_id":"P","program_id":"R","period":"2026-Q1","amount":"-0.00","reason":"x"}}"#.to_string(), "negative zero adjustment"),
        (r#"{"specversion":"1.0","id":"a","source":"fin","type":"claim.submitted","time":"2026-01-01T00:00:00Z","data":{"claim_id":"C","partner_id":"P","program_id":"M","amount":"0.00","activity":"x"}}"#.to_string(), "zero claim"),
        (r#"{"specversion":"1.0","id":"a","source":"fin","type":"claim.decided","time":"2026-01-01T00:00:00Z","data":{"claim_id":"C","decision":"maybe"}}"#.to_string(), "bad decision"),
        (r#"{"specversion":"1.0","id":"a","source":"crm","type":"partner.enrolled","time":"2026-01-01T00:00:00Z","data":{"partner_id":"P","program_id":"M","target":"0"}}"#.to_string(), "zero target"),
    ];
    for (input, what) in &corpus {
        let value: Value = serde_json::from_str(input)
            .unwrap_or_else(|e| panic!("{what}: corpus line is JSON: {e}"));
        let rust = check(input.as_bytes());
        assert!(rust.is_err(), "{what}: intake accepted it");
        assert!(!v.is_valid(&value), "{what}: schema accepted it");
    }
    // And the bases themselves are accepted by both.
    for base in [BASE_SALE, BASE_PROGRAM] {
        assert!(check(base.as_bytes()).is_ok());
        assert!(v.is_valid(&serde_json::from_str(base).unwrap()));
    }
}

#[test]
fn payout_events_validate() {
    let v = validator("payout-issued.schema.json");
    let bytes = std::fs::read(root().join("replay-fixtures/random_seed3/events.ndjson")).unwrap();
    let mut replay = Replay::new();
    for (n, line) in ndjson_lines(&bytes, 1) {
        replay.push(line, n);
    }
    let doc = replay.document();
    assert!(!doc.payouts.is_empty());
    for p in &doc.payouts {
        let event = PayoutRow::cloudevent(p, "2026-03-01T10:00:00Z", "incentive-ledger");
        let errors: Vec<String> = v.iter_errors(&event).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{event}: {errors:?}");
    }
}
