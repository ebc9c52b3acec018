//! Shared by the comparison programs in `src/bin/`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::process::ExitCode;

/// Any error a comparison program stops on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a program's body and prints its error with `Display` (idemkv's
/// messages say what to do; `Debug` would hide that), exiting non-zero.
pub fn run_main(run: impl FnOnce() -> Result<(), BoxError>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

pub mod ceiling;

/// What the scheduler counted for one thread so far (Linux `/proc`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadStats {
    /// Time on a CPU (ns), from `schedstat`.
    pub cpu_ns: u64,
    /// Times it blocked (waiting for a lock, a queue, the disk).
    pub sleeps: u64,
    /// Times it was preempted while it could have run on.
    pub preempted: u64,
}

impl ThreadStats {
    /// The counts of this process's thread named `name` (as `/proc` shows
    /// it: at most 15 bytes), or of the calling thread for `None`; `None`
    /// where `/proc` does not tell (not Linux, or no such thread yet: a
    /// thread names itself once it runs).
    pub fn of(name: Option<&str>) -> Option<ThreadStats> {
        let dir = match name {
            None => std::path::PathBuf::from("/proc/thread-self"),
            Some(name) => std::fs::read_dir("/proc/self/task")
                .ok()?
                .find_map(|task| {
                    let path = task.ok()?.path();
                    let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                    (comm.trim_end() == name).then_some(path)
                })?,
        };
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        };
        Some(ThreadStats {
            cpu_ns: schedstat.split_whitespace().next()?.parse().ok()?,
            sleeps: field("voluntary_ctxt_switches:")?,
            preempted: field("nonvoluntary_ctxt_switches:")?,
        })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: ThreadStats) -> ThreadStats {
        ThreadStats {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            sleeps: self.sleeps.saturating_sub(earlier.sleeps),
            preempted: self.preempted.saturating_sub(earlier.preempted),
        }
    }

    /// "CPU per cycle, sleeps and preemptions per commit", for a report.
    pub fn per(self, cycles: f64, commits: f64) -> String {
        format!(
            "{:.1} µs/cycle, {:.1} sleeps and {:.1} preemptions per commit",
            self.cpu_ns as f64 / 1e3 / cycles.max(1.0),
            self.sleeps as f64 / commits.max(1.0),
            self.preempted as f64 / commits.max(1.0)
        )
    }
}

pub mod plot;

/// The do-it-yourself idempotency table on SQLite (WAL,
/// `synchronous=FULL`) that `compare` and `lone` measure.
pub mod sqlite {
    /// The table: key, fingerprint, state (0 claimed, 1 completed), body.
    pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS idem (k TEXT PRIMARY KEY, fp BLOB NOT NULL, state INTEGER NOT NULL, body BLOB)";
    /// Claims a key: one row inserted, or none when it is taken.
    pub const CLAIM: &str =
        "INSERT INTO idem (k, fp, state) VALUES (?1, ?2, 0) ON CONFLICT DO NOTHING";
    /// Stores a claimed key's response.
    pub const COMPLETE: &str = "UPDATE idem SET state = 1, body = ?2 WHERE k = ?1";

    /// Opens (or creates) the database at `path` in WAL mode with
    /// `synchronous=FULL`, the table made.
    ///
    /// # Errors
    ///
    /// SQLite's.
    pub fn open(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute(SCHEMA, [])?;
        Ok(conn)
    }
}

/// One begin → `Claimed` → complete on a fresh key `name` in `scope`, with
/// a 256-byte response; any other answer is an error.
pub fn fresh_cycle(store: &idemkv::Store, scope: &str, name: &str) -> Result<(), BoxError> {
    let key = idemkv::Key::new(scope, name)?;
    match store.begin(&key, idemkv::Fingerprint::of(name.as_bytes()))? {
        idemkv::Begin::Claimed(claim) => {
            Ok(store.complete(claim, idemkv::StoredResponse::new(201, vec![b'x'; 256]))?)
        }
        other => Err(format!("{name}: {other:?}").into()),
    }
}

/// The number after `name` on the command line, or `default` without one.
pub fn arg(name: &str, default: u64) -> Result<u64, BoxError> {
    let args: Vec<String> = std::env::args().collect();
    Ok(args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(default))
}

/// Uniformly spread indices below `n`, the same sequence on every call
/// (xorshift64), so that every pass of a program samples the same keys.
pub fn sample_indices(n: u64) -> impl Iterator<Item = u64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    })
}

/// The `p` quantile (0.0 to 1.0) of sorted nanosecond samples, by nearest
/// rank; zero for no samples.
pub fn percentile(sorted_ns: &[u64], p: f64) -> std::time::Duration {
    if sorted_ns.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    std::time::Duration::from_nanos(sorted_ns[rank])
}
