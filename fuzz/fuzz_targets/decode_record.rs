//! Arbitrary bytes read from the `records` table must decode to a record or
//! to `Error::Corrupted`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = idemkv::fuzzing::decode_record(data) {
        assert!(matches!(err, idemkv::Error::Corrupted { .. }), "{err:?}");
    }
});
