//! Statements explain an entry: the journal of events that moved it, and the rules'
//! reading of its basis (tier progress, bonus attainment).

use ledger_core::replay::{ndjson_lines, Replay};

fn replay(name: &str) -> Replay {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures")
        .join(name)
        .join("events.ndjson");
    let bytes = std::fs::read(path).unwrap();
    let mut r = Replay::new();
    r.enable_journal();
    for (n, line) in ndjson_lines(&bytes, 1) {
        r.push(line, n);
    }
    r
}

#[test]
fn rebate_statement_shows_tier_progress_and_the_events() {
    let r = replay("rebate_retroactive_tiers");
    let st = r
        .ledger()
        .statement("P-100", "REB-EMEA-2026", "2026-Q2")
        .unwrap();
    assert_eq!(st.explanation["tier_reached"]["rate"], "0.03");
    assert_eq!(st.explanation["next_tier"]["from"], "250000");
    assert_eq!(st.explanation["next_tier"]["still_needed"], "149998.5");
    let causes: Vec<&str> = st.lines.iter().map(|l| l.cause.id.as_str()).collect();
    assert_eq!(causes, vec!["s6", "s9"]);
    let q1 = r
        .ledger()
        .statement("P-100", "REB-EMEA-2026", "2026-Q1")
        .unwrap();
    let payout = q1
        .lines
        .iter()
        .find_map(|l| l.payout)
        .expect("the close paid it");
    assert_eq!(payout.1.to_string(), "3750.00");
    assert!(r
        .ledger()
        .statement("P-300", "REB-EMEA-2026", "2026-Q1")
        .is_none());
    assert!(
        r.ledger()
            .statement("P-100", "REB-EMEA-2026", "2026-03")
            .is_none(),
        "a month label on a quarter program"
    );
}

#[test]
fn bonus_statement_shows_target_and_attainment() {
    let r = replay("bonus_thresholds_accelerator_frozen_target");
    let st = r.ledger().statement("P-1", "BON-2026", "2026-Q2").unwrap();
    assert_eq!(st.explanation["target"], "200000");
    assert_eq!(st.explanation["attainment"], "0.85");
    assert_eq!(st.explanation["next_threshold"]["still_needed"], "30000");
}

#[test]
fn without_the_journal_the_document_is_the_same() {
    let with = replay("mdf_claims_fifo_expiry").document();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures/mdf_claims_fifo_expiry/events.ndjson");
    let bytes = std::fs::read(path).unwrap();
    let mut plain = Replay::new();
    for (n, line) in ndjson_lines(&bytes, 1) {
        plain.push(line, n);
    }
    assert_eq!(plain.document(), with);
}
