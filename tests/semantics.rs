//! The promise of `begin` and the holder calls, one rule at a time.

mod common;

use std::time::Duration;

use common::*;
use idemkv::{
    Begin, Clock, Config, Durability, Error, Fingerprint, Key, RecordState, Store, StoredResponse,
};

#[test]
fn claim_in_progress_complete_replay_mismatch() -> TestResult {
    let (config, _clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("order-1");

    let claim = claimed(store.begin(&k, fp("a"))?);
    assert_eq!(claim.key(), &k);
    assert!(!claim.is_takeover());
    assert_eq!(in_progress(store.begin(&k, fp("a"))?), LEASE);
    mismatch(store.begin(&k, fp("b"))?);

    let stored = StoredResponse::new(201, vec![0u8, 159, 146, 150, 255])
        .with_header("content-type", "application/octet-stream")
        .with_header("set-cookie", "a=1")
        .with_header("set-cookie", "b=2");
    store.complete(claim, stored.clone())?;

    let replay = replayed(store.begin(&k, fp("a"))?);
    assert_eq!(replay, stored);
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers().len(), 3);
    assert_eq!(replay.headers()[2], ("set-cookie".into(), b"b=2".to_vec()));
    assert_eq!(replay.body(), &[0u8, 159, 146, 150, 255]);
    mismatch(store.begin(&k, fp("b"))?);

    let m = store.metrics();
    assert_eq!(
        (
            m.claims,
            m.in_progress,
            m.mismatches,
            m.completions,
            m.replays
        ),
        (1, 1, 2, 1, 1)
    );
    assert_eq!(m.commits, m.committed_ops, "one writer, one op per commit");
    assert_eq!(
        m.committed_ops, 2,
        "only the claim and the completion wrote"
    );
    Ok(())
}

#[test]
fn scopes_keep_equal_keys_apart() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let a = Key::new("tenant-a", "same")?;
    let b = Key::new("tenant-b", "same")?;
    let claim_a = claimed(store.begin(&a, fp("x"))?);
    let claim_b = claimed(store.begin(&b, fp("y"))?);
    store.complete(claim_a, response("a"))?;
    store.complete(claim_b, response("b"))?;
    assert_eq!(replayed(store.begin(&a, fp("x"))?), response("a"));
    assert_eq!(replayed(store.begin(&b, fp("y"))?), response("b"));
    Ok(())
}

#[test]
fn release_lets_the_next_attempt_claim_with_a_larger_token() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("release");
    let first = claimed(store.begin(&k, fp("a"))?);
    let first_token = first.token();
    store.release(first)?;
    assert!(store.get(&k)?.is_none());
    // Released keys carry no fingerprint: another payload may claim.
    let second = claimed(store.begin(&k, fp("b"))?);
    assert!(second.token() > first_token);
    store.complete(second, response("b"))?;
    assert_eq!(store.metrics().releases, 1);
    Ok(())
}

#[test]
fn expired_lease_is_taken_over_and_the_old_holder_is_fenced() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("takeover");

    let old = claimed(store.begin(&k, fp("a"))?);
    clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(
        in_progress(store.begin(&k, fp("a"))?),
        Duration::from_millis(1)
    );
    clock.advance(Duration::from_millis(1));

    // A different payload never takes over.
    mismatch(store.begin(&k, fp("b"))?);
    let new = claimed(store.begin(&k, fp("a"))?);
    assert!(new.is_takeover());
    assert!(new.token() > old.token());

    // Every holder call of the old claim fails and changes nothing.
    assert!(matches!(store.renew(&old), Err(Error::LeaseLost)));
    let before = store.get(&k)?;
    let err = store
        .complete(old, response("old"))
        .expect_err("lease lost");
    assert!(matches!(err.error(), Error::LeaseLost), "{err:?}");
    assert!(err.into_claim().is_none(), "the write was attempted");
    assert_eq!(store.get(&k)?, before);
    let record = before.ok_or("record missing")?;
    assert_eq!(record.token(), new.token());
    assert!(matches!(record.state(), RecordState::InFlight { .. }));

    store.complete(new, response("new"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("new"));
    let m = store.metrics();
    assert_eq!((m.claims, m.takeovers, m.leases_lost), (2, 1, 2));
    Ok(())
}

#[test]
fn stale_release_after_takeover_is_lease_lost() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("stale-release");
    let old = claimed(store.begin(&k, fp("a"))?);
    clock.advance(LEASE);
    let new = claimed(store.begin(&k, fp("a"))?);
    assert!(matches!(store.release(old), Err(Error::LeaseLost)));
    assert_eq!(store.get(&k)?.map(|r| r.token()), Some(new.token()));
    store.complete(new, response("ok"))?;
    Ok(())
}

#[test]
fn renew_extends_the_lease() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("renew");
    let claim = claimed(store.begin(&k, fp("a"))?);
    clock.advance(Duration::from_secs(40));
    store.renew(&claim)?;
    clock.advance(Duration::from_secs(40));
    // 80 s after the claim, but only 40 s after the renewal.
    assert_eq!(
        in_progress(store.begin(&k, fp("a"))?),
        Duration::from_secs(20)
    );
    let lease_until = store
        .get(&k)?
        .and_then(|r| r.lease_until())
        .ok_or("no lease")?;
    assert_eq!(lease_until, clock.now() + Duration::from_secs(20));
    store.complete(claim, response("done"))?;
    assert_eq!(store.metrics().renewals, 1);
    Ok(())
}

#[test]
fn an_expired_holder_may_still_complete_if_nobody_took_over() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("late");
    let claim = claimed(store.begin(&k, fp("a"))?);
    clock.advance(LEASE * 3);
    store.complete(claim, response("late but fine"))?;
    assert_eq!(
        replayed(store.begin(&k, fp("a"))?),
        response("late but fine")
    );
    Ok(())
}

#[test]
fn dropped_claim_blocks_until_its_lease_runs_out() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("dropped");
    drop(claimed(store.begin(&k, fp("a"))?));
    assert_eq!(in_progress(store.begin(&k, fp("a"))?), LEASE);
    clock.advance(LEASE);
    let claim = claimed(store.begin(&k, fp("a"))?);
    assert!(claim.is_takeover());
    store.complete(claim, response("second try"))?;
    Ok(())
}

#[test]
fn completed_records_expire_exactly_at_retention() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("retention");
    store.complete(claimed(store.begin(&k, fp("a"))?), response("r"))?;

    clock.advance(RETENTION - Duration::from_millis(1));
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("r"));
    assert!(store.get(&k)?.is_some());
    assert_eq!(store.sweep_expired()?, 0);

    clock.advance(Duration::from_millis(1));
    assert!(
        store.get(&k)?.is_none(),
        "expired records read as absent before any sweep"
    );
    assert_eq!(store.sweep_expired()?, 1);
    assert_eq!(store.metrics().expired, 1);
    // Absent again: any payload may claim.
    let claim = claimed(store.begin(&k, fp("b"))?);
    store.release(claim)?;
    Ok(())
}

#[test]
fn an_expired_record_is_claimable_before_the_sweep() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("lazy");
    store.complete(claimed(store.begin(&k, fp("a"))?), response("old"))?;
    clock.advance(RETENTION);
    let claim = claimed(store.begin(&k, fp("b"))?);
    assert!(!claim.is_takeover());
    store.complete(claim, response("new"))?;
    // The old expiry entry went with the old record: nothing to sweep.
    assert_eq!(store.sweep_expired()?, 0);
    assert_eq!(replayed(store.begin(&k, fp("b"))?), response("new"));
    Ok(())
}

#[test]
fn abandoned_claims_expire_one_retention_after_their_lease() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("abandoned");
    drop(claimed(store.begin(&k, fp("a"))?));
    clock.advance(LEASE + RETENTION - Duration::from_millis(1));
    assert!(store.get(&k)?.is_some());
    assert_eq!(store.sweep_expired()?, 0);
    clock.advance(Duration::from_millis(1));
    assert!(store.get(&k)?.is_none());
    assert_eq!(store.sweep_expired()?, 1);
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
    clock.advance(RETENTION);
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
fn get_reports_the_whole_record() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("inspect");
    assert!(store.get(&k)?.is_none());
    let claim = claimed(store.begin(&k, fp("a"))?);
    let token = claim.token();
    let flying = store.get(&k)?.ok_or("missing")?;
    assert_eq!(flying.key(), &k);
    assert_eq!(flying.fingerprint(), fp("a"));
    assert_eq!(flying.token(), token);
    assert_eq!(flying.lease_until(), Some(flying.created_at() + LEASE));
    assert_eq!(flying.expires_at(), flying.created_at() + LEASE + RETENTION);
    assert!(flying.response().is_none());

    clock.advance(Duration::from_secs(5));
    store.complete(claim, response("body"))?;
    let done = store.get(&k)?.ok_or("missing")?;
    assert_eq!(done.created_at(), flying.created_at());
    assert_eq!(
        done.updated_at(),
        flying.created_at() + Duration::from_secs(5)
    );
    assert_eq!(done.expires_at(), done.updated_at() + RETENTION);
    assert_eq!(done.response(), Some(&response("body")));
    assert_eq!(done.token(), token);
    Ok(())
}

#[test]
fn remove_deletes_and_revokes() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let done = key("remove-done");
    store.complete(claimed(store.begin(&done, fp("a"))?), response("x"))?;
    assert!(store.remove(&done)?);
    assert!(!store.remove(&done)?);
    assert!(store.get(&done)?.is_none());

    let flying = key("remove-flying");
    let claim = claimed(store.begin(&flying, fp("a"))?);
    assert!(store.remove(&flying)?);
    let next = claimed(store.begin(&flying, fp("b"))?);
    assert!(next.token() > claim.token());
    let err = store.complete(claim, response("old")).expect_err("revoked");
    assert!(matches!(err.error(), Error::LeaseLost), "{err:?}");
    store.complete(next, response("new"))?;
    assert_eq!(replayed(store.begin(&flying, fp("b"))?), response("new"));
    assert_eq!(store.metrics().removed, 2);
    Ok(())
}

#[test]
fn oversized_responses_are_refused_and_hand_the_claim_back() -> TestResult {
    let store = Store::in_memory(Config::default().max_response_bytes(100))?;
    let k = key("big");
    let claim = claimed(store.begin(&k, fp("a"))?);
    let before = store.get(&k)?;
    let big = StoredResponse::new(200, vec![b'x'; 101]);
    let err = store.complete(claim, big).expect_err("too large");
    assert!(
        matches!(
            err.error(),
            Error::ResponseTooLarge {
                size: 101,
                limit: 100
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_response_bytes"));
    assert_eq!(store.get(&k)?, before, "still in flight, nothing stored");
    assert_eq!(store.metrics().completions, 0);
    // The claim comes back whole: it still holds the key and can complete
    // with a response that fits (body and headers count).
    let claim = err.into_claim().ok_or("the claim was not handed back")?;
    in_progress(store.begin(&k, fp("a"))?);
    let exact = StoredResponse::new(200, vec![b'x'; 90]).with_header("abcde", "12345");
    assert_eq!(exact.stored_len(), 100);
    store.complete(claim, exact.clone())?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), exact);
    Ok(())
}

#[test]
fn the_limit_is_inclusive_and_completes() -> TestResult {
    let store = Store::in_memory(Config::default().max_response_bytes(10))?;
    let k = key("fits");
    let claim = claimed(store.begin(&k, fp("a"))?);
    store.complete(claim, StoredResponse::new(200, vec![7u8; 10]))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?).body(), &[7u8; 10]);
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
fn begin_wait_returns_the_holders_response() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("wait-complete");
    let claim = claimed(store.begin(&k, fp("a"))?);
    let waiter = {
        let (store, k) = (store.clone(), k.clone());
        std::thread::spawn(move || store.begin_wait(&k, fp("a"), Duration::from_secs(30)))
    };
    while store.metrics().waits == 0 {
        std::thread::yield_now();
    }
    store.complete(claim, response("waited"))?;
    let answer = waiter.join().map_err(|_| "waiter panicked")??;
    assert_eq!(replayed(answer), response("waited"));
    let m = store.metrics();
    assert_eq!((m.waits, m.replays, m.in_progress), (1, 1, 0));
    Ok(())
}

#[test]
fn begin_wait_claims_after_a_release() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("wait-release");
    let claim = claimed(store.begin(&k, fp("a"))?);
    let waiter = {
        let (store, k) = (store.clone(), k.clone());
        std::thread::spawn(move || store.begin_wait(&k, fp("a"), Duration::from_secs(30)))
    };
    while store.metrics().waits == 0 {
        std::thread::yield_now();
    }
    store.release(claim)?;
    let second = claimed(waiter.join().map_err(|_| "waiter panicked")??);
    store.complete(second, response("second"))?;
    Ok(())
}

#[test]
fn begin_wait_times_out_as_in_progress() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("wait-timeout");
    let _claim = claimed(store.begin(&k, fp("a"))?);
    in_progress(store.begin_wait(&k, fp("a"), Duration::from_millis(20))?);
    mismatch(store.begin_wait(&k, fp("b"), Duration::from_millis(20))?);
    let m = store.metrics();
    assert_eq!((m.waits, m.in_progress, m.mismatches), (1, 1, 1));
    Ok(())
}

#[test]
fn begin_wait_on_a_free_key_claims_at_once() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let claim = claimed(store.begin_wait(&key("free"), fp("a"), Duration::ZERO)?);
    store.release(claim)?;
    assert_eq!(store.metrics().waits, 0);
    Ok(())
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

/// The minimal sequence that shows fencing at the commit layer, pinned from
/// the model test: a takeover whose claim is dropped still fences the old
/// holder (the lock table no longer knows either claim; only the committer's
/// check of the token against the record stands between them).
#[test]
fn a_dropped_takeover_still_fences_the_old_holder() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("fenced");
    let old = claimed(store.begin(&k, fp("a"))?);
    clock.advance(LEASE);
    let new = claimed(store.begin(&k, fp("a"))?);
    assert!(new.is_takeover());
    let new_token = new.token();
    drop(new);
    let err = store.complete(old, response("stale")).expect_err("fenced");
    assert!(matches!(err.error(), Error::LeaseLost), "{err:?}");
    let record = store.get(&k)?.ok_or("the takeover's record")?;
    assert_eq!(record.token(), new_token);
    assert!(matches!(record.state(), RecordState::InFlight { .. }));
    Ok(())
}

/// A claim's own terms: its lease and retention instead of the store's,
/// kept by its renewals and its completion.
#[test]
fn a_claim_can_take_its_own_lease_and_retention() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let terms = idemkv::Terms::default()
        .lease(Duration::from_secs(5))
        .retention(Duration::from_secs(30));
    let k = key("own-terms");
    let claim = claimed(store.begin_with(&k, fp("a"), terms)?);
    assert_eq!(
        in_progress(store.begin(&k, fp("a"))?),
        Duration::from_secs(5)
    );
    clock.advance(Duration::from_secs(4));
    store.renew(&claim)?;
    // The renewal restarted the claim's 5 s lease, not the store's 60 s.
    assert_eq!(
        in_progress(store.begin(&k, fp("a"))?),
        Duration::from_secs(5)
    );
    store.complete(claim, response("done"))?;
    clock.advance(Duration::from_secs(29));
    replayed(store.begin(&k, fp("a"))?);
    clock.advance(Duration::from_secs(1));
    // Retained 30 s, not the store's hour.
    assert!(store.get(&k)?.is_none());
    drop(claimed(store.begin(&k, fp("a"))?));

    let other = key("short-lease");
    drop(claimed(store.begin_with(
        &other,
        fp("a"),
        idemkv::Terms::default().lease(Duration::from_secs(2)),
    )?));
    clock.advance(Duration::from_secs(2));
    assert!(claimed(store.begin(&other, fp("a"))?).is_takeover());

    assert!(matches!(
        store.begin_with(
            &key("zero"),
            fp("a"),
            idemkv::Terms::default().lease(Duration::ZERO)
        ),
        Err(Error::InvalidConfig(_))
    ));
    Ok(())
}
