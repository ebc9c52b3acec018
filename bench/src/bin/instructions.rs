//! A small driver for instruction counts: runs one CPU-bound operation a
//! given number of times after a setup, the loop inside [`measured`], so
//! that `valgrind --tool=callgrind --toggle-collect='*measured*'` counts the
//! loop alone (not the setup, whose commits go through threads whose timing
//! varies, nor other threads). `bench/instructions.sh` does that for every
//! operation below.
//!
//! ```text
//! instructions replay_cached 1000
//! ```
//!
//! Operations, each on an in-memory store holding 2,000 completed records
//! with 256-byte responses:
//! - `replay_cached`: `begin` answered `Replay` from the replay cache;
//! - `replay_uncached`: the same with the cache off (a read transaction and
//!   a decode);
//! - `mismatch`: `begin` with another payload on a completed key;
//! - `in_progress`: `begin` on a key this process holds;
//! - `encode` / `decode`: the record codec, 256-byte body.
//!
//! The write path, on a file with `Durability::None` (no fsync; the system
//! calls that write pages are not counted, only the CPU work that prepares
//! them):
//! - `cycle`: a lone caller's `begin` → `Claimed` + `complete` on a fresh
//!   key, store prefilled with 2,000 records. The commits run on the
//!   committer thread: `bench/instructions.sh` collects every committer
//!   thread's life (`committer::writer::serve`) beside the caller's loop,
//!   and takes off a run with an empty loop (the prefill's commits and the
//!   store's last one at close), which leaves the whole cycle's work;
//! - `cycle_journal`: the same with the write-ahead journal (its frames are
//!   synced, the commits are not, and a durable checkpoint comes once a
//!   second of wall time, so this count moves a little between runs);
//! - `redb_random_insert` / `redb_sequential_insert`: one insert into a raw
//!   redb table of 100,000 rows (32-byte keys, 366-byte values, the size of
//!   a completed record), 64 inserts per commit, keys random or ascending:
//!   what the engine spends per row, and how much of it is the random leaf;
//! - `redb_get`: a raw redb point get in a fresh read transaction, on an
//!   in-memory redb holding 2,000 rows of a completed record's size, the
//!   value copied out: what a cached replay is compared with.

use idemkv::{Begin, Config, Durability, Fingerprint, Key, Store, StoredResponse, fuzzing};
use idemkv_bench::BoxError;
use redb::{Database, ReadableDatabase, TableDefinition};

const RECORDS: usize = 2_000;
/// Rows of the raw redb table, and rows per commit, for the insert counts.
const REDB_ROWS: u64 = 100_000;
const REDB_BATCH: usize = 64;
const ROWS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("rows");

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}

fn keys() -> Result<Vec<Key>, BoxError> {
    (0..RECORDS)
        .map(|i| Ok(Key::new("instructions", &format!("key-{i}"))?))
        .collect()
}

/// The store under count: no background sweeper, whose wake-ups would be
/// counted too.
fn config() -> Config {
    Config::default().sweep_interval(None)
}

fn filled(config: Config, keys: &[Key]) -> Result<Store, BoxError> {
    let store = Store::in_memory(config)?;
    for key in keys {
        match store.begin(key, Fingerprint::of(b"a"))? {
            Begin::Claimed(claim) => {
                store.complete(claim, StoredResponse::new(201, vec![b'r'; 256]))?
            }
            other => return Err(format!("{key}: unexpected {other:?}").into()),
        }
    }
    Ok(store)
}

/// The measured loop: callgrind counts only what runs inside this function.
#[inline(never)]
fn measured(
    count: usize,
    step: &mut dyn FnMut(usize) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    for i in 0..count {
        step(i)?;
    }
    Ok(())
}

fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(operation), Some(count)) = (args.first(), args.get(1)) else {
        return Err("usage: instructions OPERATION COUNT (see the source for operations)".into());
    };
    let count: usize = count.parse()?;
    let keys = keys()?;
    let pick = |i: usize| &keys[(i * 7919) % keys.len()];
    let expect = |answer: Begin, want: &str| -> Result<(), BoxError> {
        let got = match &answer {
            Begin::Replay(_) => "replay",
            Begin::Mismatch => "mismatch",
            Begin::InProgress { .. } => "in_progress",
            _ => "other",
        };
        if got == want {
            Ok(())
        } else {
            Err(format!("expected {want}, got {answer:?}").into())
        }
    };
    match operation.as_str() {
        "replay_cached" | "replay_uncached" => {
            let cache = if operation == "replay_cached" {
                64 << 20
            } else {
                0
            };
            let store = filled(config().cache_bytes(cache), &keys)?;
            measured(count, &mut |i| {
                expect(store.begin(pick(i), Fingerprint::of(b"a"))?, "replay")
            })?;
        }
        "mismatch" => {
            let store = filled(config(), &keys)?;
            measured(count, &mut |i| {
                expect(store.begin(pick(i), Fingerprint::of(b"b"))?, "mismatch")
            })?;
        }
        "in_progress" => {
            let store = Store::in_memory(config())?;
            let mut held = Vec::new();
            for key in keys.iter().take(100) {
                match store.begin(key, Fingerprint::of(b"a"))? {
                    Begin::Claimed(claim) => held.push(claim),
                    other => return Err(format!("{key}: unexpected {other:?}").into()),
                }
            }
            measured(count, &mut |i| {
                expect(
                    store.begin(&keys[i % 100], Fingerprint::of(b"a"))?,
                    "in_progress",
                )
            })?;
            drop(held);
        }
        "encode" | "decode" => {
            let key = pick(0);
            let response = StoredResponse::new(201, vec![b'x'; 256])
                .with_header("content-type", "application/json");
            let bytes = fuzzing::encode_sample_record(key, Some(response.clone()))?;
            let encode = operation == "encode";
            measured(count, &mut |_| {
                if encode {
                    std::hint::black_box(fuzzing::encode_sample_record(
                        key,
                        Some(std::hint::black_box(response.clone())),
                    )?);
                } else {
                    std::hint::black_box(fuzzing::decode_record(std::hint::black_box(&bytes))?);
                }
                Ok(())
            })?;
        }
        "cycle" | "cycle_journal" => {
            let dir = tempfile::tempdir()?;
            // The journal's path syncs its frames; the plain one skips redb's
            // sync, which costs few instructions but much time.
            let config = if operation == "cycle_journal" {
                config().journal(true)
            } else {
                config().durability(Durability::None)
            };
            let store = Store::open(dir.path().join("cycle.redb"), config)?;
            for key in &keys {
                cycle(&store, key)?;
            }
            let fresh: Vec<Key> = (0..count)
                .map(|i| Ok(Key::new("instructions", &format!("fresh-{i}"))?))
                .collect::<Result<_, BoxError>>()?;
            measured(count, &mut |i| cycle(&store, &fresh[i]))?;
        }
        "redb_random_insert" | "redb_sequential_insert" => {
            let dir = tempfile::tempdir()?;
            let db = Database::create(dir.path().join("rows.redb"))?;
            let row = vec![b'r'; 366];
            // Prefill: the hashes of 0..REDB_ROWS, so random keys land all
            // over the tree, and ascending keys all after it.
            let random = |i: u64| *blake3::hash(&i.to_le_bytes()).as_bytes();
            let ascending = |i: u64| {
                let mut key = [0xFF; 32];
                key[..8].copy_from_slice(&i.to_be_bytes());
                key
            };
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(ROWS)?;
                for i in 0..REDB_ROWS {
                    table.insert(&random(i), row.as_slice())?;
                }
            }
            txn.commit()?;
            let key_of: &dyn Fn(u64) -> [u8; 32] = if operation == "redb_random_insert" {
                &|i| random(REDB_ROWS + i)
            } else {
                &ascending
            };
            // Commits of REDB_BATCH inserts, the last one smaller, so that
            // exactly `count` rows are inserted.
            let mut i = 0u64;
            measured(count.div_ceil(REDB_BATCH), &mut |_| {
                let mut txn = db.begin_write()?;
                txn.set_durability(redb::Durability::None)?;
                {
                    let mut table = txn.open_table(ROWS)?;
                    for _ in 0..REDB_BATCH.min(count - i as usize) {
                        table.insert(&key_of(i), row.as_slice())?;
                        i += 1;
                    }
                }
                txn.commit()?;
                Ok(())
            })?;
        }
        "redb_get" => {
            // The same number of rows as the store's, in memory as the
            // store's are, each a completed record's size; every get opens
            // a fresh read transaction and its table, and copies the value
            // out, as a replay hands its response over.
            let db =
                Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
            let row = vec![b'r'; 366];
            let hashed: Vec<[u8; 32]> = (0..RECORDS)
                .map(|i| *blake3::hash(format!("key-{i}").as_bytes()).as_bytes())
                .collect();
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(ROWS)?;
                for key in &hashed {
                    table.insert(key, row.as_slice())?;
                }
            }
            txn.commit()?;
            measured(count, &mut |i| {
                let txn = db.begin_read()?;
                let table = txn.open_table(ROWS)?;
                let value = table
                    .get(&hashed[(i * 7919) % hashed.len()])?
                    .ok_or("a prefilled row is missing")?;
                std::hint::black_box(value.value().to_vec());
                Ok(())
            })?;
        }
        other => return Err(format!("unknown operation {other:?}").into()),
    }
    Ok(())
}

/// One fresh-key cycle: claimed, then completed with a 256-byte response.
fn cycle(store: &Store, key: &Key) -> Result<(), BoxError> {
    match store.begin(key, Fingerprint::of(b"a"))? {
        Begin::Claimed(claim) => {
            Ok(store.complete(claim, StoredResponse::new(201, vec![b'r'; 256]))?)
        }
        other => Err(format!("{key}: unexpected {other:?}").into()),
    }
}
