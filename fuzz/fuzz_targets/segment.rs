//! Damaged log segments under `verify`'s record checks
//! (`ledger_log::fuzz_checks::damaged_segment`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledger_log::fuzz_checks::damaged_segment(data));
