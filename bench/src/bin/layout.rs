//! Would a small index table pay? Today's layout against an index beside
//! append-ordered bodies, on raw redb, from 100k to 10M records.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin layout                  # up to 10M
//! cargo run --release -p idemkv-bench --bin layout -- --records 1000000
//! cargo run --release -p idemkv-bench --bin layout -- --records 1000000 --indexed-first
//! ```
//!
//! Two raw redb files get the same stream of fresh-key cycles, one thread,
//! `BATCH` operations per commit with claims and completions interleaved
//! as under load (a completion lands one commit after its claim), each
//! commit with `Durability::None` and a durable commit once a second, as
//! idemkv's journal mode does (the journal's own appends and syncs are the
//! same for both layouts and are left out, so what is measured is redb's
//! work for each layout):
//!
//! - **records** (idemkv's layout): a claim inserts a 116-byte in-flight
//!   row and its expiry entry; a completion removes the in-flight row and
//!   inserts the 366-byte completed record into `records`, keyed by the
//!   32-byte key hash, so every completion rewrites a random leaf of the
//!   big table.
//! - **indexed**: the same claims; a completion removes the in-flight row,
//!   appends the record's body (302 bytes) to `bodies` under the next
//!   sequence number, which only ever touches the rightmost leaf, and
//!   inserts a 64-byte index row into `index` (what deciding needs:
//!   fingerprint, state, token, expiry, the body's sequence number), so
//!   the random leaf belongs to a table about a fifth the size.
//!
//! At each size the fill rate of the last segment is printed, then 200,000
//! replays of uniformly random keys, each in a fresh read transaction on the
//! file reopened with idemkv's default 128 MiB page cache: one get in
//! `records`, or a get in `index` and then one in `bodies`. The files are
//! written to the current directory and deleted at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use idemkv_bench::ceiling::{
    CLAIM_BYTES, COMPLETED_BYTES, EXPIRY, INFLIGHT, LEASE_MS, RECORDS, RETENTION_MS,
};
use redb::{Database, ReadableDatabase, TableDefinition};

type Result<T, E = idemkv_bench::BoxError> = std::result::Result<T, E>;

const INDEX: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("index");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");

/// Operations per commit: about what idemkv's committer gathers at 64
/// threads (`ops/commit` in `scale`).
const BATCH: usize = 54;
const INDEX_BYTES: usize = 64;
const BODY_BYTES: usize = COMPLETED_BYTES - INDEX_BYTES;
const SAMPLES: usize = 200_000;
const PAGE_CACHE: usize = 128 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Records,
    Indexed,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Records => "records",
            Layout::Indexed => "indexed",
        }
    }
}

fn hash(i: u64) -> [u8; 32] {
    *blake3::hash(format!("layout-{i}").as_bytes()).as_bytes()
}

/// Runs the cycles `from..to` against `db`; returns cycles per second.
fn fill(db: &Database, layout: Layout, from: u64, to: u64) -> Result<f64> {
    let (claim_row, body_row) = (vec![b'c'; CLAIM_BYTES], vec![b'b'; BODY_BYTES]);
    let completed_row = vec![b'r'; COMPLETED_BYTES];
    let started = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut claimed: Vec<u64> = Vec::new();
    let mut next_claim = from;
    // The next body's sequence number; cycle i's completion is the i-th
    // body ever written.
    let mut next_seq = from;
    while next_claim < to || !claimed.is_empty() {
        let now_ms = started.elapsed().as_millis() as u64 + 1_000_000;
        let mut txn = db.begin_write()?;
        let checkpoint = last_checkpoint.elapsed() >= Duration::from_secs(1);
        if !checkpoint {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut inflight = txn.open_table(INFLIGHT)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            // Each layout opens only its own tables.
            let (mut records, mut indexed) = match layout {
                Layout::Records => (Some(txn.open_table(RECORDS)?), None),
                Layout::Indexed => (
                    None,
                    Some((txn.open_table(INDEX)?, txn.open_table(BODIES)?)),
                ),
            };
            let completing = std::mem::take(&mut claimed);
            let claims = (BATCH - completing.len().min(BATCH / 2)) as u64;
            for i in &completing {
                let h = hash(*i);
                inflight.remove(&h)?;
                if let Some(records) = &mut records {
                    records.insert(&h, completed_row.as_slice())?;
                }
                if let Some((index, bodies)) = &mut indexed {
                    bodies.insert(next_seq, body_row.as_slice())?;
                    let mut row = [b'i'; INDEX_BYTES];
                    row[..8].copy_from_slice(&next_seq.to_le_bytes());
                    index.insert(&h, row.as_slice())?;
                    next_seq += 1;
                }
            }
            for i in next_claim..(next_claim + claims).min(to) {
                let h = hash(i);
                inflight.insert(&h, claim_row.as_slice())?;
                expiry.insert((now_ms + LEASE_MS + RETENTION_MS, &h), ())?;
                claimed.push(i);
            }
            next_claim = (next_claim + claims).min(to);
        }
        txn.commit()?;
        if checkpoint {
            last_checkpoint = Instant::now();
        }
    }
    db.begin_write()?.commit()?;
    Ok((to - from) as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 of replaying uniformly random keys among the first `n`, on
/// the file reopened with a 128 MiB page cache.
fn replay(path: &Path, layout: Layout, n: u64) -> Result<(Duration, Duration)> {
    let db = Database::builder().set_cache_size(PAGE_CACHE).open(path)?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in idemkv_bench::sample_indices(n).take(SAMPLES) {
        let h = hash(i);
        let began = Instant::now();
        let txn = db.begin_read()?;
        let len = match layout {
            Layout::Records => {
                let records = txn.open_table(RECORDS)?;
                let row = records.get(&h)?.ok_or("a filled key is missing")?;
                row.value().len()
            }
            Layout::Indexed => {
                let index = txn.open_table(INDEX)?;
                let row = index.get(&h)?.ok_or("a filled key is missing")?;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&row.value()[..8]);
                let bodies = txn.open_table(BODIES)?;
                let body = bodies
                    .get(u64::from_le_bytes(seq))?
                    .ok_or("a body is missing")?;
                row.value().len() + body.value().len()
            }
        };
        samples.push(began.elapsed());
        if len != COMPLETED_BYTES {
            return Err(format!("read {len} bytes, wrote {COMPLETED_BYTES}").into());
        }
    }
    samples.sort_unstable();
    Ok((samples[SAMPLES / 2], samples[SAMPLES * 99 / 100]))
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}

fn run() -> Result<()> {
    let records = idemkv_bench::arg("--records", 10_000_000)?;
    let dir = tempfile::Builder::new()
        .prefix("idemkv-layout")
        .tempdir_in(std::env::current_dir()?)?;
    println!(
        "raw redb, {BATCH} operations per commit, durable once a second, {SAMPLES} random replays per point, {} MiB page cache\n",
        PAGE_CACHE >> 20
    );
    println!(
        "| records | layout | fill rate (this segment) | file size | bytes/record | replay p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Which layout fills first at each size: the second one meets a
    // machine the first has just worked (the page cache, the disk's queue).
    let layouts = if std::env::args().any(|a| a == "--indexed-first") {
        [Layout::Indexed, Layout::Records]
    } else {
        [Layout::Records, Layout::Indexed]
    };
    let paths: Vec<_> = layouts
        .iter()
        .map(|l| dir.path().join(format!("{}.redb", l.name())))
        .collect();
    let mut filled = 0;
    for point in [100_000u64, 1_000_000, 10_000_000, records] {
        if point > records || point <= filled {
            continue;
        }
        for (layout, path) in layouts.iter().zip(&paths) {
            let db = Database::builder()
                .set_cache_size(PAGE_CACHE)
                .create(path)?;
            let rate = fill(&db, *layout, filled, point)?;
            drop(db);
            let size = std::fs::metadata(path)?.len();
            let (p50, p99) = replay(path, *layout, point)?;
            println!(
                "| {point} | {} | {rate:.0}/s | {:.1} MiB | {:.0} | {} | {} |",
                layout.name(),
                size as f64 / (1 << 20) as f64,
                size as f64 / point as f64,
                micros(p50),
                micros(p99),
            );
        }
        filled = point;
    }
    Ok(())
}
