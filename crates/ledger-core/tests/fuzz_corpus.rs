//! The fuzz targets' corpora (`fuzz/corpus/<target>/`, minimized with `cargo fuzz cmin`)
//! replayed through the same checks on stable, so every input a fuzzer found worth
//! keeping is checked by every run of the suite (`ledger_core::fuzz_checks`).

use ledger_core::fuzz_checks::{intake, json_against_serde, replay_corpus};

#[test]
fn the_intake_corpus_holds() {
    assert!(replay_corpus("intake", intake) >= 100);
}

#[test]
fn the_json_corpus_holds() {
    assert!(replay_corpus("json", json_against_serde) >= 100);
}
