//! Damaged checkpoints (`ledger_log::fuzz_checks::checkpoint`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledger_log::fuzz_checks::checkpoint(data));
