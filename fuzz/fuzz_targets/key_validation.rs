//! `Key::new` accepts exactly the keys the documented rules allow.
#![no_main]

#[path = "../../tests/support/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::key_validation(data));
