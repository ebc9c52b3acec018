//! Tail latency under load, store settings side by side.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin tail                 # about a minute
//! cargo run --release -p idemkv-bench --bin tail -- --seconds 5 --rounds 1
//! cargo run --release -p idemkv-bench --bin tail -- --setting 1   # the defaults only
//! ```
//!
//! 64 threads run begin → complete on fresh keys (256-byte bodies) against
//! a new file store for `--seconds` (default 8), once per setting, and the
//! settings alternate for `--rounds` rounds (default 2), so that the disk's
//! slow and fast moments fall on all of them. Each line gives cycles per
//! second, operations per commit, what the scheduler counted for the
//! committer thread (CPU time per cycle, times it blocked and was preempted
//! per commit; from `/proc`, Linux only), the 64 client threads' CPU time
//! per cycle, and the
//! cycle's latency percentiles, p99.9 and the worst cycle included: a stall
//! of the writer shows there and not in the median.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use idemkv::{Config, Store};
use idemkv_bench::percentile;

type Result<T, E = idemkv_bench::BoxError> = std::result::Result<T, E>;

/// The settings compared, by name.
fn settings() -> Vec<(&'static str, Config)> {
    vec![
        (
            "defaults (journal, 128 MiB storage cache)",
            Config::default(),
        ),
        (
            "storage_cache_bytes(32 MiB)",
            Config::default().storage_cache_bytes(32 << 20),
        ),
        ("journal(false)", Config::default().journal(false)),
    ]
}

/// What one round measured.
struct Round {
    cycles_per_s: f64,
    ops_per_commit: f64,
    /// The committer thread's CPU time and switches, where `/proc` tells.
    committer: Option<String>,
    /// The client threads' CPU time per cycle (µs), where `/proc` tells.
    callers_us: Option<f64>,
    /// Every cycle's latency (ns), sorted.
    latencies: Vec<u64>,
}

/// The committer thread's name as `/proc` shows it (15 bytes).
const COMMITTER: &str = "idemkv-committe";

/// One round of one setting.
fn round(config: Config, seconds: u64) -> Result<Round> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("tail.redb"), config)?;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (mut latencies, callers_ns) = thread::scope(|scope| -> Result<(Vec<u64>, Option<u64>)> {
        let workers: Vec<_> = (0..64)
            .map(|t| {
                let (store, stop) = (&store, &stop);
                scope.spawn(move || -> Result<(Vec<u64>, Option<u64>)> {
                    let mut latencies = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("t{t}-{i}");
                        let began = Instant::now();
                        idemkv_bench::fresh_cycle(store, "tail", &name)?;
                        latencies.push(began.elapsed().as_nanos() as u64);
                        i += 1;
                    }
                    // This thread's CPU over its whole life: the cycles.
                    let cpu = idemkv_bench::ThreadStats::of(None).map(|stats| stats.cpu_ns);
                    Ok((latencies, cpu))
                })
            })
            .collect();
        thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut cpu = Some(0);
        for worker in workers {
            let (latencies, worker_cpu) = worker.join().map_err(|_| "worker panicked")??;
            all.extend(latencies);
            cpu = cpu.zip(worker_cpu).map(|(sum, ns)| sum + ns);
        }
        Ok((all, cpu))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    // Counted from the thread's start: it has nothing to do before the
    // clients come (and may not have named itself when the store opens).
    let committer = idemkv_bench::ThreadStats::of(Some(COMMITTER));
    let metrics = store.metrics();
    store.close()?;
    latencies.sort_unstable();
    let cycles = latencies.len().max(1) as f64;
    Ok(Round {
        cycles_per_s: latencies.len() as f64 / elapsed,
        ops_per_commit: metrics.committed_ops as f64 / metrics.commits.max(1) as f64,
        committer: committer.map(|stats| stats.per(cycles, metrics.commits as f64)),
        callers_us: callers_ns.map(|ns| ns as f64 / 1e3 / cycles),
        latencies,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn run() -> Result<()> {
    let seconds = idemkv_bench::arg("--seconds", 8)?;
    let rounds = idemkv_bench::arg("--rounds", 2)?;
    // 0: every setting; n: the n-th only.
    let only = idemkv_bench::arg("--setting", 0)? as usize;
    println!("64 threads, fresh keys, {seconds} s per run, settings alternating\n");
    println!(
        "| round | setting | cycles/s | ops/commit | committer thread | callers' CPU per cycle | p50 | p99 | p99.9 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in 1..=rounds {
        for (i, (name, config)) in settings().into_iter().enumerate() {
            if only != 0 && only != i + 1 {
                continue;
            }
            let Round {
                cycles_per_s,
                ops_per_commit,
                committer,
                callers_us,
                latencies: sorted,
            } = round(config, seconds)?;
            let committer = committer.unwrap_or_else(|| "?".to_string());
            let callers = callers_us.map_or("?".to_string(), |us| format!("{us:.1} µs"));
            println!(
                "| {r} | {name} | {cycles_per_s:.0} | {ops_per_commit:.1} | {committer} | {callers} | {} | {} | {} | {} |",
                ms(percentile(&sorted, 0.5)),
                ms(percentile(&sorted, 0.99)),
                ms(percentile(&sorted, 0.999)),
                ms(percentile(&sorted, 1.0)),
            );
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}
