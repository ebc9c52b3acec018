//! The async API (`AsyncStore`): the same answers as the blocking API,
//! waits that hold no thread, and cancellation that never releases a claim
//! blindly. No runtime is needed: these tests poll the futures by hand.

mod common;

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::*;
use idemkv::{AsyncStore, Begin, Store, Terms};

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `future` until it is ready, sleeping briefly between polls; fails
/// after 20 s.
fn drive<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        assert!(Instant::now() < deadline, "the future never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_async_api_gives_the_same_answers() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?.to_async();
    let k = key("async");
    let claim = claimed(pollster::block_on(store.begin(&k, fp("a")))?);
    in_progress(pollster::block_on(store.begin(&k, fp("a")))?);
    mismatch(pollster::block_on(store.begin(&k, fp("b")))?);
    pollster::block_on(store.renew(&claim))?;
    pollster::block_on(store.complete(claim, response("done")))?;
    assert_eq!(
        replayed(pollster::block_on(store.begin(&k, fp("a")))?),
        response("done")
    );
    // A takeover and its fencing, through the async API.
    let other = key("async-takeover");
    let old = claimed(pollster::block_on(store.begin(&other, fp("a")))?);
    clock.advance(LEASE);
    let new = claimed(pollster::block_on(store.begin(&other, fp("a")))?);
    assert!(new.is_takeover());
    let err = pollster::block_on(store.complete(old, response("stale"))).expect_err("fenced");
    assert!(matches!(err.error(), idemkv::Error::LeaseLost));
    pollster::block_on(store.release(new))?;
    assert!(pollster::block_on(store.remove(&k))?);
    let m = store.metrics();
    assert_eq!(
        (m.claims, m.replays, m.mismatches, m.takeovers),
        (3, 1, 1, 1)
    );
    Ok(())
}

#[test]
fn answers_that_need_no_write_are_ready_on_the_first_poll() -> TestResult {
    let store = Store::in_memory(manual_config().0)?.to_async();
    let k = key("ready");
    let claim = claimed(pollster::block_on(store.begin(&k, fp("a")))?);
    let mut cx = Context::from_waker(Waker::noop());
    // In progress and mismatch, from the lock table.
    for payload in ["a", "b"] {
        let mut begin = pin!(store.begin(&k, fp(payload)));
        assert!(begin.as_mut().poll(&mut cx).is_ready());
    }
    pollster::block_on(store.complete(claim, response("x")))?;
    // A replay, from the cache and (cache off) from the file.
    let mut replay = pin!(store.begin(&k, fp("a")));
    assert!(matches!(
        replay.as_mut().poll(&mut cx),
        Poll::Ready(Ok(Begin::Replay(_)))
    ));
    let uncached = Store::in_memory(manual_config().0.cache_bytes(0))?.to_async();
    let claim = claimed(pollster::block_on(uncached.begin(&k, fp("a")))?);
    pollster::block_on(uncached.complete(claim, response("x")))?;
    let mut replay = pin!(uncached.begin(&k, fp("a")));
    assert!(matches!(
        replay.as_mut().poll(&mut cx),
        Poll::Ready(Ok(Begin::Replay(_)))
    ));
    Ok(())
}

/// A thousand waiting tasks on one key, all polled by this one thread: none
/// holds a thread, every one is woken by the completion and replays it.
#[test]
fn a_thousand_waiting_tasks_hold_no_thread_and_all_get_the_response() -> TestResult {
    const WAITERS: usize = 1_000;
    let store = Store::in_memory(manual_config().0)?.to_async();
    let k = key("hot");
    let claim = claimed(pollster::block_on(store.begin(&k, fp("a")))?);
    let wakes = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&wakes));
    let mut cx = Context::from_waker(&waker);
    let mut waits: Vec<Pin<Box<_>>> = (0..WAITERS)
        .map(|_| {
            Box::pin(store.begin_with(
                &k,
                fp("a"),
                Terms::default().wait(Duration::from_secs(3600)),
            ))
        })
        .collect();
    for wait in &mut waits {
        assert!(wait.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(store.metrics().waiters, WAITERS as u64);
    pollster::block_on(store.complete(claim, response("the one answer")))?;
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        WAITERS,
        "every waiter was woken"
    );
    assert_eq!(store.metrics().waiters, 0);
    for wait in &mut waits {
        match wait.as_mut().poll(&mut cx) {
            Poll::Ready(answer) => assert_eq!(replayed(answer?), response("the one answer")),
            Poll::Pending => return Err("a woken waiter was not ready".into()),
        }
    }
    Ok(())
}

/// A dropped wait deregisters at once.
#[test]
fn a_dropped_wait_leaves_nothing_registered() -> TestResult {
    let store = Store::in_memory(manual_config().0)?.to_async();
    let k = key("dropped-wait");
    let claim = claimed(pollster::block_on(store.begin(&k, fp("a")))?);
    let mut cx = Context::from_waker(Waker::noop());
    {
        let mut wait = pin!(store.begin_with(&k, fp("a"), Terms::default().wait(Duration::MAX)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(store.metrics().waiters, 1);
    }
    assert_eq!(store.metrics().waiters, 0);
    pollster::block_on(store.release(claim))?;
    Ok(())
}

/// A `begin` future dropped after its claim was committed (a request
/// cancelled mid-claim): the key stays in flight until the lease runs out,
/// then the next attempt takes over. Never released blindly.
#[test]
fn a_claim_whose_future_was_dropped_stays_in_flight_until_its_lease_ends() -> TestResult {
    let (config, clock) = manual_config();
    let store: AsyncStore = Store::in_memory(config)?.to_async();
    let mut cancelled = None;
    for attempt in 0..100 {
        let k = key(&format!("cancelled-{attempt}"));
        let mut begin = pin!(store.begin(&k, fp("a")));
        let mut cx = Context::from_waker(Waker::noop());
        // The first poll decides to claim and queues the commit. The
        // committer thread may answer before the poll looks at the reply
        // (then the claim is simply ours: try another key).
        if let Poll::Ready(answer) = begin.as_mut().poll(&mut cx) {
            drop(answer);
            continue;
        }
        // Wait until the commit is durable, then drop the future unpolled.
        let deadline = Instant::now() + Duration::from_secs(20);
        while drive(store.get(&k))?.is_none() {
            assert!(Instant::now() < deadline, "the claim was never committed");
            std::thread::sleep(Duration::from_millis(1));
        }
        cancelled = Some(k.clone());
        break;
    }
    let k = cancelled.ok_or("the first poll of 100 begins was never pending")?;
    // Nobody holds the claim, yet a retry must not run the side effect.
    in_progress(drive(store.begin(&k, fp("a")))?);
    let record = drive(store.get(&k))?.ok_or("still in flight")?;
    assert!(record.lease_until().is_some());
    clock.advance(LEASE);
    let claim = claimed(drive(store.begin(&k, fp("a")))?);
    assert!(claim.is_takeover());
    drive(store.complete(claim, response("after the lease")))?;
    Ok(())
}
