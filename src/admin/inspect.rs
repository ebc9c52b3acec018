//! Looking inside a store: records by filter ([`Store::scan`](crate::Store::scan)),
//! a summary of the file ([`Store::stats`](crate::Store::stats)), and the
//! reads behind both. Nothing here writes.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};

use crate::clock::{from_millis, to_millis};
use crate::durability::storage::{INFLIGHT, META, META_LAST_SWEEP, RECORDS, shielded};
use crate::error::{Error, Result};
use crate::model::codec;
use crate::model::key::Key;
use crate::model::record::{Record, StoredRecord, StoredState};

/// Which records a [`Store::scan`](crate::Store::scan) visits. Every
/// condition set must hold; the default visits every live record.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use idemkv::{RecordStateFilter, ScanFilter};
///
/// // In-flight claims whose lease ended over an hour ago: stuck keys.
/// let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
/// let stuck = ScanFilter::default()
///     .state(RecordStateFilter::InFlight)
///     .lease_ended_by(an_hour_ago)
///     .limit(100);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a filter does nothing until it is passed to Store::scan"]
pub struct ScanFilter {
    scope_prefix: Option<String>,
    state: Option<RecordStateFilter>,
    created_before: Option<SystemTime>,
    lease_ended_by: Option<SystemTime>,
    limit: Option<usize>,
    include_expired: bool,
}

/// The state a [`ScanFilter`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordStateFilter {
    /// Claimed, not completed.
    InFlight,
    /// Completed, with a stored response.
    Completed,
}

impl ScanFilter {
    /// Only records whose scope starts with `prefix`.
    pub fn scope_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.scope_prefix = Some(prefix.into());
        self
    }

    /// Only records in `state`.
    pub fn state(mut self, state: RecordStateFilter) -> Self {
        self.state = Some(state);
        self
    }

    /// Only records first claimed before `time`.
    pub fn created_before(mut self, time: SystemTime) -> Self {
        self.created_before = Some(time);
        self
    }

    /// Only in-flight records whose lease ended at or before `time` (with
    /// `time` = now: claims nobody renewed in time, whose holder probably
    /// died).
    pub fn lease_ended_by(mut self, time: SystemTime) -> Self {
        self.lease_ended_by = Some(time);
        self
    }

    /// At most `limit` records.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Also records that expired and wait for the sweep (default false: they
    /// read as absent everywhere else).
    pub fn include_expired(mut self, include: bool) -> Self {
        self.include_expired = include;
        self
    }

    fn matches(&self, record: &StoredRecord, now_ms: u64) -> bool {
        let lease_until_ms = match record.state {
            StoredState::InFlight { lease_until_ms, .. } => Some(lease_until_ms),
            StoredState::Completed { .. } => None,
        };
        (self.include_expired || !record.is_expired(now_ms))
            && self
                .scope_prefix
                .as_ref()
                .is_none_or(|prefix| record.scope.starts_with(prefix.as_str()))
            && self.state.is_none_or(|state| match state {
                RecordStateFilter::InFlight => lease_until_ms.is_some(),
                RecordStateFilter::Completed => lease_until_ms.is_none(),
            })
            && self
                .created_before
                .is_none_or(|time| record.created_at_ms < to_millis(time))
            && self.lease_ended_by.is_none_or(|time| {
                lease_until_ms.is_some_and(|lease_until_ms| lease_until_ms <= to_millis(time))
            })
    }
}

/// A summary of a store's file: what [`Store::stats`](crate::Store::stats)
/// reports, from one read of every record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live records in flight.
    pub in_flight: u64,
    /// Of those, claims whose lease has ended (their holder stopped renewing:
    /// the next attempt takes over, or `remove` clears them).
    pub past_lease: u64,
    /// Live completed records.
    pub completed: u64,
    /// Records that expired and wait for the sweep.
    pub expired: u64,
    /// Records that failed verification (see `Store::verify`).
    pub damaged: u64,
    /// The scopes with the most live records, most first (at most 10).
    pub top_scopes: Vec<(String, u64)>,
    /// The key and claim time of the oldest live in-flight record.
    pub oldest_in_flight: Option<(Key, SystemTime)>,
    /// Live records that expire within the next hour.
    pub expiring_within_hour: u64,
    /// The size of the file (`None` for an in-memory store).
    pub file_bytes: Option<u64>,
    /// Bytes of the file in use by the storage engine; the rest is free
    /// space that new records reuse and [`Store::compact`](crate::Store::compact)
    /// returns to the file system.
    pub allocated_bytes: u64,
    /// The file's format version.
    pub format_version: u64,
    /// When a sweep last deleted records from this file (`None`: never).
    pub last_sweep: Option<SystemTime>,
}

impl Stats {
    /// Free space inside the file: what compaction would give back.
    pub fn reclaimable_bytes(&self) -> Option<u64> {
        self.file_bytes
            .map(|file| file.saturating_sub(self.allocated_bytes))
    }
}

/// Visits every stored record matching `filter`, in-flight records first,
/// each table in key-hash order. A record that fails verification is passed
/// as `Err(Error::Corrupted)` (filters cannot apply to it).
pub(crate) fn scan(
    db: &Database,
    filter: &ScanFilter,
    now_ms: u64,
    visit: &mut dyn FnMut(Result<Record>) -> ControlFlow<()>,
) -> Result<()> {
    shielded(|| {
        let txn = db.begin_read()?;
        let mut left = filter.limit.unwrap_or(usize::MAX);
        for table in [INFLIGHT, RECORDS] {
            for entry in txn.open_table(table)?.iter()? {
                if left == 0 {
                    return Ok(());
                }
                let (hash, bytes) = entry?;
                let item = match verified(hash.value(), bytes.value(), table.name()) {
                    Ok((key, record)) if filter.matches(&record, now_ms) => {
                        Ok(record.into_public(&key))
                    }
                    Ok(_) => continue,
                    Err(err) => Err(err),
                };
                left -= 1;
                if visit(item).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}

/// Decodes a record and checks it belongs under `hash`.
fn verified(hash: &[u8; 32], bytes: &[u8], table: &str) -> Result<(Key, StoredRecord)> {
    let record = codec::decode_record(bytes)?;
    let key = Key::new(&record.scope, &record.idempotency_key)
        .map_err(|err| Error::corrupted(format!("a record in {table} has a bad key: {err}")))?;
    if key.hash() != hash {
        return Err(Error::corrupted(format!(
            "the record of {key} in {table} is stored under another key's hash"
        )));
    }
    Ok((key, record))
}

/// The record-level part of [`Stats`]: one pass over both tables, and a range
/// count of the expiry index. `progress` is called with the number of
/// records read so far, every 4,096 records and at the end.
pub(crate) fn record_stats(
    db: &Database,
    now_ms: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Stats> {
    shielded(|| {
        let txn = db.begin_read()?;
        let mut stats = Stats::default();
        let mut scopes: HashMap<String, u64> = HashMap::new();
        let mut oldest: Option<(Key, u64)> = None;
        let mut read = 0u64;
        let hour_ms = Duration::from_secs(3600).as_millis() as u64;
        for table in [INFLIGHT, RECORDS] {
            for entry in txn.open_table(table)?.iter()? {
                let (hash, bytes) = entry?;
                read += 1;
                if read.is_multiple_of(4096) {
                    progress(read);
                }
                let Ok((key, record)) = verified(hash.value(), bytes.value(), table.name()) else {
                    stats.damaged += 1;
                    continue;
                };
                if record.is_expired(now_ms) {
                    stats.expired += 1;
                    continue;
                }
                // Read from the record, not the expiry index: a completion's
                // index entry may come up to a lease after its expiry.
                if record.expires_at_ms < now_ms.saturating_add(hour_ms) {
                    stats.expiring_within_hour += 1;
                }
                match record.state {
                    StoredState::InFlight { lease_until_ms, .. } => {
                        stats.in_flight += 1;
                        if lease_until_ms <= now_ms {
                            stats.past_lease += 1;
                        }
                        if oldest
                            .as_ref()
                            .is_none_or(|(_, created)| record.created_at_ms < *created)
                        {
                            oldest = Some((key, record.created_at_ms));
                        }
                    }
                    StoredState::Completed { .. } => stats.completed += 1,
                }
                *scopes.entry(record.scope).or_default() += 1;
            }
        }
        progress(read);
        let mut top: Vec<(String, u64)> = scopes.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(10);
        stats.top_scopes = top;
        stats.oldest_in_flight = oldest.map(|(key, created)| (key, from_millis(created)));
        let meta = txn.open_table(META)?;
        stats.format_version = meta
            .get(crate::durability::storage::META_FORMAT_VERSION)?
            .map_or(0, |v| v.value());
        stats.last_sweep = meta.get(META_LAST_SWEEP)?.map(|v| from_millis(v.value()));
        Ok(stats)
    })
}

/// Bytes of the file the storage engine uses. redb reports this only to a
/// write transaction, which is opened and aborted: the caller holds the
/// database to itself (`Engine::exclusive`), so no commit is in progress.
pub(crate) fn allocated_bytes(db: &Database) -> Result<u64> {
    shielded(|| {
        let txn = db.begin_write()?;
        let stats = txn.stats()?;
        txn.abort()?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    })
}
