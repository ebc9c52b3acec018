//! The checks behind each fuzz target, shared by `fuzz/fuzz_targets/*` and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora on stable.
#![allow(dead_code)]

use idemkv::{Error, Key, MAX_IDEMPOTENCY_KEY_LEN, MAX_SCOPE_LEN, fuzzing};

#[path = "model.rs"]
mod model;

/// Arbitrary bytes read as a stored record decode or are `Corrupted`.
pub fn decode_record(data: &[u8]) {
    if let Err(err) = fuzzing::decode_record(data) {
        assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    }
}

/// `Key::new` accepts exactly the keys the rules allow. The first byte says
/// where the scope ends.
pub fn key_validation(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (scope, idempotency_key) = rest.split_at(usize::from(split).min(rest.len()));
    let (Ok(scope), Ok(idempotency_key)) = (
        std::str::from_utf8(scope),
        std::str::from_utf8(idempotency_key),
    ) else {
        return;
    };
    let allowed = scope.len() <= MAX_SCOPE_LEN
        && (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&idempotency_key.len())
        && idempotency_key.bytes().all(|b| (0x21..=0x7E).contains(&b));
    match Key::new(scope, idempotency_key) {
        Ok(key) => {
            assert!(allowed, "accepted {scope:?}/{idempotency_key:?}");
            assert_eq!(
                (key.scope(), key.idempotency_key()),
                (scope, idempotency_key)
            );
        }
        Err(Error::InvalidKey { reason }) => {
            assert!(!allowed, "rejected {scope:?}/{idempotency_key:?}: {reason}");
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
}

/// Up to 200 operations, two bytes each, against the reference model; the
/// first byte also picks the replay cache size (off or on).
pub fn operations(data: &[u8]) {
    let cache_bytes = if data.first().is_some_and(|b| b & 1 == 1) {
        0
    } else {
        64 << 20
    };
    let mut harness = model::Harness::new(cache_bytes, true);
    for pair in data.chunks_exact(2).take(200) {
        harness.run(&model::step_from_bytes(pair[0], pair[1]));
    }
}
