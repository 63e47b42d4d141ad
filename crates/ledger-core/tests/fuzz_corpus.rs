//! The fuzz targets' corpora (`fuzz/corpus/<target>/`, minimized with `cargo fuzz cmin`)
//! replayed through the same checks on stable, so every input a fuzzer found worth
//! keeping is checked by every run of the suite (`ledger_core::fuzz_checks`).

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let caught = std::panic::catch_unwind(|| check(&bytes));
        assert!(caught.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    assert!(n >= 100, "only {n} inputs in {}", dir.display());
}

#[test]
fn the_intake_corpus_holds() {
    replay("intake", ledger_core::fuzz_checks::intake);
}

#[test]
fn the_json_corpus_holds() {
    replay("json", ledger_core::fuzz_checks::json_against_serde);
}
