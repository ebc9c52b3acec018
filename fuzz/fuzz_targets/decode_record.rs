//! Arbitrary bytes read from the `records` table must decode to a record or
//! to `Error::Corrupted`, never panic.
#![no_main]

#[path = "../../tests/support/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::decode_record(data));
