//! Recovery points in the embedded store, beyond the conformance cases: a
//! point survives the process (the file), and a file written before
//! recovery points existed (format 1) opens, reads and takes checkpoints.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::*;
use idemkv::{Config, Fingerprint, Key, ManualClock, RecordState, Store, StoredResponse};

/// A holder checkpoints and its process goes away without completing: the
/// store opened again on the file hands the point to the takeover.
#[test]
fn a_checkpoint_outlives_the_process() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("idem.redb");
    let (config, clock) = manual_config();
    let k = key("outlives");
    {
        let store = Store::open(&path, config.clone())?;
        let claim = claimed(store.begin(&k, fp("a"))?);
        store.checkpoint(&claim, "charge_created", &b"ch_1"[..])?;
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

/// `tests/fixtures/format-1.redb` was written by idemkv before recovery
/// points (format 1, record encoding 1), on a manual clock at
/// 1,790,000,000 s: `fixture/completed` completed with "charged in format
/// 1", `fixture/in-flight` claimed with a 60 s lease and never completed.
/// Opening it upgrades the format to 2; every record reads as before.
#[test]
fn a_format_1_file_opens_reads_and_takes_checkpoints() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("format-1.redb");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-1.redb"),
        &path,
    )?;
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_790_000_000));
    let config = Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .sweep_interval(None);
    let payload = Fingerprint::of(b"payload");
    let completed = Key::new("fixture", "completed")?;
    let flying = Key::new("fixture", "in-flight")?;
    {
        let store = Store::open(&path, config.clone())?;
        assert_eq!(store.stats()?.format_version, 2);
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
        store.checkpoint(&claim, "charge_created", &b"ch_9"[..])?;
        std::mem::forget(claim);
        store.close()?;
    }
    let store = Store::open(&path, config)?;
    assert_eq!(store.stats()?.format_version, 2);
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
