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
///
/// One harness per cache size lives for the whole fuzzing process and is
/// reset in place between inputs (every key removed, every claim dropped),
/// so an input costs its operations, not the opening of a store.
pub fn operations(data: &[u8]) {
    let cache_off = data.first().is_some_and(|b| b & 1 == 1);
    HARNESSES.with(|harnesses| {
        let mut harnesses = harnesses.borrow_mut();
        let slot = &mut harnesses[usize::from(cache_off)];
        let harness = slot.get_or_insert_with(|| {
            model::Harness::new(if cache_off { 0 } else { 64 << 20 }, true, false)
        });
        harness.reset();
        for pair in data.chunks_exact(2).take(200) {
            harness.run(&model::step_from_bytes(pair[0], pair[1]));
        }
    });
}

thread_local! {
    /// The harnesses with the replay cache on (0) and off (1).
    static HARNESSES: std::cell::RefCell<[Option<model::Harness>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
}
