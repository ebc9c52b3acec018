//! The store's threads under a deterministic scheduler: several callers,
//! the committer, its answer relay and the writeback thread interleaved by
//! [shuttle](https://docs.rs/shuttle), on the simulated disk of
//! tests/sim.rs. A seed fixes the workload and every thread switch: the
//! store's locks, atomics, channels and wake-ups are shuttle's under the
//! `shuttle` feature (src/sync.rs), so shuttle decides at each of them
//! which thread runs next.
//!
//! Each caller runs its own random operations (claims of two contended
//! keys with one of two payloads, completions, releases, recovery points,
//! reads) and checks every answer against what the others had been told
//! before it asked, in a shared book:
//! - tokens only grow: a claim's token is above every token answered
//!   before the claim began;
//! - never two live holders: a key is granted only when every earlier
//!   holder of it has begun to give it up;
//! - a key whose completion was acknowledged replays that response, byte
//!   for byte, and another payload on it is a mismatch; a replay carries a
//!   response one of the key's holders stored with that payload, and no
//!   two acknowledged completions of one key differ;
//! - a read of a completed key shows the completion.
//!
//! Half the seeds cut the power at a drawn disk operation while the
//! callers run: from then on every write fails (and only then may an
//! operation fail), and an operation that failed may have landed or not.
//! The other half cut the power right after the last answer. Either way
//! the machine then restarts with what the disk made durable, and each
//! key's record must be what the book allows: an acknowledged completion
//! byte for byte, an acknowledged claim nobody gave up in flight with its
//! token and last acknowledged recovery point (or one whose write failed),
//! a claim whose release or completion was acknowledged gone, and nothing
//! else than what a failed operation may have left. Without a cut, the
//! records are checked on the running store first, exactly. After the
//! restart a new claim's token is above every token answered before.
//!
//! The clock stands still (no lease ends), and waits (`Terms::wait`) are
//! not used: their timers are real threads outside the scheduler's
//! control (docs/reliability.md).
//!
//! `IDEMKV_INTERLEAVING_SEEDS=N` runs `N` seeds (default 2,000 in a release
//! build, 200 in a debug one) from `IDEMKV_INTERLEAVING_FIRST` (default 0);
//! `IDEMKV_INTERLEAVING_SEED=S` runs seed `S` alone and prints its trace.
//! Built only with the `shuttle` feature:
//! `cargo test --release --features shuttle --test interleavings`.

#[path = "support/rng.rs"]
mod rng;
#[path = "support/sim_disk.rs"]
mod sim_disk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idemkv::fault_injection::DirJournal;
use idemkv::{
    Begin, Claim, Config, Fingerprint, Key, ManualClock, RecordState, Store, StoredResponse,
};
use rng::Rng;
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use sim_disk::SimDisk;

/// Keys the callers contend for.
const KEYS: u64 = 2;
/// Operations per caller.
const STEPS: u64 = 10;
/// A cut comes within this many disk operations of the open (a run's
/// callers make 30 in the median, 60 at the 90th percentile).
const CUT_WITHIN: u64 = 40;

fn key(k: u64) -> Key {
    Key::new("interleavings", &format!("k{k}")).expect("the keys are valid")
}

fn fp(payload: u8) -> Fingerprint {
    Fingerprint::of(&[payload])
}

/// What every caller has been told so far, shared by all of them. Held
/// only between the store's calls (it is a std lock, invisible to the
/// scheduler), so each caller reads it before it asks and writes it after
/// it heard.
#[derive(Default)]
struct Book {
    /// The highest token any claim was answered with.
    max_token: u64,
    keys: BTreeMap<u64, KeyBook>,
    trace: Vec<String>,
}

#[derive(Clone, Default)]
struct KeyBook {
    /// Claims granted whose holders have not begun to give them up:
    /// token and payload.
    holding: Vec<(u64, u8)>,
    /// Every payload a `begin` of this key has carried.
    begun: BTreeSet<u8>,
    /// Responses holders tried to store: payload and body.
    attempted: Vec<(u8, Vec<u8>)>,
    /// The completion a holder was told `Ok` for.
    completed: Option<(u8, Vec<u8>)>,
    /// The recovery point last acknowledged for each claim.
    points: BTreeMap<u64, String>,
    /// Claims whose release or completion was acknowledged.
    ended: BTreeSet<u64>,
    /// Completions that failed (the power was cut): token, payload, body;
    /// each may have landed.
    failed_completions: Vec<(u64, u8, Vec<u8>)>,
    /// Recovery points whose write failed, by claim: each may have landed.
    failed_points: BTreeMap<u64, Vec<String>>,
    /// Whether a claim, release or completion of this key failed: its
    /// record may be one no answer told of.
    uncertain: bool,
}

type Shared = Arc<Mutex<Book>>;

/// Counts over every seed of a test, for its summary line.
static OPERATIONS: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static CLAIMS: AtomicU64 = AtomicU64::new(0);
static CUTS_AMONG_CALLERS: AtomicU64 = AtomicU64::new(0);

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Book> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fails the run with the trace so far.
fn fail(shared: &Shared, what: String) -> ! {
    let book = ledger(shared);
    let from = book.trace.len().saturating_sub(40);
    panic!("{what}\nlast steps:\n  {}", book.trace[from..].join("\n  "))
}

/// One caller: its operations, drawn from its own stream of the seed.
struct Caller {
    id: u64,
    rng: Rng,
    store: Store,
    disk: SimDisk,
    shared: Shared,
    claims: Vec<(u64, u8, Claim)>,
}

impl Caller {
    fn run(mut self) {
        for step in 0..STEPS {
            let k = self.rng.below(KEYS);
            match self.rng.below(20) {
                0..=8 => self.begin(step, k),
                9..=12 => self.complete(step),
                13..=14 => self.release(step),
                15..=16 => self.record_progress(step),
                17 => self.abandon(step),
                _ => self.get(step, k),
            }
        }
        // Claims still held are dropped, as by a handler that crashed:
        // their records stay in flight, which the final check expects.
    }

    /// Whether an operation may fail: only once the power is cut.
    fn may_fail(&self) -> bool {
        self.disk.is_down()
    }

    /// Drops the oldest claim without ending it: its record stays in
    /// flight until its lease ends, and its holder still counts.
    fn abandon(&mut self, step: u64) {
        if self.claims.is_empty() {
            return;
        }
        let (k, _, claim) = self.claims.remove(0);
        self.note(format!("step {step}: drop k{k} (token {})", claim.token()));
    }

    fn note(&self, line: String) {
        OPERATIONS.fetch_add(1, Ordering::Relaxed);
        if line.contains("Err(") || line.contains("error") {
            FAILED.fetch_add(1, Ordering::Relaxed);
        }
        ledger(&self.shared)
            .trace
            .push(format!("caller {}: {line}", self.id));
    }

    fn begin(&mut self, step: u64, k: u64) {
        let payload = self.rng.below(2) as u8;
        let before = {
            let mut book = ledger(&self.shared);
            let entry = book.keys.entry(k).or_default();
            entry.begun.insert(payload);
            let completed = entry.completed.clone();
            (book.max_token, completed)
        };
        let (max_token, completed) = before;
        let answer = self.store.begin(&key(k), fp(payload));
        OPERATIONS.fetch_add(1, Ordering::Relaxed);
        match &answer {
            Ok(Begin::Claimed(_)) => CLAIMS.fetch_add(1, Ordering::Relaxed),
            Err(_) => FAILED.fetch_add(1, Ordering::Relaxed),
            Ok(_) => 0,
        };
        let mut book = ledger(&self.shared);
        let line = match &answer {
            Ok(Begin::Claimed(claim)) => format!("Claimed(token {})", claim.token()),
            Ok(Begin::Replay(r)) => format!("Replay({:?})", String::from_utf8_lossy(r.body())),
            Ok(other) => format!("{other:?}"),
            Err(err) => format!("error: {err}"),
        };
        book.trace.push(format!(
            "caller {} step {step}: begin k{k} payload {payload}: {line}",
            self.id
        ));
        let entry = book.keys.entry(k).or_default().clone();
        drop(book);
        let wrong =
            |why: String| fail(&self.shared, format!("begin k{k} payload {payload}: {why}"));
        match answer {
            Ok(Begin::Claimed(claim)) => {
                let token = claim.token();
                if token <= max_token {
                    wrong(format!(
                        "token {token} is not above {max_token}, answered before it began"
                    ));
                }
                if let Some((p, _)) = completed {
                    wrong(format!("claimed a key completed with payload {p}"));
                }
                if let Some((other, _)) = entry.holding.first() {
                    wrong(format!("claimed while token {other} still holds the key"));
                }
                let mut book = ledger(&self.shared);
                book.max_token = book.max_token.max(token);
                book.keys
                    .entry(k)
                    .or_default()
                    .holding
                    .push((token, payload));
                drop(book);
                self.claims.push((k, payload, claim));
            }
            Ok(Begin::Replay(response)) => {
                let body = response.body().to_vec();
                if !entry.attempted.contains(&(payload, body.clone())) {
                    wrong("replayed a response no holder stored with this payload".into());
                }
                if let Some((p, b)) = &completed
                    && (*p != payload || *b != body)
                {
                    wrong(format!(
                        "replayed other bytes than the completion (payload {p})"
                    ));
                }
                if let Some((p, b)) = &entry.completed
                    && (*p != payload || *b != body)
                {
                    wrong(format!(
                        "replayed other bytes than the completion (payload {p})"
                    ));
                }
            }
            Ok(Begin::Mismatch) => {
                if entry.begun.iter().all(|&p| p == payload) {
                    wrong("a mismatch, but no begin of this key carried another payload".into());
                }
                if completed.is_some_and(|(p, _)| p == payload) {
                    wrong("a mismatch on a key completed with this payload".into());
                }
            }
            Ok(Begin::InProgress { .. }) => {
                if let Some((p, _)) = completed {
                    wrong(format!(
                        "in progress, but its completion (payload {p}) was acknowledged"
                    ));
                }
            }
            Err(_) if self.may_fail() => {
                ledger(&self.shared).keys.entry(k).or_default().uncertain = true;
            }
            Err(err) => wrong(format!("failed before the power cut: {err}")),
        }
    }

    /// Stops holding the oldest claim (for a completion or a release)
    /// before the store hears of it: from then on another claim of its key
    /// is allowed.
    fn give_up(&mut self) -> Option<(u64, u8, Claim)> {
        if self.claims.is_empty() {
            return None;
        }
        let (k, payload, claim) = self.claims.remove(0);
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        entry.holding.retain(|(t, _)| *t != claim.token());
        Some((k, payload, claim))
    }

    fn complete(&mut self, step: u64) {
        let Some((k, payload, claim)) = self.give_up() else {
            return;
        };
        let token = claim.token();
        let body = format!("k{k} token {token} caller {}", self.id).into_bytes();
        ledger(&self.shared)
            .keys
            .entry(k)
            .or_default()
            .attempted
            .push((payload, body.clone()));
        let result = self
            .store
            .complete(claim, StoredResponse::new(200, body.clone()));
        self.note(format!(
            "step {step}: complete k{k} (token {token}): {:?}",
            result.as_ref().map_err(|e| e.error().to_string())
        ));
        if let Err(err) = result {
            if !self.may_fail() {
                fail(
                    &self.shared,
                    format!("complete k{k} token {token}: {}", err.error()),
                );
            }
            let mut book = ledger(&self.shared);
            let entry = book.keys.entry(k).or_default();
            entry.failed_completions.push((token, payload, body));
            entry.uncertain = true;
            return;
        }
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        entry.ended.insert(token);
        if let Some((p, b)) = &entry.completed {
            let earlier = format!("payload {p}, {:?}", String::from_utf8_lossy(b));
            drop(book);
            fail(
                &self.shared,
                format!("a second completion of k{k} acknowledged (first: {earlier})"),
            );
        }
        entry.completed = Some((payload, body));
    }

    fn release(&mut self, step: u64) {
        let Some((k, _, claim)) = self.give_up() else {
            return;
        };
        let token = claim.token();
        let result = self.store.release(claim);
        self.note(format!(
            "step {step}: release k{k} (token {token}): {:?}",
            result.as_ref().map_err(|e| e.error().to_string())
        ));
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        match result {
            Ok(()) => {
                entry.ended.insert(token);
            }
            Err(_) if self.disk.is_down() => entry.uncertain = true,
            Err(err) => {
                drop(book);
                fail(
                    &self.shared,
                    format!("release k{k} token {token}: {}", err.error()),
                );
            }
        }
    }

    fn record_progress(&mut self, step: u64) {
        let Some((k, _, claim)) = self.claims.first() else {
            return;
        };
        let (k, token) = (*k, claim.token());
        let phase = format!("caller {} step {step}", self.id);
        let result = self
            .store
            .record_progress(claim, &phase, phase.clone().into_bytes());
        self.note(format!(
            "step {step}: record_progress k{k} (token {token}): {result:?}"
        ));
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        match result {
            Ok(()) => {
                entry.points.insert(token, phase);
            }
            Err(_) if self.disk.is_down() => {
                entry.failed_points.entry(token).or_default().push(phase);
            }
            Err(err) => {
                drop(book);
                fail(
                    &self.shared,
                    format!("record_progress k{k} token {token}: {err}"),
                );
            }
        }
    }

    fn get(&mut self, step: u64, k: u64) {
        let completed = ledger(&self.shared)
            .keys
            .entry(k)
            .or_default()
            .completed
            .clone();
        let record = self.store.get(&key(k));
        self.note(format!("step {step}: get k{k}: {}", describe(&record)));
        let Some((payload, body)) = completed else {
            return;
        };
        if record.is_err() && self.may_fail() {
            return;
        }
        match record {
            Ok(Some(record))
                if record.fingerprint() == fp(payload)
                    && record.response().map(|r| r.body()) == Some(&body[..]) => {}
            other => fail(
                &self.shared,
                format!(
                    "get k{k}: {}, but its completion was acknowledged",
                    describe(&other)
                ),
            ),
        }
    }
}

fn describe(record: &idemkv::Result<Option<idemkv::Record>>) -> String {
    match record {
        Ok(None) => "absent".into(),
        Ok(Some(record)) => match record.state() {
            RecordState::Completed { response } => {
                format!("completed {:?}", String::from_utf8_lossy(response.body()))
            }
            _ => format!(
                "in flight (token {}, point {:?})",
                record.token(),
                record.recovery_point().map(|p| p.phase().to_string())
            ),
        },
        Err(err) => format!("error: {err}"),
    }
}

/// Whether `record` is what the book allows for a key, once every caller
/// is done (and, after a power cut, the machine restarted).
fn allowed(entry: &KeyBook, record: Option<&idemkv::Record>) -> bool {
    if let Some((payload, body)) = &entry.completed {
        return record.is_some_and(|record| {
            record.fingerprint() == fp(*payload)
                && record.response().map(|r| r.body()) == Some(&body[..])
        });
    }
    // At most one holder that never began to give the key up.
    let holder = match entry.holding.as_slice() {
        [] => None,
        [holder] => Some(holder),
        _ => return false,
    };
    let Some(record) = record else {
        return holder.is_none();
    };
    match record.state() {
        RecordState::Completed { response } => {
            holder.is_none()
                && entry.failed_completions.iter().any(|(_, payload, body)| {
                    record.fingerprint() == fp(*payload) && response.body() == &body[..]
                })
        }
        _ => {
            let token = record.token();
            let point = record.recovery_point().map(|p| p.phase().to_string());
            let point_allowed = point == entry.points.get(&token).cloned()
                || point.is_some_and(|point| {
                    entry
                        .failed_points
                        .get(&token)
                        .is_some_and(|failed| failed.contains(&point))
                });
            match holder {
                Some((held, payload)) => {
                    token == *held && record.fingerprint() == fp(*payload) && point_allowed
                }
                // A claim nobody holds: one whose ending or whose begin
                // failed, never one whose ending was acknowledged.
                None => entry.uncertain && !entry.ended.contains(&token) && point_allowed,
            }
        }
    }
}

/// Each key's record is what the book allows.
fn check_records(store: &Store, shared: &Shared, when: &str) {
    let keys = ledger(shared).keys.clone();
    for (k, entry) in keys {
        let record = store.get(&key(k));
        let seen = describe(&record);
        let Ok(record) = record else {
            fail(shared, format!("{when}: get k{k}: {seen}"));
        };
        if !allowed(&entry, record.as_ref()) {
            fail(
                shared,
                format!(
                    "{when}: k{k} is {seen}; the book: completion {:?}, holders {:?}, \
                     points {:?}, ended {:?}, failed completions {:?}, failed points {:?}, \
                     uncertain {}",
                    entry
                        .completed
                        .as_ref()
                        .map(|(p, b)| (p, String::from_utf8_lossy(b).into_owned())),
                    entry.holding,
                    entry.points,
                    entry.ended,
                    entry
                        .failed_completions
                        .iter()
                        .map(|(t, p, b)| (t, p, String::from_utf8_lossy(b).into_owned()))
                        .collect::<Vec<_>>(),
                    entry.failed_points,
                    entry.uncertain,
                ),
            );
        }
    }
}

/// One seeded run, inside the scheduler.
fn world(seed: u64) {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::default();
    let clock = ManualClock::default();
    let config = Config::default()
        .clock(clock)
        .lease(Duration::from_secs(60))
        .retention(Duration::from_secs(3600))
        .sweep_interval(None)
        .writeback_interval(Duration::from_millis(1))
        .checkpoint_interval(if rng.one_in(2) {
            Duration::ZERO
        } else {
            Duration::MAX
        });
    let open = || {
        Store::with_journaled_backend(
            disk.store_file(),
            DirJournal::with_dir(disk.journal_dir()),
            config.clone(),
        )
    };
    let shared: Shared = Arc::default();
    let store = match open() {
        Ok(store) => store,
        Err(err) => fail(&shared, format!("open: {err}")),
    };
    let callers = 2 + rng.below(3);
    let cut = rng.one_in(2).then(|| 1 + rng.below(CUT_WITHIN));
    if let Some(n) = cut {
        disk.cut_after(n);
        ledger(&shared)
            .trace
            .push(format!("the power goes in {n} disk operations"));
    }
    let threads: Vec<_> = (0..callers)
        .map(|id| {
            let caller = Caller {
                id,
                rng: Rng::stream(seed, id),
                store: store.clone(),
                disk: disk.clone(),
                shared: Arc::clone(&shared),
                claims: Vec::new(),
            };
            shuttle::thread::spawn(move || caller.run())
        })
        .collect();
    for thread in threads {
        if thread.join().is_err() {
            // The caller's panic carries the failure; shuttle reports it.
            return;
        }
    }
    if disk.is_down() {
        CUTS_AMONG_CALLERS.fetch_add(1, Ordering::Relaxed);
        ledger(&shared).trace.push("the power is cut".into());
    } else {
        disk.disarm();
        check_records(&store, &shared, "after every caller");
        disk.cut_now();
        ledger(&shared)
            .trace
            .push("the power is cut after the last answer".into());
    }
    // The store's threads stop on the dead disk (their last sync fails).
    drop(store);
    disk.restart(&mut Rng::stream(seed, u64::MAX));
    let store = match open() {
        Ok(store) => store,
        Err(err) => fail(&shared, format!("open after the power cut: {err}")),
    };
    check_records(&store, &shared, "after the power cut");
    let max_token = ledger(&shared).max_token;
    match store.begin(&key(KEYS), fp(0)) {
        Ok(Begin::Claimed(claim)) if claim.token() > max_token => {}
        other => fail(
            &shared,
            format!(
                "a new key after the restart: {:?}, not a claim above token {max_token}",
                other.map(|b| format!("{b:?}"))
            ),
        ),
    }
    if let Err(err) = store.close() {
        fail(&shared, format!("close after the restart: {err}"));
    }
    if std::env::var_os("IDEMKV_INTERLEAVING_SEED").is_some() {
        println!(
            "seed {seed}: {} disk operations\n  {}",
            disk.ops(),
            ledger(&shared).trace.join("\n  ")
        );
    }
}

/// Runs seed `seed` under the scheduler it picks: shuttle's random
/// scheduler for even seeds, PCT (few, well-placed preemptions) for odd
/// ones. Returns the failure, if any.
fn run_seed(seed: u64) -> Result<(), String> {
    let mut config = shuttle::Config::new();
    // redb's B-tree code recurses deeper than shuttle's default stack.
    config.stack_size = 4 << 20;
    config.failure_persistence = shuttle::FailurePersistence::None;
    let run = std::panic::catch_unwind(move || {
        if seed.is_multiple_of(2) {
            shuttle::Runner::new(RandomScheduler::new_from_seed(seed, 1), config)
                .run(move || world(seed));
        } else {
            shuttle::Runner::new(PctScheduler::new_from_seed(seed, 3, 1), config)
                .run(move || world(seed));
        }
    });
    run.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn seeded_interleavings_keep_every_promise() {
    let seeds = match env_u64("IDEMKV_INTERLEAVING_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let first = env_u64("IDEMKV_INTERLEAVING_FIRST").unwrap_or(0);
            let default = if cfg!(debug_assertions) { 200 } else { 2_000 };
            first..first + env_u64("IDEMKV_INTERLEAVING_SEEDS").unwrap_or(default)
        }
    };
    let count = seeds.end - seeds.start;
    for seed in seeds.clone() {
        if let Err(failure) = run_seed(seed) {
            panic!(
                "seed {seed} failed: {failure}\n\
                 replay it: IDEMKV_INTERLEAVING_SEED={seed} cargo test --release \
                 --features shuttle --test interleavings -- --nocapture"
            );
        }
    }
    println!(
        "interleavings: seeds {}..{} ({count}) passed: {} operations, {} claims, \
         {} failed operations, {} power cuts while callers ran",
        seeds.start,
        seeds.end,
        OPERATIONS.load(Ordering::Relaxed),
        CLAIMS.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        CUTS_AMONG_CALLERS.load(Ordering::Relaxed),
    );
}
