//! The store's two hot paths: a first attempt (begin → Claimed → complete,
//! durable) and a retry (begin → Replay).
//!
//! `cargo bench --bench store`

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};

fn claim_complete(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("bench.redb"), Config::default()).expect("open");
    let next = AtomicU64::new(0);
    let body = vec![b'x'; 256];
    c.bench_function("claim_complete_durable", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let key = Key::new("bench", &format!("k{n}")).expect("key");
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

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("bench.redb"), Config::default()).expect("open");
    const RECORDS: u64 = 10_000;
    for n in 0..RECORDS {
        let key = Key::new("bench", &format!("k{n}")).expect("key");
        let Begin::Claimed(claim) = store.begin(&key, Fingerprint::of(b"req")).expect("begin")
        else {
            panic!("fresh key not claimed");
        };
        store
            .complete(claim, StoredResponse::new(201, vec![b'x'; 256]))
            .expect("complete");
    }
    let keys: Vec<Key> = (0..RECORDS)
        .map(|n| Key::new("bench", &format!("k{n}")).expect("key"))
        .collect();
    let mut i = 0;
    c.bench_function("replay_10k_records", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            match store
                .begin(&keys[i], Fingerprint::of(b"req"))
                .expect("begin")
            {
                Begin::Replay(response) => response,
                other => panic!("expected replay, got {other:?}"),
            }
        })
    });
}

criterion_group!(benches, claim_complete, replay);
criterion_main!(benches);
