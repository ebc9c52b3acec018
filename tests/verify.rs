//! Integrity you can check (`Store::verify`, `Config::verify_on_open`), and
//! closing that reports (`Store::close`).

mod common;

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use common::*;
use idemkv::{Config, EngineCheck, Error, StorageBackend, Store};
use redb::{ReadableDatabase, TableDefinition};

/// A file with completed and in-flight records, closed.
fn sample_file(dir: &std::path::Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join("sample.redb");
    let (config, _clock) = manual_config();
    let store = Store::open(&path, config)?;
    for i in 0..20 {
        let k = key(&format!("done-{i}"));
        store.complete(
            claimed(store.begin(&k, fp("a"))?),
            response(&format!("unique body {i:04}")),
        )?;
    }
    for i in 0..3 {
        std::mem::forget(claimed(store.begin(&key(&format!("flying-{i}")), fp("a"))?));
    }
    store.close()?;
    Ok(path)
}

#[test]
fn a_healthy_store_verifies_clean() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = sample_file(dir.path())?;
    let (config, _clock) = manual_config();
    let store = Store::open(&path, config)?;
    let report = store.verify()?;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.engine, EngineCheck::Passed);
    assert_eq!(
        (report.records, report.in_flight, report.index_entries),
        (23, 3, 23)
    );
    // The store works on after the check.
    replayed(store.begin(&key("done-0"), fp("a"))?);
    let claim = claimed(store.begin(&key("new"), fp("a"))?);
    store.complete(claim, response("new"))?;
    assert_eq!(store.verify()?.records, 24);
    Ok(())
}

#[test]
fn a_damaged_record_is_reported_and_refused_at_open_when_asked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = sample_file(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    let at = bytes
        .windows(16)
        .position(|w| w == b"unique body 0007")
        .ok_or("record bytes not found")?;
    bytes[at + 3] ^= 0x20;
    std::fs::write(&path, &bytes)?;

    let (config, _clock) = manual_config();
    let store = Store::open(&path, config.clone())?;
    let report = store.verify()?;
    assert!(!report.is_ok(), "damage went unnoticed: {report:?}");
    assert!(report.problems >= 1);
    drop(store);

    let err = Store::open(&path, config.verify_on_open(true)).expect_err("damaged");
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    Ok(())
}

const RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("records");

/// Damage that makes the index lose a key: the record is gone, its expiry
/// entry stays. A lookup answers the key as new; the check finds it.
#[test]
fn a_lost_key_is_found_by_its_orphaned_index_entry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = sample_file(dir.path())?;
    {
        let db = redb::Database::open(&path)?;
        let txn = db.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS)?;
            let victim = {
                let read = db.begin_read()?;
                let table = read.open_table(RECORDS)?;
                let first = redb::ReadableTable::first(&table)?.ok_or("no record")?;
                *first.0.value()
            };
            records.remove(&victim)?;
        }
        txn.commit()?;
    }
    let (config, _clock) = manual_config();
    let store = Store::open(&path, config.clone())?;
    let report = store.verify()?;
    assert_eq!(report.records, 22);
    assert!(
        report
            .details
            .iter()
            .any(|d| d.contains("a record may be lost")),
        "{report:?}"
    );
    drop(store);
    let err = Store::open(&path, config.verify_on_open(true)).expect_err("a key was lost");
    assert!(err.to_string().contains("a record may be lost"), "{err}");
    Ok(())
}

#[test]
fn removing_a_damaged_record_leaves_a_clean_index() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = sample_file(dir.path())?;
    let mut bytes = std::fs::read(&path)?;
    let at = bytes
        .windows(16)
        .position(|w| w == b"unique body 0011")
        .ok_or("record bytes not found")?;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes)?;
    let (config, _clock) = manual_config();
    let store = Store::open(&path, config)?;
    let damaged = key("done-11");
    assert!(matches!(
        store.begin(&damaged, fp("a")),
        Err(Error::Corrupted { .. })
    ));
    assert!(store.remove(&damaged)?);
    // redb's own pages may still carry the flipped byte's checksum error in
    // freed pages; the idemkv tables are consistent again.
    let report = store.verify()?;
    assert!(
        report.details.iter().all(|d| !d.contains("record")),
        "{report:?}"
    );
    let claim = claimed(store.begin(&damaged, fp("a"))?);
    store.complete(claim, response("again"))?;
    Ok(())
}

#[test]
fn close_reports_and_needs_the_last_handle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("close.redb");
    let store = Store::open(&path, Config::default())?;
    let clone = store.clone();
    let err = clone.close().expect_err("another handle is alive");
    assert!(matches!(err, Error::InUse { handles: 1 }), "{err:?}");
    let claim = claimed(store.begin(&key("k"), fp("a"))?);
    store.complete(claim, response("x"))?;
    store.close()?;
    // Closed means the file is free at once.
    let store = Store::open(&path, Config::default())?;
    replayed(store.begin(&key("k"), fp("a"))?);
    Ok(())
}

/// Memory whose writes panic once `explode` is set, as the storage engine
/// does on some damaged pages.
#[derive(Debug, Default, Clone)]
struct Explosive {
    bytes: Arc<RwLock<Vec<u8>>>,
    explode: Arc<AtomicBool>,
}

impl StorageBackend for Explosive {
    fn len(&self) -> io::Result<u64> {
        Ok(self
            .bytes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.read().unwrap_or_else(PoisonError::into_inner);
        let start = offset as usize;
        let source = bytes
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        assert!(
            !self.explode.load(Ordering::SeqCst),
            "the engine met damage"
        );
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        assert!(
            !self.explode.load(Ordering::SeqCst),
            "the engine met damage"
        );
        let mut bytes = self.bytes.write().unwrap_or_else(PoisonError::into_inner);
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// Closing the database writes; a panic there must not escape from `drop`
/// or `close` into the caller's thread.
#[test]
fn a_panic_while_closing_the_database_does_not_escape() -> TestResult {
    for closing in ["drop", "close"] {
        let disk = Explosive::default();
        let explode = Arc::clone(&disk.explode);
        let (config, _clock) = manual_config();
        let store = Store::with_backend(disk, config.durability(idemkv::Durability::None))?;
        store.complete(claimed(store.begin(&key("k"), fp("a"))?), response("x"))?;
        explode.store(true, Ordering::SeqCst);
        let result = catch_unwind(AssertUnwindSafe(|| match closing {
            "drop" => {
                drop(store);
                Ok(())
            }
            _ => store.close(),
        }));
        let closed = result.map_err(|_| format!("a panic escaped from {closing}"))?;
        if closing == "close" {
            assert!(
                matches!(closed, Err(Error::Corrupted { .. })),
                "the final sync met the damage: {closed:?}"
            );
        }
    }
    Ok(())
}
