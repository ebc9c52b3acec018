//! Side-by-side comparison: idemkv against what a user would build instead.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin compare   # everything, default sizes
//! cargo run --release -p idemkv-bench --bin compare -- --quick   # smaller runs (CI smoke)
//! cargo run --release -p idemkv-bench --bin compare -- --svg docs/img   # and write the charts
//! cargo run --release -p idemkv-bench --bin compare -- --rounds 9   # more rounds against the engine (3 by default)
//! ```
//!
//! Every system runs the same workloads with the same 256-byte responses:
//!
//! - `fresh`: every request a new key (claim → side effect → store the
//!   response), with 1, 4, 16 and 64 concurrent clients and the same number
//!   of requests at each count; `--svg DIR` charts throughput and latency
//!   percentiles against the client count;
//! - `storm`: a retry storm, 90% of requests retry one of the client's
//!   recent keys (answered from the stored response), 10% are fresh;
//! - `hot`: 64 clients send every request for the same key at once; one runs
//!   it (1 ms of work), the others wait for its response (idemkv:
//!   `Terms::wait`; the others poll every 1 ms, the usual do-it-yourself way).
//!
//! Before them, single-thread probes for the ratios docs/benchmarks.md
//! reports: one claim+complete cycle against one durable redb commit
//! (sampled alternately), and one replay against a raw redb point get and a
//! SQLite point select. After them, idemkv against its engine: rounds of the
//! 64-client fresh run, each followed by its ceiling: idemkv's write set
//! applied by one thread to a raw redb file at the batch size the run
//! reached, made durable by a minimal journal (the default idemkv) or by
//! one durable redb commit per batch (idemkv with the journal off), and
//! the journal ceiling's write set fed by 64 client threads to one writer
//! (the handed-off ceiling: the design's own cost on these cores); see
//! `idemkv_bench::ceiling`.
//!
//! Systems: idemkv (default settings: durable, with its write-ahead
//! journal), idemkv with the journal off (`Config::journal(false)`: one
//! durable redb commit per batch), raw redb with one durable commit per
//! operation, SQLite (rusqlite, bundled; WAL, synchronous=FULL), PostgreSQL
//! (127.0.0.1:5432, database `test`, synchronous_commit=on) and Redis
//! (127.0.0.1:6379, `SET NX PX` + `GET`; it keeps nothing on disk here, so it
//! is not durable). A system that cannot be reached is reported as skipped,
//! with the reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use idemkv_bench::ceiling::{self, Durable};
use idemkv_bench::plot::Point;
use idemkv_bench::{BoxError, percentile};
type Result<T, E = BoxError> = std::result::Result<T, E>;

const CLIENTS: usize = 64;
/// Client counts of the fresh-key sweep (and the plots).
const CLIENT_COUNTS: [usize; 4] = [1, 4, 16, 64];
const BODY: usize = 256;
const HOT_WORK: Duration = Duration::from_millis(1);
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// What one request ended as.
#[derive(Debug, PartialEq)]
enum Answer {
    /// This request ran the side effect and stored its response.
    Executed,
    /// The stored response came back.
    Replayed(Vec<u8>),
    /// Another request holds the key.
    Busy,
    /// Same key, different payload.
    Mismatch,
}

/// One client connection of a system under test.
trait Client: Send {
    /// begin → (side effect of `work`) → complete, or the stored answer.
    fn request(&mut self, key: &str, fp: &[u8; 32], body: &[u8], work: Duration) -> Result<Answer>;

    /// Like `request`, but a busy key is waited for.
    fn request_wait(
        &mut self,
        key: &str,
        fp: &[u8; 32],
        body: &[u8],
        work: Duration,
    ) -> Result<Answer> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            match self.request(key, fp, body, work)? {
                Answer::Busy if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(1))
                }
                answer => return Ok(answer),
            }
        }
    }

    /// Reads a completed key's response (single-thread replay probe).
    fn replay(&mut self, key: &str, fp: &[u8; 32]) -> Result<Vec<u8>> {
        match self.request(key, fp, b"", Duration::ZERO)? {
            Answer::Replayed(body) => Ok(body),
            other => Err(format!("expected a replay of {key}, got {other:?}").into()),
        }
    }
}

/// A system: makes clients, and says whether it is durable.
trait System: Sync {
    fn name(&self) -> &'static str;
    fn note(&self) -> &'static str {
        "durable"
    }
    fn client(&self) -> Result<Box<dyn Client>>;
}

fn work(duration: Duration) {
    if !duration.is_zero() {
        thread::sleep(duration);
    }
}

// ---------------------------------------------------------------- idemkv

struct Idemkv {
    name: &'static str,
    store: Store,
}

/// The names idemkv runs under: default settings (with the write-ahead
/// journal), and with the journal off (`Config::journal(false)`).
const IDEMKV: &str = "idemkv";
const IDEMKV_NO_JOURNAL: &str = "idemkv (no journal)";

impl System for Idemkv {
    fn name(&self) -> &'static str {
        self.name
    }
    fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(IdemkvClient {
            store: self.store.clone(),
        }))
    }
}

struct IdemkvClient {
    store: Store,
}

impl IdemkvClient {
    fn answer(&self, begin: Begin, body: &[u8], work_for: Duration) -> Result<Answer> {
        Ok(match begin {
            Begin::Claimed(claim) => {
                work(work_for);
                self.store
                    .complete(claim, StoredResponse::new(201, body.to_vec()))?;
                Answer::Executed
            }
            Begin::Replay(response) => Answer::Replayed(response.into_body()),
            Begin::InProgress { .. } => Answer::Busy,
            Begin::Mismatch => Answer::Mismatch,
        })
    }
}

impl Client for IdemkvClient {
    fn request(&mut self, key: &str, fp: &[u8; 32], body: &[u8], work: Duration) -> Result<Answer> {
        let key = Key::new("compare", key)?;
        let begin = self.store.begin(&key, Fingerprint::from_bytes(*fp))?;
        self.answer(begin, body, work)
    }

    fn request_wait(
        &mut self,
        key: &str,
        fp: &[u8; 32],
        body: &[u8],
        work: Duration,
    ) -> Result<Answer> {
        let key = Key::new("compare", key)?;
        let begin = self.store.begin_with(
            &key,
            Fingerprint::from_bytes(*fp),
            idemkv::Terms::default().wait(WAIT_LIMIT),
        )?;
        self.answer(begin, body, work)
    }
}

// ---------------------------------------------------------------- raw redb

const RAW: TableDefinition<&str, &[u8]> = TableDefinition::new("idem");

/// Raw redb, the floor without group commit: a read transaction to look, one
/// durable write transaction per claim and per completion.
struct RawRedb {
    db: Arc<Database>,
}

impl System for RawRedb {
    fn name(&self) -> &'static str {
        "raw redb (1 commit/op)"
    }
    fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(RawRedbClient {
            db: Arc::clone(&self.db),
        }))
    }
}

struct RawRedbClient {
    db: Arc<Database>,
}

/// Row layout shared by the do-it-yourself systems: state byte (0 in flight,
/// 1 done), 32-byte fingerprint, body.
fn row(state: u8, fp: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(33 + body.len());
    row.push(state);
    row.extend_from_slice(fp);
    row.extend_from_slice(body);
    row
}

/// The answer for a row of the SQL systems' idempotency table.
fn judge_columns(stored_fp: &[u8], done: bool, body: Option<Vec<u8>>, fp: &[u8; 32]) -> Answer {
    if stored_fp != fp {
        Answer::Mismatch
    } else if !done {
        Answer::Busy
    } else {
        Answer::Replayed(body.unwrap_or_default())
    }
}

fn judge_row(row: &[u8], fp: &[u8; 32]) -> Answer {
    if row.len() < 33 {
        return Answer::Mismatch;
    }
    judge_columns(&row[1..33], row[0] != 0, Some(row[33..].to_vec()), fp)
}

impl Client for RawRedbClient {
    fn request(
        &mut self,
        key: &str,
        fp: &[u8; 32],
        body: &[u8],
        work_for: Duration,
    ) -> Result<Answer> {
        {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(RAW)?;
            if let Some(existing) = table.get(key)? {
                return Ok(judge_row(existing.value(), fp));
            }
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RAW)?;
            if let Some(existing) = table.get(key)? {
                return Ok(judge_row(existing.value(), fp));
            }
            table.insert(key, row(0, fp, b"").as_slice())?;
        }
        txn.commit()?;
        work(work_for);
        let txn = self.db.begin_write()?;
        txn.open_table(RAW)?
            .insert(key, row(1, fp, body).as_slice())?;
        txn.commit()?;
        Ok(Answer::Executed)
    }
}

// ---------------------------------------------------------------- SQLite

struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    fn open(path: &Path) -> Result<rusqlite::Connection> {
        Ok(idemkv_bench::sqlite::open(path)?)
    }
}

impl System for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite (WAL, sync=FULL)"
    }
    fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(SqliteClient {
            conn: Sqlite::open(&self.path)?,
        }))
    }
}

struct SqliteClient {
    conn: rusqlite::Connection,
}

impl Client for SqliteClient {
    fn request(
        &mut self,
        key: &str,
        fp: &[u8; 32],
        body: &[u8],
        work_for: Duration,
    ) -> Result<Answer> {
        let inserted = self
            .conn
            .prepare_cached(idemkv_bench::sqlite::CLAIM)?
            .execute(rusqlite::params![key, &fp[..]])?;
        if inserted == 1 {
            work(work_for);
            self.conn
                .prepare_cached(idemkv_bench::sqlite::COMPLETE)?
                .execute(rusqlite::params![key, body])?;
            return Ok(Answer::Executed);
        }
        self.replay_or_judge(key, fp)
    }

    fn replay(&mut self, key: &str, fp: &[u8; 32]) -> Result<Vec<u8>> {
        match self.replay_or_judge(key, fp)? {
            Answer::Replayed(body) => Ok(body),
            other => Err(format!("expected a replay, got {other:?}").into()),
        }
    }
}

impl SqliteClient {
    fn replay_or_judge(&mut self, key: &str, fp: &[u8; 32]) -> Result<Answer> {
        let mut select = self
            .conn
            .prepare_cached("SELECT fp, state, body FROM idem WHERE k = ?1")?;
        let (stored_fp, state, stored_body): (Vec<u8>, i64, Option<Vec<u8>>) =
            select.query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(judge_columns(&stored_fp, state != 0, stored_body, fp))
    }
}

// ---------------------------------------------------------------- PostgreSQL

const PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3";

struct Postgres;

impl Postgres {
    fn connect() -> Result<postgres::Client> {
        let mut client = postgres::Client::connect(PG_URL, postgres::NoTls)?;
        client.batch_execute("SET synchronous_commit = on")?;
        Ok(client)
    }

    fn reset() -> Result<()> {
        Postgres::connect()?.batch_execute(
            "DROP TABLE IF EXISTS idemkv_compare;
             CREATE TABLE idemkv_compare (k TEXT PRIMARY KEY, fp BYTEA NOT NULL, state SMALLINT NOT NULL, body BYTEA)",
        )?;
        Ok(())
    }
}

impl System for Postgres {
    fn name(&self) -> &'static str {
        "PostgreSQL (sync commit)"
    }
    fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(PostgresClient {
            client: Postgres::connect()?,
        }))
    }
}

struct PostgresClient {
    client: postgres::Client,
}

impl Client for PostgresClient {
    fn request(
        &mut self,
        key: &str,
        fp: &[u8; 32],
        body: &[u8],
        work_for: Duration,
    ) -> Result<Answer> {
        let inserted = self.client.execute(
            "INSERT INTO idemkv_compare (k, fp, state) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            &[&key, &&fp[..]],
        )?;
        if inserted == 1 {
            work(work_for);
            self.client.execute(
                "UPDATE idemkv_compare SET state = 1, body = $2 WHERE k = $1",
                &[&key, &body],
            )?;
            return Ok(Answer::Executed);
        }
        let row = self.client.query_one(
            "SELECT fp, state, body FROM idemkv_compare WHERE k = $1",
            &[&key],
        )?;
        let state: i16 = row.get(1);
        Ok(judge_columns(
            &row.get::<_, Vec<u8>>(0),
            state != 0,
            row.get(2),
            fp,
        ))
    }
}

// ---------------------------------------------------------------- Redis

const REDIS_URL: &str = "redis://127.0.0.1:6379/";

struct Redis;

impl System for Redis {
    fn name(&self) -> &'static str {
        "Redis (SET NX PX)"
    }
    fn note(&self) -> &'static str {
        "NOT durable: this Redis keeps nothing on disk"
    }
    fn client(&self) -> Result<Box<dyn Client>> {
        let client = redis::Client::open(REDIS_URL)?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(3))?;
        Ok(Box::new(RedisClient { conn }))
    }
}

struct RedisClient {
    conn: redis::Connection,
}

impl Client for RedisClient {
    fn request(
        &mut self,
        key: &str,
        fp: &[u8; 32],
        body: &[u8],
        work_for: Duration,
    ) -> Result<Answer> {
        let redis_key = format!("idemkv-compare:{key}");
        let set: Option<String> = redis::cmd("SET")
            .arg(&redis_key)
            .arg(row(0, fp, b""))
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .query(&mut self.conn)?;
        if set.is_some() {
            work(work_for);
            redis::cmd("SET")
                .arg(&redis_key)
                .arg(row(1, fp, body))
                .arg("PX")
                .arg(86_400_000)
                .query::<()>(&mut self.conn)?;
            return Ok(Answer::Executed);
        }
        let stored: Option<Vec<u8>> = redis::cmd("GET").arg(&redis_key).query(&mut self.conn)?;
        Ok(match stored {
            Some(stored) => judge_row(&stored, fp),
            None => Answer::Busy,
        })
    }
}

// ---------------------------------------------------------------- workloads

#[derive(Clone, Copy)]
enum Workload {
    Fresh,
    Storm,
    Hot,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Fresh => "fresh",
            Workload::Storm => "storm",
            Workload::Hot => "hot",
        }
    }
}

struct Run {
    requests: u64,
    executed: u64,
    elapsed: Duration,
    latencies_ns: Vec<u64>,
}

fn fingerprint_of(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// A small deterministic generator (xorshift64*), so every system sees the
/// same request sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn run_workload(
    system: &dyn System,
    workload: Workload,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> Result<Run> {
    let clients = (0..clients)
        .map(|_| system.client())
        .collect::<Result<Vec<_>>>()?;
    let executed = AtomicU64::new(0);
    let body = vec![b'r'; BODY];
    let start = Instant::now();
    let latencies = thread::scope(|scope| -> Result<Vec<u64>> {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, mut client)| {
                let (executed, body) = (&executed, &body);
                scope.spawn(move || -> Result<Vec<u64>> {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                    let mut recent: Vec<String> = Vec::new();
                    let mut latencies = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let key = match workload {
                            Workload::Fresh => format!("{tag}-{c}-{i}"),
                            Workload::Hot => format!("{tag}-hot-{i}"),
                            Workload::Storm => {
                                if recent.is_empty() || rng.next().is_multiple_of(10) {
                                    let key = format!("{tag}-{c}-{i}");
                                    if recent.len() == 100 {
                                        recent.remove(0);
                                    }
                                    recent.push(key.clone());
                                    key
                                } else {
                                    recent[(rng.next() % recent.len() as u64) as usize].clone()
                                }
                            }
                        };
                        let fp = fingerprint_of(&key);
                        let began = Instant::now();
                        let answer = match workload {
                            Workload::Hot => client.request_wait(&key, &fp, body, HOT_WORK)?,
                            _ => client.request(&key, &fp, body, Duration::ZERO)?,
                        };
                        latencies.push(began.elapsed().as_nanos() as u64);
                        match answer {
                            Answer::Executed => {
                                executed.fetch_add(1, Ordering::Relaxed);
                            }
                            Answer::Replayed(stored) if stored == *body => {}
                            other => return Err(format!("{key}: unexpected {other:?}").into()),
                        }
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.join().map_err(|_| "client thread panicked")??);
        }
        Ok(all)
    })?;
    Ok(Run {
        requests: latencies.len() as u64,
        executed: executed.into_inner(),
        elapsed: start.elapsed(),
        latencies_ns: latencies,
    })
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

// ---------------------------------------------------------------- probes

/// Median of `n` timings of `f`.
fn median_of(n: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let began = Instant::now();
        f(i)?;
        samples.push(began.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    Ok(percentile(&samples, 0.5))
}

/// Runs the probes; returns the median durable redb commit of one insert.
fn probes(dir: &Path, quick: bool) -> Result<Duration> {
    let n = if quick { 300 } else { 2000 };
    let records: usize = if quick { 10_000 } else { 100_000 };
    println!("\n## Single-thread probes (medians of {n} samples)\n");

    // One durable redb commit of one insert, and one idemkv cycle (claim
    // commit, then completion commit), sampled alternately so that both see
    // the same disk: its speed drifts by 20% within minutes here.
    let db = Database::create(dir.join("probe-redb.redb"))?;
    let store = Store::open(dir.join("probe-idemkv.redb"), Config::default())?;
    let plain = Store::open(
        dir.join("probe-idemkv-plain.redb"),
        Config::default().journal(false),
    )?;
    let body = vec![b'r'; BODY];
    let (mut commits, mut claims, mut completes) = (Vec::new(), Vec::new(), Vec::new());
    let mut plain_cycles = Vec::new();
    for i in 0..n {
        let began = Instant::now();
        let txn = db.begin_write()?;
        txn.open_table(RAW)?
            .insert(format!("commit-{i}").as_str(), body.as_slice())?;
        txn.commit()?;
        commits.push(began.elapsed().as_nanos() as u64);

        let key = Key::new("probe", &format!("cycle-{i}"))?;
        let began = Instant::now();
        let Begin::Claimed(claim) = store.begin(&key, Fingerprint::of(b"p"))? else {
            return Err(format!("{key}: not claimed").into());
        };
        let claimed = Instant::now();
        store.complete(claim, StoredResponse::new(201, body.clone()))?;
        claims.push((claimed - began).as_nanos() as u64);
        completes.push(claimed.elapsed().as_nanos() as u64);

        let began = Instant::now();
        let Begin::Claimed(claim) = plain.begin(&key, Fingerprint::of(b"p"))? else {
            return Err(format!("{key}: not claimed").into());
        };
        plain.complete(claim, StoredResponse::new(201, body.clone()))?;
        plain_cycles.push(began.elapsed().as_nanos() as u64);
    }
    let cycles: Vec<u64> = claims.iter().zip(&completes).map(|(a, b)| a + b).collect();
    let median = |mut samples: Vec<u64>| {
        samples.sort_unstable();
        percentile(&samples, 0.5)
    };
    let (redb_commit, claim, complete, cycle, plain_cycle) = (
        median(commits),
        median(claims),
        median(completes),
        median(cycles),
        median(plain_cycles),
    );

    // The ceiling for batched writes on this disk: raw redb, 64 inserts of
    // random 32-byte keys per durable commit (what one group commit writes).
    const BATCH: usize = 64;
    let random_key = |i: usize| *blake3::hash(&(i as u64).to_le_bytes()).as_bytes();
    let ceiling_db = Database::create(dir.join("probe-ceiling.redb"))?;
    let ceiling_table: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("t");
    let batch_commit = median_of(n / 10, |i| {
        let txn = ceiling_db.begin_write()?;
        {
            let mut table = txn.open_table(ceiling_table)?;
            for j in 0..BATCH {
                table.insert(&random_key(i * BATCH + j), body.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    })?;

    println!("| measurement | median | ratio |");
    println!("|---|---|---|");
    println!(
        "| raw redb: 1 insert + durable commit | {} | 1.00 |",
        fmt_duration(redb_commit)
    );
    println!(
        "| raw redb: {BATCH} random-key inserts + durable commit | {} | {:.2}× ({:.0} inserts/s = {:.1}× the 1-insert loop) |",
        fmt_duration(batch_commit),
        batch_commit.as_secs_f64() / redb_commit.as_secs_f64(),
        BATCH as f64 / batch_commit.as_secs_f64(),
        BATCH as f64 * redb_commit.as_secs_f64() / batch_commit.as_secs_f64()
    );
    let per_commit = |d: Duration| d.as_secs_f64() / redb_commit.as_secs_f64();
    println!(
        "| idemkv: begin→Claimed + complete, 1 thread | {} | {:.2}× the redb commit (claim {:.2}×, complete {:.2}×; sampled alternately with the redb commit) |",
        fmt_duration(cycle),
        per_commit(cycle),
        per_commit(claim),
        per_commit(complete),
    );
    println!(
        "| idemkv without the journal (`Config::journal(false)`): begin→Claimed + complete, 1 thread | {} | {:.2}× the redb commit (sampled alternately too) |",
        fmt_duration(plain_cycle),
        per_commit(plain_cycle),
    );

    // Replays over `records` completed records, for idemkv, raw redb and SQLite.
    let keys: Vec<String> = (0..records).map(|i| format!("replay-{i}")).collect();
    {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(RAW)?;
            for key in &keys {
                table.insert(key.as_str(), row(1, &fingerprint_of(key), &body).as_slice())?;
            }
        }
        txn.commit()?;
    }
    let sqlite_path = dir.join("probe.sqlite");
    let sqlite = Sqlite::open(&sqlite_path)?;
    {
        let txn = sqlite.unchecked_transaction()?;
        for key in &keys {
            txn.execute(
                "INSERT INTO idem (k, fp, state, body) VALUES (?1, ?2, 1, ?3)",
                rusqlite::params![key, &fingerprint_of(key)[..], &body],
            )?;
        }
        txn.commit()?;
    }
    let idemkv = Idemkv {
        name: IDEMKV,
        store: store.clone(),
    };
    fill(&idemkv, &keys, &body)?;
    let uncached = Store::open(
        dir.join("probe-idemkv.redb.cold"),
        Config::default().cache_bytes(0),
    )?;
    fill(
        &Idemkv {
            name: IDEMKV,
            store: uncached.clone(),
        },
        &keys,
        &body,
    )?;

    let pick = |i: usize| &keys[(i * 7919) % keys.len()];
    let mut hot = idemkv.client()?;
    // Warm the cache (a replay fills it) before timing.
    for key in &keys {
        hot.replay(key, &fingerprint_of(key))?;
    }
    let replay_hot = median_of(n * 10, |i| {
        let key = pick(i);
        hot.replay(key, &fingerprint_of(key)).map(drop)
    })?;
    let mut cold = IdemkvClient { store: uncached };
    let replay_cold = median_of(n * 10, |i| {
        let key = pick(i);
        cold.replay(key, &fingerprint_of(key)).map(drop)
    })?;
    let redb_get = median_of(n * 10, |i| {
        let txn = db.begin_read()?;
        let table = txn.open_table(RAW)?;
        let value = table.get(pick(i).as_str())?.ok_or("missing")?;
        std::hint::black_box(value.value().len());
        Ok(())
    })?;
    let mut sqlite_client = SqliteClient { conn: sqlite };
    let sqlite_select = median_of(n * 10, |i| {
        let key = pick(i);
        sqlite_client.replay(key, &fingerprint_of(key)).map(drop)
    })?;
    let ratio = |d: Duration| d.as_secs_f64() / redb_get.as_secs_f64();
    println!(
        "| raw redb: point get in a fresh read txn, {records} records | {} | 1.00 |",
        fmt_duration(redb_get)
    );
    println!(
        "| idemkv: replay, cache hot | {} | {:.2}× the redb get, 1/{:.0} of the SQLite select |",
        fmt_duration(replay_hot),
        ratio(replay_hot),
        sqlite_select.as_secs_f64() / replay_hot.as_secs_f64()
    );
    println!(
        "| idemkv: replay, cache off | {} | {:.2}× the redb get |",
        fmt_duration(replay_cold),
        ratio(replay_cold)
    );
    println!(
        "| SQLite: prepared point select | {} | {:.2}× the redb get |",
        fmt_duration(sqlite_select),
        ratio(sqlite_select)
    );
    Ok(redb_commit)
}

/// Completes every key through the store, 64 threads at a time.
fn fill(system: &Idemkv, keys: &[String], body: &[u8]) -> Result<()> {
    thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = keys
            .chunks(keys.len().div_ceil(CLIENTS))
            .map(|chunk| {
                scope.spawn(move || -> Result<()> {
                    let mut client = system.client()?;
                    for key in chunk {
                        client.request(key, &fingerprint_of(key), body, Duration::ZERO)?;
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

// ---------------------------------------------------------------- main

fn main() -> std::process::ExitCode {
    idemkv_bench::run_main(run)
}

/// What `--help` prints; an unknown argument is refused with it.
const USAGE: &str = "usage: compare [--quick] [--probes] [--svg DIR] [--rounds N]
  --quick       smaller runs (20 requests per client instead of 200)
  --probes      the single-thread probes alone (cycle, replay, point reads)
  --svg DIR     also write the throughput and latency charts into DIR
  --rounds N    rounds against the engine's ceilings (3 by default)";

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" | "--probes" => {}
            "--svg" | "--rounds" => {
                rest.next();
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only_probes = args.iter().any(|a| a == "--probes");
    let svg_dir = args
        .iter()
        .position(|a| a == "--svg")
        .map(|i| {
            args.get(i + 1)
                .map(PathBuf::from)
                .ok_or("--svg needs a directory")
        })
        .transpose()?;
    // Made now, not when the charts are written at the end: a directory
    // that cannot be made fails the run before it starts.
    if let Some(dir) = &svg_dir {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("--svg {}: cannot make the directory: {err}", dir.display()))?;
    }
    let per_client = if quick { 20 } else { 200 };
    let engine_rounds = idemkv_bench::arg("--rounds", 3)?.max(1) as usize;
    let dir = tempfile::Builder::new()
        .prefix("idemkv-compare")
        .tempdir_in(std::env::current_dir()?)?;

    println!("# idemkv comparison");
    println!(
        "\n{CLIENTS} clients, {per_client} requests each per workload, {BODY}-byte responses; files in {}",
        dir.path().display()
    );

    let redb_commit = probes(dir.path(), quick)?;
    if !only_probes {
        let mut systems: Vec<(Box<dyn System>, Option<String>)> = Vec::new();
        let store = Store::open(dir.path().join("idemkv.redb"), Config::default())?;
        let plain_store = Store::open(
            dir.path().join("idemkv-plain.redb"),
            Config::default().journal(false),
        )?;
        let idemkv = Idemkv {
            name: IDEMKV,
            store: store.clone(),
        };
        let idemkv_plain = Idemkv {
            name: IDEMKV_NO_JOURNAL,
            store: plain_store.clone(),
        };
        systems.push((
            Box::new(Idemkv {
                name: IDEMKV,
                store: store.clone(),
            }),
            None,
        ));
        systems.push((
            Box::new(Idemkv {
                name: IDEMKV_NO_JOURNAL,
                store: plain_store.clone(),
            }),
            None,
        ));
        let raw = Database::create(dir.path().join("raw.redb"))?;
        {
            let txn = raw.begin_write()?;
            txn.open_table(RAW)?;
            txn.commit()?;
        }
        systems.push((Box::new(RawRedb { db: Arc::new(raw) }), None));
        let sqlite_path = dir.path().join("diy.sqlite");
        let skip = Sqlite::open(&sqlite_path).err().map(|e| e.to_string());
        systems.push((Box::new(Sqlite { path: sqlite_path }), skip));
        let skip = Postgres::reset()
            .err()
            .map(|e| format!("not reachable at {PG_URL}: {e}"));
        systems.push((Box::new(Postgres), skip));
        let skip = Redis
            .client()
            .and_then(|mut c| c.request("ping", &[0; 32], b"", Duration::ZERO).map(drop))
            .err()
            .map(|e| format!("not reachable at {REDIS_URL}: {e}"));
        systems.push((Box::new(Redis), skip));

        let run_tag = format!("{}", std::process::id());
        let mut points: Vec<Point> = Vec::new();

        println!(
            "\n### Fresh keys against the number of clients ({} requests per run)\n",
            CLIENTS * per_client
        );
        println!("| clients | system | requests/s | p50 | p99 | note |");
        println!("|---|---|---|---|---|---|");
        for clients in CLIENT_COUNTS {
            for (system, skip) in &systems {
                if let Some(reason) = skip {
                    println!("| {clients} | {} | skipped | | | {reason} |", system.name());
                    continue;
                }
                let tag = format!("{run_tag}-fresh{clients}");
                let requests = CLIENTS * per_client;
                match run_workload(
                    system.as_ref(),
                    Workload::Fresh,
                    clients,
                    requests / clients,
                    &tag,
                ) {
                    Ok(mut run) => {
                        run.latencies_ns.sort_unstable();
                        let point = Point::of_samples(
                            system.name(),
                            clients,
                            run.requests,
                            run.elapsed,
                            &run.latencies_ns,
                        );
                        println!(
                            "| {clients} | {} | {:.0} | {} | {} | {} |",
                            system.name(),
                            point.rate,
                            fmt_duration(point.p50),
                            fmt_duration(point.p99),
                            system.note()
                        );
                        points.push(point);
                    }
                    Err(e) => println!("| {clients} | {} | failed | | | {e} |", system.name()),
                }
            }
        }

        println!("\n### Retries, {CLIENTS} clients\n");
        println!("| workload | system | requests/s | executed | p50 | p99 | note |");
        println!("|---|---|---|---|---|---|---|");
        for workload in [Workload::Storm, Workload::Hot] {
            for (system, skip) in &systems {
                if let Some(reason) = skip {
                    println!(
                        "| {} | {} | skipped | | | | {reason} |",
                        workload.name(),
                        system.name()
                    );
                    continue;
                }
                let tag = format!("{run_tag}-{}", workload.name());
                match run_workload(system.as_ref(), workload, CLIENTS, per_client, &tag) {
                    Ok(mut run) => {
                        run.latencies_ns.sort_unstable();
                        println!(
                            "| {} | {} | {:.0} | {} | {} | {} | {} |",
                            workload.name(),
                            system.name(),
                            run.requests as f64 / run.elapsed.as_secs_f64(),
                            run.executed,
                            fmt_duration(percentile(&run.latencies_ns, 0.5)),
                            fmt_duration(percentile(&run.latencies_ns, 0.99)),
                            system.note()
                        );
                    }
                    Err(e) => println!(
                        "| {} | {} | failed | | | | {e} |",
                        workload.name(),
                        system.name()
                    ),
                }
            }
        }

        for (name, store) in [(IDEMKV, &store), (IDEMKV_NO_JOURNAL, &plain_store)] {
            let m = store.metrics();
            println!(
                "\n{name} group commit over the whole run: {} commits carried {} operations, {:.1} per commit on average",
                m.commits,
                m.committed_ops,
                m.committed_ops as f64 / m.commits.max(1) as f64
            );
        }

        // idemkv against its engine: rounds of the 64-client fresh run, each
        // followed at once by the engine ceiling at the batch size that run
        // had (the disk's speed drifts between minutes, not within one).
        println!(
            "\n### The {CLIENTS}-client fresh run against the engine ({engine_rounds} rounds, each idemkv run followed at once by the ceilings; the two handed-off ones in turn)\n"
        );
        println!(
            "| round | idemkv cycles/s | operations per commit | journal ceiling at that batch, cycles/s | idemkv / journal ceiling | handed-off ceiling, cycles/s | its operations per commit | idemkv / handed-off ceiling | handed off with the reads that decide, cycles/s | idemkv / it | idemkv (no journal) cycles/s | operations per commit | B-tree ceiling at that batch, cycles/s | no journal / B-tree ceiling |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut rounds = Vec::new();
        // One 64-client fresh run: cycles/s, operations per commit, and the
        // records in the file when it started.
        let fresh_run = |system: &Idemkv, tag: String| -> Result<(f64, f64, u64)> {
            let before = system.store.metrics();
            let run = run_workload(system, Workload::Fresh, CLIENTS, per_client, &tag)?;
            let after = system.store.metrics();
            let batch = (after.committed_ops - before.committed_ops) as f64
                / (after.commits - before.commits).max(1) as f64;
            Ok((
                run.requests as f64 / run.elapsed.as_secs_f64(),
                batch,
                before.live_records,
            ))
        };
        let ceiling_of = |existing: u64, batch: f64, durable: Durable| {
            ceiling::engine(
                dir.path(),
                existing,
                (batch.round() as usize).max(1),
                CLIENTS * per_client,
                durable,
            )
        };
        for round in 1..=engine_rounds {
            // Each ceiling at the batch size its own run had.
            let (rate, batch, existing) = fresh_run(&idemkv, format!("{run_tag}-engine{round}"))?;
            let journaled = ceiling_of(existing, batch, Durable::Journal)?;
            let shape = ceiling::Shape {
                existing,
                clients: CLIENTS,
                per_client,
                durable: Durable::Journal,
            };
            let handed_off = |decide| ceiling::handed_off(dir.path(), shape, decide);
            // Alternately first, so that a drift of the disk between them
            // does not favour one.
            let (handed, deciding) = if round % 2 == 1 {
                let handed = handed_off(false)?;
                (handed, handed_off(true)?)
            } else {
                let deciding = handed_off(true)?;
                (handed_off(false)?, deciding)
            };
            let (handed, handed_batch, deciding) = (
                handed.cycles_per_s,
                handed.ops_per_commit,
                deciding.cycles_per_s,
            );
            let (plain_rate, plain_batch, existing) =
                fresh_run(&idemkv_plain, format!("{run_tag}-plain{round}"))?;
            let ceiling = ceiling_of(existing, plain_batch, Durable::EveryCommit)?;
            println!(
                "| {round} | {rate:.0} | {batch:.1} | {journaled:.0} | {:.0}% | {handed:.0} | {handed_batch:.1} | {:.0}% | {deciding:.0} | {:.0}% | {plain_rate:.0} | {plain_batch:.1} | {ceiling:.0} | {:.0}% |",
                100.0 * rate / journaled,
                100.0 * rate / handed,
                100.0 * rate / deciding,
                100.0 * plain_rate / ceiling
            );
            rounds.push((rate, journaled, plain_rate, ceiling, handed, deciding));
        }
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let fresh_rate = median(rounds.iter().map(|r| r.0).collect());
        let journaled = median(rounds.iter().map(|r| r.1).collect());
        let share = median(rounds.iter().map(|r| r.0 / r.1).collect());
        let plain_rate = median(rounds.iter().map(|r| r.2).collect());
        let ceiling = median(rounds.iter().map(|r| r.3).collect());
        let plain_share = median(rounds.iter().map(|r| r.2 / r.3).collect());
        let handed = median(rounds.iter().map(|r| r.4).collect());
        let handed_share = median(rounds.iter().map(|r| r.0 / r.4).collect());
        let deciding = median(rounds.iter().map(|r| r.5).collect());
        let deciding_share = median(rounds.iter().map(|r| r.0 / r.5).collect());
        let floor = 1.0 / redb_commit.as_secs_f64();
        let rate_of = |name: &str| {
            points
                .iter()
                .find(|p| p.system == name && p.clients == CLIENTS)
                .map(|p| p.rate)
        };
        println!("\n| measure (medians of the rounds) | cycles/s | idemkv against it |");
        println!("|---|---|---|");
        println!("| idemkv, {CLIENTS} clients | {fresh_rate:.0} | |");
        println!(
            "| raw redb, one insert per durable commit (1 thread, probe median) | {floor:.0} | {:.1}× |",
            fresh_rate / floor
        );
        println!(
            "| journal ceiling: idemkv's write set at its batch size, 1 thread, raw redb with no sync, append + fdatasync per batch, durable checkpoint every second | {journaled:.0} ({:.1}× the one-commit loop) | {:.0}% |",
            journaled / floor,
            100.0 * share
        );
        println!(
            "| handed-off ceiling: the journal ceiling's write set fed by {CLIENTS} client threads through a channel to one writer, which takes what is queued as a batch and answers each operation | {handed:.0} ({:.1}× the one-commit loop, {:.0}% of the journal ceiling) | {:.0}% |",
            handed / floor,
            100.0 * handed / journaled,
            100.0 * handed_share
        );
        println!(
            "| the same, the writer also reading each key's rows as deciding does (`inflight`, then `records`) | {deciding:.0} ({:.1}× the one-commit loop, {:.0}% of the journal ceiling) | {:.0}% |",
            deciding / floor,
            100.0 * deciding / journaled,
            100.0 * deciding_share
        );
        println!(
            "| idemkv without the journal, {CLIENTS} clients | {plain_rate:.0} ({:.1}× the one-commit loop) | {:.2}× |",
            plain_rate / floor,
            fresh_rate / plain_rate
        );
        println!(
            "| B-tree ceiling: the same write set, one durable redb commit per batch | {ceiling:.0} ({:.1}× the one-commit loop) | idemkv without the journal: {:.0}% of it |",
            ceiling / floor,
            100.0 * plain_share
        );
        for peer in ["SQLite (WAL, sync=FULL)", "PostgreSQL (sync commit)"] {
            if let Some(rate) = rate_of(peer) {
                println!(
                    "| {peer}, {CLIENTS} clients (the sweep's run) | {rate:.0} | {:.1}× (without the journal {:.1}×) |",
                    fresh_rate / rate,
                    plain_rate / rate
                );
            }
        }
        if let Some(dir) = svg_dir {
            let systems: Vec<&str> = systems
                .iter()
                .filter(|(_, skip)| skip.is_none())
                .map(|(system, _)| system.name())
                .collect();
            idemkv_bench::plot::throughput(&dir.join("compare-throughput.svg"), &systems, &points)?;
            idemkv_bench::plot::latency(&dir.join("compare-latency.svg"), &systems, &points)?;
            println!("\nplots written to {}", dir.display());
        }
    }
    Ok(())
}
