//! The configuration loader on arbitrary bytes (`config::fuzz_check`, the binary's own
//! module compiled in by path).
#![no_main]
#[path = "../../crates/incentive-ledger/src/config.rs"]
mod config;
libfuzzer_sys::fuzz_target!(|data: &[u8]| config::fuzz_check(data));
