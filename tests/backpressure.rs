//! A full write queue holds callers back without blocking their threads: an
//! async caller's future stays pending (its runtime worker goes on with
//! other tasks) and is woken once the writer makes room; nothing is lost.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use idemkv::{Begin, Config, Fingerprint, Key, Store};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// More operations than the write queue holds (4,096), all at once.
const CALLERS: usize = 5_000;

#[path = "support/model.rs"]
mod model;

/// Memory under the store (the model harness's) whose syncs wait at a gate
/// while it is closed, and count how many started.
#[derive(Clone, Debug, Default)]
struct GatedMemory {
    memory: model::SharedMemory,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    syncs_waiting: usize,
}

impl GatedMemory {
    fn close(&self) {
        self.gate
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
    }

    fn open(&self) {
        let (gate, opened) = &*self.gate;
        gate.lock().unwrap_or_else(PoisonError::into_inner).closed = false;
        opened.notify_all();
    }

    /// Until a sync waits at the closed gate: the writer is stuck in a
    /// commit, and whatever is submitted now queues.
    fn until_a_sync_waits(&self) -> Result<(), String> {
        let (gate, changed) = &*self.gate;
        let guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, timeout) = changed
            .wait_timeout_while(guard, Duration::from_secs(60), |g| g.syncs_waiting == 0)
            .unwrap_or_else(PoisonError::into_inner);
        drop(guard);
        if timeout.timed_out() {
            return Err("no commit reached the gate".into());
        }
        Ok(())
    }
}

impl idemkv::StorageBackend for GatedMemory {
    fn len(&self) -> std::io::Result<u64> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let (gate, changed) = &*self.gate;
        let mut guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.closed {
            guard.syncs_waiting += 1;
            changed.notify_all();
            while guard.closed {
                guard = changed.wait(guard).unwrap_or_else(PoisonError::into_inner);
            }
            guard.syncs_waiting -= 1;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.memory.write(offset, data)
    }
}

fn key(i: usize) -> Key {
    Key::new("backpressure", &format!("k{i}")).expect("valid key")
}

type BoxedBegin = Pin<Box<dyn Future<Output = idemkv::Result<Begin>> + Send>>;

#[test]
fn a_full_queue_keeps_async_callers_pending_without_blocking_their_thread() -> TestResult {
    let memory = GatedMemory::default();
    let store = Store::with_backend(memory.clone(), Config::default().sweep_interval(None))?;
    let async_store = store.to_async();
    memory.close();

    // The first claim's commit waits at the gate; the writer is stuck.
    let first = {
        let store = store.clone();
        std::thread::spawn(move || store.begin(&key(0), Fingerprint::of(b"0")))
    };
    memory.until_a_sync_waits()?;

    // One thread polls every caller's future once, as a runtime worker
    // would: each queues its claim, and the ones past the queue's room must
    // stay pending instead of blocking the thread.
    let (polled, all_polled) = std::sync::mpsc::channel();
    let poller = std::thread::spawn(move || {
        let mut context = Context::from_waker(Waker::noop());
        let mut pending: Vec<BoxedBegin> = Vec::new();
        for i in 1..=CALLERS {
            let store = async_store.clone();
            let mut future: BoxedBegin =
                Box::pin(async move { store.begin(&key(i), Fingerprint::of(b"i")).await });
            if let Poll::Ready(answer) = future.as_mut().poll(&mut context) {
                return Err(format!(
                    "caller {i} was answered while the writer was stuck: {answer:?}"
                ));
            }
            pending.push(future);
        }
        let _ = polled.send(());
        Ok(pending)
    });
    all_polled
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "a caller's first poll blocked its thread on the full queue")?;
    let pending = poller.join().map_err(|_| "the poller panicked")??;

    // The writer goes on: every caller, queued or held back, is answered.
    memory.open();
    assert!(matches!(
        first.join().map_err(|_| "the first caller panicked")??,
        Begin::Claimed(_)
    ));
    for (i, future) in pending.into_iter().enumerate() {
        match pollster::block_on(future)? {
            Begin::Claimed(_) => {}
            other => return Err(format!("caller {} was answered {other:?}", i + 1).into()),
        }
    }
    assert_eq!(store.metrics().claims, CALLERS as u64 + 1);
    Ok(())
}
