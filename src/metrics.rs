//! Outcome counters. Cheap relaxed atomics on the hot path; a [`Metrics`]
//! snapshot for readers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the store's counters since it was opened.
///
/// The ratios tell a story about the clients: `replays / claims` is the retry
/// rate, `mismatches` are clients reusing keys for different requests (a
/// client bug), `in_progress` and `waits` are retries racing their own first
/// attempt (impatient timeouts or retry storms), and `takeovers` are attempts
/// that died holding a claim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// `begin` answers of `Claimed` (takeovers included).
    pub claims: u64,
    /// `begin` answers of `Replay`.
    pub replays: u64,
    /// `begin` answers of `Mismatch`.
    pub mismatches: u64,
    /// `begin` answers of `InProgress`.
    pub in_progress: u64,
    /// `begin_wait` calls that had to park at least once.
    pub waits: u64,
    /// Claims that took over a key whose lease had run out (also in `claims`).
    pub takeovers: u64,
    /// Successful `complete` calls.
    pub completions: u64,
    /// Successful `release` calls.
    pub releases: u64,
    /// Successful `renew` calls.
    pub renewals: u64,
    /// Holder calls refused with `LeaseLost`.
    pub leases_lost: u64,
    /// Records deleted because they expired.
    pub expired: u64,
    /// Records deleted by `remove`.
    pub removed: u64,
    /// Write transactions committed.
    pub commits: u64,
    /// Operations carried by those commits (`committed_ops / commits` is the
    /// mean group-commit batch size).
    pub committed_ops: u64,
    /// Records in the file now, in flight or completed, including expired
    /// ones the sweeper has not deleted yet. Kept up to date by the committer,
    /// not by scanning.
    pub live_records: u64,
    /// In-flight records of a dead process released at open
    /// (`Recovery::ReleaseAtOpen`).
    pub recovered_claims: u64,
    /// Sweeps run (background and `sweep_expired`).
    pub sweeps: u64,
    /// When the last sweep finished, in milliseconds since the Unix epoch by
    /// the store's clock (0 before the first).
    pub last_sweep_unix_ms: u64,
    /// How long the last sweep took, in microseconds.
    pub last_sweep_micros: u64,
    /// `begin_wait` calls registered for a wake-up right now (a gauge). A
    /// wait deregisters when it ends, however it ends, so this is bounded by
    /// the callers waiting at this moment.
    pub waiters: u64,
    /// The write path's state ([`Health::code`](crate::Health::code)): 0 ok,
    /// 1 recovering after a failed commit, 2 failed for good.
    pub health: u64,
    /// Commits that failed (each refused its batch and started a recovery).
    pub failed_commits: u64,
    /// Successful reopens after a failed commit.
    pub recoveries: u64,
    /// Sweeps that stopped on an error; the background sweeper retries at
    /// its next interval. A sweep whose commit failed also shows in
    /// `health`, like any failed commit.
    pub sweep_errors: u64,
}

/// The live counters behind [`Metrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub claims: AtomicU64,
    pub replays: AtomicU64,
    pub mismatches: AtomicU64,
    pub in_progress: AtomicU64,
    pub waits: AtomicU64,
    pub takeovers: AtomicU64,
    pub completions: AtomicU64,
    pub releases: AtomicU64,
    pub renewals: AtomicU64,
    pub leases_lost: AtomicU64,
    pub expired: AtomicU64,
    pub removed: AtomicU64,
    pub commits: AtomicU64,
    pub committed_ops: AtomicU64,
    pub live_records: AtomicU64,
    pub recovered_claims: AtomicU64,
    pub sweeps: AtomicU64,
    pub last_sweep_unix_ms: AtomicU64,
    pub last_sweep_micros: AtomicU64,
    pub health: AtomicU64,
    pub failed_commits: AtomicU64,
    pub recoveries: AtomicU64,
    pub sweep_errors: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            claims: get(&self.claims),
            replays: get(&self.replays),
            mismatches: get(&self.mismatches),
            in_progress: get(&self.in_progress),
            waits: get(&self.waits),
            takeovers: get(&self.takeovers),
            completions: get(&self.completions),
            releases: get(&self.releases),
            renewals: get(&self.renewals),
            leases_lost: get(&self.leases_lost),
            expired: get(&self.expired),
            removed: get(&self.removed),
            commits: get(&self.commits),
            committed_ops: get(&self.committed_ops),
            live_records: get(&self.live_records),
            recovered_claims: get(&self.recovered_claims),
            sweeps: get(&self.sweeps),
            last_sweep_unix_ms: get(&self.last_sweep_unix_ms),
            last_sweep_micros: get(&self.last_sweep_micros),
            waiters: 0,
            health: get(&self.health),
            failed_commits: get(&self.failed_commits),
            recoveries: get(&self.recoveries),
            sweep_errors: get(&self.sweep_errors),
        }
    }

    pub fn set_live_records(&self, n: u64) {
        self.live_records.store(n, Ordering::Relaxed);
    }
}
