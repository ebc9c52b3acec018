//! Where a lone caller's cycle goes beyond its two syncs.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin lone                  # about 1 minute
//! cargo run --release -p idemkv-bench --bin lone -- --seconds 2 --rounds 1
//! ```
//!
//! One thread, in one run and on the same disk, alternating for `--rounds`
//! rounds (default 3) of `--seconds` each (default 4):
//!
//! - **two syncs**: the floor of a durable cycle: two 512-byte writes into
//!   a preallocated file, each followed by `fdatasync` (what the claim's
//!   and the completion's journal frames cost at the least);
//! - **idemkv**: `begin` → `Claimed` → `complete` on fresh keys with the
//!   defaults (the journal), as `compare`'s one-client line, and again
//!   with the writeback thread's syncs and the checkpoints put off past
//!   the run (`writeback_interval` and `checkpoint_interval` of an hour),
//!   so that only the journal's frame syncs reach the disk;
//! - **SQLite**: the cycle `compare` runs on SQLite (WAL,
//!   `synchronous=FULL`): an insert that claims the key and an update
//!   that stores the response, one WAL sync each;
//! - **handoff**: the thread hand-offs the cycle makes, without a disk:
//!   a request sent through a crossbeam channel to a worker thread that
//!   spins for as long as one sync took in the first line and answers
//!   through a channel of its own, twice per cycle (claim, completion).
//!   It is the wake-up a caller parked for a sync pays, and the
//!   committer's wake-up when the next request comes.
//!
//! Each line gives cycles per second, microseconds per cycle and the
//! cycle's time beyond the two-sync floor of the same round; the store's
//! lines add the CPU time per cycle of the caller's thread and of the
//! committer's (from `/proc`; Linux only), the work that runs between
//! the syncs.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::thread;
use std::time::{Duration, Instant};

use idemkv::{Config, Store};

type Result<T, E = idemkv_bench::BoxError> = std::result::Result<T, E>;

/// Cycles of two written-and-synced 512-byte blocks, the mean sync, and
/// the thread's CPU time per cycle (µs, where `/proc` tells).
fn two_syncs(dir: &std::path::Path, seconds: f64) -> Result<(f64, Duration, Option<f64>)> {
    const SPAN: u64 = 32 << 20;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join("syncs"))?;
    file.write_all(&vec![0u8; SPAN as usize])?;
    file.sync_all()?;
    let mut block = [1u8; 512];
    let mut synced = Duration::ZERO;
    let before = idemkv_bench::ThreadStats::of(None);
    let start = Instant::now();
    let mut cycles = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for half in 0..2 {
            block[0] = block[0].wrapping_add(1);
            file.seek(SeekFrom::Start(((cycles * 2 + half) * 512) % SPAN))?;
            file.write_all(&block)?;
            let sync = Instant::now();
            file.sync_data()?;
            synced += sync.elapsed();
        }
        cycles += 1;
    }
    let rate = cycles as f64 / start.elapsed().as_secs_f64();
    let cpu = idemkv_bench::ThreadStats::of(None)
        .zip(before)
        .map(|(after, before)| after.since(before).cpu_ns as f64 / 1e3 / cycles.max(1) as f64);
    Ok((rate, synced / (2 * cycles.max(1)) as u32, cpu))
}

/// Fresh-key cycles per second on SQLite (WAL, `synchronous=FULL`), as
/// `compare`'s SQLite client makes them: an insert that claims the key,
/// then an update that stores the 256-byte response, each its own
/// autocommit transaction (so one WAL sync each).
fn sqlite(dir: &std::path::Path, name: &str, seconds: f64) -> Result<f64> {
    let conn = idemkv_bench::sqlite::open(&dir.join(name))?;
    let body = vec![b'x'; 256];
    let start = Instant::now();
    let mut cycles = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let key = format!("k{cycles}");
        let fingerprint = blake3::hash(key.as_bytes());
        let inserted = conn
            .prepare_cached(idemkv_bench::sqlite::CLAIM)?
            .execute(rusqlite::params![key, &fingerprint.as_bytes()[..]])?;
        if inserted != 1 {
            return Err(format!("{key}: already claimed").into());
        }
        conn.prepare_cached(idemkv_bench::sqlite::COMPLETE)?
            .execute(rusqlite::params![key, body])?;
        cycles += 1;
    }
    Ok(cycles as f64 / start.elapsed().as_secs_f64())
}

/// The committer thread's name as `/proc` shows it (15 bytes).
const COMMITTER: &str = "idemkv-committe";

/// Fresh-key cycles per second on a new store with `config`, and the CPU
/// time per cycle of the caller's thread and of the committer's (µs; from
/// `/proc`, `None` where it does not tell).
fn idemkv(
    dir: &std::path::Path,
    name: &str,
    config: Config,
    seconds: f64,
) -> Result<(f64, Option<f64>, Option<f64>)> {
    let store = Store::open(dir.join(name), config.sweep_interval(None))?;
    let caller_before = idemkv_bench::ThreadStats::of(None);
    let start = Instant::now();
    let mut cycles = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        idemkv_bench::fresh_cycle(&store, "lone", &format!("k{cycles}"))?;
        cycles += 1;
    }
    let rate = cycles as f64 / start.elapsed().as_secs_f64();
    let per_cycle = |ns: u64| ns as f64 / 1e3 / cycles.max(1) as f64;
    let caller = idemkv_bench::ThreadStats::of(None)
        .zip(caller_before)
        .map(|(after, before)| per_cycle(after.since(before).cpu_ns));
    // Counted from the thread's start: the open's own work is a small
    // part of a run of thousands of cycles.
    let committer = idemkv_bench::ThreadStats::of(Some(COMMITTER)).map(|s| per_cycle(s.cpu_ns));
    store.close()?;
    Ok((rate, caller, committer))
}

/// "12.3 µs", or "?" where `/proc` did not tell.
fn cpu(us: Option<f64>) -> String {
    us.map_or_else(|| "?".to_string(), |us| format!("{us:.0} µs"))
}

/// Cycles of two round trips to a worker thread that spins for `work`
/// before it answers each.
fn handoff(work: Duration, seconds: f64) -> Result<f64> {
    let (requests, inbox) = crossbeam_channel::bounded::<crossbeam_channel::Sender<()>>(16);
    let worker = thread::spawn(move || {
        while let Ok(reply) = inbox.recv() {
            let started = Instant::now();
            while started.elapsed() < work {
                std::hint::spin_loop();
            }
            let _ = reply.send(());
        }
    });
    let start = Instant::now();
    let mut cycles = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..2 {
            let (reply, answer) = crossbeam_channel::bounded(1);
            requests.send(reply)?;
            answer.recv()?;
        }
        cycles += 1;
    }
    let rate = cycles as f64 / start.elapsed().as_secs_f64();
    drop(requests);
    worker.join().map_err(|_| "the worker thread panicked")?;
    Ok(rate)
}

fn run() -> Result<()> {
    let seconds = idemkv_bench::arg("--seconds", 4)? as f64;
    let rounds = idemkv_bench::arg("--rounds", 3)?;
    let dir = tempfile::tempdir_in(".")?;
    println!(
        "| round | what | cycles/s | µs per cycle | beyond two syncs | CPU per cycle: caller, committer |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 1..=rounds {
        let (floor, sync, floor_cpu) = two_syncs(dir.path(), seconds)?;
        let floor_us = 1e6 / floor;
        let line = |what: &str, rate: f64, threads: String| {
            let us = 1e6 / rate;
            println!(
                "| {round} | {what} | {rate:.0} | {us:.0} | {:+.0} µs | {threads} |",
                us - floor_us
            );
        };
        let store_line =
            |what: &str, (rate, caller, committer): (f64, Option<f64>, Option<f64>)| {
                line(what, rate, format!("{}, {}", cpu(caller), cpu(committer)));
            };
        line(
            &format!("two syncs (one took {} µs)", sync.as_micros()),
            floor,
            format!("{} (this thread)", cpu(floor_cpu)),
        );
        line(
            "SQLite (WAL, synchronous=FULL): insert, then update",
            sqlite(dir.path(), &format!("sqlite-{round}"), seconds)?,
            String::new(),
        );
        store_line(
            "idemkv, defaults",
            idemkv(
                dir.path(),
                &format!("defaults-{round}"),
                Config::default(),
                seconds,
            )?,
        );
        let hour = Duration::from_secs(3600);
        store_line(
            "idemkv, no writeback and no checkpoint during the run",
            idemkv(
                dir.path(),
                &format!("quiet-{round}"),
                Config::default()
                    .writeback_interval(hour)
                    .checkpoint_interval(hour),
                seconds,
            )?,
        );
        line(
            &format!(
                "handoff: two round trips to a thread busy {} µs each",
                sync.as_micros()
            ),
            handoff(sync, seconds)?,
            String::new(),
        );
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}
