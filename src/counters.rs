//! The embedded store's live counters: what every backend counts
//! ([`OutcomeCounters`]) and what only the embedded store does (commits,
//! heals, records, timings), read into a [`Metrics`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{Count, Gauge, MetricLabel, Metrics, Timings};
use crate::support::OutcomeCounters;

/// The live counters behind [`Metrics`] (the lock table keeps the waiters
/// gauge and the replay cache's counters).
#[derive(Debug)]
pub(crate) struct Counters {
    /// What every backend counts.
    pub outcomes: OutcomeCounters,
    pub commits: Count,
    pub committed_ops: Count,
    pub recovered_claims: Count,
    pub failed_commits: Count,
    pub recoveries: Count,
    pub live_records: Gauge,
    pub in_flight: Gauge,
    pub health: Gauge,
    pub last_sweep_unix_ms: AtomicU64,
    pub last_sweep_micros: AtomicU64,
    pub timings: Timings,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters::new(&MetricLabel::default())
    }
}

impl Counters {
    /// A store's counters, published with `label`.
    pub fn new(label: &MetricLabel) -> Counters {
        Counters {
            outcomes: OutcomeCounters::with_label(label),
            commits: Count::named("idemkv_commits_total", label),
            committed_ops: Count::named("idemkv_committed_ops_total", label),
            recovered_claims: Count::named("idemkv_recovered_claims_total", label),
            failed_commits: Count::named("idemkv_failed_commits_total", label),
            recoveries: Count::named("idemkv_recoveries_total", label),
            live_records: Gauge::named("idemkv_live_records", label),
            in_flight: Gauge::named("idemkv_in_flight", label),
            health: Gauge::named("idemkv_health", label),
            last_sweep_unix_ms: AtomicU64::new(0),
            last_sweep_micros: AtomicU64::new(0),
            timings: Timings::new(label),
        }
    }
}

impl Counters {
    pub fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metrics = Metrics {
            commits: self.commits.get(),
            committed_ops: self.committed_ops.get(),
            live_records: self.live_records.get(),
            in_flight: self.in_flight.get(),
            recovered_claims: self.recovered_claims.get(),
            last_sweep_unix_ms: get(&self.last_sweep_unix_ms),
            last_sweep_micros: get(&self.last_sweep_micros),
            health: self.health.get(),
            failed_commits: self.failed_commits.get(),
            recoveries: self.recoveries.get(),
            // The lock table's own (waiters, the replay cache's counters)
            // are filled in by Store::metrics.
            ..Metrics::default()
        };
        self.outcomes.fill(&mut metrics);
        metrics
    }

    pub fn set_live_records(&self, n: u64) {
        self.live_records.set(n);
    }
}
