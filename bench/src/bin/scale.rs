//! How replay latency, file size and memory behave as the store grows.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin scale   # up to 10M records
//! cargo run --release -p idemkv-bench --bin scale -- --records 1000000
//! cargo run --release -p idemkv-bench --bin scale -- --storage-cache-mib 1024
//! ```
//!
//! With `--storage-cache-mib N`, each point also measures the cache-off
//! replays on a store opened with an N MiB storage (page) cache, beside the
//! default one, to show what the page cache buys at each size.
//!
//! Fills a store with completed records (256-byte bodies) through the public
//! API, 64 threads at a time, and at 100k, 1M and 10M records reports the file
//! size, the replay latency of uniformly random keys (with the default replay
//! cache, on the store that did the filling, so the cache holds the most
//! recent completions; and with the cache off, after a reopen), the
//! engine's own lookup of the same keys (a raw redb point get in the closed
//! store's file, same page cache: the floor for the cache-off replay) and
//! the process's resident memory. The file is written to the current directory and deleted at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};
use redb::ReadableDatabase;

type Result<T, E = idemkv_bench::BoxError> = std::result::Result<T, E>;

const THREADS: u64 = 64;
const SAMPLES: usize = 200_000;

fn key(i: u64) -> Result<Key> {
    Ok(Key::new("scale", &format!("s{i}"))?)
}

fn fill(store: &Store, from: u64, to: u64) -> Result<()> {
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || -> Result<()> {
                    let body = vec![b'x'; 256];
                    for i in (from + t..to).step_by(THREADS as usize) {
                        match store.begin(&key(i)?, Fingerprint::of(&i.to_le_bytes()))? {
                            Begin::Claimed(claim) => {
                                store.complete(claim, StoredResponse::new(201, body.clone()))?
                            }
                            other => return Err(format!("key {i}: {other:?}").into()),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "fill thread panicked")??;
        }
        Ok(())
    })
}

/// p50 and p99 of replaying uniformly random keys among the first `n`.
fn replay_latency(store: &Store, n: u64) -> Result<(Duration, Duration)> {
    sample_lookups(n, |i, key| {
        let began = Instant::now();
        let answer = store.begin(key, Fingerprint::of(&i.to_le_bytes()))?;
        let took = began.elapsed();
        match answer {
            Begin::Replay(_) => Ok(took),
            other => Err(format!("key {i}: expected a replay, got {other:?}").into()),
        }
    })
}

/// p50 and p99 of the engine's own lookup of the same keys: a raw redb
/// point get of the key's row in `records`, in a fresh read transaction, on
/// the closed store's file opened with the same page cache.
fn redb_get_latency(path: &Path, cache_bytes: usize, n: u64) -> Result<(Duration, Duration)> {
    let records: redb::TableDefinition<&[u8; 32], &[u8]> =
        redb::TableDefinition::new(idemkv::fuzzing::RECORDS_TABLE);
    let db = redb::Database::builder()
        .set_cache_size(cache_bytes)
        .open(path)?;
    sample_lookups(n, |i, key| {
        let hash = idemkv::fuzzing::table_key(key);
        let began = Instant::now();
        let txn = db.begin_read()?;
        let table = txn.open_table(records)?;
        let found = table.get(&hash)?.map(|row| row.value().len());
        let took = began.elapsed();
        match found {
            Some(_) => Ok(took),
            None => Err(format!("key {i}: no row in the file").into()),
        }
    })
}

/// Times `lookup` of `SAMPLES` uniformly random keys among the first `n`
/// (the same sequence of keys on every call, each built before its timing
/// starts); returns the p50 and p99 of the times it reports.
fn sample_lookups(
    n: u64,
    mut lookup: impl FnMut(u64, &Key) -> Result<Duration>,
) -> Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in idemkv_bench::sample_indices(n).take(SAMPLES) {
        samples.push(lookup(i, &key(i)?)?);
    }
    samples.sort_unstable();
    Ok((samples[SAMPLES / 2], samples[SAMPLES * 99 / 100]))
}

fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let big_cache: Option<usize> = args
        .iter()
        .position(|a| a == "--storage-cache-mib")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>())
        .transpose()?;
    let dir = tempfile::Builder::new()
        .prefix("idemkv-scale")
        .tempdir_in(std::env::current_dir()?)?;
    let path = dir.path().join("scale.redb");
    let config = Config::default();
    println!(
        "replay cache {} MiB, storage cache {} MiB, 256-byte bodies, {SAMPLES} random replays per point\n",
        config.settings().cache_bytes() >> 20,
        config.settings().storage_cache_bytes() >> 20
    );
    let big_column = big_cache.map_or(String::new(), |mib| {
        format!(" replay p50 (cache off, {mib} MiB storage cache) | p99 |")
    });
    println!(
        "| records | fill rate | ops/commit | file size | bytes/record | replay p50 (cache) | p99 | replay p50 (cache off) | p99 | raw redb get p50 | p99 |{big_column} RSS | peak RSS |"
    );
    println!(
        "|---|---|---|---|---|---|---|---|---|---|---|{}---|---|",
        if big_cache.is_some() { "---|---|" } else { "" }
    );

    let mut store = Store::open(&path, config.clone())?;
    let mut filled = 0;
    for point in [100_000u64, 1_000_000, 10_000_000, records] {
        if point > records || point <= filled {
            continue;
        }
        let began = Instant::now();
        fill(&store, filled, point)?;
        let rate = (point - filled) as f64 / began.elapsed().as_secs_f64();
        filled = point;
        let m = store.metrics();
        let batch = m.committed_ops as f64 / m.commits.max(1) as f64;
        // With the cache: the store that did the filling, whose write-through
        // cache holds the most recent completions, as a long-running
        // process's would.
        let (hot50, hot99) = replay_latency(&store, filled)?;
        drop(store);
        let size = file_size(&path)?;
        let uncached = Store::open(&path, config.clone().cache_bytes(0))?;
        let (cold50, cold99) = replay_latency(&uncached, filled)?;
        drop(uncached);
        let (raw50, raw99) =
            redb_get_latency(&path, config.settings().storage_cache_bytes(), filled)?;
        let big = match big_cache {
            Some(mib) => {
                let roomy = Store::open(
                    &path,
                    config.clone().cache_bytes(0).storage_cache_bytes(mib << 20),
                )?;
                let (p50, p99) = replay_latency(&roomy, filled)?;
                drop(roomy);
                format!(" {} | {} |", micros(p50), micros(p99))
            }
            None => String::new(),
        };
        println!(
            "| {filled} | {rate:.0}/s | {batch:.1} | {:.1} MiB | {:.0} | {} | {} | {} | {} | {} | {} |{big} {:.0} MiB | {:.0} MiB |",
            size as f64 / (1 << 20) as f64,
            size as f64 / filled as f64,
            micros(hot50),
            micros(hot99),
            micros(cold50),
            micros(cold99),
            micros(raw50),
            micros(raw99),
            rss_mib("VmRSS:"),
            rss_mib("VmHWM:"),
        );
        store = Store::open(&path, config.clone())?;
    }
    drop(store);
    Ok(())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}
