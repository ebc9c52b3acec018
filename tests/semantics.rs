//! What is particular to the embedded store: commits, sweep batches, the
//! replay cache, key and config validation, claims tied to their store.
//! The rules every backend shares run in the conformance suite
//! (conformance/), against this store in memory and on a file.

mod common;

use std::time::Duration;

use common::*;
use idemkv::{Begin, Config, Durability, Error, Fingerprint, Key, Store};

/// Only the claim and the completion write: in progress, mismatch and
/// replay answers commit nothing. (The rules themselves, for every backend,
/// are in the conformance suite: conformance/src/cases.)
#[test]
fn answers_that_need_no_write_commit_nothing() -> TestResult {
    let (config, _clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("order-1");
    let claim = claimed(store.begin(&k, fp("a"))?);
    in_progress(store.begin(&k, fp("a"))?);
    mismatch(store.begin(&k, fp("b"))?);
    store.complete(claim, response("done"))?;
    replayed(store.begin(&k, fp("a"))?);
    mismatch(store.begin(&k, fp("b"))?);
    let m = store.metrics();
    assert_eq!(m.commits, m.committed_ops, "one writer, one op per commit");
    assert_eq!(
        m.committed_ops, 2,
        "only the claim and the completion wrote"
    );
    Ok(())
}

#[test]
fn sweep_handles_more_than_one_batch() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config.sweep_batch(1000))?;
    for i in 0..2500 {
        let k = key(&format!("bulk-{i}"));
        store.complete(claimed(store.begin(&k, fp("a"))?), response("x"))?;
    }
    clock.advance(SWEPT_AFTER);
    let commits_before = store.metrics().commits;
    assert_eq!(store.sweep_expired()?, 2500);
    assert_eq!(
        store.metrics().commits - commits_before,
        3,
        "batches of 1,000"
    );
    assert_eq!(store.sweep_expired()?, 0);
    Ok(())
}

#[test]
fn bad_keys_are_typed_errors_with_the_rule() {
    for (scope, idem, needle) in [
        ("s", "", "empty"),
        ("s", "with space", "not visible ASCII"),
        ("s", "naïve", "not visible ASCII"),
        ("s", &"k".repeat(256), "limit is 255"),
        (&"s".repeat(513)[..], "k", "scope"),
    ] {
        match Key::new(scope, idem) {
            Err(err @ Error::InvalidKey { .. }) => {
                assert!(err.to_string().contains(needle), "{err} lacks {needle:?}")
            }
            other => panic!("expected InvalidKey for {idem:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_claim_belongs_to_its_store() -> TestResult {
    let a = Store::in_memory(Config::default())?;
    let b = Store::in_memory(Config::default())?;
    let k = key("wrong-store");
    let claim = claimed(a.begin(&k, fp("a"))?);
    assert!(matches!(b.renew(&claim), Err(Error::WrongStore)));
    let err = b.complete(claim, response("x")).expect_err("wrong store");
    assert!(matches!(err.error(), Error::WrongStore), "{err:?}");
    // Handed back, the claim completes on its own store.
    let claim = err.into_claim().ok_or("the claim was not handed back")?;
    a.complete(claim, response("x"))?;
    assert_eq!(replayed(a.begin(&k, fp("a"))?), response("x"));
    Ok(())
}

#[test]
fn zero_lease_or_retention_is_a_config_error() {
    assert!(matches!(
        Store::in_memory(Config::default().lease(Duration::ZERO)),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Store::in_memory(Config::default().retention(Duration::from_micros(10))),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn durability_none_still_works_and_persists_on_clean_close() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fast.redb");
    {
        let store = Store::open(&path, Config::default().durability(Durability::None))?;
        let k = key("fast");
        store.complete(claimed(store.begin(&k, fp("a"))?), response("kept"))?;
    }
    let store = Store::open(&path, Config::default())?;
    assert_eq!(
        replayed(store.begin(&key("fast"), fp("a"))?),
        response("kept")
    );
    Ok(())
}

#[test]
fn fingerprint_builder_parts_matter() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("parts");
    let a = Fingerprint::builder().part(b"POST").part(b"/x").finish();
    let b = Fingerprint::builder().part(b"POST/").part(b"x").finish();
    let claim = claimed(store.begin(&k, a)?);
    mismatch(store.begin(&k, b)?);
    store.release(claim)?;
    assert!(matches!(store.begin(&k, b)?, Begin::Claimed(_)));
    Ok(())
}

#[test]
fn the_replay_cache_never_serves_removed_or_expired_records() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("cached");
    store.complete(claimed(store.begin(&k, fp("a"))?), response("v1"))?;
    // Served from the cache now; the disk read is skipped.
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("v1"));
    mismatch(store.begin(&k, fp("b"))?);

    assert!(store.remove(&k)?);
    let claim = claimed(store.begin(&k, fp("b"))?);
    store.complete(claim, response("v2"))?;
    assert_eq!(replayed(store.begin(&k, fp("b"))?), response("v2"));

    clock.advance(RETENTION);
    let claim = claimed(store.begin(&k, fp("a"))?);
    store.complete(claim, response("v3"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("v3"));
    Ok(())
}

#[test]
fn replays_are_identical_with_and_without_the_cache() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cache.redb");
    {
        let store = Store::open(&path, Config::default())?;
        for i in 0..200 {
            let k = key(&format!("c{i}"));
            store.complete(
                claimed(store.begin(&k, fp("a"))?),
                response(&format!("r{i}")),
            )?;
        }
    }
    // Reopened with a cache far too small for 200 records, and with none.
    for cache_bytes in [0, 64 * 300, 64 << 20] {
        let store = Store::open(&path, Config::default().cache_bytes(cache_bytes))?;
        for round in 0..3 {
            for i in 0..200 {
                let k = key(&format!("c{i}"));
                assert_eq!(
                    replayed(store.begin(&k, fp("a"))?),
                    response(&format!("r{i}")),
                    "cache {cache_bytes}, round {round}"
                );
                mismatch(store.begin(&k, fp("b"))?);
            }
        }
    }
    Ok(())
}

/// The in-flight gauge follows every write that adds or removes a claim,
/// and the replay cache counts its hits and the lookups it could not
/// answer.
#[test]
fn the_in_flight_gauge_and_the_cache_counters_follow_the_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gauges.redb");
    let (config, clock) = manual_config();
    let store = Store::open(&path, config.clone())?;
    let in_flight = |store: &Store| store.metrics().in_flight;
    let a = claimed(store.begin(&key("a"), fp("a"))?);
    let b = claimed(store.begin(&key("b"), fp("a"))?);
    let c = claimed(store.begin(&key("c"), fp("a"))?);
    drop(claimed(store.begin(&key("d"), fp("a"))?));
    assert_eq!(in_flight(&store), 4);
    store.complete(a, response("a"))?;
    store.release(b)?;
    store.renew(&c)?;
    assert_eq!(in_flight(&store), 2);
    assert!(store.remove(&key("c"))?);
    assert_eq!(in_flight(&store), 1);
    // The dropped claim expires one retention after its lease, and the
    // sweep takes it.
    clock.advance(LEASE + RETENTION);
    store.sweep_expired()?;
    assert_eq!(in_flight(&store), 0);
    drop(claimed(store.begin(&key("e"), fp("a"))?));
    drop(c);
    store.close()?;
    // A reopened store counts what the file holds.
    let store = Store::open(&path, config)?;
    assert_eq!(in_flight(&store), 1);

    let done = key("cached");
    store.complete(claimed(store.begin(&done, fp("a"))?), response("x"))?;
    let before = store.metrics();
    replayed(store.begin(&done, fp("a"))?);
    mismatch(store.begin(&done, fp("b"))?);
    let after = store.metrics();
    assert_eq!(after.replay_cache_hits - before.replay_cache_hits, 2);
    assert_eq!(after.replay_cache_misses, before.replay_cache_misses);
    drop(claimed(store.begin(&key("new"), fp("a"))?));
    assert_eq!(
        store.metrics().replay_cache_misses,
        after.replay_cache_misses + 1
    );
    Ok(())
}
