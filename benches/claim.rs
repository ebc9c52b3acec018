//! The write path and the answers that must not write.
//!
//! `cargo bench --bench claim`

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};

fn key(n: u64) -> Key {
    Key::new("bench", &format!("k{n}")).expect("valid key")
}

/// begin → Claimed → complete from one thread, durable (two commits).
fn claim_complete(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("bench.redb"), Config::default()).expect("open");
    let next = AtomicU64::new(0);
    let body = vec![b'x'; 256];
    c.bench_function("claim_complete_durable_1_thread", |b| {
        b.iter(|| {
            let key = key(next.fetch_add(1, Ordering::Relaxed));
            let Begin::Claimed(claim) = store.begin(&key, Fingerprint::of(b"req")).expect("begin")
            else {
                panic!("fresh key not claimed");
            };
            store
                .complete(claim, StoredResponse::new(201, body.clone()))
                .expect("complete");
        })
    });
}

/// A retry with another payload (completed key): answered from memory.
fn mismatch(c: &mut Criterion) {
    let store = Store::in_memory(Config::default()).expect("open");
    let k = key(0);
    let Begin::Claimed(claim) = store.begin(&k, Fingerprint::of(b"a")).expect("begin") else {
        panic!("not claimed");
    };
    store
        .complete(claim, StoredResponse::new(201, vec![b'x'; 256]))
        .expect("complete");
    let other = Fingerprint::of(b"b");
    c.bench_function("mismatch", |b| {
        b.iter(|| match store.begin(&k, other).expect("begin") {
            Begin::Mismatch => {}
            other => panic!("expected mismatch, got {other:?}"),
        })
    });
}

/// A retry while the first attempt holds the key: answered from the lock table.
fn in_progress(c: &mut Criterion) {
    let store = Store::in_memory(Config::default()).expect("open");
    let k = key(0);
    let fp = Fingerprint::of(b"a");
    let Begin::Claimed(_claim) = store.begin(&k, fp).expect("begin") else {
        panic!("not claimed");
    };
    c.bench_function("in_progress", |b| {
        b.iter(|| match store.begin(&k, fp).expect("begin") {
            Begin::InProgress { .. } => {}
            other => panic!("expected in progress, got {other:?}"),
        })
    });
}

criterion_group!(benches, claim_complete, mismatch, in_progress);
criterion_main!(benches);
