//! I/O fault injection. A storage backend fails reads, writes or syncs after a
//! countdown and keeps failing (a dying disk); then the store is reopened over
//! what a power loss would leave (only bytes that were synced) and over what a
//! lucky crash would leave (every byte written), and every acknowledged claim
//! and completion must be there.
//!
//! Every round runs twice: on the store's file alone, and with the
//! write-ahead journal (`Config::journal`) in segments that fail with the
//! same disk, where a power loss keeps only the synced bytes of the file and
//! of each segment.
//!
//! The heavy sweep (every countdown over the whole workload) runs with
//! `IDEMKV_FAULT_ROUNDS=all`; by default a spread of countdowns runs.

mod common;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use idemkv::{Begin, Config, Error, Health, Key, ManualClock, Store, StoredResponse};
use idemkv::{JournalStorage, StorageBackend};

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
    control: Arc<Control>,
    counts: Arc<Counts>,
}

/// The fault's switch, shared with the test while the store owns the disk.
#[derive(Debug)]
struct Control {
    /// Operations of the faulty kind still allowed to succeed.
    countdown: AtomicI64,
    tripped: AtomicBool,
}

impl Control {
    /// The disk heals (space was freed): every operation succeeds again.
    fn cure(&self) {
        self.countdown.store(i64::MAX, Ordering::SeqCst);
        self.tripped.store(false, Ordering::SeqCst);
    }

    /// The next operation of the faulty kind fails, and every one after it.
    fn fail_from_now(&self) {
        self.countdown.store(0, Ordering::SeqCst);
    }
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
            control: Arc::new(Control {
                countdown: AtomicI64::new(countdown),
                tripped: AtomicBool::new(false),
            }),
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
        inject(self.fault, &self.control, &self.counts, kind)
    }

    fn image(&self) -> std::sync::MutexGuard<'_, Image> {
        self.image.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fails an operation of `kind` once the countdown of `fault` operations has
/// run out, and every one after it.
fn inject(fault: Fault, control: &Control, counts: &Counts, kind: Fault) -> io::Result<()> {
    if fault != Fault::Any && fault != kind {
        return Ok(());
    }
    counts.ops.fetch_add(1, Ordering::Relaxed);
    if control.tripped.load(Ordering::SeqCst)
        || control.countdown.fetch_sub(1, Ordering::SeqCst) <= 0
    {
        control.tripped.store(true, Ordering::SeqCst);
        counts.injected.fetch_add(1, Ordering::Relaxed);
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

/// The journal's segments on the same failing disk: every operation counts
/// down the disk's fault too. A segment is created zero-filled and durable.
struct FaultyJournal {
    segments: Arc<Mutex<Vec<Image>>>,
    fault: Fault,
    control: Arc<Control>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for FaultyJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyJournal")
            .field("fault", &self.fault)
            .finish()
    }
}

impl FaultyJournal {
    fn beside(disk: &FaultyDisk, segments: Arc<Mutex<Vec<Image>>>) -> Self {
        FaultyJournal {
            segments,
            fault: disk.fault,
            control: Arc::clone(&disk.control),
            counts: Arc::clone(&disk.counts),
        }
    }

    fn segments(&self) -> std::sync::MutexGuard<'_, Vec<Image>> {
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self, kind: Fault) -> io::Result<()> {
        inject(self.fault, &self.control, &self.counts, kind)
    }
}

fn no_segment(index: usize) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no segment {index}"))
}

impl JournalStorage for FaultyJournal {
    fn segments(&self) -> io::Result<usize> {
        Ok(self.segments().len())
    }

    fn create_segment(&self, index: usize, len: u64) -> io::Result<()> {
        self.check(Fault::Write)?;
        self.check(Fault::Sync)?;
        let mut segments = self.segments();
        if index != segments.len() {
            return Err(io::Error::other(format!("segment {index} out of order")));
        }
        let zeros = vec![0u8; len as usize];
        segments.push(Image {
            current: zeros.clone(),
            synced: zeros,
        });
        Ok(())
    }

    fn segment_len(&self, index: usize) -> io::Result<u64> {
        let segments = self.segments();
        let segment = segments.get(index).ok_or_else(|| no_segment(index))?;
        Ok(segment.current.len() as u64)
    }

    fn read(&self, index: usize, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.check(Fault::Read)?;
        let segments = self.segments();
        let segment = segments.get(index).ok_or_else(|| no_segment(index))?;
        let start = offset as usize;
        let source = segment
            .current
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn write(&self, index: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(Fault::Write)?;
        let mut segments = self.segments();
        let segment = segments.get_mut(index).ok_or_else(|| no_segment(index))?;
        let start = offset as usize;
        segment
            .current
            .get_mut(start..start + data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past the end"))?
            .copy_from_slice(data);
        Ok(())
    }

    fn sync_data(&self, index: usize) -> io::Result<()> {
        self.check(Fault::Sync)?;
        let mut segments = self.segments();
        let segment = segments.get_mut(index).ok_or_else(|| no_segment(index))?;
        segment.synced.clone_from(&segment.current);
        Ok(())
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

/// No reopen attempt during a workload: a fault stays as injected, and what
/// the store answered under it is what the images are checked against.
/// (`a_full_disk_heals_on_the_same_handle` checks the healing.)
fn config(clock: &ManualClock) -> Config {
    Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(RETENTION)
        .sweep_interval(None)
        .reopen_backoff(Duration::from_secs(3600))
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
fn workload(store: &Store, clock: &ManualClock, fault: Fault, body_bytes: usize) -> Acked {
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
                let body = big_response(i, body_bytes);
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

/// What survived on disk: the file, and the journal's segments if the store
/// had one.
struct Survivor {
    file: Vec<u8>,
    journal: Option<Vec<Vec<u8>>>,
}

impl Survivor {
    /// Opens a store over these bytes on a healthy disk.
    fn open(self, config: Config) -> idemkv::Result<Store> {
        let disk = FaultyDisk::healthy(Image {
            current: self.file.clone(),
            synced: self.file,
        });
        match self.journal {
            None => Store::with_backend(disk, config),
            Some(segments) => {
                let images = segments
                    .into_iter()
                    .map(|bytes| Image {
                        current: bytes.clone(),
                        synced: bytes,
                    })
                    .collect();
                let journal = FaultyJournal::beside(&disk, Arc::new(Mutex::new(images)));
                Store::with_journaled_backend(disk, journal, config.journal(true))
            }
        }
    }
}

/// Reopens what survived on a healthy disk and checks every acknowledged
/// operation.
fn verify(survivor: Survivor, clock: &ManualClock, acked: &Acked, what: &str) -> u64 {
    let store = match survivor.open(config(clock)) {
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

/// The answer of the workload's key `i`: `bytes` long, and distinct.
fn big_response(i: usize, bytes: usize) -> StoredResponse {
    let mut body = format!("answer {i} ").into_bytes();
    body.resize(bytes.max(body.len()), b'a' + (i % 26) as u8);
    StoredResponse::new(201, body).with_header("x-request", format!("{i}"))
}

/// Keys k0..k9 expire during the workload, so their absence proves nothing.
fn is_early(k: &Key) -> bool {
    k.idempotency_key().len() == 2
}

/// How a round's store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The file alone, small answers.
    FileAlone,
    /// The journal, small answers: every fault lands in a frame, a
    /// checkpoint or a writeback sync of the first segment.
    Journal,
    /// The journal with 900 KiB answers: the workload fills segments, the
    /// checkpoints free them and later frames reuse them, so faults land in
    /// a segment's creation, rollover and reuse too.
    JournalRollover,
}

impl Mode {
    fn journaled(self) -> bool {
        self != Mode::FileAlone
    }

    fn body_bytes(self) -> usize {
        match self {
            Mode::JournalRollover => 900 * 1024,
            _ => 16,
        }
    }
}

/// Runs one round: `fault` after `countdown` operations of its kind, with
/// or without the journal.
fn round(fault: Fault, countdown: i64, mode: Mode) -> (u64, u64, u64) {
    let journaled = mode.journaled();
    let image = Arc::new(Mutex::new(Image::default()));
    let segments = Arc::new(Mutex::new(Vec::<Image>::new()));
    let counts = Arc::new(Counts::default());
    let clock = ManualClock::default();
    let disk = FaultyDisk::new(Arc::clone(&image), fault, countdown, Arc::clone(&counts));
    let opened = if journaled {
        let journal = FaultyJournal::beside(&disk, Arc::clone(&segments));
        // Every other batch a checkpoint, so that faults land in
        // checkpoints too, not only in frames; and the writeback thread
        // syncing the file every millisecond, on the same failing disk.
        let config = config(&clock)
            .journal(true)
            .checkpoint_interval(Duration::ZERO)
            .writeback_interval(Duration::from_millis(1));
        Store::with_journaled_backend(disk, journal, config)
    } else {
        Store::with_backend(disk, config(&clock))
    };
    let acked = match opened {
        Ok(store) => workload(&store, &clock, fault, mode.body_bytes()),
        Err(err) => {
            assert_storage_error(&err);
            Acked::default()
        }
    };
    let (current, synced) = {
        let image = image.lock().unwrap_or_else(PoisonError::into_inner);
        (image.current.clone(), image.synced.clone())
    };
    let (segments_current, segments_synced): (Vec<Vec<u8>>, Vec<Vec<u8>>) = segments
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|s| (s.current.clone(), s.synced.clone()))
        .unzip();
    if mode == Mode::JournalRollover && countdown == i64::MAX {
        // Without a fault the workload rolls over into a new segment and
        // reuses a freed one: a segment's number (bytes 8..16 of its
        // header) above the count of segments was given at a reuse.
        let numbers: Vec<u64> = segments_current
            .iter()
            .map(|bytes| u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()))
            .collect();
        assert!(
            segments_current.len() >= 2 && numbers.iter().any(|&n| n > numbers.len() as u64),
            "the rollover workload did not reuse a segment: numbers {numbers:?}"
        );
    }
    let journal = |bytes: Vec<Vec<u8>>| journaled.then_some(bytes);
    let what = format!("{fault:?} fault after {countdown}, {mode:?}");
    let mut checked = 0;
    if !synced.is_empty() {
        checked += verify(
            Survivor {
                file: synced.clone(),
                journal: journal(segments_synced),
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
            Survivor {
                file: current,
                journal: journal(segments_current),
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
    fault_rounds(&[Mode::FileAlone, Mode::Journal]);
}

#[test]
fn acknowledged_operations_survive_faults_in_segment_rollover_and_reuse() {
    fault_rounds(&[Mode::JournalRollover]);
}

fn fault_rounds(modes: &[Mode]) {
    let every = std::env::var("IDEMKV_FAULT_ROUNDS").is_ok_and(|v| v == "all");
    for &mode in modes {
        let mut rounds = 0;
        let mut injected = 0;
        let mut checked = 0;
        for fault in [Fault::Write, Fault::Sync, Fault::Read, Fault::Any] {
            // How many operations of this kind a fault-free run performs.
            let (total, none, _) = round(fault, i64::MAX, mode);
            assert_eq!(none, 0);
            // Rollover rounds move megabytes each: fewer of them.
            let spread = if mode == Mode::JournalRollover {
                12
            } else {
                40
            };
            let step = if every {
                1
            } else {
                (total / spread).max(1) as usize
            };
            for countdown in (0..=total as i64).step_by(step) {
                let (_, faults, verified) = round(fault, countdown, mode);
                rounds += 1;
                injected += faults;
                checked += verified;
            }
        }
        println!(
            "{mode:?}: fault rounds: {rounds}, faults injected: {injected}, acknowledged operations verified: {checked}"
        );
        assert!(rounds > 40 && injected > 40 && checked > 0);
    }
}

/// A store over what the disk made durable, as after a power loss.
fn reopen_synced(image: &Mutex<Image>, clock: &ManualClock) -> idemkv::Result<Store> {
    let synced = image
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .synced
        .clone();
    Store::with_backend(
        FaultyDisk::healthy(Image {
            current: synced.clone(),
            synced,
        }),
        config(clock),
    )
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
    assert!(err.to_string().contains("reopens its file"), "{err}");
    assert!(matches!(store.health(), Health::Recovering { .. }));
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
    let reopened = reopen_synced(&image, &clock)?;
    let claim = claimed(reopened.begin(&key("first"), fp("a"))?);
    reopened.complete(claim, response("after reopen"))?;
    Ok(())
}

/// A full disk: writes fail with ENOSPC, the store refuses writes and
/// reports it, space is freed, and the store reopens its file by itself and
/// takes writes again on the same handle, with every acknowledged operation
/// intact.
#[test]
fn a_full_disk_heals_on_the_same_handle() -> TestResult {
    full_disk_heals(false)
}

/// The same with the journal, whose segments sit on the same full disk.
#[test]
fn a_full_disk_heals_on_the_same_handle_with_the_journal() -> TestResult {
    full_disk_heals(true)
}

fn full_disk_heals(journaled: bool) -> TestResult {
    let clock = ManualClock::default();
    let image = Arc::new(Mutex::new(Image::default()));
    let segments = Arc::new(Mutex::new(Vec::<Image>::new()));
    let disk = FaultyDisk::new(Arc::clone(&image), Fault::Write, i64::MAX, Arc::default());
    let control = Arc::clone(&disk.control);
    let healing = config(&clock).reopen_backoff(Duration::from_millis(5));
    let store = if journaled {
        let journal = FaultyJournal::beside(&disk, Arc::clone(&segments));
        Store::with_journaled_backend(disk, journal, healing.journal(true))?
    } else {
        Store::with_backend(disk, healing)?
    };
    let mut acked = Vec::new();
    for i in 0..20 {
        let k = key(&format!("before-{i}"));
        store.complete(
            claimed(store.begin(&k, fp("a"))?),
            response(&format!("{i}")),
        )?;
        acked.push((k, response(&format!("{i}"))));
    }
    let held = claimed(store.begin(&key("held"), fp("a"))?);

    // The disk fills up.
    control.fail_from_now();
    let err = store.begin(&key("full"), fp("a")).expect_err("disk full");
    assert!(
        matches!(&err, Error::Storage(e) if e.io_kind() == Some(std::io::ErrorKind::StorageFull)),
        "{err:?}"
    );
    assert!(matches!(store.health(), Health::Recovering { .. }));
    assert_eq!(store.metrics().failed_commits, 1);
    // While the disk is full, reopening fails and writes stay refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(store.health(), Health::Recovering { attempts, .. } if attempts >= 2) {
        assert!(
            Instant::now() < deadline,
            "no reopen attempt: {:?}",
            store.health()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        store.begin(&key("still-full"), fp("a")),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(store.metrics().recoveries, 0);

    // Space is freed: the store heals by itself.
    control.cure();
    while store.health() != Health::Ok {
        assert!(
            Instant::now() < deadline,
            "not healed: {:?}",
            store.health()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(store.metrics().recoveries, 1);
    assert_eq!(store.metrics().health, 0);
    // Writes resume on the same handle, and nothing acknowledged was lost.
    let after = key("after");
    store.complete(claimed(store.begin(&after, fp("a"))?), response("after"))?;
    for (k, body) in &acked {
        assert_eq!(&replayed(store.begin(k, fp("a"))?), body);
    }
    // The claim held across the outage is still held, and still completes.
    in_progress(store.begin(&key("held"), fp("a"))?);
    store.complete(held, response("held"))?;
    // A failed write may have landed or not; either way it is not a replay.
    match store.begin(&key("full"), fp("a"))? {
        Begin::Claimed(_) | Begin::InProgress { .. } => {}
        other => panic!("the failed claim reads as {other:?}"),
    }
    store.close()?;

    // What the disk made durable holds all of it.
    let synced = |image: &Image| image.synced.clone();
    let survivor = Survivor {
        file: synced(&image.lock().unwrap_or_else(PoisonError::into_inner)),
        journal: journaled.then(|| {
            let segments = segments.lock().unwrap_or_else(PoisonError::into_inner);
            segments.iter().map(synced).collect()
        }),
    };
    let reopened = survivor.open(config(&clock))?;
    for (k, body) in &acked {
        assert_eq!(&replayed(reopened.begin(k, fp("a"))?), body);
    }
    assert_eq!(
        replayed(reopened.begin(&after, fp("a"))?),
        response("after")
    );
    assert_eq!(
        replayed(reopened.begin(&key("held"), fp("a"))?),
        response("held")
    );
    Ok(())
}

/// A journaled store over a disk whose `fault` the test switches on and off
/// (`control`), reopening 5 ms after a failure; the disk's images stay with
/// the test for a power cut.
struct Healing {
    store: Store,
    control: Arc<Control>,
    image: Arc<Mutex<Image>>,
    segments: Arc<Mutex<Vec<Image>>>,
    clock: ManualClock,
}

impl Healing {
    /// `tune` adjusts the store's config (the journal is on).
    fn open(fault: Fault, tune: impl FnOnce(Config) -> Config) -> idemkv::Result<Healing> {
        let clock = ManualClock::default();
        let image = Arc::new(Mutex::new(Image::default()));
        let segments = Arc::new(Mutex::new(Vec::<Image>::new()));
        let disk = FaultyDisk::new(Arc::clone(&image), fault, i64::MAX, Arc::default());
        let control = Arc::clone(&disk.control);
        let journal = FaultyJournal::beside(&disk, Arc::clone(&segments));
        let config = tune(
            config(&clock)
                .journal(true)
                .reopen_backoff(Duration::from_millis(5)),
        );
        let store = Store::with_journaled_backend(disk, journal, config)?;
        Ok(Healing {
            store,
            control,
            image,
            segments,
            clock,
        })
    }

    /// Waits (up to a minute) until the store has healed.
    fn wait_healed(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.store.health() != Health::Ok {
            assert!(
                Instant::now() < deadline,
                "not healed: {:?}",
                self.store.health()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What a power cut now leaves: the synced bytes of the file and of
    /// each segment.
    fn power_cut(&self) -> Survivor {
        let synced = |image: &Image| image.synced.clone();
        Survivor {
            file: synced(&self.image.lock().unwrap_or_else(PoisonError::into_inner)),
            journal: Some(
                self.segments
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(synced)
                    .collect(),
            ),
        }
    }
}

/// A read fails (here the engine's check in `verify`, which first syncs the
/// latest commit): the storage engine then refuses every read and write
/// until the database is reopened. The store heals at once, without a
/// write to make it: lookups work again once the disk does, and nothing
/// acknowledged is lost.
#[test]
fn a_failed_read_heals_the_store_without_a_write() -> TestResult {
    let healing = Healing::open(Fault::Any, |config| config)?;
    let (store, control) = (&healing.store, &healing.control);
    let k = key("charge");
    let claim = claimed(store.begin(&k, fp("a"))?);
    store.complete(claim, response("charged"))?;
    control.fail_from_now();
    let err = store
        .verify()
        .expect_err("the check meets the failing disk");
    assert!(err.is_transient(), "{err:?}");
    // Until the file is reopened (which cannot happen while the disk
    // fails) the store says it is recovering, and a heal batch is no commit.
    assert!(
        matches!(store.health(), Health::Recovering { .. }),
        "{:?}",
        store.health()
    );
    let commits = store.metrics().commits;
    control.cure();
    // No write from here on: the store must reopen its file by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.metrics().recoveries == 0 {
        assert!(
            Instant::now() < deadline,
            "no reopen a minute after the failed read: {:?}",
            store.health()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    healing.wait_healed();
    assert_eq!(store.metrics().commits, commits, "the heal wrote nothing");
    let record = store.get(&k)?.ok_or("the completed record is there")?;
    assert_eq!(record.response(), Some(&response("charged")));
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("charged"));
    assert!(store.verify()?.is_ok());
    Ok(())
}

/// A journal frame's sync fails although its write reached the disk (the
/// disk hiccups once). The heal replays that frame into the file; the
/// journal writer after the heal must continue after it, not write over it,
/// or a claim acknowledged after the heal is covered by the heal's
/// checkpoint and lost at the next power cut. A heal is not an open: a
/// claim this process holds stays held even under `Recovery::ReleaseAtOpen`.
#[test]
fn a_heal_after_a_sync_fault_whose_write_landed_loses_nothing() -> TestResult {
    let healing = Healing::open(Fault::Sync, |config| {
        config
            .checkpoint_interval(Duration::MAX)
            .recovery(idemkv::Recovery::ReleaseAtOpen)
    })?;
    let (store, control) = (&healing.store, &healing.control);
    let held = claimed(store.begin(&key("held"), fp("a"))?);
    let before = key("before");
    store.complete(claimed(store.begin(&before, fp("a"))?), response("before"))?;

    // One sync fails; the frame it was to sync is written.
    control.fail_from_now();
    let err = store
        .begin(&key("landed"), fp("a"))
        .expect_err("sync fails");
    assert_storage_error(&err);
    control.cure();
    healing.wait_healed();
    // The claim held across the heal is still this process's.
    in_progress(store.begin(&key("held"), fp("a"))?);
    // Acknowledged after the heal.
    let after = claimed(store.begin(&key("after"), fp("a"))?);
    let after_token = after.token();
    std::mem::forget(after);
    let done = key("done");
    store.complete(claimed(store.begin(&done, fp("a"))?), response("done"))?;
    store.complete(held, response("held"))?;

    // A power cut: only what was synced survives.
    let survivor = healing.power_cut();
    let clock = healing.clock.clone();
    drop(healing);
    let reopened = survivor.open(config(&clock))?;
    assert_eq!(
        replayed(reopened.begin(&before, fp("a"))?),
        response("before")
    );
    assert_eq!(replayed(reopened.begin(&done, fp("a"))?), response("done"));
    assert_eq!(
        replayed(reopened.begin(&key("held"), fp("a"))?),
        response("held")
    );
    let record = reopened
        .get(&key("after"))?
        .ok_or("the claim acknowledged after the heal is lost")?;
    assert_eq!(record.token(), after_token);
    Ok(())
}

/// A completion's frame sync fails: the store cannot know whether it
/// landed, so the error is transient and hands the claim back. Once the
/// store heals, the same completion repeated with that claim answers `Ok`,
/// whether the first one landed (its write reached the disk) or not (its
/// write failed); the key replays the one response, and survives a power
/// cut. A repeat with another response is not that completion.
#[test]
fn a_failed_completion_hands_the_claim_back_and_its_repeat_answers_ok() -> TestResult {
    for (fault, landed) in [(Fault::Sync, true), (Fault::Write, false)] {
        let healing = Healing::open(fault, |config| config.checkpoint_interval(Duration::MAX))?;
        let (store, control) = (&healing.store, &healing.control);
        let k = key("charge");
        let claim = claimed(store.begin(&k, fp("a"))?);
        control.fail_from_now();
        let err = store
            .complete(claim, response("charged"))
            .expect_err("the completion's frame fails");
        assert!(err.error().is_transient(), "{fault:?}: {:?}", err.error());
        let claim = err
            .into_claim()
            .ok_or("a transient failure hands the claim back")?;
        control.cure();
        healing.wait_healed();
        // Landed or not, the key is not free while its holder may repeat
        // the completion: a retry is told it is in progress (or replays).
        match store.begin(&k, fp("a"))? {
            Begin::Replay(stored) if landed => assert_eq!(stored, response("charged")),
            Begin::InProgress { .. } => {}
            other => panic!("{fault:?}: after the failed completion: {other:?}"),
        }
        store.complete(claim, response("charged"))?;
        assert_eq!(replayed(store.begin(&k, fp("a"))?), response("charged"));
        assert_eq!(store.metrics().completions, 1, "{fault:?}");
        let survivor = healing.power_cut();
        let clock = healing.clock.clone();
        drop(healing);
        let reopened = survivor.open(config(&clock))?;
        assert_eq!(replayed(reopened.begin(&k, fp("a"))?), response("charged"));
    }
    Ok(())
}

/// The idempotent repeat is exact: the same claim with another response
/// after its completion landed is `LeaseLost`, and changes nothing.
#[test]
fn a_repeated_completion_with_another_response_is_lease_lost() -> TestResult {
    let healing = Healing::open(Fault::Sync, |config| config)?;
    let (store, control) = (&healing.store, &healing.control);
    let k = key("charge");
    let claim = claimed(store.begin(&k, fp("a"))?);
    control.fail_from_now();
    let claim = store
        .complete(claim, response("first"))
        .expect_err("the sync fails")
        .into_claim()
        .ok_or("the claim comes back")?;
    control.cure();
    healing.wait_healed();
    let err = store
        .complete(claim, response("second"))
        .expect_err("another response is another completion");
    assert!(matches!(err.error(), Error::LeaseLost), "{:?}", err.error());
    assert!(err.into_claim().is_none());
    assert_eq!(replayed(store.begin(&k, fp("a"))?), response("first"));
    Ok(())
}

/// `once` stores the operation's result even when the store fails just
/// after the operation ran: the completion is repeated (with backoff) until
/// the store has healed, so the operation runs once and a redelivery
/// replays its result.
#[test]
fn once_stores_its_result_across_a_store_that_heals() -> TestResult {
    let healing = Healing::open(Fault::Sync, |config| config)?;
    let (store, control) = (&healing.store, &healing.control);
    let k = key("message-1");
    let runs = AtomicU64::new(0);
    std::thread::scope(|scope| -> TestResult {
        // The disk comes back once the store has noticed it failing.
        let curer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !matches!(store.health(), Health::Recovering { .. }) {
                assert!(Instant::now() < deadline, "the store never failed");
                std::thread::sleep(Duration::from_millis(1));
            }
            control.cure();
        });
        let outcome = store.once(&k, fp("m"), idemkv::OnError::KeepInFlight, |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            // The side effect happened; now the disk fails.
            control.fail_from_now();
            Ok::<_, String>(response("handled"))
        })?;
        assert!(matches!(outcome, idemkv::Once::Ran(_)), "{outcome:?}");
        curer.join().map_err(|_| "curer panicked")?;
        Ok(())
    })?;
    let again = store.once(&k, fp("m"), idemkv::OnError::KeepInFlight, |_| {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(response("twice"))
    })?;
    assert!(
        matches!(&again, idemkv::Once::Replayed(stored) if *stored == response("handled")),
        "{again:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(store.metrics().failed_commits >= 1);
    Ok(())
}
