//! Recovery points in the embedded store, beyond the conformance cases: a
//! point survives the process (the file), and files written by earlier
//! formats (1: before recovery points; 2: before sweep times) open, read,
//! take recovery points and are swept.

mod common;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use idemkv::{Config, Fingerprint, Key, ManualClock, RecordState, Store, StoredResponse};

/// A holder records a point and its process goes away without completing: the
/// store opened again on the file hands the point to the takeover.
#[test]
fn a_recovery_point_outlives_the_process() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("idem.redb");
    let (config, clock) = manual_config();
    let k = key("outlives");
    {
        let store = Store::open(&path, config.clone())?;
        let claim = claimed(store.begin(&k, fp("a"))?);
        store.record_progress(&claim, "charge_created", &b"ch_1"[..])?;
        // The process dies: the claim is never completed or released.
        std::mem::forget(claim);
    }
    let store = Store::open(&path, config)?;
    in_progress(store.begin(&k, fp("a"))?);
    clock.advance(LEASE);
    let claim = claimed(store.begin(&k, fp("a"))?);
    assert!(claim.is_takeover());
    let point = claim.recovered().ok_or("the point did not survive")?;
    assert_eq!(
        (point.phase(), point.state()),
        ("charge_created", &b"ch_1"[..])
    );
    assert_eq!(claim.info().recovered(), Some(point));
    store.complete(claim, response("resumed"))?;
    assert_eq!(store.metrics().resumed, 1);
    Ok(())
}

/// A copy of `tests/fixtures/NAME` in a fresh directory, and a manual clock
/// at the time the fixtures were written (1,790,000,000 s).
fn fixture(
    name: &str,
) -> Result<(tempfile::TempDir, std::path::PathBuf, ManualClock), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
        &path,
    )?;
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_790_000_000));
    Ok((dir, path, clock))
}

/// `tests/fixtures/format-1.redb` was written by idemkv before recovery
/// points (format 1, record encoding 1), on a manual clock at
/// 1,790,000,000 s: `fixture/completed` completed with "charged in format
/// 1", `fixture/in-flight` claimed with a 60 s lease and never completed.
/// Opening it upgrades the format to 4 (3 with the journal off); every record reads as before.
#[test]
fn a_format_1_file_opens_reads_and_takes_recovery_points() -> TestResult {
    let (_dir, path, clock) = fixture("format-1.redb")?;
    let config = Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .sweep_interval(None);
    let payload = Fingerprint::of(b"payload");
    let completed = Key::new("fixture", "completed")?;
    let flying = Key::new("fixture", "in-flight")?;
    {
        let store = Store::open(&path, config.clone())?;
        assert_eq!(store.stats()?.format_version, 4);
        assert!(store.verify()?.is_ok());
        assert_eq!(
            replayed(store.begin(&completed, payload)?),
            StoredResponse::new(201, "charged in format 1")
                .with_header("content-type", "text/plain")
        );
        let record = store.get(&flying)?.ok_or("the in-flight record is gone")?;
        assert!(matches!(
            record.state(),
            RecordState::InFlight { recovery: None, .. }
        ));
        in_progress(store.begin(&flying, payload)?);
        clock.advance(LEASE);
        let claim = claimed(store.begin(&flying, payload)?);
        assert!(claim.is_takeover());
        assert_eq!(claim.recovered(), None);
        store.record_progress(&claim, "charge_created", &b"ch_9"[..])?;
        std::mem::forget(claim);
        store.close()?;
    }
    let store = Store::open(&path, config)?;
    assert_eq!(store.stats()?.format_version, 4);
    assert!(store.verify()?.is_ok());
    clock.advance(LEASE);
    let claim = claimed(store.begin(&flying, payload)?);
    assert_eq!(
        claim.recovered().map(|p| (p.phase(), p.state())),
        Some(("charge_created", &b"ch_9"[..]))
    );
    store.complete(claim, response("done"))?;
    Ok(())
}

/// `tests/fixtures/format-2.redb` was written by idemkv before sweep times
/// (format 2, record encoding 2), on a manual clock at 1,790,000,000 s with
/// a 60 s lease and the default retention: `fixture/completed` completed
/// with "charged in format 2", `fixture/in-flight` claimed and given a recovery point
/// at `charge_created` / "ch_2", never completed. Opening it upgrades the
/// format to 3; the records read as before, and their expiry entries (at
/// their expiry times, as format 2 kept them) are found by the sweep.
#[test]
fn a_format_2_file_opens_reads_and_is_swept() -> TestResult {
    let (_dir, path, clock) = fixture("format-2.redb")?;
    let retention = Duration::from_secs(24 * 3600);
    let config = Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(retention)
        .sweep_interval(None);
    let payload = Fingerprint::of(b"payload");
    let completed = Key::new("fixture", "completed")?;
    let flying = Key::new("fixture", "in-flight")?;
    let store = Store::open(&path, config)?;
    assert_eq!(store.stats()?.format_version, 4);
    assert!(store.verify()?.is_ok());
    assert_eq!(
        replayed(store.begin(&completed, payload)?),
        StoredResponse::new(201, "charged in format 2").with_header("content-type", "text/plain")
    );
    clock.advance(LEASE);
    let claim = claimed(store.begin(&flying, payload)?);
    assert_eq!(
        claim.recovered().map(|p| (p.phase(), p.state())),
        Some(("charge_created", &b"ch_2"[..]))
    );
    // Completed at once: it expires a retention from now, and keeps the
    // takeover's expiry entry, a lease later.
    store.complete(claim, response("done"))?;
    assert!(store.verify()?.is_ok());
    // The format 2 completion expires one retention after it was written;
    // the sweep finds it through its old entry and leaves the new one.
    clock.advance(retention - LEASE);
    assert_eq!(store.sweep_expired()?, 1);
    assert!(store.get(&completed)?.is_none());
    assert!(store.get(&flying)?.is_some());
    // The new completion reads as absent from its expiry on, and is swept
    // at its entry, one lease later.
    clock.advance(LEASE);
    assert!(store.get(&flying)?.is_none());
    assert_eq!(store.sweep_expired()?, 0);
    assert_eq!(store.verify()?.records, 1);
    clock.advance(LEASE);
    assert_eq!(store.sweep_expired()?, 1);
    let report = store.verify()?;
    assert!(report.is_ok() && report.records == 0, "{report:?}");
    Ok(())
}
