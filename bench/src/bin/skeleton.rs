//! The handed-off ceiling alone, for as long as asked: 64 client threads
//! hand idemkv's write set to one writer (see `idemkv_bench::ceiling`), so
//! that the writer can be profiled beside idemkv's committer under `tail`.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin skeleton                       # 7,000 cycles per client
//! cargo run --release -p idemkv-bench --bin skeleton -- --per-client 1000 --decide
//! cargo run --release -p idemkv-bench --bin skeleton -- --broadcast        # one wake-up call per batch
//! ```
//!
//! With `--decide` the writer also reads each key's rows before writing, as
//! idemkv's committer does. With `--broadcast` it wakes its clients with one
//! `notify_all` per batch instead of one wake-up per operation. The writer
//! is the program's main thread; the line printed ends with what the
//! scheduler counted for it (CPU time per cycle, sleeps and preemptions per
//! commit; Linux only). The files go to a temporary directory in the
//! current one.

use idemkv_bench::ceiling::{self, Durable};

const CLIENTS: usize = 64;
/// Completed records in the file before the run, as in `compare`'s rounds.
const EXISTING: u64 = 100_000;

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(|| {
        let per_client = idemkv_bench::arg("--per-client", 7_000)?.max(1) as usize;
        let decide = std::env::args().any(|a| a == "--decide");
        let dir = tempfile::Builder::new()
            .prefix("idemkv-skeleton")
            .tempdir_in(std::env::current_dir()?)?;
        let broadcast = std::env::args().any(|a| a == "--broadcast");
        let shape = ceiling::Shape {
            existing: EXISTING,
            clients: CLIENTS,
            per_client,
            durable: Durable::Journal,
        };
        let run = if broadcast {
            ceiling::handed_off_broadcast(dir.path(), shape)?
        } else {
            ceiling::handed_off(dir.path(), shape, decide)?
        };
        let cycles = (CLIENTS * per_client) as f64;
        let writer = run.writer.map_or("?".to_string(), |writer| {
            writer.per(cycles, run.commits as f64)
        });
        let clients = run
            .clients_us
            .map_or("?".to_string(), |us| format!("{us:.1} µs"));
        println!(
            "{CLIENTS} clients, {per_client} cycles each: {:.0} cycles/s, {:.1} operations per commit; writer: {writer}; clients' CPU per cycle {clients}",
            run.cycles_per_s, run.ops_per_commit
        );
        Ok(())
    })
}
