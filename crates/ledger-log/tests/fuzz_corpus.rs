//! The storage fuzz targets' corpora (`fuzz/corpus/checkpoint/`, `fuzz/corpus/segment/`)
//! replayed through the same checks on stable (`ledger_log::fuzz_checks`).

use ledger_core::fuzz_checks::replay_corpus;
use ledger_log::fuzz_checks::{checkpoint, damaged_segment};

#[test]
fn the_checkpoint_corpus_holds() {
    assert!(replay_corpus("checkpoint", checkpoint) >= 20);
}

#[test]
fn the_segment_corpus_holds() {
    assert!(replay_corpus("segment", damaged_segment) >= 20);
}
