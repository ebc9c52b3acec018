//! Waiting begins (`Terms::wait`): any timeout is accepted, and a wait that ends, however it
//! ends, leaves nothing registered (`Metrics::waiters`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use idemkv::{Config, Store, Terms};

/// Polls until `done` holds; fails after 20 s of real time.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_unbounded_wait_gets_the_holders_response() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("forever");
    let claim = claimed(store.begin(&k, fp("a"))?);
    let waiting = {
        let (store, k) = (store.clone(), k.clone());
        thread::spawn(move || store.begin_with(&k, fp("a"), Terms::default().wait(Duration::MAX)))
    };
    eventually("the waiter to register", || store.metrics().waiters == 1);
    store.complete(claim, response("done"))?;
    let answer = waiting.join().map_err(|_| "waiter panicked")??;
    assert_eq!(replayed(answer), response("done"));
    assert_eq!(store.metrics().waiters, 0);
    Ok(())
}

#[test]
fn huge_timeouts_are_accepted() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("huge");
    store.complete(claimed(store.begin(&k, fp("a"))?), response("x"))?;
    for timeout in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::ZERO,
    ] {
        assert_eq!(
            replayed(store.begin_with(&k, fp("a"), Terms::default().wait(timeout))?),
            response("x")
        );
    }
    Ok(())
}

#[test]
fn ten_thousand_timed_out_waits_leave_nothing_registered() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("held");
    let claim = claimed(store.begin(&k, fp("a"))?);
    for _ in 0..10_000 {
        in_progress(store.begin_with(
            &k,
            fp("a"),
            Terms::default().wait(Duration::from_micros(10)),
        )?);
    }
    let m = store.metrics();
    assert_eq!(m.waiters, 0, "timed-out waits stayed registered");
    assert_eq!(m.in_progress, 10_000);
    // The claim is unaffected.
    store.complete(claim, response("done"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("done"));
    Ok(())
}

#[test]
fn concurrent_timed_out_waits_leave_nothing_registered() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("held-by-one");
    let claim = claimed(store.begin(&k, fp("a"))?);
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let (store, k) = (store.clone(), k.clone());
            thread::spawn(move || -> Result<(), idemkv::Error> {
                for _ in 0..200 {
                    in_progress(store.begin_with(
                        &k,
                        fp("a"),
                        Terms::default().wait(Duration::from_micros(200)),
                    )?);
                }
                Ok(())
            })
        })
        .collect();
    for waiter in waiters {
        waiter.join().map_err(|_| "waiter panicked")??;
    }
    assert_eq!(store.metrics().waiters, 0);
    store.complete(claim, response("done"))?;
    Ok(())
}

#[test]
fn a_wait_on_a_mismatched_payload_is_not_registered() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    let k = key("other-payload");
    let claim = claimed(store.begin(&k, fp("a"))?);
    mismatch(store.begin_with(&k, fp("b"), Terms::default().wait(Duration::from_secs(60)))?);
    assert_eq!(store.metrics().waiters, 0);
    store.release(claim)?;
    Ok(())
}
