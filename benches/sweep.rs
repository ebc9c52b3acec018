//! Deleting expired records: `sweep_expired` over N records, in batches of
//! `Config::sweep_batch` (100 by default) per write transaction.
//!
//! `cargo bench --bench sweep`

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use idemkv::{Begin, Config, Fingerprint, Key, ManualClock, Store, StoredResponse};

const N: usize = 100_000;

fn sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("sweep");
    group.sample_size(10);
    group.bench_function(format!("sweep_{N}_expired"), |b| {
        b.iter_batched(
            || {
                let clock = ManualClock::default();
                let dir = tempfile::tempdir().expect("tempdir");
                let config = Config::default()
                    .clock(clock.clone())
                    .retention(Duration::from_secs(60))
                    .sweep_interval(None);
                let store = Store::open(dir.path().join("sweep.redb"), config).expect("open");
                std::thread::scope(|scope| {
                    for t in 0..64 {
                        let store = &store;
                        scope.spawn(move || {
                            for i in (t..N).step_by(64) {
                                let key = Key::new("sweep", &format!("k{i}")).expect("key");
                                let Begin::Claimed(claim) =
                                    store.begin(&key, Fingerprint::of(b"r")).expect("begin")
                                else {
                                    panic!("not claimed");
                                };
                                store
                                    .complete(claim, StoredResponse::new(200, vec![b'x'; 256]))
                                    .expect("complete");
                            }
                        });
                    }
                });
                clock.advance(Duration::from_secs(61));
                (dir, store)
            },
            |(_dir, store)| assert_eq!(store.sweep_expired().expect("sweep"), N as u64),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, sweep);
criterion_main!(benches);
