//! Time that cannot be stepped under a lease: an open store counts monotonic
//! time from the wall clock it read at open, so NTP steps, `date -s` and
//! corrected VM clocks move neither leases, nor retention, nor the replay
//! cache's idea of expiry. A reopened store takes its time from the wall
//! clock again.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use common::*;
use idemkv::{Begin, Clock, Error, ManualClock, Store};

const STEP: Duration = Duration::from_secs(61);

#[test]
fn a_wall_clock_step_forward_never_ends_a_live_lease() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("stepped-forward");
    let claim = claimed(store.begin(&k, fp("a"))?);
    // Longer than the 60 s lease, but no time passed: the side effect may
    // still be running, so no retry may take over.
    clock.step_forward(STEP);
    let retry_after = in_progress(store.begin(&k, fp("a"))?);
    assert_eq!(retry_after, LEASE, "the whole lease is left");
    assert_eq!(store.metrics().takeovers, 0);
    // The record says the same.
    let lease_until = store
        .get(&k)?
        .and_then(|r| r.lease_until())
        .ok_or("in flight")?;
    let created = store.get(&k)?.map(|r| r.created_at()).ok_or("in flight")?;
    assert_eq!(lease_until.duration_since(created)?, LEASE);
    store.complete(claim, response("done"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("done"));
    Ok(())
}

#[test]
fn a_lease_ends_when_its_time_has_passed_whatever_the_wall_clock_says() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("stepped-back");
    let old = claimed(store.begin(&k, fp("a"))?);
    clock.step_back(Duration::from_secs(3600));
    clock.advance(LEASE);
    let new = claimed(store.begin(&k, fp("a"))?);
    assert!(new.is_takeover());
    let err = store.complete(old, response("stale")).expect_err("fenced");
    assert!(matches!(err.error(), Error::LeaseLost), "{err:?}");
    store.complete(new, response("fresh"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("fresh"));
    Ok(())
}

#[test]
fn a_step_back_never_lets_the_cache_answer_what_the_file_would_not() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("swept");
    store.complete(claimed(store.begin(&k, fp("a"))?), response("old"))?;
    clock.advance(SWEPT_AFTER);
    assert_eq!(store.sweep_expired()?, 1);
    // The wall clock goes back two hours: the record was expired and deleted,
    // and the cache must not bring it back.
    clock.step_back(2 * RETENTION);
    assert!(store.get(&k)?.is_none());
    let fresh = claimed(store.begin(&k, fp("a"))?);
    assert!(!fresh.is_takeover());
    store.complete(fresh, response("new"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("new"));
    Ok(())
}

#[test]
fn retention_is_not_cut_short_by_a_step_forward() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let k = key("kept");
    store.complete(claimed(store.begin(&k, fp("a"))?), response("kept"))?;
    clock.step_forward(2 * RETENTION);
    assert_eq!(store.sweep_expired()?, 0);
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("kept"));
    assert!(store.get(&k)?.is_some());
    Ok(())
}

#[test]
fn a_reopened_store_takes_its_time_from_the_wall_clock() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("restart.redb");
    let (config, clock) = manual_config();
    let k = key("across-restart");
    {
        let store = Store::open(&path, config.clone())?;
        std::mem::forget(claimed(store.begin(&k, fp("a"))?));
        clock.step_forward(STEP);
        in_progress(store.begin(&k, fp("a"))?);
    }
    // The new process reads the stepped wall clock: the persisted lease is
    // over by that clock (the rule in docs/design.md, "Time").
    let store = Store::open(&path, config)?;
    let claim = claimed(store.begin(&k, fp("a"))?);
    assert!(claim.is_takeover());
    store.complete(claim, response("after restart"))?;
    Ok(())
}

/// A manual clock whose readings block on the committer thread while a gate
/// is shut, so a test can hold a claim's commit at the point where the
/// committer reads the time.
#[derive(Clone)]
struct GatedClock {
    clock: ManualClock,
    gate: Arc<Mutex<Option<Gate>>>,
}

struct Gate {
    /// Told once the committer is waiting at the gate.
    reached: mpsc::Sender<()>,
    /// Dropped (or sent to) to let the committer through.
    open: mpsc::Receiver<()>,
}

impl GatedClock {
    fn wait_at_gate(&self) {
        if thread::current().name() != Some("idemkv-committer") {
            return;
        }
        let gate = self
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(gate) = gate {
            let _ = gate.reached.send(());
            let _ = gate.open.recv();
        }
    }
}

impl Clock for GatedClock {
    fn now(&self) -> SystemTime {
        self.wait_at_gate();
        self.clock.now()
    }

    fn monotonic(&self) -> Duration {
        self.wait_at_gate();
        self.clock.monotonic()
    }
}

/// A holder's `complete` is judged by the committer against the record,
/// never refused from memory while a takeover is still being committed: the
/// takeover might not go through (a wall-clock step back between the lock
/// table's decision and the commit made exactly that happen), and the
/// holder's finished work would be thrown away.
#[test]
fn a_holders_complete_waits_for_the_committer_while_a_takeover_is_pending() -> TestResult {
    let (config, clock) = manual_config();
    let gated = GatedClock {
        clock: clock.clone(),
        gate: Arc::default(),
    };
    let store = Store::in_memory(config.clock(gated.clone()))?;
    let k = key("pending-takeover");
    let holder = claimed(store.begin(&k, fp("a"))?);
    clock.advance(LEASE);

    // The next commit stops at the gate: the takeover below is decided by
    // the lock table and queued, but not written. It goes through the async
    // API, whose commits always run on the committer thread (a blocking
    // caller on an idle store would commit on its own thread).
    let (reached_tx, reached) = mpsc::channel();
    let (open, open_rx) = mpsc::channel();
    *gated.gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(Gate {
        reached: reached_tx,
        open: open_rx,
    });
    let taking_over = {
        let (store, k) = (store.clone(), k.clone());
        thread::spawn(move || pollster::block_on(store.to_async().begin(&k, fp("a"))))
    };
    reached.recv_timeout(Duration::from_secs(30))?;
    clock.step_back(Duration::from_secs(600));

    let (done_tx, done) = mpsc::channel();
    let completing = {
        let store = store.clone();
        thread::spawn(move || {
            let result = store.complete(holder, response("holder's work"));
            let _ = done_tx.send(());
            result.map_err(|e| e.to_string())
        })
    };
    // While the takeover is not durable, the holder's complete has no answer
    // yet: it waits for the committer instead of being refused from memory.
    assert!(
        done.recv_timeout(Duration::from_millis(300)).is_err(),
        "complete answered before the pending takeover was committed"
    );
    drop(open);
    let taken = taking_over.join().map_err(|_| "begin panicked")??;
    let result = completing.join().map_err(|_| "complete panicked")?;
    // The takeover was queued first and the lease had run out by the store's
    // time, so it went through and the holder is fenced, by the committer.
    let Begin::Claimed(new) = taken else {
        return Err(format!("expected the takeover, got {taken:?}").into());
    };
    assert!(new.is_takeover());
    assert!(result.is_err_and(|e| e.contains("lease lost")));
    store.complete(new, response("new"))?;
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("new"));
    Ok(())
}
