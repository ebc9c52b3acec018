//! I/O fault injection. A storage backend fails reads, writes or syncs after a
//! countdown and keeps failing (a dying disk); then the store is reopened over
//! what a power loss would leave (only bytes that were synced) and over what a
//! lucky crash would leave (every byte written), and every acknowledged claim
//! and completion must be there.
//!
//! The heavy sweep (every countdown over the whole workload) runs with
//! `IDEMKV_FAULT_ROUNDS=all`; by default a spread of countdowns runs.

mod common;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use common::*;
use idemkv::StorageBackend;
use idemkv::{Begin, Config, Error, Key, ManualClock, Store, StoredResponse};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Read,
    Write,
    Sync,
    Any,
}

/// Bytes as the process sees them (`current`) and as the disk has made them
/// durable (`synced`).
#[derive(Default)]
struct Image {
    current: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct Counts {
    ops: AtomicU64,
    injected: AtomicU64,
}

struct FaultyDisk {
    image: Arc<Mutex<Image>>,
    fault: Fault,
    /// Operations of the faulty kind still allowed to succeed.
    countdown: AtomicI64,
    tripped: AtomicBool,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for FaultyDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyDisk")
            .field("fault", &self.fault)
            .finish()
    }
}

impl FaultyDisk {
    fn new(image: Arc<Mutex<Image>>, fault: Fault, countdown: i64, counts: Arc<Counts>) -> Self {
        FaultyDisk {
            image,
            fault,
            countdown: AtomicI64::new(countdown),
            tripped: AtomicBool::new(false),
            counts,
        }
    }

    fn healthy(image: Image) -> Self {
        FaultyDisk::new(
            Arc::new(Mutex::new(image)),
            Fault::Any,
            i64::MAX,
            Arc::default(),
        )
    }

    fn check(&self, kind: Fault) -> io::Result<()> {
        if self.fault != Fault::Any && self.fault != kind {
            return Ok(());
        }
        self.counts.ops.fetch_add(1, Ordering::Relaxed);
        if self.tripped.load(Ordering::SeqCst) || self.countdown.fetch_sub(1, Ordering::SeqCst) <= 0
        {
            self.tripped.store(true, Ordering::SeqCst);
            self.counts.injected.fetch_add(1, Ordering::Relaxed);
            // Write faults look like a full disk (ENOSPC); the others like EIO.
            let error_kind = match kind {
                Fault::Write => io::ErrorKind::StorageFull,
                _ => io::ErrorKind::Other,
            };
            return Err(io::Error::new(
                error_kind,
                format!("injected {kind:?} fault"),
            ));
        }
        Ok(())
    }

    fn image(&self) -> std::sync::MutexGuard<'_, Image> {
        self.image.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StorageBackend for FaultyDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.image().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.check(Fault::Read)?;
        let image = self.image();
        let start = offset as usize;
        let source = image
            .current
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check(Fault::Write)?;
        self.image().current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check(Fault::Sync)?;
        let mut image = self.image();
        image.synced = image.current.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(Fault::Write)?;
        let mut image = self.image();
        let end = offset as usize + data.len();
        if image.current.len() < end {
            image.current.resize(end, 0);
        }
        image.current[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// What the store acknowledged before the disk failed.
#[derive(Default)]
struct Acked {
    claims: Vec<(Key, u64)>,
    completions: HashMap<String, StoredResponse>,
    /// Claims whose `begin` failed: they may or may not have landed.
    uncertain_claims: Vec<Key>,
    /// Completions whose `complete` failed: they may or may not have landed.
    uncertain_completions: HashMap<String, StoredResponse>,
}

fn config(clock: &ManualClock) -> Config {
    Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(RETENTION)
        .sweep_interval(None)
}

/// Every error the store may answer with while its disk fails.
fn assert_storage_error(err: &Error) {
    assert!(
        matches!(
            err,
            Error::Storage(_)
                | Error::Poisoned { .. }
                | Error::Corrupted { .. }
                | Error::NotAStore { .. }
        ),
        "unexpected error under an I/O fault: {err:?}"
    );
}

/// Claims and completes keys, with a sweep of expired records in between,
/// until the disk fails; returns what was acknowledged, and what failed.
fn workload(store: &Store, clock: &ManualClock, fault: Fault) -> Acked {
    let mut acked = Acked::default();
    let mut failed = false;
    for i in 0..30 {
        if i == 10 {
            // The first ten records expire and a sweep deletes them while
            // the workload goes on.
            clock.advance(RETENTION + LEASE);
            if let Err(err) = store.sweep_expired() {
                assert_storage_error(&err);
                failed = true;
            }
        }
        let k = key(&format!("k{i}"));
        match store.begin(&k, fp("payload")) {
            Ok(Begin::Claimed(claim)) => {
                acked.claims.push((k.clone(), claim.token()));
                if i % 4 == 3 {
                    // Left in flight on purpose: the claim must survive.
                    std::mem::forget(claim);
                    continue;
                }
                let body = response(&format!("answer {i}"));
                match store.complete(claim, body.clone()) {
                    Ok(()) if i >= 10 => {
                        acked.completions.insert(format!("k{i}"), body);
                    }
                    Ok(()) => {}
                    Err(err) => {
                        assert_storage_error(err.error());
                        acked.uncertain_completions.insert(format!("k{i}"), body);
                        failed = true;
                    }
                }
            }
            Ok(other) => panic!("fresh key k{i} answered {other:?}"),
            Err(err) => {
                assert_storage_error(&err);
                acked.uncertain_claims.push(k.clone());
                failed = true;
            }
        }
        if failed {
            // The disk keeps failing: later writes must fail too, cleanly.
            // Only a fault of reads alone may leave a write working (the
            // pages it needs can all be cached).
            let later = store.begin(&key("after-the-fault"), fp("x"));
            match later {
                Err(err) => assert_storage_error(&err),
                Ok(Begin::Claimed(_)) if fault == Fault::Read => {}
                Ok(other) => panic!("{fault:?} fault: a later write answered {other:?}"),
            }
            break;
        }
    }
    acked
}

/// Reopens `image` on a healthy disk and checks every acknowledged operation.
fn verify(image: Image, clock: &ManualClock, acked: &Acked, what: &str) -> u64 {
    let store = match Store::with_backend(FaultyDisk::healthy(image), config(clock)) {
        Ok(store) => store,
        // A crash while the file is being created can leave a file that is
        // not a database yet (redb writes its magic number last). It holds
        // nothing, so nothing is lost; it is refused as not a store.
        Err(err) if acked.claims.is_empty() => {
            assert_storage_error(&err);
            return 0;
        }
        Err(err) => panic!("{what}: the surviving image does not open: {err}"),
    };
    let mut checked = 0;
    for (k, token) in &acked.claims {
        if is_early(k) {
            continue;
        }
        if let Some(expected) = acked.completions.get(k.idempotency_key()) {
            match store.begin(k, fp("payload")) {
                Ok(Begin::Replay(stored)) => assert_eq!(&stored, expected, "{what}: {k}"),
                other => panic!("{what}: acknowledged completion of {k} lost: {other:?}"),
            }
        } else {
            let record = store
                .get(k)
                .unwrap_or_else(|e| panic!("{what}: {k}: {e}"))
                .unwrap_or_else(|| panic!("{what}: acknowledged claim of {k} lost"));
            assert_eq!(record.token(), *token, "{what}: {k}");
        }
        checked += 1;
    }
    // A failed write may have landed or not (docs/design.md, "Durability"),
    // and nothing else: a failed claim reads as claimable or in flight, a
    // failed completion as that completion or still in flight.
    for k in acked.uncertain_claims.iter().filter(|k| !is_early(k)) {
        match store.begin(k, fp("payload")) {
            Ok(Begin::Claimed(_) | Begin::InProgress { .. }) => {}
            other => panic!("{what}: a failed claim of {k} reads as {other:?}"),
        }
        checked += 1;
    }
    for (name, body) in &acked.uncertain_completions {
        let k = key(name);
        if is_early(&k) {
            continue;
        }
        match store.begin(&k, fp("payload")) {
            Ok(Begin::Replay(stored)) => assert_eq!(&stored, body, "{what}: {k}"),
            Ok(Begin::InProgress { .. }) => {}
            other => panic!("{what}: a failed completion of {k} reads as {other:?}"),
        }
        checked += 1;
    }
    checked
}

/// Keys k0..k9 expire during the workload, so their absence proves nothing.
fn is_early(k: &Key) -> bool {
    k.idempotency_key().len() == 2
}

/// Runs one round: `fault` after `countdown` operations of its kind.
fn round(fault: Fault, countdown: i64) -> (u64, u64, u64) {
    let image = Arc::new(Mutex::new(Image::default()));
    let counts = Arc::new(Counts::default());
    let clock = ManualClock::default();
    let disk = FaultyDisk::new(Arc::clone(&image), fault, countdown, Arc::clone(&counts));
    let acked = match Store::with_backend(disk, config(&clock)) {
        Ok(store) => workload(&store, &clock, fault),
        Err(err) => {
            assert_storage_error(&err);
            Acked::default()
        }
    };
    let (current, synced) = {
        let image = image.lock().unwrap_or_else(PoisonError::into_inner);
        (image.current.clone(), image.synced.clone())
    };
    let what = format!("{fault:?} fault after {countdown}");
    let mut checked = 0;
    if !synced.is_empty() {
        checked += verify(
            Image {
                current: synced.clone(),
                synced: synced.clone(),
            },
            &clock,
            &acked,
            &format!("{what}, power loss"),
        );
    } else {
        assert!(
            acked.claims.is_empty(),
            "{what}: acknowledged without a sync"
        );
    }
    if !current.is_empty() && !synced.is_empty() {
        checked += verify(
            Image {
                synced: current.clone(),
                current,
            },
            &clock,
            &acked,
            &format!("{what}, every write landed"),
        );
    }
    (
        counts.ops.load(Ordering::Relaxed),
        counts.injected.load(Ordering::Relaxed),
        checked,
    )
}

#[test]
fn acknowledged_operations_survive_every_injected_fault() {
    let every = std::env::var("IDEMKV_FAULT_ROUNDS").is_ok_and(|v| v == "all");
    let mut rounds = 0;
    let mut injected = 0;
    let mut checked = 0;
    for fault in [Fault::Write, Fault::Sync, Fault::Read, Fault::Any] {
        // How many operations of this kind a fault-free run performs.
        let (total, none, _) = round(fault, i64::MAX);
        assert_eq!(none, 0);
        let step = if every {
            1
        } else {
            (total / 40).max(1) as usize
        };
        for countdown in (0..=total as i64).step_by(step) {
            let (_, faults, verified) = round(fault, countdown);
            rounds += 1;
            injected += faults;
            checked += verified;
        }
    }
    println!(
        "fault rounds: {rounds}, faults injected: {injected}, acknowledged operations verified: {checked}"
    );
    assert!(rounds > 100 && injected > 100 && checked > 0);
}

#[test]
fn a_failed_commit_poisons_writes_but_reads_go_on() -> TestResult {
    let clock = ManualClock::default();
    // Count the syncs of a fault-free open; the first commit after them fails.
    let counts = Arc::new(Counts::default());
    let probe = FaultyDisk::new(Arc::default(), Fault::Sync, i64::MAX, Arc::clone(&counts));
    let probe_store = Store::with_backend(probe, config(&clock))?;
    let syncs_to_open = counts.ops.load(Ordering::Relaxed) as i64;
    drop(probe_store);
    let image = Arc::new(Mutex::new(Image::default()));
    let disk = FaultyDisk::new(
        Arc::clone(&image),
        Fault::Sync,
        syncs_to_open,
        Arc::default(),
    );
    let store = Store::with_backend(disk, config(&clock))?;
    let err = store
        .begin(&key("first"), fp("a"))
        .expect_err("the sync fails");
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    let err = store.begin(&key("second"), fp("a")).expect_err("poisoned");
    assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("open the file again"));
    // The failed claim is not visible to this process (a reopened file may
    // hold it: see the images checked above), and reads still work.
    assert!(store.get(&key("first"))?.is_none());
    // Every write is refused; a sweep with nothing due needs no write.
    assert!(matches!(
        store.remove(&key("first")),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(store.sweep_expired()?, 0);
    drop(store);
    let synced = image
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .synced
        .clone();
    let reopened = Store::with_backend(
        FaultyDisk::healthy(Image {
            current: synced.clone(),
            synced,
        }),
        config(&clock),
    )?;
    let claim = claimed(reopened.begin(&key("first"), fp("a"))?);
    reopened.complete(claim, response("after reopen"))?;
    Ok(())
}
