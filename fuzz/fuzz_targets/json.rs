//! The I-JSON parser against serde_json (`ledger_core::fuzz_checks::json_against_serde`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledger_core::fuzz_checks::json_against_serde(data));
