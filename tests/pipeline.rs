//! The committer thread overlaps a batch's journal sync with the next batch:
//! the batch commits before its frame is synced, and readers wait for the
//! sync. These tests hold the syncer thread's syncs at a gate and check that
//! nothing a reader returns comes from a batch whose sync has not returned,
//! and that a failed sync fails its readers instead.

mod common;

use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use common::*;
use idemkv::{
    AsyncStore, Begin, Config, Error, JournalStorage, RecordState, ScanFilter, StorageBackend,
    Store,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A store's file in memory: every write is durable at once.
#[derive(Debug, Default)]
struct MemDisk(Mutex<Vec<u8>>);

impl MemDisk {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StorageBackend for MemDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        read_image(&self.bytes(), offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes();
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// Where the syncer thread's syncs stop while the gate is closed.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    /// The next held sync fails instead of passing.
    fail: bool,
    /// Syncs waiting at the gate.
    waiting: usize,
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.state().closed = true;
    }

    fn open(&self, fail: bool) {
        let mut state = self.state();
        state.closed = false;
        state.fail = fail;
        drop(state);
        self.changed.notify_all();
    }

    /// Blocks until a sync waits at the gate.
    fn until_held(&self) {
        let mut state = self.state();
        while state.waiting == 0 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Called by every sync: the syncer thread's wait while the gate is
    /// closed.
    fn pass(&self) -> io::Result<()> {
        if thread::current().name() != Some("idemkv-syncer") {
            return Ok(());
        }
        let mut state = self.state();
        state.waiting += 1;
        self.changed.notify_all();
        while state.closed {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.waiting -= 1;
        if std::mem::take(&mut state.fail) {
            return Err(io::Error::other("injected sync failure"));
        }
        Ok(())
    }
}

/// Journal segments in memory whose syncs pass through a [`Gate`].
#[derive(Debug)]
struct GatedJournal {
    segments: Mutex<Vec<Vec<u8>>>,
    gate: Arc<Gate>,
}

impl GatedJournal {
    fn segments(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn no_segment(index: usize) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no segment {index}"))
}

impl JournalStorage for GatedJournal {
    fn segments(&self) -> io::Result<usize> {
        Ok(self.segments().len())
    }

    fn create_segment(&self, index: usize, len: u64) -> io::Result<()> {
        let mut segments = self.segments();
        if index != segments.len() {
            return Err(io::Error::other(format!("segment {index} out of order")));
        }
        segments.push(vec![0; len as usize]);
        Ok(())
    }

    fn segment_len(&self, index: usize) -> io::Result<u64> {
        let segments = self.segments();
        Ok(segments.get(index).ok_or_else(|| no_segment(index))?.len() as u64)
    }

    fn read(&self, index: usize, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let segments = self.segments();
        read_image(
            segments.get(index).ok_or_else(|| no_segment(index))?,
            offset,
            out,
        )
    }

    fn write(&self, index: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut segments = self.segments();
        let segment = segments.get_mut(index).ok_or_else(|| no_segment(index))?;
        let start = offset as usize;
        segment
            .get_mut(start..start + data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past the end"))?
            .copy_from_slice(data);
        Ok(())
    }

    fn sync_data(&self, index: usize) -> io::Result<()> {
        self.gate.pass()?;
        self.segments()
            .get(index)
            .ok_or_else(|| no_segment(index))?;
        Ok(())
    }
}

/// A journaled store whose syncer thread's syncs pass `gate`; checkpoints
/// are an hour apart, so every batch of the test is journaled.
fn gated_store(gate: &Arc<Gate>, config: Config) -> idemkv::Result<Store> {
    let journal = GatedJournal {
        segments: Mutex::new(Vec::new()),
        gate: Arc::clone(gate),
    };
    Store::with_journaled_backend(
        MemDisk::default(),
        journal,
        config.checkpoint_interval(Duration::from_secs(3600)),
    )
}

/// Claims `name` through the async API (which always queues for the
/// committer thread, so its frame goes to the syncer), on a thread of its
/// own.
fn claim_on_a_thread(
    store: &Store,
    name: &'static str,
) -> thread::JoinHandle<idemkv::Result<Begin>> {
    let store = AsyncStore::from(store.clone());
    thread::spawn(move || pollster::block_on(store.begin(&key(name), fp(name))))
}

/// `get(name)` on a thread of its own; the flag says whether it returned.
fn get_on_a_thread(
    store: &Store,
    name: &'static str,
) -> (
    thread::JoinHandle<idemkv::Result<Option<idemkv::Record>>>,
    Arc<AtomicBool>,
) {
    let store = store.clone();
    read_on_a_thread(move || store.get(&key(name)))
}

/// Runs `read` on a thread of its own; the flag says whether it returned.
fn read_on_a_thread<T: Send + 'static>(
    read: impl FnOnce() -> T + Send + 'static,
) -> (thread::JoinHandle<T>, Arc<AtomicBool>) {
    let returned = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&returned);
    let handle = thread::spawn(move || {
        let value = read();
        flag.store(true, Ordering::SeqCst);
        value
    });
    (handle, returned)
}

#[test]
fn readers_see_a_claim_only_once_its_frame_is_synced() -> TestResult {
    let gate = Arc::new(Gate::default());
    let store = gated_store(&gate, Config::default())?;
    gate.close();
    let claimer = claim_on_a_thread(&store, "a");
    // The claim is committed and its frame is at the gate.
    gate.until_held();
    let get = get_on_a_thread(&store, "a");
    let scan = {
        let store = store.clone();
        read_on_a_thread(move || {
            let mut seen = 0;
            store
                .scan(&ScanFilter::default(), |_| {
                    seen += 1;
                    ControlFlow::Continue(())
                })
                .map(|()| seen)
        })
    };
    // A key no batch in flight wrote reads at once.
    assert!(store.get(&key("b"))?.is_none());
    // However the threads are scheduled, neither read can return while the
    // frame's sync is held.
    thread::sleep(Duration::from_millis(50));
    assert!(
        !get.1.load(Ordering::SeqCst),
        "get returned before the sync"
    );
    assert!(
        !scan.1.load(Ordering::SeqCst),
        "scan returned before the sync"
    );
    gate.open(false);
    assert!(claimed_begin(
        claimer.join().map_err(|_| "claimer panicked")??
    ));
    let record = get.0.join().map_err(|_| "get panicked")??;
    assert!(record.is_some_and(|r| matches!(r.state(), RecordState::InFlight { .. })));
    assert_eq!(scan.0.join().map_err(|_| "scan panicked")??, 1);
    store.close()?;
    Ok(())
}

#[test]
fn a_failed_sync_fails_its_caller_and_its_readers() -> TestResult {
    let gate = Arc::new(Gate::default());
    // No reopen during the test: the failure stays visible.
    let store = gated_store(
        &gate,
        Config::default().reopen_backoff(Duration::from_secs(600)),
    )?;
    gate.close();
    let claimer = claim_on_a_thread(&store, "a");
    gate.until_held();
    let get = get_on_a_thread(&store, "a");
    gate.open(true);
    let err = claimer
        .join()
        .map_err(|_| "claimer panicked")?
        .err()
        .ok_or("the claim of a failed sync succeeded")?;
    assert!(matches!(err, Error::Storage(_)), "{err}");
    let err = get
        .0
        .join()
        .map_err(|_| "get panicked")?
        .err()
        .ok_or("a read of a batch whose sync failed succeeded")?;
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    // The store is poisoned until it reopens: writes are refused.
    assert!(matches!(
        store.begin(&key("c"), fp("c")),
        Err(Error::Poisoned { .. })
    ));
    // A key the lost batch did not write still reads.
    assert!(store.get(&key("c"))?.is_none());
    Ok(())
}

fn claimed_begin(begin: Begin) -> bool {
    matches!(begin, Begin::Claimed(_))
}
