//! What one caller waits for holds up no other caller: a full write queue
//! keeps an async caller's future pending (its runtime worker goes on with
//! other tasks) until the writer makes room, and a slow disk read of one
//! key holds up no other key of its lock-table shard.

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

/// Which of the backend's operations wait at a closed gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Reads,
    Syncs,
}

/// Memory under the store (the model harness's) whose reads or syncs wait
/// at a gate while it is closed, and count how many wait.
#[derive(Clone, Debug, Default)]
struct GatedMemory {
    memory: model::SharedMemory,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Debug, Default)]
struct Gate {
    closed_for: Option<Held>,
    waiting: usize,
}

impl GatedMemory {
    fn close(&self, held: Held) {
        self.gate
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed_for = Some(held);
    }

    fn open(&self) {
        let (gate, opened) = &*self.gate;
        gate.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed_for = None;
        opened.notify_all();
    }

    /// Until an operation waits at the closed gate.
    fn until_one_waits(&self) -> Result<(), String> {
        let (gate, changed) = &*self.gate;
        let guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, timeout) = changed
            .wait_timeout_while(guard, Duration::from_secs(60), |g| g.waiting == 0)
            .unwrap_or_else(PoisonError::into_inner);
        drop(guard);
        if timeout.timed_out() {
            return Err("nothing reached the gate".into());
        }
        Ok(())
    }

    /// Waits while the gate is closed for `held`.
    fn pass(&self, held: Held) {
        let (gate, changed) = &*self.gate;
        let mut guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.closed_for == Some(held) {
            guard.waiting += 1;
            changed.notify_all();
            while guard.closed_for == Some(held) {
                guard = changed.wait(guard).unwrap_or_else(PoisonError::into_inner);
            }
            guard.waiting -= 1;
        }
    }
}

impl idemkv::StorageBackend for GatedMemory {
    fn len(&self) -> std::io::Result<u64> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.pass(Held::Reads);
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.pass(Held::Syncs);
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
    memory.close(Held::Syncs);

    // The first claim's commit waits at the gate; the writer is stuck.
    let first = {
        let store = store.clone();
        std::thread::spawn(move || store.begin(&key(0), Fingerprint::of(b"0")))
    };
    memory.until_one_waits()?;

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

/// Up to `count` keys whose table key (the hash the lock table picks a
/// shard by, from its first two bytes) starts as `key`'s does: they share
/// its shard however many shards there are.
fn neighbours_of(key: &Key, count: usize) -> Vec<Key> {
    let prefix = &idemkv::fuzzing::table_key(key)[..2];
    (0..)
        .map(|i| Key::new("backpressure", &format!("n{i}")).expect("valid key"))
        .filter(|candidate| &idemkv::fuzzing::table_key(candidate)[..2] == prefix)
        .take(count)
        .collect()
}

#[test]
fn a_slow_disk_read_holds_up_no_other_key_of_its_shard() -> TestResult {
    let memory = GatedMemory::default();
    // No page cache and no replay cache: a lookup that goes to the disk
    // reads the backend.
    let config = Config::default()
        .sweep_interval(None)
        .storage_cache_bytes(0)
        .cache_bytes(0);
    let store = Store::with_backend(memory.clone(), config)?;
    let slow = Key::new("backpressure", "slow")?;
    let neighbours = neighbours_of(&slow, 4);
    let mut claims = Vec::new();
    for key in &neighbours {
        match store.begin(key, Fingerprint::of(b"n"))? {
            Begin::Claimed(claim) => claims.push(claim),
            other => return Err(format!("{key:?} was answered {other:?}").into()),
        }
    }

    // A lookup of `slow` goes to the disk and waits there.
    memory.close(Held::Reads);
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || store.begin(&slow, Fingerprint::of(b"s")))
    };
    memory.until_one_waits()?;

    // Meanwhile its neighbours, held by live claims of this process, are
    // answered from the lock table; a `begin` that held the shard's lock
    // through its read would keep them waiting until the gate opens.
    let (answered, answers) = std::sync::mpsc::channel();
    {
        let store = store.clone();
        let neighbours = neighbours.clone();
        std::thread::spawn(move || {
            for key in &neighbours {
                let _ = answered.send(store.begin(key, Fingerprint::of(b"n")));
            }
        });
    }
    let served =
        neighbours
            .iter()
            .try_for_each(|key| match answers.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(Begin::InProgress { .. })) => Ok(()),
                Ok(other) => Err(format!("{key:?} was answered {other:?}")),
                Err(_) => Err(format!("{key:?} waited for another key's disk read")),
            });
    // Opened whatever happened, so that nothing is left waiting.
    memory.open();
    served?;
    match reader.join().map_err(|_| "the reader panicked")?? {
        Begin::Claimed(_) => {}
        other => return Err(format!("the slow key was answered {other:?}").into()),
    }
    drop(claims);
    Ok(())
}
