//! The events the store gives operators through `tracing` (feature
//! `tracing`, which a workspace test run turns on through the HTTP
//! layer): open and recovery, takeovers, sweeps, slow commits, poisoning and
//! healing, and nothing at info or above for ordinary requests.
#![cfg(feature = "tracing")]

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use idemkv::{Config, Health, StorageBackend, Store};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured event: its level and its fields (the message included),
/// rendered as `name=value` pairs.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    target: String,
    text: String,
}

/// Every event of this test binary, from every thread (the committer's and
/// the sweeper's included): the subscriber is global. Tests tell their own
/// events apart by a key, a path or a message only they produce.
fn events() -> &'static Mutex<Vec<Captured>> {
    static EVENTS: OnceLock<Mutex<Vec<Captured>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
        Mutex::new(Vec::new())
    })
}

fn captured(matching: impl Fn(&Captured) -> bool) -> Vec<Captured> {
    events()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|e| matching(e))
        .cloned()
        .collect()
}

struct Capture;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        // Spans are kept as entries too, their text starting with the name.
        let mut fields = Fields(format!("span {} ", span.metadata().name()));
        span.record(&mut fields);
        events()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Captured {
                level: *span.metadata().level(),
                target: span.metadata().target().to_string(),
                text: fields.0,
            });
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        events()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Captured {
                level: *event.metadata().level(),
                target: event.metadata().target().to_string(),
                text: fields.0,
            });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn opening_reports_what_it_found() -> TestResult {
    events();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("opened.redb");
    {
        let store = Store::open(&path, Config::default())?;
        drop(claimed(store.begin(&key("left-1"), fp("a"))?));
        drop(claimed(store.begin(&key("left-2"), fp("a"))?));
        store.close()?;
    }
    let _store = Store::open(&path, Config::default())?;
    let path_text = path.display().to_string();
    let opened = captured(|e| e.text.contains(&path_text) && e.text.contains("store opened"));
    assert_eq!(opened.len(), 2, "{opened:?}");
    let reopened = &opened[1];
    assert_eq!(
        (reopened.level, reopened.target.as_str()),
        (Level::INFO, "idemkv")
    );
    assert!(reopened.text.contains("in_flight=2"), "{reopened:?}");
    assert!(reopened.text.contains("records=2"), "{reopened:?}");
    let spans = captured(|e| e.text.starts_with("span idemkv.open") && e.text.contains(&path_text));
    assert_eq!(spans.len(), 2, "one open span per open: {spans:?}");
    Ok(())
}

#[test]
fn a_takeover_is_reported_and_ordinary_answers_are_not() -> TestResult {
    events();
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let quiet = idemkv::Key::new("events-quiet", "k")?;
    let claim = claimed(store.begin(&quiet, fp("a"))?);
    in_progress(store.begin(&quiet, fp("a"))?);
    mismatch(store.begin(&quiet, fp("b"))?);
    store.complete(claim, response("r"))?;
    replayed(store.begin(&quiet, fp("a"))?);
    assert!(captured(|e| e.text.contains("events-quiet")).is_empty());

    let taken = idemkv::Key::new("events-takeover", "k")?;
    drop(claimed(store.begin(&taken, fp("a"))?));
    clock.advance(LEASE);
    let claim = claimed(store.begin(&taken, fp("a"))?);
    let reported = captured(|e| e.text.contains("events-takeover"));
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].level, Level::INFO);
    assert!(
        reported[0]
            .text
            .contains(&format!("token={}", claim.token()))
    );
    Ok(())
}

#[test]
fn a_sweep_that_deletes_is_reported_with_its_count() -> TestResult {
    events();
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    for i in 0..7 {
        let k = key(&format!("sweep-{i}"));
        store.complete(claimed(store.begin(&k, fp("a"))?), response("x"))?;
    }
    clock.advance(SWEPT_AFTER);
    assert_eq!(store.sweep_expired()?, 7);
    let swept = captured(|e| e.text.contains("swept 7 expired"));
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert!(swept[0].text.contains("deleted=7"));
    Ok(())
}

#[test]
fn slow_commits_are_reported() -> TestResult {
    events();
    let store = Store::in_memory(Config::default().slow_commit(Duration::ZERO))?;
    store.complete(claimed(store.begin(&key("slow"), fp("a"))?), response("x"))?;
    let slow = captured(|e| e.text.contains("slow commit") && e.text.contains("threshold_ms=0"));
    assert!(
        slow.len() >= 2,
        "the claim's and the completion's commits: {slow:?}"
    );
    assert!(slow.iter().all(|e| e.level == Level::WARN));
    Ok(())
}

/// A disk in memory whose syncs fail while `failing` is set; clones share
/// it.
#[derive(Clone, Debug, Default)]
struct FlakyDisk(Arc<FlakyState>);

#[derive(Debug, Default)]
struct FlakyState {
    bytes: Mutex<Vec<u8>>,
    failing: AtomicBool,
}

impl std::ops::Deref for FlakyDisk {
    type Target = FlakyState;
    fn deref(&self) -> &FlakyState {
        &self.0
    }
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self
            .bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let source = bytes
            .get(offset as usize..offset as usize + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "events test: disk full",
            ));
        }
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn poisoning_and_healing_are_reported() -> TestResult {
    events();
    let disk = FlakyDisk::default();
    let config = Config::default().reopen_backoff(Duration::from_millis(5));
    let store = Store::with_backend(disk.clone(), config)?;
    disk.failing.store(true, Ordering::SeqCst);
    assert!(store.begin(&key("poison"), fp("a")).is_err());
    let poisoned =
        captured(|e| e.text.contains("events test: disk full") && e.level == Level::ERROR);
    assert!(!poisoned.is_empty(), "{:?}", captured(|_| true));

    disk.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(store.health(), Health::Ok) {
        assert!(
            Instant::now() < deadline,
            "never healed: {:?}",
            store.health()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let healed = captured(|e| e.text.contains("writes resume"));
    assert!(!healed.is_empty());
    assert_eq!(healed[0].level, Level::INFO);
    Ok(())
}
