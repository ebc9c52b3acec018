//! Looking inside a store: `scan` with filters, `stats`, and `import` of
//! what a scan read (the round trip behind backups and moves).

mod common;

use std::ops::ControlFlow;
use std::time::Duration;

use common::*;
use idemkv::{
    Clock, Error, Record, RecordState, RecordStateFilter, ScanFilter, Store, StoredResponse,
};

/// Every record `filter` visits, sorted by key for comparison.
fn scanned(store: &Store, filter: &ScanFilter) -> Result<Vec<Record>, Error> {
    let mut records = Vec::new();
    let mut failure = None;
    store.scan(filter, |record| match record {
        Ok(record) => {
            records.push(record);
            ControlFlow::Continue(())
        }
        Err(err) => {
            failure = Some(err);
            ControlFlow::Break(())
        }
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    records.sort_by_key(|r| r.key().to_string());
    Ok(records)
}

fn names(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.key().idempotency_key().to_string())
        .collect()
}

/// A store with: `old` and `stuck` in flight (`stuck`'s lease ended),
/// `done-1` and `done-2` completed in scopes t1 and t2, and `gone`, expired.
fn populated() -> Result<(Store, idemkv::ManualClock), Box<dyn std::error::Error>> {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    let at = |scope: &str, name: &str| idemkv::Key::new(scope, name);
    store.complete(
        claimed(store.begin(&at("t1", "gone")?, fp("a"))?),
        response("g"),
    )?;
    clock.advance(RETENTION);
    drop(claimed(store.begin(&at("t1", "stuck")?, fp("a"))?));
    clock.advance(Duration::from_secs(10));
    let old = claimed(store.begin(&at("t2", "old")?, fp("a"))?);
    store.renew(&old)?;
    std::mem::forget(old);
    store.complete(
        claimed(store.begin(&at("t1", "done-1")?, fp("a"))?),
        response("1"),
    )?;
    store.complete(
        claimed(store.begin(&at("t2", "done-2")?, fp("a"))?),
        response("2"),
    )?;
    clock.advance(LEASE - Duration::from_secs(5));
    Ok((store, clock))
}

#[test]
fn scan_filters_by_state_scope_age_lease_and_limit() -> TestResult {
    let (store, clock) = populated()?;
    let all = scanned(&store, &ScanFilter::default())?;
    assert_eq!(names(&all), ["done-1", "stuck", "done-2", "old"]);

    let flying = ScanFilter::default().state(RecordStateFilter::InFlight);
    assert_eq!(names(&scanned(&store, &flying)?), ["stuck", "old"]);
    let done = ScanFilter::default().state(RecordStateFilter::Completed);
    assert_eq!(names(&scanned(&store, &done)?), ["done-1", "done-2"]);
    let t1 = ScanFilter::default().scope_prefix("t1");
    assert_eq!(names(&scanned(&store, &t1)?), ["done-1", "stuck"]);
    let stuck = ScanFilter::default().lease_ended_by(clock.now());
    assert_eq!(names(&scanned(&store, &stuck)?), ["stuck"]);
    let early = ScanFilter::default().created_before(clock.now() - LEASE);
    assert_eq!(names(&scanned(&store, &early)?), ["stuck"]);
    let with_expired = ScanFilter::default()
        .include_expired(true)
        .scope_prefix("t1");
    assert_eq!(
        names(&scanned(&store, &with_expired)?),
        ["done-1", "gone", "stuck"]
    );
    assert_eq!(scanned(&store, &ScanFilter::default().limit(3))?.len(), 3);

    // A scan shows what `get` shows.
    for record in all {
        assert_eq!(store.get(record.key())?.as_ref(), Some(&record));
    }
    // The visitor stops the scan.
    let mut seen = 0;
    store.scan(&ScanFilter::default(), |_| {
        seen += 1;
        ControlFlow::Break(())
    })?;
    assert_eq!(seen, 1);
    Ok(())
}

#[test]
fn stats_count_states_scopes_and_the_oldest_claim() -> TestResult {
    let (store, clock) = populated()?;
    let stats = store.stats()?;
    assert_eq!(
        (
            stats.in_flight,
            stats.past_lease,
            stats.completed,
            stats.expired
        ),
        (2, 1, 2, 1)
    );
    assert_eq!(stats.damaged, 0);
    assert_eq!(
        stats.top_scopes,
        vec![("t1".to_string(), 2), ("t2".to_string(), 2)]
    );
    let (oldest, since) = stats.oldest_in_flight.ok_or("no oldest claim")?;
    assert_eq!(oldest.idempotency_key(), "stuck");
    assert_eq!(
        since,
        clock.now() - LEASE + Duration::from_secs(5) - Duration::from_secs(10)
    );
    // Within the hour (the retention): the stuck claim and the two
    // completions, written before the last 55 s; not the claim renewed
    // 55 s ago, whose lease runs 5 s more.
    assert_eq!(stats.expiring_within_hour, 3);
    assert_eq!(stats.format_version, 3);
    assert_eq!((stats.file_bytes, stats.last_sweep), (None, None));
    assert!(stats.allocated_bytes > 0);

    assert_eq!(store.sweep_expired()?, 1);
    let stats = store.stats()?;
    assert_eq!(stats.expired, 0);
    assert_eq!(stats.last_sweep, Some(clock.now()));
    Ok(())
}

#[test]
fn stats_on_a_file_report_its_size_and_free_space() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stats.redb");
    let config = manual_config().0.durability(idemkv::Durability::None);
    let store = Store::open(&path, config)?;
    for i in 0..2000 {
        let k = key(&format!("k{i}"));
        store.complete(
            claimed(store.begin(&k, fp("a"))?),
            response(&"x".repeat(200)),
        )?;
    }
    for i in 0..2000 {
        store.remove(&key(&format!("k{i}")))?;
    }
    let stats = store.stats()?;
    let file = std::fs::metadata(&path)?.len();
    assert_eq!(stats.file_bytes, Some(file));
    assert!(stats.allocated_bytes < file);
    assert_eq!(
        stats.reclaimable_bytes(),
        Some(file - stats.allocated_bytes)
    );
    Ok(())
}

#[test]
fn import_writes_what_a_scan_read_exactly() -> TestResult {
    let (source, clock) = populated()?;
    let records = scanned(&source, &ScanFilter::default())?;
    // The target runs on the same clock, so nothing has expired in between.
    let target = Store::in_memory(
        idemkv::Config::default()
            .clock(clock.clone())
            .lease(LEASE)
            .retention(RETENTION)
            .sweep_interval(None),
    )?;
    let imported = target.import(records.clone())?;
    assert_eq!((imported.imported, imported.skipped_expired), (4, 0));
    assert_eq!(scanned(&target, &ScanFilter::default())?, records);
    assert_eq!(target.metrics().live_records, 4);

    // A completed record replays; the stuck claim is taken over with a
    // token above every imported one.
    let done = idemkv::Key::new("t1", "done-1")?;
    assert_eq!(replayed(target.begin(&done, fp("a"))?), response("1"));
    let highest = records
        .iter()
        .map(Record::token)
        .max()
        .ok_or("no records")?;
    let stuck = idemkv::Key::new("t1", "stuck")?;
    let takeover = claimed(target.begin(&stuck, fp("a"))?);
    assert!(takeover.is_takeover());
    assert!(takeover.token() > highest);
    target.complete(takeover, response("resumed"))?;

    // Importing again conflicts, and writes nothing.
    let before = scanned(&target, &ScanFilter::default())?;
    let err = target.import(records.clone()).expect_err("conflict");
    assert!(matches!(err, Error::ImportConflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was imported"), "{err}");
    assert_eq!(scanned(&target, &ScanFilter::default())?, before);
    Ok(())
}

/// The token ceiling an import raises is persisted with it: after the
/// file is closed and opened again, a new claim's token is still above
/// every imported one (fencing across restarts).
#[test]
fn import_persists_the_token_ceiling_in_the_file() -> TestResult {
    let (source, clock) = populated()?;
    const IMPORTED_TOKEN: u64 = 50_000_000;
    let records: Vec<Record> = scanned(&source, &ScanFilter::default())?
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let mut parts = record.into_parts();
            parts.token = IMPORTED_TOKEN + i as u64;
            Record::from_parts(parts)
        })
        .collect();
    let highest = IMPORTED_TOKEN + records.len() as u64 - 1;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("imported.redb");
    let config = || {
        idemkv::Config::default()
            .clock(clock.clone())
            .lease(LEASE)
            .retention(RETENTION)
            .sweep_interval(None)
    };
    let target = Store::open(&path, config())?;
    target.import(records)?;
    target.close()?;
    let reopened = Store::open(&path, config())?;
    let fresh = claimed(reopened.begin(&idemkv::Key::new("t9", "fresh")?, fp("a"))?);
    assert!(
        fresh.token() > highest,
        "token {} after a reopen is not above the imported {highest}",
        fresh.token()
    );
    let stuck = idemkv::Key::new("t1", "stuck")?;
    let takeover = claimed(reopened.begin(&stuck, fp("a"))?);
    assert!(takeover.token() > highest);
    Ok(())
}

#[test]
fn import_refuses_duplicates_and_skips_what_expired() -> TestResult {
    let (source, clock) = populated()?;
    let records = scanned(&source, &ScanFilter::default())?;
    let (config, target_clock) = manual_config();
    let target = Store::in_memory(config)?;
    target_clock.advance(clock.now().duration_since(target_clock.now())?);

    let twice = vec![records[0].clone(), records[0].clone()];
    assert!(matches!(
        target.import(twice),
        Err(Error::ImportConflict { .. })
    ));
    assert_eq!(target.metrics().live_records, 0, "nothing half-imported");

    // A record whose expiry has passed is left out.
    let mut parts = records[0].clone().into_parts();
    parts.expires_at = clock.now();
    parts.state = RecordState::Completed {
        response: StoredResponse::new(200, "late"),
    };
    let imported = target.import([Record::from_parts(parts)])?;
    assert_eq!((imported.imported, imported.skipped_expired), (0, 1));
    Ok(())
}
