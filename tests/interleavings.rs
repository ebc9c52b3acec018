//! The store's threads under a deterministic scheduler: several callers,
//! the committer, its answer relay and the writeback thread interleaved by
//! [shuttle](https://docs.rs/shuttle), on the simulated disk of
//! tests/sim.rs. A seed fixes the workload and every thread switch: the
//! store's locks, atomics, channels and wake-ups are shuttle's under the
//! `shuttle` feature (src/sync.rs), so shuttle decides at each of them
//! which thread runs next.
//!
//! Four tests: the callers alone; the same callers with an upkeep thread
//! beside them (`verify`, sweeps and scans; see [`Upkeeper`]), a retention
//! of a minute, so that records expire within a run, and the store's
//! sweeper thread; the same callers who also remove keys and step the
//! wall clock (see [`Caller::remove`]); and the last two together.
//!
//! Each caller, through the blocking API or the async one (awaited under
//! the scheduler), runs its own random operations (claims of two contended
//! keys with one of two payloads, completions, releases, renewals,
//! recovery points, dropped claims, reads, and time passing, so that
//! leases end and claims are taken over) and checks every answer against
//! what the others had been told before it asked, in a shared book:
//! - tokens only grow: a claim's token is above every token answered
//!   before the claim began;
//! - never two live holders: a key is granted only when every earlier
//!   holder of it has begun to give it up or may have seen its lease end,
//!   and a completion is accepted only from the key's latest claim;
//! - a holder is refused (`LeaseLost`) only once its lease may have ended;
//! - a key whose completion was acknowledged replays that response, byte
//!   for byte, and another payload on it is a mismatch; a replay carries a
//!   response one of the key's holders stored with that payload;
//! - a read of a completed key shows the completion, and a completion a
//!   read showed is never lost, by a crash either: what a lookup shows is
//!   durable;
//! - a remove that no other operation of its key overlapped leaves the key
//!   absent: a retry claims it afresh (no replay of what was removed), and
//!   the holders it revoked are refused (`LeaseLost`) and their records
//!   never come back. A remove that overlapped another operation of its
//!   key (or failed) leaves the key's state unknown: until a remove lands
//!   alone, its answers are checked only for what holds whatever the order
//!   (tokens grow, a replay is a stored response, a mismatch needs the
//!   other payload, no revoked claim completes);
//! - a step of the wall clock moves no lease: the book's time is the
//!   store's (the wall clock at open plus the time passed).
//!
//! A quarter of the seeds cut the power at a drawn disk operation while
//! the callers run (from then on every write fails); a quarter fail one
//! drawn disk operation with EIO, and a quarter fill the disk until its
//! first refusal: after those two the store heals itself (rewrites and
//! reopens its file) while the callers go on, and a holder whose
//! completion or release failed repeats it with the claim it got back (up
//! to three times, then drops it).
//! Only after a fault may an operation fail for another reason than its
//! lease, and an operation that failed may have landed or not. Every seed
//! ends with the power cut right after the last answer; the machine then
//! restarts with what the disk made durable, and each key's record must
//! be what the book allows: an acknowledged completion byte for byte; else the latest
//! acknowledged claim's record in flight, with its token and its last
//! acknowledged recovery point (or one whose write failed), while its
//! holder has not given it up; never the record of an older claim, nor of
//! a claim whose release or completion was acknowledged; and nothing else
//! than what a failed operation may have left. Without a cut, the records
//! are checked on the running store first, and in half of those seeds
//! again after the store was closed cleanly and opened again (the
//! committer's shutdown and the writeback thread under the scheduler). After the restart a new
//! claim's token is above every token answered before.
//!
//! Time passes only by the callers' steps (the wall clock also steps back
//! and forward in the workload with removes). A quarter of the begins wait
//! for a running attempt (`Terms::wait`); their timers run on a clock of
//! their own under the scheduler (src/sync.rs), and a waiting begin is
//! judged as any begin over the time from its ask to its answer. After
//! every caller, no wait is still registered. A key whose record may have
//! expired ([`Book::expire_by`]) is checked as one a remove muddled.
//!
//! `IDEMKV_INTERLEAVING_SEEDS=N` runs `N` seeds (default 2,000 in a release
//! build, 200 in a debug one) from `IDEMKV_INTERLEAVING_FIRST` (default 0);
//! `IDEMKV_INTERLEAVING_SEED=S` runs seed `S` alone and prints its trace.
//! A failing seed is minimized: its fault and then each caller's steps are
//! left out in turn while the run still fails, and the failure prints the
//! minimized run's trace and the line that replays it
//! (`IDEMKV_INTERLEAVING_SKIP=0:3,1:7` leaves out caller 0's step 3 and
//! caller 1's step 7; `IDEMKV_INTERLEAVING_FAULT=none` the fault).
//! Built only with the `shuttle` feature:
//! `cargo test --release --features shuttle --test interleavings`.

#[path = "support/rng.rs"]
mod rng;
#[path = "support/sim_disk.rs"]
mod sim_disk;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idemkv::fault_injection::DirJournal;
use idemkv::{
    AsyncStore, Begin, Claim, CompleteError, Config, Error, Fingerprint, Key, ManualClock,
    RecordState, ScanFilter, Store, StoredResponse, Terms,
};
use rng::Rng;
use shuttle::future::block_on;
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use sim_disk::SimDisk;

/// The random stream that decides whether a run that kept its power
/// closes the store cleanly and opens it again before the power cut (a
/// stream of its own, so that the workload is the seed's either way).
const CLOSE_STREAM: u64 = u64::MAX - 2;
/// The random stream that draws a seed's reopen backoff.
const BACKOFF_STREAM: u64 = u64::MAX - 3;
/// The random stream that draws whether a seed checkpoints by time.
const CHECKPOINT_STREAM: u64 = u64::MAX - 4;

/// Keys the callers contend for.
const KEYS: u64 = 2;
/// Operations per caller.
const STEPS: u64 = 10;
/// Yields the final check gives a store healing after a failed read
/// before a read must work.
const HEAL_YIELDS: u64 = 10_000;
/// The administrative steps' streams of callers 0, 1, ...: clear of the
/// callers' own (0, 1, ...) and the upkeep's and restart's (the last two).
const ADMIN_STREAMS: u64 = 1 << 32;
/// The streams of callers 0, 1, ... that draw their begins' waits.
const WAIT_STREAMS: u64 = 2 << 32;
/// How long a waiting `begin` waits, by the timers' clock (src/sync.rs:
/// under the scheduler, a timer fires after one switch to another thread,
/// having moved a clock of their own): a moment, about half a lease, or
/// two leases. A quarter of the begins wait.
const WAITS: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_secs(30),
    Duration::from_secs(120),
];
/// Callers at most (two at least).
const MAX_CALLERS: u64 = 4;
/// A cut comes within this many disk operations of the open (a run's
/// callers make 30 in the median, 60 at the 90th percentile).
const CUT_WITHIN: u64 = 40;
/// How often a holder repeats a completion or release that failed
/// transiently before it drops the claim.
const REPEATS: u64 = 3;
/// The claims' lease.
const LEASE: Duration = Duration::from_secs(60);
/// The retention in the workloads with upkeep: one lease, so that in most
/// of their runs enough time passes for records to expire (seven in ten
/// of the first 4,000 seeds), and sweeps delete them.
const UPKEEP_RETENTION: Duration = Duration::from_secs(60);
/// What one step of time passing moves the clock by: a little, half a
/// lease, or past a whole lease.
const TIME_STEPS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(30),
    Duration::from_secs(61),
];
/// How far the workload with removes steps the wall clock back, and
/// forward: steps the store's time must ignore. Forward steps stop ten
/// minutes ahead, which with the most time a run passes (four callers'
/// ten steps of 61 s) stays inside the hour's retention of the workload
/// without upkeep; with upkeep's shorter one, a restart after a step
/// forward may find records expired ([`Book::expire_by`]).
const WALL_STEP_BACK: Duration = Duration::from_secs(3600);
const WALL_STEP_FORWARD: Duration = Duration::from_secs(600);

fn key(k: u64) -> Key {
    Key::new("interleavings", &format!("k{k}")).expect("the keys are valid")
}

fn fp(payload: u8) -> Fingerprint {
    Fingerprint::of(&[payload])
}

fn wall_ms(clock: &ManualClock) -> u64 {
    idemkv::Clock::now(clock)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The store's time as the book reckons it: the wall clock when the store
/// opened (the clock's start) plus the time that passed since. A step of
/// the wall clock moves neither (docs/design.md, "Time").
fn now_ms(clock: &ManualClock) -> u64 {
    wall_ms(&ManualClock::default()) + idemkv::Clock::monotonic(clock).as_millis() as u64
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
    /// The store's retention, in the workloads where records expire
    /// within a run (those with upkeep); `None` where none can.
    retention_ms: Option<u64>,
    /// Whether any record may have expired so far (a remove that lands
    /// alone clears its key's mark, not this).
    expiry_began: bool,
}

impl Book {
    /// Marks every key whose record may have expired by the store's time
    /// `at` (ms): its state is then unknown, as after a remove that
    /// overlapped another operation, since the store answers an expired
    /// record as absent and a sweep, the sweeper thread's or the upkeep's,
    /// may delete it at any time. Called with the store's time before it
    /// can reach `at`: by the caller that moves the clock, under the book's
    /// lock, and before the checks after an open (whose time is the wall
    /// clock then).
    ///
    /// No record of a key expires before the first `begin` of the key was
    /// asked plus the retention: every record is written by a claim (whose
    /// lease ends after its begin was asked) or by a completion or renewal
    /// after one, and expires a retention after that.
    fn expire_by(&mut self, at: u64) {
        let Some(retention) = self.retention_ms else {
            return;
        };
        for entry in self.keys.values_mut() {
            if entry.first_begun_at.is_some_and(|t| at >= t + retention) {
                entry.muddled = true;
                entry.may_have_expired = true;
                self.expiry_began = true;
            }
        }
    }
}

/// A claim whose holder has not begun to give it up.
#[derive(Clone, Copy, Debug)]
struct Holding {
    token: u64,
    payload: u8,
    /// The earliest its lease can end: the clock when the claim (or its
    /// latest acknowledged renewal) was asked for, plus the lease.
    lease_end_at_least: u64,
}

#[derive(Clone, Default)]
struct KeyBook {
    /// Claims granted whose holders have not begun to give them up.
    holding: Vec<Holding>,
    /// Every claim granted: token and payload.
    granted: BTreeMap<u64, u8>,
    /// Every payload a `begin` of this key has carried.
    begun: BTreeSet<u8>,
    /// Responses holders tried to store: payload and body.
    attempted: Vec<(u8, Vec<u8>)>,
    /// The completion a holder was told `Ok` for: token, payload, body.
    completed: Option<(u64, u8, Vec<u8>)>,
    /// The recovery point each claim's record holds, as far as an
    /// acknowledgement says (a takeover's: the one it recovered).
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
    /// Completions a `get` read, acknowledged or not yet: fingerprint and
    /// body. What a lookup shows is durable, so a restart keeps it.
    read_completions: Vec<(Fingerprint, Vec<u8>)>,
    /// Operations on this key between their first look at the book and
    /// their last entry in it (a scan counts on every key); removes apart.
    in_flight: u64,
    /// Removes of this key asked and not yet answered.
    removing: u64,
    /// A remove and another operation of this key were in flight together
    /// (since no remove was last in flight): either may have landed first.
    overlapped: bool,
    /// The key's state is not known: a remove overlapped another operation
    /// or failed, or its record may have expired ([`Book::expire_by`]). The
    /// checks that need the state are off for the key until a remove lands
    /// alone. Only the workloads with removes or upkeep set it.
    muddled: bool,
    /// When the first `begin` of the key (since a remove landed alone) was
    /// asked, by the store's time: no record of it expires before this
    /// plus the retention.
    first_begun_at: Option<u64>,
    /// Whether a record of the key may have expired: a sweep may delete it.
    may_have_expired: bool,
    /// Claims a remove revoked, by token, with their payload: their holders'
    /// completions and renewals must be refused, and their records never
    /// come back.
    revoked: BTreeMap<u64, u8>,
}

/// The fault a seed injects while the callers run.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The power goes at the `n`-th disk operation.
    PowerCut(u64),
    /// The `n`-th disk operation fails with EIO.
    Eio(u64),
    /// Growing writes fail once the disk holds `n` more bytes, until the
    /// first refusal.
    FullDisk(u64),
    None,
}

impl KeyBook {
    fn holding(&self, token: u64) -> Option<Holding> {
        self.holding.iter().find(|h| h.token == token).copied()
    }

    /// A claim's holding, or one whose lease may have ended if a remove
    /// revoked the claim (the bool); `None` if it is neither.
    fn held_or_revoked(&self, token: u64) -> Option<(Holding, bool)> {
        if let Some(holding) = self.holding(token) {
            return Some((holding, false));
        }
        let payload = *self.revoked.get(&token)?;
        let holding = Holding {
            token,
            payload,
            lease_end_at_least: 0,
        };
        Some((holding, true))
    }

    /// Whether a remove may have changed the key behind the book's back:
    /// one is in flight, or the key is muddled.
    fn loose(&self) -> bool {
        self.muddled || self.removing > 0
    }

    /// An operation of this key begins (its first look at the book).
    fn enter(&mut self) {
        self.in_flight += 1;
        if self.removing > 0 {
            self.overlapped = true;
        }
    }

    /// A remove that landed while nothing else of the key was in flight:
    /// the key is absent, its holders revoked, and everything else the
    /// book knew of it is gone.
    fn removed_alone(&mut self) {
        let mut revoked = std::mem::take(&mut self.revoked);
        revoked.extend(self.holding.iter().map(|h| (h.token, h.payload)));
        *self = KeyBook {
            revoked,
            in_flight: self.in_flight,
            ..KeyBook::default()
        };
    }
}

/// An operation of one key in flight, from its first look at the book to
/// its last entry in it: a remove meanwhile makes the key muddled. Made
/// before the operation's other book guards, so that it drops after them.
struct InFlight {
    shared: Shared,
    k: u64,
}

impl InFlight {
    fn enter(shared: &Shared, k: u64) -> InFlight {
        ledger(shared).keys.entry(k).or_default().enter();
        InFlight {
            shared: Arc::clone(shared),
            k,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(self.k).or_default();
        entry.in_flight = entry.in_flight.saturating_sub(1);
    }
}

type Shared = Arc<Mutex<Book>>;

/// Counts over the seeds of one test, for its summary line.
#[derive(Default)]
struct Stats {
    operations: AtomicU64,
    failed: AtomicU64,
    claims: AtomicU64,
    takeovers: AtomicU64,
    fenced: AtomicU64,
    cuts_among_callers: AtomicU64,
    removes: AtomicU64,
    removes_alone: AtomicU64,
    clock_steps: AtomicU64,
    healed_faults: AtomicU64,
    repeated: AtomicU64,
    clean_reopens: AtomicU64,
    /// Runs in which a record may have expired before the restart.
    expiring_runs: AtomicU64,
    /// Records the sweeps deleted (the sweeper thread's and the upkeep's).
    swept: AtomicU64,
    /// Begins that waited for a running attempt, and those of them that
    /// still answered `InProgress` when their wait ended.
    waits: AtomicU64,
    waits_timed_out: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Book> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fails the run with the trace so far.
fn fail(shared: &Shared, what: String) -> ! {
    let book = ledger(shared);
    let from = book.trace.len().saturating_sub(40);
    panic!("{what}\nlast steps:\n  {}", book.trace[from..].join("\n  "))
}

/// How a holder's write went, as far as the book is concerned.
enum Heard {
    Ok,
    /// `LeaseLost`: allowed once the lease may have ended.
    Fenced,
    /// Any other error: allowed once the power is cut.
    Failed,
}

/// How a caller reaches the store: the blocking API (the committer may
/// hand it other callers' answers to pass on) or the async one, awaited
/// under the scheduler (answered by the committer itself).
enum Handle {
    Blocking(Store),
    Async(AsyncStore),
}

impl Handle {
    fn begin(&self, key: &Key, fingerprint: Fingerprint) -> idemkv::Result<Begin> {
        match self {
            Handle::Blocking(store) => store.begin(key, fingerprint),
            Handle::Async(store) => block_on(store.begin(key, fingerprint)),
        }
    }

    fn begin_with(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> idemkv::Result<Begin> {
        match self {
            Handle::Blocking(store) => store.begin_with(key, fingerprint, terms),
            Handle::Async(store) => block_on(store.begin_with(key, fingerprint, terms)),
        }
    }

    fn complete(&self, claim: Claim, response: StoredResponse) -> Result<(), CompleteError> {
        match self {
            Handle::Blocking(store) => store.complete(claim, response),
            Handle::Async(store) => block_on(store.complete(claim, response)),
        }
    }

    fn release(&self, claim: Claim) -> Result<(), CompleteError> {
        match self {
            Handle::Blocking(store) => store.release(claim),
            Handle::Async(store) => block_on(store.release(claim)),
        }
    }

    fn renew(&self, claim: &Claim) -> idemkv::Result<()> {
        match self {
            Handle::Blocking(store) => store.renew(claim),
            Handle::Async(store) => block_on(store.renew(claim)),
        }
    }

    fn record_progress(&self, claim: &Claim, phase: &str, state: Vec<u8>) -> idemkv::Result<()> {
        match self {
            Handle::Blocking(store) => store.record_progress(claim, phase, state),
            Handle::Async(store) => block_on(store.record_progress(claim, phase, state)),
        }
    }

    fn get(&self, key: &Key) -> idemkv::Result<Option<idemkv::Record>> {
        match self {
            Handle::Blocking(store) => store.get(key),
            Handle::Async(store) => block_on(store.get(key)),
        }
    }

    fn remove(&self, key: &Key) -> idemkv::Result<bool> {
        match self {
            Handle::Blocking(store) => store.remove(key),
            Handle::Async(store) => block_on(store.remove(key)),
        }
    }
}

/// What a run leaves out of its seed's workload: the minimizer's cuts.
/// The empty plan runs the seed as drawn.
#[derive(Clone, Debug, Default)]
struct Plan {
    /// The upkeep thread runs beside the callers (a workload of its own).
    upkeep: bool,
    /// The callers also remove keys and step the wall clock (a workload of
    /// its own).
    admin: bool,
    /// Steps not made, as (caller, step): the step's key and operation are
    /// still drawn, so the caller's next step draws what it would have.
    skip: BTreeSet<(u64, u64)>,
    /// The drawn fault is not injected.
    no_fault: bool,
    /// The run does not print its trace (a minimizer's try).
    quiet: bool,
}

impl Plan {
    /// `IDEMKV_INTERLEAVING_SKIP` (`0:3,1:7`: caller 0's step 3, caller
    /// 1's step 7) and `IDEMKV_INTERLEAVING_FAULT=none`.
    fn from_env() -> Plan {
        let skip = std::env::var("IDEMKV_INTERLEAVING_SKIP")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| {
                let (caller, step) = pair.trim().split_once(':')?;
                Some((caller.parse().ok()?, step.parse().ok()?))
            })
            .collect();
        let no_fault = std::env::var("IDEMKV_INTERLEAVING_FAULT").is_ok_and(|v| v == "none");
        Plan {
            upkeep: false,
            admin: false,
            skip,
            no_fault,
            quiet: false,
        }
    }

    /// The environment that replays this plan.
    fn env(&self) -> String {
        let mut env = String::new();
        if !self.skip.is_empty() {
            let pairs: Vec<String> = self.skip.iter().map(|(c, s)| format!("{c}:{s}")).collect();
            env.push_str(&format!("IDEMKV_INTERLEAVING_SKIP={} ", pairs.join(",")));
        }
        if self.no_fault {
            env.push_str("IDEMKV_INTERLEAVING_FAULT=none ");
        }
        env
    }
}

/// One caller: its operations, drawn from its own stream of the seed.
struct Caller {
    id: u64,
    rng: Rng,
    /// Draws the administrative steps of the workload with removes, from a
    /// stream of its own: the other workloads' seeds draw what they did.
    admin_rng: Rng,
    /// Whether and how long each step's `begin` waits for a running
    /// attempt: a stream of its own too.
    wait_rng: Rng,
    plan: Arc<Plan>,
    store: Handle,
    disk: SimDisk,
    clock: ManualClock,
    shared: Shared,
    /// The claims this caller holds: key and claim.
    claims: Vec<(u64, Claim)>,
    stats: Arc<Stats>,
}

impl Caller {
    fn run(mut self) {
        for step in 0..STEPS {
            let k = self.rng.below(KEYS);
            let operation = self.rng.below(20);
            let admin = self.admin_rng.below(16);
            let back = self.admin_rng.one_in(2);
            let wait = WAITS.get(self.wait_rng.below(4 * WAITS.len() as u64) as usize);
            if self.plan.skip.contains(&(self.id, step)) {
                continue;
            }
            if self.plan.admin {
                match admin {
                    0 | 1 => {
                        self.remove(step, k);
                        continue;
                    }
                    2 => {
                        self.step_clock(step, back);
                        continue;
                    }
                    _ => {}
                }
            }
            match operation {
                0..=7 => self.begin(step, k, wait.copied()),
                8..=10 => self.complete(step),
                11..=12 => self.release(step),
                13..=14 => self.renew(step),
                15 => self.abandon(step),
                16..=17 => self.pass_time(step),
                _ => self.get(step, k),
            }
        }
        // Claims still held are dropped, as by a handler that crashed:
        // their records stay in flight, which the final check expects.
    }

    fn note(&self, line: String) {
        Stats::bump(&self.stats.operations);
        ledger(&self.shared)
            .trace
            .push(format!("caller {}: {line}", self.id));
    }

    fn wrong(&self, what: String) -> ! {
        fail(&self.shared, format!("caller {}: {what}", self.id))
    }

    /// Whether an operation may fail: only once a fault was injected.
    fn may_fail(&self) -> bool {
        self.disk.is_down() || self.disk.eios() > 0 || self.disk.refusals() > 0
    }

    /// What a holder's write answered: `LeaseLost` is right only if the
    /// lease may have ended by the answer (`lease_end_at_least` is the
    /// earliest it could), another error only after a fault.
    fn judge(&self, what: &str, k: u64, err: Option<&Error>, lease_end_at_least: u64) -> Heard {
        match err {
            None => Heard::Ok,
            Some(Error::LeaseLost) => {
                let now = now_ms(&self.clock);
                // A remove in flight or muddling the key may have revoked it.
                let removed = ledger(&self.shared)
                    .keys
                    .get(&k)
                    .is_some_and(KeyBook::loose);
                if now < lease_end_at_least && !removed {
                    self.wrong(format!(
                        "{what}: LeaseLost at {now} ms, but the lease lasts until at least {lease_end_at_least} ms"
                    ));
                }
                Stats::bump(&self.stats.fenced);
                Heard::Fenced
            }
            Some(_) if self.may_fail() => {
                Stats::bump(&self.stats.failed);
                Heard::Failed
            }
            Some(err) => self.wrong(format!("{what}: {err}, before any fault")),
        }
    }

    /// Notes and judges the answer to a holder's completion or release
    /// (attempt 0, or a repetition after a transient failure).
    fn hear(
        &self,
        what: &str,
        k: u64,
        attempt: u64,
        result: &Result<(), CompleteError>,
        lease_end_at_least: u64,
    ) -> Heard {
        self.note(format!(
            "{what}{}: {:?}",
            if attempt > 0 { ", repeated" } else { "" },
            result.as_ref().map_err(|e| e.error().to_string())
        ));
        self.judge(
            what,
            k,
            result.as_ref().err().map(|e| e.error()),
            lease_end_at_least,
        )
    }

    fn pass_time(&mut self, step: u64) {
        let by = TIME_STEPS[self.rng.below(TIME_STEPS.len() as u64) as usize];
        // Under the book's lock, so that no caller hears an answer given
        // at the new time before the book knows what may have expired.
        let mut book = ledger(&self.shared);
        self.clock.advance(by);
        book.expire_by(now_ms(&self.clock));
        drop(book);
        self.note(format!("step {step}: {} s pass", by.as_secs()));
    }

    /// Drops the oldest claim without ending it: its record stays in
    /// flight until its lease ends, and its holder still counts.
    fn abandon(&mut self, step: u64) {
        if self.claims.is_empty() {
            return;
        }
        let (k, claim) = self.claims.remove(0);
        self.note(format!("step {step}: drop k{k} (token {})", claim.token()));
    }

    /// A `begin`, which with `wait` waits that long for a running attempt
    /// (`Terms::wait`): its answer is judged as any begin's, over the
    /// whole time from its ask to its answer.
    fn begin(&mut self, step: u64, k: u64, wait: Option<Duration>) {
        let payload = self.rng.below(2) as u8;
        let asked_at = now_ms(&self.clock);
        let _in_flight = InFlight::enter(&self.shared, k);
        let (max_token, completed) = {
            let mut book = ledger(&self.shared);
            let entry = book.keys.entry(k).or_default();
            entry.begun.insert(payload);
            entry.first_begun_at.get_or_insert(asked_at);
            let completed = entry.completed.clone();
            (book.max_token, completed)
        };
        let answer = match wait {
            Some(timeout) => {
                self.store
                    .begin_with(&key(k), fp(payload), Terms::default().wait(timeout))
            }
            None => self.store.begin(&key(k), fp(payload)),
        };
        if wait.is_some() {
            Stats::bump(&self.stats.waits);
            if matches!(answer, Ok(Begin::InProgress { .. })) {
                Stats::bump(&self.stats.waits_timed_out);
            }
        }
        let answered_at = now_ms(&self.clock);
        Stats::bump(&self.stats.operations);
        let line = match &answer {
            Ok(Begin::Claimed(claim)) => format!(
                "Claimed(token {}{})",
                claim.token(),
                if claim.is_takeover() {
                    format!(
                        ", takeover recovering {:?}",
                        claim.recovered().map(|p| p.phase())
                    )
                } else {
                    String::new()
                }
            ),
            Ok(Begin::Replay(r)) => format!("Replay({:?})", String::from_utf8_lossy(r.body())),
            Ok(other) => format!("{other:?}"),
            Err(err) => format!("error: {err}"),
        };
        let mut book = ledger(&self.shared);
        book.trace.push(format!(
            "caller {} step {step}: begin k{k} payload {payload}: {line}",
            self.id
        ));
        let entry = book.keys.entry(k).or_default().clone();
        drop(book);
        // What the book knew when the begin was asked may be stale only
        // if a remove overlapped it.
        let known = !entry.loose();
        let wrong = |why: String| self.wrong(format!("begin k{k} payload {payload}: {why}"));
        match answer {
            Ok(Begin::Claimed(claim)) => {
                let token = claim.token();
                Stats::bump(&self.stats.claims);
                if claim.is_takeover() {
                    Stats::bump(&self.stats.takeovers);
                }
                if token <= max_token {
                    wrong(format!(
                        "token {token} is not above {max_token}, answered before it began"
                    ));
                }
                if let Some((t, p, _)) = entry.completed.as_ref().filter(|_| known) {
                    wrong(format!(
                        "claimed a key completed by token {t} with payload {p}"
                    ));
                }
                if let Some(live) = entry
                    .holding
                    .iter()
                    .filter(|_| known)
                    .find(|h| h.lease_end_at_least > answered_at)
                {
                    wrong(format!(
                        "claimed at {answered_at} ms or before, while token {}'s lease lasts until at least {} ms",
                        live.token, live.lease_end_at_least
                    ));
                }
                let mut book = ledger(&self.shared);
                book.max_token = book.max_token.max(token);
                let entry = book.keys.entry(k).or_default();
                entry.holding.push(Holding {
                    token,
                    payload,
                    lease_end_at_least: asked_at + LEASE.as_millis() as u64,
                });
                entry.granted.insert(token, payload);
                if let Some(point) = claim.recovered() {
                    entry.points.insert(token, point.phase().to_string());
                }
                drop(book);
                self.claims.push((k, claim));
            }
            Ok(Begin::Replay(response)) => {
                let body = response.body().to_vec();
                if !entry.attempted.contains(&(payload, body.clone())) {
                    wrong("replayed a response no holder stored with this payload".into());
                }
                for (_, p, b) in completed
                    .iter()
                    .chain(entry.completed.iter())
                    .filter(|_| known)
                {
                    if *p != payload || *b != body {
                        wrong(format!(
                            "replayed other bytes than the completion (payload {p})"
                        ));
                    }
                }
            }
            Ok(Begin::Mismatch) => {
                if entry.begun.iter().all(|&p| p == payload) {
                    wrong("a mismatch, but no begin of this key carried another payload".into());
                }
                if known && completed.is_some_and(|(_, p, _)| p == payload) {
                    wrong("a mismatch on a key completed with this payload".into());
                }
            }
            Ok(Begin::InProgress { .. }) => {
                if let Some((t, p, _)) = completed.filter(|_| known) {
                    wrong(format!(
                        "in progress, but its completion (token {t}, payload {p}) was acknowledged"
                    ));
                }
            }
            Err(_) if self.may_fail() => {
                Stats::bump(&self.stats.failed);
                ledger(&self.shared).keys.entry(k).or_default().uncertain = true;
            }
            Err(err) => wrong(format!("failed before any fault: {err}")),
        }
    }

    /// Stops holding the oldest claim (for a completion or a release)
    /// before the store hears of it: from then on another claim of its key
    /// is allowed. Returns the claim with its holding, and whether a remove
    /// revoked it (its holding then says its lease may have ended).
    fn give_up(&mut self) -> Option<(u64, Claim, Holding, bool)> {
        if self.claims.is_empty() {
            return None;
        }
        let (k, claim) = self.claims.remove(0);
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        let (holding, revoked) = entry.held_or_revoked(claim.token())?;
        entry.holding.retain(|h| h.token != claim.token());
        Some((k, claim, holding, revoked))
    }

    /// The key of the claim [`give_up`](Self::give_up) would take.
    fn oldest_key(&self) -> Option<u64> {
        self.claims.first().map(|(k, _)| *k)
    }

    fn complete(&mut self, step: u64) {
        let Some(k) = self.oldest_key() else {
            return;
        };
        let _in_flight = InFlight::enter(&self.shared, k);
        let Some((k, mut claim, holding, revoked)) = self.give_up() else {
            return;
        };
        let Holding { token, payload, .. } = holding;
        let body = format!("k{k} token {token} caller {}", self.id).into_bytes();
        ledger(&self.shared)
            .keys
            .entry(k)
            .or_default()
            .attempted
            .push((payload, body.clone()));
        let what = format!("step {step}: complete k{k} (token {token})");
        // A transient failure hands the claim back: the completion is
        // repeated with it, as a caller does once the store healed (one
        // that landed answers `Ok`), a few times at most.
        for attempt in 0.. {
            let result = self
                .store
                .complete(claim, StoredResponse::new(200, body.clone()));
            let heard = self.hear(&what, k, attempt, &result, holding.lease_end_at_least);
            match heard {
                Heard::Ok if revoked => self.wrong(format!(
                    "{what}: accepted, though a remove revoked the claim"
                )),
                Heard::Ok => break,
                Heard::Fenced => return,
                Heard::Failed => {
                    let mut book = ledger(&self.shared);
                    let entry = book.keys.entry(k).or_default();
                    entry.uncertain = true;
                    let failed = (token, payload, body.clone());
                    if !entry.failed_completions.contains(&failed) {
                        entry.failed_completions.push(failed);
                    }
                    drop(book);
                    match result.err().and_then(|e| e.into_claim()) {
                        Some(back) if attempt < REPEATS => {
                            Stats::bump(&self.stats.repeated);
                            claim = back;
                        }
                        _ => return,
                    }
                }
            }
        }
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        entry.ended.insert(token);
        let known = !entry.loose();
        let earlier = entry.completed.clone().filter(|_| known);
        let later = entry.granted.range(token + 1..).next().map(|(t, _)| *t);
        let later = later.filter(|_| known);
        entry.completed = Some((token, payload, body));
        drop(book);
        if let Some((t, p, _)) = earlier {
            self.wrong(format!(
                "{what}: a second completion acknowledged (the first: token {t}, payload {p})"
            ));
        }
        if let Some(later) = later {
            self.wrong(format!(
                "{what}: accepted, though token {later} was granted the key after it"
            ));
        }
    }

    fn release(&mut self, step: u64) {
        let Some(k) = self.oldest_key() else {
            return;
        };
        let _in_flight = InFlight::enter(&self.shared, k);
        // A revoked claim's release may answer `Ok` (the key is free) or
        // `LeaseLost` (another claim holds it): both are right.
        let Some((k, mut claim, holding, _revoked)) = self.give_up() else {
            return;
        };
        let token = claim.token();
        let what = format!("step {step}: release k{k} (token {token})");
        // Repeated after a transient failure, as a completion is.
        for attempt in 0.. {
            let result = self.store.release(claim);
            let heard = self.hear(&what, k, attempt, &result, holding.lease_end_at_least);
            match heard {
                Heard::Ok => {
                    ledger(&self.shared)
                        .keys
                        .entry(k)
                        .or_default()
                        .ended
                        .insert(token);
                    return;
                }
                Heard::Fenced => return,
                Heard::Failed => {
                    ledger(&self.shared).keys.entry(k).or_default().uncertain = true;
                    match result.err().and_then(|e| e.into_claim()) {
                        Some(back) if attempt < REPEATS => {
                            Stats::bump(&self.stats.repeated);
                            claim = back;
                        }
                        _ => return,
                    }
                }
            }
        }
    }

    /// A renewal, or half the time a recovery point (which restarts the
    /// lease the same way).
    fn renew(&mut self, step: u64) {
        let Some((k, claim)) = self.claims.first() else {
            return;
        };
        let (k, token) = (*k, claim.token());
        let _in_flight = InFlight::enter(&self.shared, k);
        let Some((holding, revoked)) = ledger(&self.shared)
            .keys
            .entry(k)
            .or_default()
            .held_or_revoked(token)
        else {
            return;
        };
        let asked_at = now_ms(&self.clock);
        let phase = format!("caller {} step {step}", self.id);
        let progress = self.rng.one_in(2);
        let result = if progress {
            self.store
                .record_progress(claim, &phase, phase.clone().into_bytes())
        } else {
            self.store.renew(claim)
        };
        let what = format!(
            "step {step}: {} k{k} (token {token})",
            if progress { "record_progress" } else { "renew" }
        );
        self.note(format!("{what}: {result:?}"));
        let heard = self.judge(&what, k, result.as_ref().err(), holding.lease_end_at_least);
        if revoked && matches!(heard, Heard::Ok) {
            self.wrong(format!(
                "{what}: accepted, though a remove revoked the claim"
            ));
        }
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        match heard {
            Heard::Ok => {
                let lease_end = asked_at + LEASE.as_millis() as u64;
                for h in entry.holding.iter_mut().filter(|h| h.token == token) {
                    h.lease_end_at_least = h.lease_end_at_least.max(lease_end);
                }
                if progress {
                    entry.points.insert(token, phase);
                }
            }
            Heard::Fenced => {
                // Taken over: the claim is gone.
                entry.holding.retain(|h| h.token != token);
                drop(book);
                drop(self.claims.remove(0));
            }
            Heard::Failed => {
                if progress {
                    entry.failed_points.entry(token).or_default().push(phase);
                }
            }
        }
    }

    /// Removes key `k`: once it answers, a remove that overlapped no other
    /// operation of the key leaves it absent, with its holders revoked; one
    /// that overlapped (or failed) leaves it muddled.
    fn remove(&mut self, step: u64, k: u64) {
        let live_before = {
            let mut book = ledger(&self.shared);
            let entry = book.keys.entry(k).or_default();
            if entry.in_flight > 0 || entry.removing > 0 {
                entry.overlapped = true;
            }
            entry.removing += 1;
            entry.completed.is_some() && !entry.muddled
        };
        let result = self.store.remove(&key(k));
        Stats::bump(&self.stats.removes);
        self.note(format!("step {step}: remove k{k}: {result:?}"));
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        entry.removing -= 1;
        match result {
            Ok(live) => {
                if entry.overlapped {
                    entry.muddled = true;
                } else {
                    // Unless it may have expired meanwhile: an expired
                    // record is not live.
                    if live_before && !live && !entry.may_have_expired {
                        drop(book);
                        self.wrong(format!(
                            "remove k{k}: found no live record, though a completion was acknowledged"
                        ));
                    }
                    entry.removed_alone();
                    Stats::bump(&self.stats.removes_alone);
                }
            }
            Err(_) if self.may_fail() => {
                Stats::bump(&self.stats.failed);
                entry.muddled = true;
            }
            Err(err) => {
                drop(book);
                self.wrong(format!("remove k{k}: {err}, before any fault"));
            }
        }
        if entry.removing == 0 {
            entry.overlapped = false;
        }
    }

    /// Steps the wall clock back an hour or forward ten minutes (not past
    /// ten minutes ahead of the store's time, so that without upkeep no
    /// record's retention ends at the restart), as an NTP step would: the
    /// store's time, and so every lease, must not move.
    fn step_clock(&mut self, step: u64, back: bool) {
        let mut book = ledger(&self.shared);
        let ahead = wall_ms(&self.clock) as i64 - now_ms(&self.clock) as i64;
        let line = if back {
            self.clock.step_back(WALL_STEP_BACK);
            format!(
                "step {step}: the wall clock steps back {} s",
                WALL_STEP_BACK.as_secs()
            )
        } else if ahead <= 0 {
            self.clock.step_forward(WALL_STEP_FORWARD);
            format!(
                "step {step}: the wall clock steps forward {} s",
                WALL_STEP_FORWARD.as_secs()
            )
        } else {
            format!(
                "step {step}: the wall clock stays, {} s ahead",
                ahead / 1000
            )
        };
        book.trace.push(format!("caller {}: {line}", self.id));
        drop(book);
        Stats::bump(&self.stats.operations);
        Stats::bump(&self.stats.clock_steps);
    }

    fn get(&mut self, step: u64, k: u64) {
        let _in_flight = InFlight::enter(&self.shared, k);
        let completed = ledger(&self.shared)
            .keys
            .entry(k)
            .or_default()
            .completed
            .clone();
        let record = self.store.get(&key(k));
        self.note(format!("step {step}: get k{k}: {}", describe(&record)));
        let mut book = ledger(&self.shared);
        let entry = book.keys.entry(k).or_default();
        let known = !entry.loose();
        if let Ok(Some(read)) = &record
            && let RecordState::Completed { response } = read.state()
            && known
        {
            entry
                .read_completions
                .push((read.fingerprint(), response.body().to_vec()));
        }
        drop(book);
        let Some((_, payload, body)) = completed.filter(|_| known) else {
            return;
        };
        if record.is_err() && self.may_fail() {
            return;
        }
        match record {
            Ok(Some(record))
                if record.fingerprint() == fp(payload)
                    && record.response().map(|r| r.body()) == Some(&body[..]) => {}
            other => self.wrong(format!(
                "get k{k}: {}, but its completion was acknowledged",
                describe(&other)
            )),
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

/// Why `record` is not what the book allows for a key, once every caller
/// is done (and, after a power cut, the machine restarted); `None` if it is.
fn disallowed(entry: &KeyBook, record: Option<&idemkv::Record>) -> Option<&'static str> {
    if let Some(record) = record
        && entry.revoked.contains_key(&record.token())
    {
        return Some("the record of a claim a remove revoked");
    }
    if entry.muddled {
        return muddled_disallowed(entry, record);
    }
    let keeps = |(fingerprint, body): &(Fingerprint, Vec<u8>)| {
        record.is_some_and(|record| {
            record.fingerprint() == *fingerprint
                && record.response().map(|r| r.body()) == Some(&body[..])
        })
    };
    if !entry.read_completions.iter().all(keeps) {
        return Some("not the completion a get read before");
    }
    if let Some((_, payload, body)) = &entry.completed {
        let right = record.is_some_and(|record| {
            record.fingerprint() == fp(*payload)
                && record.response().map(|r| r.body()) == Some(&body[..])
        });
        return (!right).then_some("not the acknowledged completion");
    }
    // The latest claim granted, and whether its holder still holds it.
    let latest = entry.granted.last_key_value().map(|(t, p)| (*t, *p));
    let latest_held = latest.is_some_and(|(t, _)| entry.holding(t).is_some());
    let Some(record) = record else {
        return latest_held.then_some("absent, though its latest claim is held");
    };
    let token = record.token();
    match record.state() {
        RecordState::Completed { response } => {
            let landed = entry.failed_completions.iter().any(|(t, p, b)| {
                Some(*t) == latest.map(|(t, _)| t)
                    && record.fingerprint() == fp(*p)
                    && response.body() == &b[..]
            });
            (!landed).then_some(
                "completed without an acknowledgement or a failed completion of its latest claim",
            )
        }
        _ => {
            if entry.ended.contains(&token) {
                return Some("in flight for a claim whose release or completion was acknowledged");
            }
            let point = record.recovery_point().map(|p| p.phase().to_string());
            let point_allowed = point == entry.points.get(&token).cloned()
                || point.is_some_and(|point| {
                    entry
                        .failed_points
                        .get(&token)
                        .is_some_and(|failed| failed.contains(&point))
                });
            match latest {
                Some((latest, _)) if token < latest => {
                    Some("in flight for an older claim than the latest granted")
                }
                Some((latest, payload)) if token == latest => {
                    if record.fingerprint() != fp(payload) {
                        Some("in flight with another payload than its claim's")
                    } else if !(latest_held || entry.uncertain) {
                        Some("in flight, though its holder gave it up")
                    } else if !point_allowed {
                        Some("in flight with a recovery point nobody acknowledged or tried")
                    } else {
                        None
                    }
                }
                // A claim nobody was told of: only a failed begin's.
                _ => (!entry.uncertain).then_some("in flight for a claim nobody was granted"),
            }
        }
    }
}

/// [`disallowed`] for a key whose state a remove muddled: the record may
/// be absent; else only what some operation could have written.
fn muddled_disallowed(entry: &KeyBook, record: Option<&idemkv::Record>) -> Option<&'static str> {
    let record = record?;
    match record.state() {
        RecordState::Completed { response } => {
            let stored = entry
                .attempted
                .iter()
                .any(|(p, b)| record.fingerprint() == fp(*p) && response.body() == &b[..]);
            (!stored).then_some("completed with a response no holder stored with its payload")
        }
        _ if entry.ended.contains(&record.token()) => {
            Some("in flight for a claim whose release or completion was acknowledged")
        }
        _ if !(entry.granted.contains_key(&record.token()) || entry.uncertain) => {
            Some("in flight for a claim nobody was granted")
        }
        _ => None,
    }
}

/// Each key's record is what the book allows.
fn check_records(store: &Store, shared: &Shared, when: &str) {
    let keys = ledger(shared).keys.clone();
    for (k, entry) in keys {
        let mut record = store.get(&key(k));
        // A read that failed after a fault has the store reopen its file
        // at once, in a batch of the committer's: the scheduler runs it
        // while this thread yields. Only a transient error is waited out.
        for _ in 0..HEAL_YIELDS {
            match &record {
                Err(err) if err.is_transient() => {
                    shuttle::thread::yield_now();
                    record = store.get(&key(k));
                }
                _ => break,
            }
        }
        let seen = describe(&record);
        let Ok(record) = record else {
            fail(shared, format!("{when}: get k{k}: {seen}"));
        };
        if let Some(why) = disallowed(&entry, record.as_ref()) {
            fail(
                shared,
                format!(
                    "{when}: k{k} is {seen}: {why}; the book: completion {:?}, granted {:?}, \
                     holders {:?}, points {:?}, ended {:?}, failed completions {:?}, \
                     failed points {:?}, uncertain {}",
                    entry.completed.as_ref().map(|(t, p, b)| (
                        t,
                        p,
                        String::from_utf8_lossy(b).into_owned()
                    )),
                    entry.granted,
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

/// The upkeep thread of the workloads with upkeep: integrity checks,
/// sweeps, scans and summaries (`Store::stats`) while the callers write.
/// Its steps are caller `MAX_CALLERS`'s to the minimizer.
struct Upkeeper {
    rng: Rng,
    plan: Arc<Plan>,
    store: Store,
    disk: SimDisk,
    shared: Shared,
    stats: Arc<Stats>,
}

impl Upkeeper {
    const ID: u64 = MAX_CALLERS;

    fn run(mut self) {
        for step in 0..STEPS {
            let operation = self.rng.below(4);
            if self.plan.skip.contains(&(Self::ID, step)) {
                continue;
            }
            Stats::bump(&self.stats.operations);
            let heard = match operation {
                0 => self.store.verify().map(|report| {
                    if !report.is_ok() {
                        self.wrong(format!("verify found problems: {:?}", report.details));
                    }
                    format!("verify: ok, {} records", report.records)
                }),
                // A sweep deletes only records that may have expired.
                1 => self.store.sweep_expired().map(|deleted| {
                    if deleted > 0 && !ledger(&self.shared).expiry_began {
                        self.wrong(format!(
                            "a sweep deleted {deleted} records before their retention ended"
                        ));
                    }
                    format!("sweep: {deleted} deleted")
                }),
                // A summary counts at most a record per key, none damaged,
                // and no expired one before a retention could have ended.
                2 => self.store.stats().map(|stats| {
                    let records = stats.in_flight + stats.completed + stats.expired;
                    let expiry_began = ledger(&self.shared).expiry_began;
                    if records > KEYS || stats.damaged > 0 || stats.allocated_bytes == 0 {
                        self.wrong(format!("stats: {stats:?}"));
                    }
                    if stats.expired > 0 && !expiry_began {
                        self.wrong(format!(
                            "stats: {} expired records before any retention ended",
                            stats.expired
                        ));
                    }
                    format!(
                        "stats: {} in flight, {} completed, {} expired",
                        stats.in_flight, stats.completed, stats.expired
                    )
                }),
                // What a scan reads is durable too (a batch's frame is
                // synced before its commit): its completions join the
                // book's, which the restart must keep.
                _ => {
                    let _in_flight: Vec<InFlight> = (0..KEYS)
                        .map(|k| InFlight::enter(&self.shared, k))
                        .collect();
                    let mut read = Vec::new();
                    self.store
                        .scan(&ScanFilter::default(), |record| {
                            read.push(record);
                            ControlFlow::Continue(())
                        })
                        .map(|()| {
                            if read.len() as u64 > KEYS {
                                self.wrong(format!("scan: {} records of {KEYS} keys", read.len()));
                            }
                            let mut book = ledger(&self.shared);
                            for record in &read {
                                let record = match record {
                                    Ok(record) => record,
                                    Err(err) => {
                                        drop(book);
                                        self.wrong(format!("scan: {err}"));
                                    }
                                };
                                let k = (0..KEYS).find(|k| key(*k) == *record.key());
                                let Some(k) = k else {
                                    drop(book);
                                    self.wrong(format!("scan: a record of {}", record.key()));
                                };
                                let entry = book.keys.entry(k).or_default();
                                if let RecordState::Completed { response } = record.state()
                                    && !entry.loose()
                                {
                                    entry
                                        .read_completions
                                        .push((record.fingerprint(), response.body().to_vec()));
                                }
                            }
                            format!("scan: {} records", read.len())
                        })
                }
            };
            let line = heard.unwrap_or_else(|err| {
                if !(self.disk.is_down() || self.disk.eios() > 0 || self.disk.refusals() > 0) {
                    self.wrong(format!("{err}, before any fault"));
                }
                Stats::bump(&self.stats.failed);
                format!("error: {err}")
            });
            ledger(&self.shared)
                .trace
                .push(format!("upkeep step {step}: {line}"));
        }
    }

    fn wrong(&self, what: String) -> ! {
        fail(&self.shared, format!("upkeep: {what}"))
    }
}

/// One seeded run, inside the scheduler; with `plan.upkeep`, an upkeep
/// thread runs beside the callers. `steppers` is set to the number of
/// threads that make steps, for the minimizer.
fn world(seed: u64, plan: &Arc<Plan>, stats: &Arc<Stats>, steppers: &AtomicU64) {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::default();
    let clock = ManualClock::default();
    // With upkeep, records expire within a run and the sweeper thread
    // runs under the scheduler (its interval is the scheduler's choice, as
    // the writeback thread's is); without, nothing expires.
    let retention = if plan.upkeep {
        UPKEEP_RETENTION
    } else {
        Duration::from_secs(3600)
    };
    let config = Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(retention)
        .sweep_interval(plan.upkeep.then_some(Duration::from_secs(1)))
        // Half the seeds heal at once; the others wait a second after a
        // failed commit, on the timers' clock (src/sync.rs), which only
        // waiting begins move: until then a batch is refused with
        // `Poisoned`, and the committer heals only when its queue is empty
        // (its timed receive timing out, as the scheduler chooses).
        .reopen_backoff(if Rng::stream(seed, BACKOFF_STREAM).one_in(2) {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        })
        .writeback_interval(Duration::from_millis(1))
        // A checkpoint after every batch, or only when segments fill, or
        // (a third of the seeds, from a stream of their own) every 30 s of
        // the timers' clock, which waiting begins move.
        .checkpoint_interval(
            match (rng.one_in(2), Rng::stream(seed, CHECKPOINT_STREAM).below(3)) {
                (_, 0) => Duration::from_secs(30),
                (true, _) => Duration::ZERO,
                (false, _) => Duration::MAX,
            },
        );
    let open = || {
        Store::with_journaled_backend(
            disk.store_file(),
            DirJournal::with_dir(disk.journal_dir()),
            config.clone(),
        )
    };
    let shared: Shared = Arc::default();
    if plan.upkeep {
        ledger(&shared).retention_ms = Some(retention.as_millis() as u64);
    }
    let mut store = match open() {
        Ok(store) => store,
        Err(err) => fail(&shared, format!("open: {err}")),
    };
    let callers = 2 + rng.below(MAX_CALLERS - 1);
    let fault = match rng.below(4) {
        0 => Fault::PowerCut(1 + rng.below(CUT_WITHIN)),
        1 => Fault::Eio(1 + rng.below(CUT_WITHIN)),
        2 => Fault::FullDisk(4096 * rng.below(64)),
        _ => Fault::None,
    };
    let fault = if plan.no_fault { Fault::None } else { fault };
    match fault {
        Fault::PowerCut(n) => disk.cut_after(n),
        Fault::Eio(n) => disk.eio_after(n),
        Fault::FullDisk(bytes) => disk.fill_once(bytes),
        Fault::None => {}
    }
    ledger(&shared).trace.push(format!("fault: {fault:?}"));
    steppers.store(callers, Ordering::Relaxed);
    let mut threads: Vec<_> = (0..callers)
        .map(|id| {
            let mut rng = Rng::stream(seed, id);
            let store = if rng.one_in(2) {
                Handle::Async(store.to_async())
            } else {
                Handle::Blocking(store.clone())
            };
            let caller = Caller {
                id,
                rng,
                admin_rng: Rng::stream(seed, ADMIN_STREAMS + id),
                wait_rng: Rng::stream(seed, WAIT_STREAMS + id),
                plan: Arc::clone(plan),
                store,
                disk: disk.clone(),
                clock: clock.clone(),
                shared: Arc::clone(&shared),
                claims: Vec::new(),
                stats: Arc::clone(stats),
            };
            shuttle::thread::spawn(move || caller.run())
        })
        .collect();
    if plan.upkeep {
        steppers.store(callers + 1, Ordering::Relaxed);
        let upkeeper = Upkeeper {
            rng: Rng::stream(seed, u64::MAX - 1),
            plan: Arc::clone(plan),
            store: store.clone(),
            disk: disk.clone(),
            shared: Arc::clone(&shared),
            stats: Arc::clone(stats),
        };
        threads.push(shuttle::thread::spawn(move || upkeeper.run()));
    }
    for thread in threads {
        if thread.join().is_err() {
            // The caller's panic carries the failure; shuttle reports it.
            return;
        }
    }
    // Every wait ended with its begin: none is still registered.
    let waiters = store.metrics().waiters;
    if waiters != 0 {
        fail(
            &shared,
            format!("{waiters} waits still registered after every caller"),
        );
    }
    if disk.is_down() {
        Stats::bump(&stats.cuts_among_callers);
        ledger(&shared).trace.push("the power is cut".into());
    } else {
        disk.disarm();
        disk.no_eio();
        disk.fill(None);
        if disk.eios() > 0 || disk.refusals() > 0 {
            Stats::bump(&stats.healed_faults);
        }
        check_records(&store, &shared, "after every caller");
        if Rng::stream(seed, CLOSE_STREAM).one_in(2) {
            // A clean close under the scheduler: the committer's shutdown,
            // the writeback thread's last syncs and the final commit
            // interleave; the file opens again with every record as it was.
            // A store still recovering from the seed's fault reports it
            // (`Error::Poisoned`), and has written its file back.
            let faulted = disk.eios() > 0 || disk.refusals() > 0;
            tally_sweeps(&store, &shared, stats);
            match store.close() {
                Ok(()) => {}
                Err(err) if faulted && err.is_transient() => {
                    ledger(&shared)
                        .trace
                        .push(format!("the close after the fault: {err}"));
                }
                Err(err) => fail(&shared, format!("a clean close: {err}")),
            }
            // The store opens at the wall clock's time, which the workload
            // with removes may have stepped ahead.
            ledger(&shared).expire_by(wall_ms(&clock));
            store = match open() {
                Ok(store) => store,
                Err(err) => fail(&shared, format!("open after a clean close: {err}")),
            };
            Stats::bump(&stats.clean_reopens);
            ledger(&shared)
                .trace
                .push("the store is closed and opened again".into());
            check_records(&store, &shared, "after a clean close and reopen");
        }
        disk.cut_now();
        ledger(&shared)
            .trace
            .push("the power is cut after the last answer".into());
    }
    tally_sweeps(&store, &shared, stats);
    if ledger(&shared).expiry_began {
        Stats::bump(&stats.expiring_runs);
    }
    // The store's threads stop on the dead disk (their last sync fails).
    drop(store);
    disk.restart(&mut Rng::stream(seed, u64::MAX));
    ledger(&shared).expire_by(wall_ms(&clock));
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
    if std::env::var_os("IDEMKV_INTERLEAVING_SEED").is_some() && !plan.quiet {
        println!(
            "seed {seed}: {} disk operations\n  {}",
            disk.ops(),
            ledger(&shared).trace.join("\n  ")
        );
    }
}

/// Counts the records `store`'s sweeps deleted, which only a key whose
/// record may have expired can have lost.
fn tally_sweeps(store: &Store, shared: &Shared, stats: &Stats) {
    let swept = store.metrics().expired;
    if swept > 0 && !ledger(shared).expiry_began {
        fail(
            shared,
            format!("the sweeps deleted {swept} records before any retention ended"),
        );
    }
    stats.swept.fetch_add(swept, Ordering::Relaxed);
}

/// Runs seed `seed` under the scheduler it picks: shuttle's random
/// scheduler for even seeds, PCT (few, well-placed preemptions) for odd
/// ones. Returns the failure, if any.
fn run_seed(seed: u64, plan: &Plan, stats: &Arc<Stats>) -> Result<(), String> {
    run_counting(seed, plan, stats).0
}

/// [`run_seed`], and how many threads made steps.
fn run_counting(seed: u64, plan: &Plan, stats: &Arc<Stats>) -> (Result<(), String>, u64) {
    let stats = Arc::clone(stats);
    let plan = Arc::new(plan.clone());
    let steppers = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&steppers);
    let mut config = shuttle::Config::new();
    // redb's B-tree code recurses deeper than shuttle's default stack.
    config.stack_size = 4 << 20;
    config.failure_persistence = shuttle::FailurePersistence::None;
    let run = std::panic::catch_unwind(move || {
        if seed.is_multiple_of(2) {
            shuttle::Runner::new(RandomScheduler::new_from_seed(seed, 1), config)
                .run(move || world(seed, &plan, &stats, &counted));
        } else {
            shuttle::Runner::new(PctScheduler::new_from_seed(seed, 3, 1), config)
                .run(move || world(seed, &plan, &stats, &counted));
        }
    });
    let outcome = run.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    });
    (outcome, steppers.load(Ordering::Relaxed))
}

/// A caller's completion landed while another caller's takeover of the
/// key (decided on the record read before it, once the lease had run out)
/// was being committed; the completing caller's next `begin` was told
/// `InProgress` from the takeover's lock-table entry instead of replaying
/// its acknowledged completion. Fixed: the completion marks that entry
/// outdated, and lookups read the record. Found at seed 258,406 of an
/// earlier workload; seed 32,479 is the first to meet it in this one.
#[test]
fn a_retry_after_a_completion_that_raced_a_takeover_replays_it() {
    if let Err(failure) = run_seed(32_479, &Plan::default(), &Arc::default()) {
        panic!("seed 32479: {failure}");
    }
}

/// Cuts a failing seed's run down: the fault left out if the run still
/// fails without it, then each step of each caller in turn, kept out
/// while the run still fails (in any way: leaving a step out changes the
/// thread switches after it, which the seed's scheduler draws anew), in
/// passes until one leaves nothing more out (three at most).
fn minimize(seed: u64, mut plan: Plan) -> Plan {
    plan.quiet = true;
    let (_, steppers) = run_counting(seed, &plan, &Arc::default());
    // The upkeep thread's steps are listed as those of caller `MAX_CALLERS`.
    let ids: Vec<u64> = (0..steppers.min(MAX_CALLERS))
        .chain(plan.upkeep.then_some(Upkeeper::ID))
        .collect();
    let fails = |plan: &Plan| run_seed(seed, plan, &Arc::default()).is_err();
    if !plan.no_fault {
        plan.no_fault = true;
        if !fails(&plan) {
            plan.no_fault = false;
        }
    }
    for _pass in 0..3 {
        let before = plan.skip.len();
        for &caller in &ids {
            for step in 0..STEPS {
                if plan.skip.insert((caller, step)) && !fails(&plan) {
                    plan.skip.remove(&(caller, step));
                }
            }
        }
        if plan.skip.len() == before {
            break;
        }
    }
    plan.quiet = false;
    plan
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs the seeds the environment asks for (see the module's docs) with
/// or without the upkeep thread; a failure is minimized and panics with
/// the lines that replay it, and a pass prints the counts.
fn run_seeds(test: &str, upkeep: bool, admin: bool) {
    let seeds = match env_u64("IDEMKV_INTERLEAVING_SEED") {
        Some(seed) => seed..seed + 1,
        None => {
            let first = env_u64("IDEMKV_INTERLEAVING_FIRST").unwrap_or(0);
            let default = if cfg!(debug_assertions) { 200 } else { 2_000 };
            first..first + env_u64("IDEMKV_INTERLEAVING_SEEDS").unwrap_or(default)
        }
    };
    let count = seeds.end - seeds.start;
    let stats = Arc::new(Stats::default());
    let plan = Plan {
        upkeep,
        admin,
        ..Plan::from_env()
    };
    for seed in seeds.clone() {
        if let Err(failure) = run_seed(seed, &plan, &stats) {
            let minimal = minimize(seed, plan.clone());
            let minimal_failure = run_seed(seed, &minimal, &Arc::default())
                .err()
                .unwrap_or_else(|| "the minimized run passed".into());
            let command = format!(
                "cargo test --release --features shuttle --test interleavings {test} -- --exact --nocapture"
            );
            panic!(
                "seed {seed} failed: {failure}\n\
                 replay it: {}IDEMKV_INTERLEAVING_SEED={seed} {command}\n\
                 minimized ({} steps left out{}): {minimal_failure}\n\
                 replay the minimized run: {}IDEMKV_INTERLEAVING_SEED={seed} {command}",
                plan.env(),
                minimal.skip.len(),
                if minimal.no_fault { ", no fault" } else { "" },
                minimal.env(),
            );
        }
    }
    println!(
        "{test}: seeds {}..{} ({count}) passed: {} operations, {} claims \
         ({} takeovers), {} holders fenced, {} failed operations ({} completions or releases \
         repeated), {} power cuts while callers ran, {} faults healed in place, \
         {} removes ({} alone), {} wall-clock steps, {} clean closes and reopens, \
         {} runs in which records may have expired, {} records swept, \
         {} waiting begins ({} still in progress when the wait ended)",
        seeds.start,
        seeds.end,
        stats.operations.load(Ordering::Relaxed),
        stats.claims.load(Ordering::Relaxed),
        stats.takeovers.load(Ordering::Relaxed),
        stats.fenced.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.repeated.load(Ordering::Relaxed),
        stats.cuts_among_callers.load(Ordering::Relaxed),
        stats.healed_faults.load(Ordering::Relaxed),
        stats.removes.load(Ordering::Relaxed),
        stats.removes_alone.load(Ordering::Relaxed),
        stats.clock_steps.load(Ordering::Relaxed),
        stats.clean_reopens.load(Ordering::Relaxed),
        stats.expiring_runs.load(Ordering::Relaxed),
        stats.swept.load(Ordering::Relaxed),
        stats.waits.load(Ordering::Relaxed),
        stats.waits_timed_out.load(Ordering::Relaxed),
    );
}

#[test]
fn seeded_interleavings_keep_every_promise() {
    run_seeds("seeded_interleavings_keep_every_promise", false, false);
}

/// The same workloads with an upkeep thread beside the callers: integrity
/// checks (`verify`, which takes the database to itself), sweeps and
/// scans, interleaved with the writes and the heals.
#[test]
fn seeded_interleavings_with_upkeep_keep_every_promise() {
    run_seeds(
        "seeded_interleavings_with_upkeep_keep_every_promise",
        true,
        false,
    );
}

/// The same callers, who also remove keys (revoking their holders) and
/// step the wall clock back and forward, which must move no lease.
#[test]
fn seeded_interleavings_with_removes_keep_every_promise() {
    run_seeds(
        "seeded_interleavings_with_removes_keep_every_promise",
        false,
        true,
    );
}

/// Both at once: the upkeep thread's checks, sweeps and scans beside
/// callers who remove keys and step the wall clock.
#[test]
fn seeded_interleavings_with_upkeep_and_removes_keep_every_promise() {
    run_seeds(
        "seeded_interleavings_with_upkeep_and_removes_keep_every_promise",
        true,
        true,
    );
}
