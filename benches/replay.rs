//! The common retry: `begin` on a completed key with the same fingerprint.
//!
//! `cargo bench --bench replay`

use criterion::{Criterion, criterion_group, criterion_main};
use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};

const RECORDS: usize = 100_000;

fn keys() -> Vec<Key> {
    (0..RECORDS)
        .map(|n| Key::new("bench", &format!("k{n}")).expect("valid key"))
        .collect()
}

/// Completes every key, 64 threads at a time so group commit fills quickly.
fn fill(store: &Store, keys: &[Key]) {
    std::thread::scope(|scope| {
        for chunk in keys.chunks(keys.len().div_ceil(64)) {
            scope.spawn(move || {
                for key in chunk {
                    let Begin::Claimed(claim) =
                        store.begin(key, Fingerprint::of(b"req")).expect("begin")
                    else {
                        panic!("fresh key not claimed");
                    };
                    store
                        .complete(claim, StoredResponse::new(201, vec![b'x'; 256]))
                        .expect("complete");
                }
            });
        }
    });
}

fn bench_replays(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    store: &Store,
    keys: &[Key],
) {
    let mut i = 0;
    group.bench_function(name, |b| {
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

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.redb");
    let keys = keys();
    let mut group = c.benchmark_group("replay_100k_records");
    {
        // The cache is write-through: the store that completed the records
        // holds them all (100k entries fit in 256 MiB).
        let store = Store::open(&path, Config::default().cache_bytes(256 << 20)).expect("open");
        fill(&store, &keys);
        bench_replays(&mut group, "cache_hot", &store, &keys);
    }
    // Reopened with the cache off, every replay reads the file.
    let store = Store::open(&path, Config::default().cache_bytes(0)).expect("open");
    bench_replays(&mut group, "cache_off", &store, &keys);
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
