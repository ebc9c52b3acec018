//! The `metrics` feature (turned on for a workspace test run by the
//! HTTP layer's tests): every name in `PUBLISHED_METRICS` is registered with
//! the installed recorder, with its kind, and the facade's values follow the
//! store's own `Metrics`.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use common::*;
use idemkv::{MetricKind, PUBLISHED_METRICS, Store};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// What the recorder saw of one metric.
#[derive(Clone)]
enum Seen {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Samples>),
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

/// A recorder that keeps every metric it is asked to register.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<HashMap<String, Seen>>>);

impl Recording {
    fn seen(&self, name: &str) -> Option<Seen> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn keep(&self, key: &Key, make: impl FnOnce() -> Seen) -> Seen {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name_of(key))
            .or_insert_with(make)
            .clone()
    }
}

/// A metric's name, with its labels as `{name=value,...}` when it has any.
fn name_of(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_string()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.keep(key, || Seen::Counter(Arc::default())) {
            Seen::Counter(value) => Counter::from_arc(value),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.keep(key, || Seen::Gauge(Arc::default())) {
            Seen::Gauge(value) => Gauge::from_arc(value),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.keep(key, || Seen::Histogram(Arc::default())) {
            Seen::Histogram(samples) => Histogram::from_arc(samples),
            _ => Histogram::noop(),
        }
    }
}

fn counter(recording: &Recording, name: &str) -> u64 {
    match recording.seen(name) {
        Some(Seen::Counter(value)) => value.load(Ordering::SeqCst),
        _ => panic!("{name} is not a registered counter"),
    }
}

fn gauge(recording: &Recording, name: &str) -> f64 {
    match recording.seen(name) {
        Some(Seen::Gauge(value)) => f64::from_bits(value.load(Ordering::SeqCst)),
        _ => panic!("{name} is not a registered gauge"),
    }
}

fn samples(recording: &Recording, name: &str) -> usize {
    match recording.seen(name) {
        Some(Seen::Histogram(samples)) => samples
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        _ => panic!("{name} is not a registered histogram"),
    }
}

/// One test in this binary: the recorder is global, installed once.
#[test]
fn every_published_name_is_registered_and_follows_the_store() -> TestResult {
    let recording = Recording::default();
    metrics::set_global_recorder(recording.clone()).map_err(|_| "a recorder was installed")?;

    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    for metric in PUBLISHED_METRICS {
        let (name, kind) = (metric.name, metric.kind);
        let registered = matches!(
            (recording.seen(name), kind),
            (Some(Seen::Counter(_)), MetricKind::Counter)
                | (Some(Seen::Gauge(_)), MetricKind::Gauge)
                | (Some(Seen::Histogram(_)), MetricKind::Histogram)
        );
        assert!(registered, "{name} is not registered as a {kind:?}");
    }

    let k = key("published");
    let claim = claimed(store.begin(&k, fp("a"))?);
    assert_eq!(gauge(&recording, "idemkv_in_flight"), 1.0);
    in_progress(store.begin(&k, fp("a"))?);
    mismatch(store.begin(&k, fp("b"))?);
    store.complete(claim, response("r"))?;
    replayed(store.begin(&k, fp("a"))?);
    drop(claimed(store.begin(&key("dropped"), fp("a"))?));
    clock.advance(LEASE + RETENTION);
    store.sweep_expired()?;

    let m = store.metrics();
    for (name, expected) in [
        ("idemkv_claims_total", m.claims),
        ("idemkv_replays_total", m.replays),
        ("idemkv_mismatches_total", m.mismatches),
        ("idemkv_in_progress_total", m.in_progress),
        ("idemkv_completions_total", m.completions),
        ("idemkv_expired_total", m.expired),
        ("idemkv_commits_total", m.commits),
        ("idemkv_committed_ops_total", m.committed_ops),
        ("idemkv_replay_cache_hits_total", m.replay_cache_hits),
        ("idemkv_replay_cache_misses_total", m.replay_cache_misses),
    ] {
        assert_eq!(counter(&recording, name), expected, "{name}");
    }
    assert_eq!((m.claims, m.replays, m.mismatches, m.expired), (2, 1, 1, 2));
    assert_eq!(gauge(&recording, "idemkv_live_records"), 0.0);
    assert_eq!(gauge(&recording, "idemkv_in_flight"), 0.0);
    assert_eq!(gauge(&recording, "idemkv_health"), 0.0);
    assert_eq!(samples(&recording, "idemkv_begin_seconds"), 5);
    assert_eq!(
        samples(&recording, "idemkv_commit_seconds") as u64,
        m.commits
    );
    assert_eq!(
        samples(&recording, "idemkv_commit_batch_size") as u64,
        m.commits
    );
    assert_eq!(samples(&recording, "idemkv_sweep_seconds"), 1);

    // Two stores in one process, each with a name of its own: their metrics
    // are apart, and the unnamed store's are untouched.
    let claims_before = counter(&recording, "idemkv_claims_total");
    let (config, _clock) = manual_config();
    let a = Store::in_memory(config.clone().metrics_label("a"))?;
    let b = Store::in_memory(config.metrics_label("b"))?;
    // Held while the gauges are read (in flight: 2 and 1).
    let _held = [
        claimed(a.begin(&key("a1"), fp("a"))?),
        claimed(a.begin(&key("a2"), fp("a"))?),
        claimed(b.begin(&key("b1"), fp("a"))?),
    ];
    assert_eq!(counter(&recording, "idemkv_claims_total{store=a}"), 2);
    assert_eq!(counter(&recording, "idemkv_claims_total{store=b}"), 1);
    assert_eq!(gauge(&recording, "idemkv_in_flight{store=a}"), 2.0);
    assert_eq!(gauge(&recording, "idemkv_in_flight{store=b}"), 1.0);
    assert_eq!(counter(&recording, "idemkv_claims_total"), claims_before);
    for metric in PUBLISHED_METRICS {
        assert!(
            recording
                .seen(&format!("{}{{store=a}}", metric.name))
                .is_some(),
            "{} is published without the store's label",
            metric.name
        );
    }
    Ok(())
}
