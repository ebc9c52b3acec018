//! Long-running churn: does the file stop growing, and what does a large
//! sweep cost the claims running beside it?
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin soak   # about 3 minutes
//! cargo run --release -p idemkv-bench --bin soak -- --seconds 30 --retention 2
//! ```
//!
//! Part 1, churn: 64 threads claim and complete fresh keys for `--seconds`
//! (default 150) on the real clock, with a retention of `--retention` seconds
//! (default 10) and the background sweeper on, so the live set settles where
//! the sweeper deletes as fast as clients add. Every 10 s it prints the live
//! records and the file size. Then the file is compacted offline
//! (`Store::compact`) to show what compaction gives back.
//!
//! Part 2, sweep impact: 200,000 records expire at once (manual clock,
//! sweeper off); 8 threads claim and complete fresh keys for 3 s without a
//! sweep, then again while `sweep_expired` deletes the 200,000, for sweep
//! batches of 1,000, 250 and 100 (the default). It prints the claim latency
//! percentiles of both phases, their ratio, and the sweep rate.
//! `--seconds 0` skips part 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use idemkv::{Config, ManualClock, Store};

type Result<T, E = idemkv_bench::BoxError> = std::result::Result<T, E>;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn churn(dir: &std::path::Path, seconds: u64, retention: u64) -> Result<()> {
    let path = dir.join("soak.redb");
    let config = Config::default().retention(Duration::from_secs(retention));
    let store = Store::open(&path, config)?;
    println!("## Churn: {seconds} s, retention {retention} s, 64 threads, 256-byte bodies\n");
    println!("| time | cycles | live records | expired | file size | bytes per live record |");
    println!("|---|---|---|---|---|---|");
    let stop = AtomicBool::new(false);
    let cycles = AtomicU64::new(0);
    let started = Instant::now();
    thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..64)
            .map(|t| {
                let (store, stop, cycles) = (&store, &stop, &cycles);
                scope.spawn(move || -> Result<()> {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        idemkv_bench::fresh_cycle(store, "soak", &format!("c{t}-{i}"))?;
                        cycles.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut next_report = 10;
        while started.elapsed() < Duration::from_secs(seconds) {
            thread::sleep(Duration::from_millis(200));
            if started.elapsed() >= Duration::from_secs(next_report) {
                let m = store.metrics();
                let size = std::fs::metadata(&path)?.len();
                println!(
                    "| {next_report} s | {} | {} | {} | {} | {:.0} |",
                    cycles.load(Ordering::Relaxed),
                    m.live_records,
                    m.expired,
                    mib(size),
                    size as f64 / m.live_records.max(1) as f64
                );
                next_report += 10;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().map_err(|_| "worker panicked")??;
        }
        Ok(())
    })?;
    let m = store.metrics();
    println!(
        "\nlast sweep took {} µs; {:.1} operations per commit",
        m.last_sweep_micros,
        m.committed_ops as f64 / m.commits.max(1) as f64
    );
    drop(store);
    let compaction = Store::compact(&path)?;
    println!(
        "offline compaction: {} → {} ({:.0}% given back), with {} live records",
        mib(compaction.bytes_before),
        mib(compaction.bytes_after),
        100.0 * (1.0 - compaction.bytes_after as f64 / compaction.bytes_before as f64),
        m.live_records
    );
    Ok(())
}

/// Latency percentiles (p50, p99) of fresh cycles from 8 threads while
/// `busy()` holds.
fn claim_latencies(
    store: &Store,
    tag: &str,
    busy: &(dyn Fn() -> bool + Sync),
) -> Result<(Duration, Duration, usize)> {
    let samples = thread::scope(|scope| -> Result<Vec<Duration>> {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let mut samples = Vec::new();
                    let mut i = 0;
                    while busy() {
                        let began = Instant::now();
                        idemkv_bench::fresh_cycle(store, "soak", &format!("{tag}-{t}-{i}"))?;
                        samples.push(began.elapsed());
                        i += 1;
                    }
                    Ok(samples)
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.join().map_err(|_| "claimer panicked")??);
        }
        Ok(all)
    })?;
    let mut sorted = samples;
    sorted.sort_unstable();
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    Ok((at(0.5), at(0.99), sorted.len()))
}

fn sweep_impact(dir: &std::path::Path, sweep_batch: usize) -> Result<()> {
    const EXPIRED: usize = 200_000;
    let clock = ManualClock::default();
    let config = Config::default()
        .clock(clock.clone())
        .retention(Duration::from_secs(3600))
        .sweep_interval(None)
        .sweep_batch(sweep_batch);
    let store = Store::open(dir.join(format!("sweep-{sweep_batch}.redb")), config)?;
    thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..64)
            .map(|t| {
                let store = &store;
                scope.spawn(move || -> Result<()> {
                    for i in (t..EXPIRED).step_by(64) {
                        idemkv_bench::fresh_cycle(store, "soak", &format!("old-{i}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "filler panicked")??;
        }
        Ok(())
    })?;
    println!(
        "\n## Sweep impact, batches of {sweep_batch}: 8 threads of fresh claims, with and without a sweep of {EXPIRED} records\n"
    );

    let deadline = Instant::now() + Duration::from_secs(3);
    let (base50, base99, base_n) = claim_latencies(&store, "base", &|| Instant::now() < deadline)?;

    // Past every record's sweep time: a completion keeps its claim's expiry
    // entry, at the end of the default 60 s lease plus the retention.
    clock.advance(Duration::from_secs(60 + 3600 + 1));
    let sweeping = Arc::new(AtomicBool::new(true));
    let (swept, sweep_time, (during50, during99, during_n)) =
        thread::scope(|scope| -> Result<_> {
            let sweeper = {
                let (store, sweeping) = (&store, Arc::clone(&sweeping));
                scope.spawn(move || {
                    let began = Instant::now();
                    let result = store.sweep_expired();
                    sweeping.store(false, Ordering::Relaxed);
                    result.map(|n| (n, began.elapsed()))
                })
            };
            let busy = || sweeping.load(Ordering::Relaxed);
            let latencies = claim_latencies(&store, "during", &busy)?;
            let (swept, took) = sweeper.join().map_err(|_| "sweeper panicked")??;
            Ok((swept, took, latencies))
        })?;
    println!("| phase | cycles | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| no sweep | {base_n} | {base50:.2?} | {base99:.2?} |");
    println!("| during the sweep | {during_n} | {during50:.2?} | {during99:.2?} |");
    println!(
        "\nswept {swept} records in {sweep_time:.2?} ({:.0} records/s) in batches of {sweep_batch}; \
         claim p99 during the sweep = {:.2}× without",
        swept as f64 / sweep_time.as_secs_f64(),
        during99.as_secs_f64() / base99.as_secs_f64()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}

fn run() -> Result<()> {
    let seconds = idemkv_bench::arg("--seconds", 150)?;
    let retention = idemkv_bench::arg("--retention", 10)?;
    let dir = tempfile::Builder::new()
        .prefix("idemkv-soak")
        .tempdir_in(std::env::current_dir()?)?;
    if seconds > 0 {
        churn(dir.path(), seconds, retention)?;
    }
    for sweep_batch in [1000, 250, 100] {
        sweep_impact(dir.path(), sweep_batch)?;
    }
    Ok(())
}
