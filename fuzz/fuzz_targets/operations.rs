//! Operation sequences (begin, complete, release, renew, drop, time passing,
//! wall-clock steps both ways, get, remove, sweep, reopen) checked against
//! the reference model, on one store reset in place between inputs.
#![no_main]

#[path = "../../tests/support/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::operations(data));
