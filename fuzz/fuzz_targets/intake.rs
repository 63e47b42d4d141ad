//! Intake on arbitrary bytes (`ledger_core::fuzz_checks::intake`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledger_core::fuzz_checks::intake(data));
