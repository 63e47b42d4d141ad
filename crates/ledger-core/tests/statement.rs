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

use ledger_core::ledger::Explanation;
use ledger_core::values::format_exact as exact;

#[test]
fn rebate_statement_shows_tier_progress_and_the_events() {
    let r = replay("rebate_retroactive_tiers");
    let st = r
        .ledger()
        .statement("P-100", "REB-EMEA-2026", "2026-Q2")
        .unwrap();
    let Explanation::Rebate {
        tier_reached,
        next_tier,
        ..
    } = &st.explanation
    else {
        panic!("a rebate entry: {:?}", st.explanation);
    };
    assert_eq!(exact(tier_reached.as_ref().unwrap().rate), "0.03");
    let (next, still_needed) = next_tier.as_ref().unwrap();
    assert_eq!(exact(next.from), "250000");
    assert_eq!(exact(*still_needed), "149998.5");
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
    let Explanation::Bonus {
        target,
        attainment,
        next_threshold,
        ..
    } = &st.explanation
    else {
        panic!("a bonus entry: {:?}", st.explanation);
    };
    assert_eq!(exact(target.unwrap()), "200000");
    assert_eq!(exact(attainment.unwrap()), "0.85");
    assert_eq!(exact(next_threshold.as_ref().unwrap().1), "30000");
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

/// A fund statement lists the claims reserving from the bucket through a per-partner
/// index the checkpoint does not store: after a round trip through the checkpoint's
/// encoding and `restore_derived`, and even without it, after every prefix of a stream
/// with claims, it lists the same claims as the live fold.
#[test]
fn a_fund_statement_lists_the_same_claims_after_a_checkpoint_round_trip() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures/mdf_claims_fifo_expiry/events.ndjson");
    let bytes = std::fs::read(path).unwrap();
    let mut live = Replay::new();
    let mut checked = 0;
    for (n, line) in ndjson_lines(&bytes, 1) {
        live.push(line, n);
        let encoded = postcard::to_allocvec(&live).unwrap();
        let stale: Replay = postcard::from_bytes(&encoded).unwrap();
        let mut restored = stale.clone();
        restored.restore_derived();
        for b in live.ledger().balances() {
            let of = |r: &Replay| {
                r.ledger()
                    .statement(&b.partner_id, &b.program_id, &b.period)
                    .map(|s| s.explanation)
            };
            assert_eq!(of(&restored), of(&live), "line {n}: {b:?}");
            assert_eq!(of(&stale), of(&live), "line {n}: {b:?}");
            if let Some(Explanation::Fund {
                claims_reserving, ..
            }) = of(&live)
            {
                checked += claims_reserving.len();
            }
        }
    }
    assert!(checked > 0, "the fixture has claims reserving from buckets");
}
