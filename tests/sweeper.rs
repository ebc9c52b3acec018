//! Retention: the background sweeper, abandoned claims, crash recovery
//! policies and the record gauge.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use idemkv::{Begin, Config, ManualClock, Metrics, Recovery, Store};

/// A manual-clock config whose sweeper runs every 5 ms of real time.
fn sweeping_config() -> (Config, ManualClock) {
    let (config, clock) = manual_config();
    (config.sweep_interval(Some(Duration::from_millis(5))), clock)
}

/// Polls the metrics until `done` holds; fails after 20 s of real time.
fn wait_for(store: &Store, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = store.metrics();
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {m:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

fn complete_n(store: &Store, prefix: &str, n: usize) -> TestResult {
    for i in 0..n {
        let k = key(&format!("{prefix}-{i}"));
        store.complete(claimed(store.begin(&k, fp("a"))?), response("x"))?;
    }
    Ok(())
}

#[test]
fn the_sweeper_deletes_expired_records_by_itself_and_not_earlier() -> TestResult {
    let (config, clock) = sweeping_config();
    let store = Store::in_memory(config)?;
    complete_n(&store, "bg", 50)?;
    assert_eq!(store.metrics().live_records, 50);

    clock.advance(RETENTION - Duration::from_millis(1));
    // Several sweeps run; none may delete a record that has not expired, and
    // with nothing due none of them writes.
    let before = store.metrics();
    wait_for(&store, "three sweeps", |m| m.sweeps >= before.sweeps + 3);
    let after = store.metrics();
    assert_eq!(after.expired, 0);
    assert_eq!(after.live_records, 50);
    assert_eq!(
        after.commits, before.commits,
        "a sweep with nothing due wrote"
    );
    replayed(store.begin(&key("bg-0"), fp("a"))?);

    // Expired now, so absent to every reader; swept at the claims' expiry
    // entries, which the completions kept, one lease later.
    clock.advance(Duration::from_millis(1));
    assert!(store.get(&key("bg-0"))?.is_none());
    let expired = store.metrics();
    wait_for(&store, "three sweeps", |m| m.sweeps >= expired.sweeps + 3);
    assert_eq!(store.metrics().expired, 0);
    clock.advance(LEASE - Duration::from_millis(1));
    let lingering = store.metrics();
    wait_for(&store, "three sweeps", |m| m.sweeps >= lingering.sweeps + 3);
    assert_eq!(store.metrics().expired, 0);
    clock.advance(Duration::from_millis(1));
    let m = wait_for(&store, "the sweep", |m| m.expired == 50);
    assert_eq!(m.live_records, 0);
    assert!(m.last_sweep_unix_ms > 0);
    assert!(store.get(&key("bg-0"))?.is_none());
    Ok(())
}

#[test]
fn an_idle_store_makes_no_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (config, _clock) = sweeping_config();
    let store = Store::open(dir.path().join("idle.redb"), config)?;
    let empty = store.metrics();
    wait_for(&store, "three sweeps of an empty store", |m| {
        m.sweeps >= empty.sweeps + 3
    });
    assert_eq!(store.metrics().commits, empty.commits);

    // With records that are not due yet, still nothing is written.
    complete_n(&store, "idle", 10)?;
    let busy = store.metrics();
    wait_for(&store, "three more sweeps", |m| m.sweeps >= busy.sweeps + 3);
    let idle = store.metrics();
    assert_eq!(
        idle.commits, busy.commits,
        "the sweeper wrote to an idle store"
    );
    assert_eq!(idle.committed_ops, busy.committed_ops);
    Ok(())
}

#[test]
fn abandoned_claims_are_collected_by_the_sweeper() -> TestResult {
    let (config, clock) = sweeping_config();
    let store = Store::in_memory(config)?;
    drop(claimed(store.begin(&key("abandoned"), fp("a"))?));
    // A takeover in between still works as before.
    let taken = key("taken-over");
    drop(claimed(store.begin(&taken, fp("a"))?));
    clock.advance(LEASE);
    let claim = claimed(store.begin(&taken, fp("a"))?);
    assert!(claim.is_takeover());
    clock.advance(Duration::from_secs(10));
    store.complete(claim, response("taken"))?;

    // The abandoned claim expires one retention after its lease ended; the
    // completed takeover 10 s later, and is swept at its claim's expiry
    // entry, when the takeover's lease would have ended plus the retention.
    clock.advance(RETENTION - Duration::from_secs(10));
    let m = wait_for(&store, "the abandoned claim", |m| m.expired == 1);
    assert_eq!(m.live_records, 1, "the completed takeover stays");
    assert!(store.get(&key("abandoned"))?.is_none());
    replayed(store.begin(&taken, fp("a"))?);
    clock.advance(Duration::from_secs(10));
    assert!(store.get(&taken)?.is_none());
    clock.advance(LEASE - Duration::from_secs(10));
    wait_for(&store, "the completed record", |m| {
        m.expired == 2 && m.live_records == 0
    });
    Ok(())
}

#[test]
fn claims_interleaved_with_a_large_sweep_all_succeed() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config.sweep_batch(100))?;
    const EXPIRED: usize = 5_000;
    complete_n(&store, "old", EXPIRED)?;
    clock.advance(SWEPT_AFTER);
    let before = store.metrics();
    let sweeping = {
        let store = store.clone();
        thread::spawn(move || store.sweep_expired())
    };
    let claimers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || -> Result<(), idemkv::Error> {
                for i in 0..200 {
                    let k = key(&format!("new-{t}-{i}"));
                    let claim = claimed(store.begin(&k, fp("a"))?);
                    store.complete(claim, response("new"))?;
                }
                Ok(())
            })
        })
        .collect();
    for claimer in claimers {
        claimer.join().map_err(|_| "claimer panicked")??;
    }
    let swept = sweeping.join().map_err(|_| "sweeper panicked")??;
    assert_eq!(swept, EXPIRED as u64);
    let m = store.metrics();
    assert_eq!(m.live_records, 800);
    // The claimers wrote 800 claims and 800 completions; the sweep, in
    // batches of 100, exactly 50 operations (one big sweep would be one).
    assert_eq!(
        m.committed_ops - before.committed_ops,
        2 * 800 + (EXPIRED / 100) as u64,
        "the sweep ran in batches of 100"
    );
    replayed(store.begin(&key("new-3-199"), fp("a"))?);
    Ok(())
}

#[test]
fn shutdown_during_a_sweep_leaves_a_consistent_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shutdown.redb");
    let (config, clock) = manual_config();
    const N: usize = 3_000;
    {
        let store = Store::open(&path, config.clone().durability(idemkv::Durability::None))?;
        complete_n(&store, "s", N)?;
    }
    clock.advance(SWEPT_AFTER);
    let swept_in_background = {
        let store = Store::open(
            &path,
            config
                .clone()
                .sweep_batch(10)
                .sweep_interval(Some(Duration::from_millis(1))),
        )?;
        wait_for(&store, "the sweep to start", |m| m.expired > 0);
        // Dropped mid-sweep: the sweeper stops at a batch boundary.
        store.metrics().expired
    };
    let store = Store::open(&path, config)?;
    let remaining = store.metrics().live_records;
    assert!(remaining as usize <= N - swept_in_background as usize);
    assert_eq!(store.sweep_expired()?, remaining);
    assert_eq!(store.metrics().live_records, 0);
    // The file works as before.
    let claim = claimed(store.begin(&key("s-0"), fp("b"))?);
    store.complete(claim, response("after"))?;
    drop(store);
    let store = Store::open(&path, Config::default())?;
    assert_eq!(store.metrics().live_records, 1);
    Ok(())
}

#[test]
fn keep_leases_is_the_default_recovery() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keep.redb");
    let (config, _clock) = manual_config();
    {
        let store = Store::open(&path, config.clone())?;
        std::mem::forget(claimed(store.begin(&key("orphan"), fp("a"))?));
    }
    let store = Store::open(&path, config)?;
    assert_eq!(store.metrics().recovered_claims, 0);
    assert_eq!(store.metrics().live_records, 1);
    in_progress(store.begin(&key("orphan"), fp("a"))?);
    Ok(())
}

#[test]
fn release_at_open_frees_a_dead_processs_claims() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("release.redb");
    let (config, _clock) = manual_config();
    let orphan_token = {
        let store = Store::open(&path, config.clone())?;
        store.complete(
            claimed(store.begin(&key("done"), fp("a"))?),
            response("kept"),
        )?;
        let orphan = claimed(store.begin(&key("orphan"), fp("a"))?);
        let token = orphan.token();
        std::mem::forget(orphan);
        token
    };
    let store = Store::open(&path, config.recovery(Recovery::ReleaseAtOpen))?;
    let m = store.metrics();
    assert_eq!((m.recovered_claims, m.live_records), (1, 1));
    // The orphan is claimable at once, even with another payload.
    let claim = claimed(store.begin(&key("orphan"), fp("b"))?);
    assert!(claim.token() > orphan_token);
    assert!(!claim.is_takeover());
    store.complete(claim, response("retried"))?;
    // Completed records are untouched by recovery.
    assert_eq!(
        replayed(store.begin(&key("done"), fp("a"))?),
        response("kept")
    );
    assert_eq!(store.sweep_expired()?, 0, "no dangling expiry entries");
    Ok(())
}

#[test]
fn live_records_tracks_every_write() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let live = |s: &Store| s.metrics().live_records;
    let a = claimed(store.begin(&key("a"), fp("a"))?);
    let b = claimed(store.begin(&key("b"), fp("b"))?);
    assert_eq!(live(&store), 2);
    store.complete(a, response("a"))?;
    store.release(b)?;
    assert_eq!(live(&store), 1);
    assert!(matches!(store.begin(&key("a"), fp("a"))?, Begin::Replay(_)));
    assert!(store.remove(&key("a"))?);
    assert_eq!(live(&store), 0);
    complete_n(&store, "n", 10)?;
    clock.advance(SWEPT_AFTER);
    // An expired record replaced by a new claim is still one record.
    let again = claimed(store.begin(&key("n-0"), fp("z"))?);
    assert_eq!(live(&store), 10);
    store.release(again)?;
    assert_eq!(store.sweep_expired()?, 9);
    assert_eq!(live(&store), 0);
    Ok(())
}

#[test]
fn a_zero_sweep_batch_or_interval_is_a_config_error() {
    assert!(matches!(
        Store::in_memory(Config::default().sweep_batch(0)),
        Err(idemkv::Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Store::in_memory(Config::default().sweep_interval(Some(Duration::ZERO))),
        Err(idemkv::Error::InvalidConfig(_))
    ));
    assert!(Store::in_memory(Config::default().sweep_interval(None)).is_ok());
}

#[test]
fn compact_shrinks_a_file_whose_records_are_gone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("compact.redb");
    let (config, clock) = manual_config();
    {
        let store = Store::open(&path, config.clone().durability(idemkv::Durability::None))?;
        complete_n(&store, "big", 5_000)?;
        store.complete(
            claimed(store.begin(&key("keeper"), fp("k"))?),
            response("kept"),
        )?;
    }
    clock.advance(SWEPT_AFTER);
    {
        let store = Store::open(&path, config.clone())?;
        assert_eq!(store.sweep_expired()?, 5_001);
        assert!(matches!(
            Store::compact(&path),
            Err(idemkv::Error::AlreadyOpen { .. })
        ));
    }
    let report = Store::compact(&path)?;
    assert!(
        report.bytes_after < report.bytes_before / 2,
        "{report:?}: the freed pages were given back"
    );
    assert_eq!(std::fs::metadata(&path)?.len(), report.bytes_after);
    let store = Store::open(&path, config)?;
    assert_eq!(store.metrics().live_records, 0);
    Ok(())
}

#[test]
fn compact_refuses_missing_and_foreign_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    assert!(matches!(
        Store::compact(dir.path().join("missing.redb")),
        Err(idemkv::Error::CannotOpen { .. })
    ));
    assert!(
        !dir.path().join("missing.redb").exists(),
        "nothing was created"
    );
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a store")?;
    assert!(matches!(
        Store::compact(&notes),
        Err(idemkv::Error::NotAStore { .. })
    ));
    Ok(())
}

/// A completion keeps its claim's expiry entry (the lease's end plus the
/// retention) only when that comes at most 1/16 of the retention after its
/// own expiry; otherwise the entry moves and the sweep deletes it right at
/// its expiry. With a 10 min retention the share is 37.5 s: a completion
/// with 60 s of its lease left moves the entry, one with 30 s left keeps it.
#[test]
fn a_completion_keeps_its_claims_entry_only_within_a_share_of_the_retention() -> TestResult {
    let retention = Duration::from_secs(600);
    let (config, clock) = manual_config();
    let store = Store::in_memory(config.retention(retention))?;
    let early = key("completed-at-once");
    store.complete(claimed(store.begin(&early, fp("a"))?), response("early"))?;
    let late = key("completed-late");
    let claim = claimed(store.begin(&late, fp("a"))?);
    clock.advance(Duration::from_secs(30));
    store.complete(claim, response("late"))?;

    // The early completion expires at 600 s and is swept then.
    clock.advance(retention - Duration::from_secs(30));
    assert_eq!(store.sweep_expired()?, 1);
    assert!(store.get(&early)?.is_none());
    // The late one expires at 630 s and stays until its claim's entry, at
    // 660 s (60 s lease + retention).
    clock.advance(Duration::from_secs(30));
    assert!(store.get(&late)?.is_none());
    assert_eq!(store.sweep_expired()?, 0);
    assert_eq!(store.metrics().live_records, 1);
    clock.advance(Duration::from_secs(30) - Duration::from_millis(1));
    assert_eq!(store.sweep_expired()?, 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.sweep_expired()?, 1);
    assert!(store.verify()?.is_ok());
    Ok(())
}
