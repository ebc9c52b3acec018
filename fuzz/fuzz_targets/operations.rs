//! Operation sequences (begin, complete, release, renew, drop, clock jumps,
//! get, remove, sweep, reopen) checked against the reference model.
#![no_main]

#[path = "../../tests/support/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::operations(data));
