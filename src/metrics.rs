//! What is counted and how it is published: the [`Metrics`] snapshot
//! readers get, the list of published metrics ([`PUBLISHED_METRICS`]), and
//! the primitives counters are made of ([`Count`], cheap relaxed atomics on
//! the hot path, and the gauges and latency histograms), which with the
//! `metrics` feature publish through the `metrics` facade as they change.
//! The facade's handles are taken when a store opens, so a recorder (an
//! exporter) must be installed before. The counters themselves are kept by
//! `support::OutcomeCounters` (what every backend counts) and
//! `counters::Counters` (the embedded store's own).
//!
//! Longer than most files here on purpose: the snapshot's fields and the
//! list of published metrics must match, and are kept side by side.

use std::sync::Arc;
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
    /// Waiting begins ([`Terms::wait`](crate::Terms::wait)) that had to park at least once.
    pub waits: u64,
    /// Claims that took over a key whose lease had run out (also in `claims`).
    pub takeovers: u64,
    /// Successful `complete` calls.
    pub completions: u64,
    /// Successful `release` calls.
    pub releases: u64,
    /// Successful `renew` calls.
    pub renewals: u64,
    /// Successful `record_progress` calls (recovery points recorded).
    pub recovery_points: u64,
    /// Takeovers that inherited a recovery point, and so resume instead of
    /// starting over (also in `takeovers`).
    pub resumed: u64,
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
    /// Records in flight now (a gauge), expired ones included until the
    /// sweep; kept up to date by the committer.
    pub in_flight: u64,
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
    /// Waiting begins registered for a wake-up right now (a gauge). A
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
    /// `begin` answers taken from the replay cache (replays and mismatches
    /// of completed keys, no read of the file).
    pub replay_cache_hits: u64,
    /// `begin` calls for keys that neither a claim of this process nor the
    /// replay cache could answer, so the record was read from the file.
    pub replay_cache_misses: u64,
}

/// What kind of value a published metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only ever grows (Prometheus: a counter; the name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations (latencies in seconds, sizes).
    Histogram,
}

impl MetricKind {
    /// The Prometheus name of the kind: `counter`, `gauge` or `histogram`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric published through the `metrics` facade: its name, its kind
/// and what it counts (the `# HELP` line in Prometheus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedMetric {
    /// The metric's name, as a dashboard queries it.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// What it counts or measures.
    pub help: &'static str,
}

impl PublishedMetric {
    /// A metric named `name` of `kind` that measures `help`.
    pub const fn new(name: &'static str, kind: MetricKind, help: &'static str) -> Self {
        PublishedMetric { name, kind, help }
    }
}

/// Every name the `metrics` feature publishes through the `metrics` facade.
/// Counters end in `_total` and match the [`Metrics`] field of the same
/// name; times are in seconds.
pub const PUBLISHED_METRICS: &[PublishedMetric] = &[
    PublishedMetric::new(
        "idemkv_claims_total",
        MetricKind::Counter,
        "begin answers of Claimed (takeovers included)",
    ),
    PublishedMetric::new(
        "idemkv_replays_total",
        MetricKind::Counter,
        "begin answers of Replay",
    ),
    PublishedMetric::new(
        "idemkv_mismatches_total",
        MetricKind::Counter,
        "begin answers of Mismatch",
    ),
    PublishedMetric::new(
        "idemkv_in_progress_total",
        MetricKind::Counter,
        "begin answers of InProgress",
    ),
    PublishedMetric::new(
        "idemkv_waits_total",
        MetricKind::Counter,
        "waiting begins that parked",
    ),
    PublishedMetric::new(
        "idemkv_takeovers_total",
        MetricKind::Counter,
        "claims that took over an expired lease",
    ),
    PublishedMetric::new(
        "idemkv_completions_total",
        MetricKind::Counter,
        "successful completes",
    ),
    PublishedMetric::new(
        "idemkv_releases_total",
        MetricKind::Counter,
        "successful releases",
    ),
    PublishedMetric::new(
        "idemkv_renewals_total",
        MetricKind::Counter,
        "successful renewals",
    ),
    PublishedMetric::new(
        "idemkv_recovery_points_total",
        MetricKind::Counter,
        "recovery points recorded",
    ),
    PublishedMetric::new(
        "idemkv_resumed_total",
        MetricKind::Counter,
        "takeovers that inherited a recovery point",
    ),
    PublishedMetric::new(
        "idemkv_leases_lost_total",
        MetricKind::Counter,
        "holder calls refused with LeaseLost",
    ),
    PublishedMetric::new(
        "idemkv_expired_total",
        MetricKind::Counter,
        "records deleted after they expired",
    ),
    PublishedMetric::new(
        "idemkv_removed_total",
        MetricKind::Counter,
        "records deleted by remove",
    ),
    PublishedMetric::new(
        "idemkv_commits_total",
        MetricKind::Counter,
        "write transactions committed",
    ),
    PublishedMetric::new(
        "idemkv_committed_ops_total",
        MetricKind::Counter,
        "operations in committed write transactions",
    ),
    PublishedMetric::new(
        "idemkv_recovered_claims_total",
        MetricKind::Counter,
        "claims released at open (Recovery::ReleaseAtOpen)",
    ),
    PublishedMetric::new("idemkv_sweeps_total", MetricKind::Counter, "sweeps run"),
    PublishedMetric::new(
        "idemkv_sweep_errors_total",
        MetricKind::Counter,
        "sweeps that stopped on an error",
    ),
    PublishedMetric::new(
        "idemkv_failed_commits_total",
        MetricKind::Counter,
        "commits that failed",
    ),
    PublishedMetric::new(
        "idemkv_recoveries_total",
        MetricKind::Counter,
        "reopens that healed the store after a failed commit",
    ),
    PublishedMetric::new(
        "idemkv_replay_cache_hits_total",
        MetricKind::Counter,
        "begin answers taken from the replay cache",
    ),
    PublishedMetric::new(
        "idemkv_replay_cache_misses_total",
        MetricKind::Counter,
        "begin calls the replay cache could not answer (a record read)",
    ),
    PublishedMetric::new(
        "idemkv_live_records",
        MetricKind::Gauge,
        "records in the file, in flight or completed",
    ),
    PublishedMetric::new("idemkv_in_flight", MetricKind::Gauge, "records in flight"),
    PublishedMetric::new(
        "idemkv_waiters",
        MetricKind::Gauge,
        "waiting begins registered for a wake-up now",
    ),
    PublishedMetric::new(
        "idemkv_health",
        MetricKind::Gauge,
        "write path: 0 ok, 1 recovering, 2 failed",
    ),
    PublishedMetric::new(
        "idemkv_begin_seconds",
        MetricKind::Histogram,
        "begin latency, whatever the answer (a claim includes its commit)",
    ),
    PublishedMetric::new(
        "idemkv_commit_seconds",
        MetricKind::Histogram,
        "write transaction latency, commit and fsync included",
    ),
    PublishedMetric::new(
        "idemkv_commit_batch_size",
        MetricKind::Histogram,
        "operations per write transaction",
    ),
    PublishedMetric::new(
        "idemkv_sweep_seconds",
        MetricKind::Histogram,
        "sweep duration",
    ),
];

/// The `store` label a store's published metrics carry
/// ([`Config::metrics_label`](crate::Config::metrics_label)), if any.
#[derive(Clone, Debug, Default)]
pub(crate) struct MetricLabel(
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] Option<Arc<str>>,
);

impl MetricLabel {
    pub fn new(label: Option<Arc<str>>) -> MetricLabel {
        MetricLabel(label)
    }

    /// The labels every published metric of the store carries: `store`,
    /// or none.
    #[cfg(feature = "metrics")]
    fn labels(&self) -> Vec<::metrics::Label> {
        self.0
            .iter()
            .map(|store| ::metrics::Label::new("store", store.to_string()))
            .collect()
    }

    #[cfg(feature = "metrics")]
    fn counter(&self, name: &'static str) -> ::metrics::Counter {
        ::metrics::counter!(name, self.labels())
    }

    #[cfg(feature = "metrics")]
    fn gauge(&self, name: &'static str) -> ::metrics::Gauge {
        ::metrics::gauge!(name, self.labels())
    }

    #[cfg(feature = "metrics")]
    fn histogram(&self, name: &'static str) -> ::metrics::Histogram {
        ::metrics::histogram!(name, self.labels())
    }
}

/// A counter: a relaxed atomic for [`Metrics`], and with the `metrics`
/// feature the facade's counter of the same name (none for a
/// `Count::default()`, which only counts).
#[derive(Debug)]
pub struct Count {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    published: ::metrics::Counter,
}

impl Count {
    /// A counter published as `name` (one of [`PUBLISHED_METRICS`]), with
    /// `label`.
    pub(crate) fn named(name: &'static str, label: &MetricLabel) -> Count {
        #[cfg(not(feature = "metrics"))]
        let _ = (name, label);
        Count {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            published: label.counter(name),
        }
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Adds one.
    pub fn bump(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.published.increment(n);
    }
}

impl Default for Count {
    fn default() -> Count {
        Count {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            published: ::metrics::Counter::noop(),
        }
    }
}

/// A gauge: a relaxed atomic, and with the `metrics` feature the facade's
/// gauge of the same name.
#[derive(Debug)]
pub(crate) struct Gauge {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    published: ::metrics::Gauge,
}

impl Gauge {
    /// A gauge published as `name` (one of [`PUBLISHED_METRICS`]), with
    /// `label`.
    pub fn named(name: &'static str, label: &MetricLabel) -> Gauge {
        #[cfg(not(feature = "metrics"))]
        let _ = (name, label);
        Gauge {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            published: label.gauge(name),
        }
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    pub fn set(&self, n: u64) {
        self.value.store(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.published.set(n as f64);
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.published.increment(n as f64);
    }

    pub fn sub(&self, n: u64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.published.decrement(n as f64);
    }
}

/// Latency and size distributions: published as histograms with the
/// `metrics` feature, nothing without it.
#[derive(Debug)]
pub(crate) struct Timings {
    #[cfg(feature = "metrics")]
    begin: ::metrics::Histogram,
    #[cfg(feature = "metrics")]
    commit: ::metrics::Histogram,
    #[cfg(feature = "metrics")]
    batch: ::metrics::Histogram,
    #[cfg(feature = "metrics")]
    sweep: ::metrics::Histogram,
}

impl Timings {
    #[cfg(feature = "metrics")]
    pub(crate) fn new(label: &MetricLabel) -> Timings {
        Timings {
            begin: label.histogram("idemkv_begin_seconds"),
            commit: label.histogram("idemkv_commit_seconds"),
            batch: label.histogram("idemkv_commit_batch_size"),
            sweep: label.histogram("idemkv_sweep_seconds"),
        }
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn new(_label: &MetricLabel) -> Timings {
        Timings {}
    }
}

/// When a timed operation started: the time with the `metrics` feature,
/// nothing (and no clock read) without it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Started(#[cfg(feature = "metrics")] std::time::Instant);

/// Starts timing an operation.
pub(crate) fn start() -> Started {
    Started(
        #[cfg(feature = "metrics")]
        std::time::Instant::now(),
    )
}

impl Timings {
    /// A `begin` that started at `started` answered.
    #[cfg(feature = "metrics")]
    pub fn begin(&self, started: Started) {
        self.begin.record(started.0.elapsed().as_secs_f64());
    }

    /// A `begin` answered (not timed without the `metrics` feature).
    #[cfg(not(feature = "metrics"))]
    pub fn begin(&self, _started: Started) {}

    /// A write transaction of `batch` operations took `took`.
    #[cfg(feature = "metrics")]
    pub fn commit(&self, took: std::time::Duration, batch: usize) {
        self.commit.record(took.as_secs_f64());
        self.batch.record(batch as f64);
    }

    /// A write transaction finished (not recorded without the feature).
    #[cfg(not(feature = "metrics"))]
    pub fn commit(&self, _took: std::time::Duration, _batch: usize) {}

    /// A sweep took `took`.
    #[cfg(feature = "metrics")]
    pub fn sweep(&self, took: std::time::Duration) {
        self.sweep.record(took.as_secs_f64());
    }

    /// A sweep finished (not recorded without the feature).
    #[cfg(not(feature = "metrics"))]
    pub fn sweep(&self, _took: std::time::Duration) {}
}

/// Gives the recorder each published metric's description (its `# HELP`
/// line in Prometheus).
#[cfg(feature = "metrics")]
pub(crate) fn describe() {
    for metric in PUBLISHED_METRICS {
        let (name, help) = (metric.name, metric.help);
        match metric.kind {
            MetricKind::Counter => ::metrics::describe_counter!(name, help),
            MetricKind::Gauge => ::metrics::describe_gauge!(name, help),
            MetricKind::Histogram => ::metrics::describe_histogram!(name, help),
        }
    }
}
