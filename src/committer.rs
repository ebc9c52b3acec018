//! The committer: the one thread that writes to the redb file.
//!
//! Callers send a [`Request`] over a channel and wait for its reply, a
//! oneshot that a thread blocks on and a task awaits alike. The
//! committer takes everything queued (up to [`MAX_BATCH`]), applies the batch
//! in one write transaction, commits once (one fsync under
//! `Durability::Immediate`) and only then answers every caller in the batch.
//! Under load N concurrent claims share one fsync. Every write goes this
//! one way, whoever the caller is: a blocked thread and an async task queue
//! alike, so no caller's thread ever runs a commit.
//!
//! Every operation has its own reply type ([`Granted`], [`Completed`],
//! [`Renewed`], [`Swept`], ...), carried in its own request variant, so a
//! caller gets exactly the answer its operation can give.
//!
//! Invariants:
//! - One writer: the writer's state ([`Worker`]) belongs to the committer
//!   thread alone.
//! - No caller is answered before the commit that covers its operation
//!   returned; if the commit fails, every caller in the batch gets the error.
//! - Every operation of a committed batch is answered exactly once: by the
//!   committer, or by a blocked caller of the batch to whom it handed the
//!   answer ([`Relay`]), and by whoever drops that caller's share if the
//!   caller stopped waiting.
//! - Holder operations (complete, release, renew) are judged here, against
//!   the record read inside the write transaction: a token that no longer
//!   holds the key is `LeaseLost`, and nothing else refuses a holder.
//! - After any storage failure the committer is poisoned: it answers
//!   `Error::Poisoned` to every later write instead of writing into a database
//!   in an unknown state. It heals by itself: with backoff, it closes the
//!   database and opens it again from its file (the engine's crash recovery
//!   keeps exactly what was committed durably), reads the token ceiling and
//!   record count back, and takes writes again. An in-memory store cannot
//!   reopen and stays poisoned.
//! - With the journal ([`crate::journal`]), a batch's changes are one frame,
//!   synced before the transaction commits without a sync, so readers never
//!   see what is not on disk; a checkpoint batch (about once a second)
//!   commits with a sync instead, writes no frame, and records the last
//!   frame it covers in `meta`. A batch too large for a frame is a
//!   checkpoint too. Between checkpoints a writeback thread
//!   ([`crate::writeback`]) syncs the file's pages that the engine has
//!   already written, so that a checkpoint waits for fewer of them.
//! - Fencing tokens only grow: tokens are handed out from blocks of
//!   [`TOKEN_BLOCK`]; a block's ceiling is persisted in `meta` in the same
//!   transaction as the first claim that uses it, and a reopened store starts
//!   above the persisted ceiling. So every token is larger than any token
//!   issued before it, across restarts, at the cost of one `meta` write per
//!   block instead of one per commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use futures_channel::oneshot;
use redb::Database;

use crate::clock::StoreTime;
use crate::config::{ClaimTerms, Config, Durability};
use crate::engine::{Engine, Source};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::health::{Health, HealthCell};
use crate::journal::Journal;
use crate::key::Key;
use crate::log::event;
use crate::metrics::{Counters, add, bump};
use crate::outcome::Begin;
use crate::record::{StoredRecord, StoredState, decide};
use crate::recovery::RecoveryPoint;
use crate::response::StoredResponse;
use crate::storage::{
    Change, LINGER_SHARE, META_LAST_SWEEP, META_TOKEN_CEILING, Opened, WriteTables, set_journal_seq,
};
use crate::writeback::Writeback;

/// Most operations applied in one write transaction. Trades the size of
/// one transaction (and the wait of the batch's first caller) against
/// syncs shared by more callers. Chosen well above the batches observed
/// (30-50 operations at 64 clients on 2 cores), so that it binds only
/// behind a stall; not tuned by measurement.
pub(crate) const MAX_BATCH: usize = 1024;

/// The write queue's room, in operations: four batches. Trades memory held
/// by queued operations against how far callers can run ahead of a slow
/// disk before they wait for room (backpressure). Not tuned by
/// measurement.
const QUEUE_ROOM: usize = MAX_BATCH * 4;

/// Longest a batch waits for the callers of the previous batch to come back.
/// Trades a small batch's latency (up to this much) against sharing its
/// sync with the callers about to return; about one fsync on the machine
/// it was measured on (docs/benchmarks.md, "64 clients: one writer's CPU").
const LINGER: Duration = Duration::from_micros(200);

/// The largest previous batch whose callers a batch waits for. Past it the
/// committer takes what is queued: a commit carrying this many operations
/// loses little by leaving a few late callers to the next one, while
/// waiting for them costs the committer a sleep and a wake-up per arrival,
/// on the thread that bounds the throughput (docs/benchmarks.md, "64
/// clients: one writer's CPU").
const LINGER_MAX_BATCH: usize = 16;

/// Fencing tokens reserved (and persisted) at a time. Trades one write of
/// `meta` per block of claims against the tokens a restart skips (at most
/// a block's worth; tokens need only grow). Not tuned by measurement: one
/// small write per 4,096 claims does not show in any benchmark.
pub(crate) const TOKEN_BLOCK: u64 = 4096;

/// The longest wait between reopen attempts after a failed commit (unless
/// `Config::reopen_backoff` is longer); each failed attempt doubles the wait.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A claim the committer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Granted {
    pub token: u64,
    pub lease_until_ms: u64,
    pub takeover: bool,
    /// The recovery point a takeover inherits from the attempt before.
    pub recovered: Option<RecoveryPoint>,
}

/// A completion the committer wrote; the record expires at `expires_at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completed {
    pub expires_at_ms: u64,
}

/// A renewal the committer wrote: the new lease end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Renewed {
    pub lease_until_ms: u64,
}

/// One sweep batch: records deleted, and whether more may be due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Swept {
    pub deleted: u64,
    pub more: bool,
}

/// What [`Store::import`](crate::Store::import) wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// Records written.
    pub imported: u64,
    /// Records left out because they had already expired.
    pub skipped_expired: u64,
}

/// What a caller receives: its answer, and other callers' answers to pass
/// on ([`Relay`]).
type Delivery<T> = (Result<T>, Relay);

/// Where one operation's answer goes once the commit that covers it returned.
struct Reply<T> {
    sender: oneshot::Sender<Delivery<T>>,
    /// Set while the batch is applied; sent after the commit.
    answer: Option<Result<T>>,
    /// Whether the caller is a blocked thread ([`crate::blocking`]), which
    /// runs the moment it is woken and so may pass answers on.
    relays: bool,
}

impl<T> Reply<T> {
    fn new(sender: oneshot::Sender<Delivery<T>>) -> Reply<T> {
        Reply {
            sender,
            answer: None,
            relays: crate::blocking::in_block_on(),
        }
    }

    fn send(self, relay: Relay) {
        // A caller that gave up waiting (a dropped future) has dropped its
        // receiver; what was committed stays committed, and the answers it
        // was to pass on are passed on here, as `relay` drops.
        let answer = self.answer.unwrap_or(Err(Error::Closed));
        let _ = self.sender.send((answer, relay));
    }

    fn fail(self, err: Error) {
        let _ = self.sender.send((Err(err), Relay::default()));
    }
}

/// Answers a committed batch's blocked callers spread over a binary tree:
/// the committer wakes two of them, each woken caller wakes two more, and
/// so on, so the batch's wake-ups (a system call each, and on a virtual
/// machine an interrupt to another core) fall on the callers' threads, in
/// parallel, instead of all on the one writer. A relay answers what it
/// holds when it is dropped, wherever that happens: in the woken caller's
/// poll, in the committer when the caller's receiver is gone, or with a
/// receiver dropped holding it; so every request in it is answered exactly
/// once. Only blocked threads relay: an async task runs when its runtime
/// gets to it, which must not delay anyone else's answer.
///
/// Kept because it was measured: answering every caller from the committer
/// cost 16-17% of the 64-client rate on 2 cores (docs/benchmarks.md,
/// "Three write-path choices, measured").
#[derive(Default)]
struct Relay(Vec<Request>);

impl Relay {
    /// Answers every request of a committed batch: async callers at once,
    /// blocked threads through the tree.
    fn answer(mut batch: Vec<Request>) {
        // Nothing is allocated when every caller relays (a lone caller's
        // batch of one included).
        for request in batch.extract_if(.., |request| !request.relays()) {
            request.send(Relay::default());
        }
        drop(Relay(batch));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let mut first = std::mem::take(&mut self.0);
        if first.is_empty() {
            return;
        }
        // The larger half first, so that a relay of one splits off nothing.
        let second = first.split_off(first.len().div_ceil(2));
        for mut half in [first, second] {
            if let Some(head) = half.pop() {
                head.send(Relay(half));
            }
        }
    }
}

/// One write, as a caller asks for it, with its reply.
enum Request {
    /// Claim `key` if the decision rule still says so inside the transaction.
    Claim {
        key: Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
        reply: Reply<Begin<Granted>>,
    },
    /// Store the response of the claim with `token`.
    Complete {
        key: Key,
        token: u64,
        response: StoredResponse,
        retention_ms: u64,
        reply: Reply<Completed>,
    },
    /// Delete the in-flight record of the claim with `token`.
    Release {
        key: Key,
        token: u64,
        reply: Reply<()>,
    },
    /// Extend the lease of the claim with `token`, and with a `point`,
    /// record it as the claim's recovery point (a checkpoint).
    Renew {
        key: Key,
        token: u64,
        terms: ClaimTerms,
        point: Option<RecoveryPoint>,
        reply: Reply<Renewed>,
    },
    /// Delete whatever is stored for `key`; answers whether a live record
    /// was deleted.
    Remove { key: Key, reply: Reply<bool> },
    /// Delete up to `limit` expired records.
    Sweep { limit: usize, reply: Reply<Swept> },
    /// Write `records` as given, in this one transaction (an import).
    Import {
        records: Vec<StoredRecord>,
        reply: Reply<Imported>,
    },
}

/// Runs `$body` with `$reply` bound to the request's reply, whatever its
/// variant.
macro_rules! with_reply {
    ($request:expr, $reply:ident => $body:expr) => {
        match $request {
            Request::Claim { $reply, .. } => $body,
            Request::Complete { $reply, .. } => $body,
            Request::Release { $reply, .. } => $body,
            Request::Renew { $reply, .. } => $body,
            Request::Remove { $reply, .. } => $body,
            Request::Sweep { $reply, .. } => $body,
            Request::Import { $reply, .. } => $body,
        }
    };
}

impl Request {
    /// Sends the answer, with `relay` for the caller to pass on.
    fn send(self, relay: Relay) {
        with_reply!(self, reply => reply.send(relay))
    }

    /// Whether the caller may pass answers on ([`Relay`]).
    fn relays(&self) -> bool {
        with_reply!(self, reply => reply.relays)
    }

    fn fail(self, err: Error) {
        with_reply!(self, reply => reply.fail(err))
    }
}

/// The caller's side: a handle that submits operations and, when dropped,
/// stops and joins the thread (once every [`Submitter`] is gone too).
pub(crate) struct Committer {
    submitter: Option<Submitter>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// A cloneable way to submit operations, for other threads (the sweeper).
/// Every method sends its operation at once and returns the reply to wait
/// for: it resolves once the commit that covers the operation returned.
#[derive(Clone)]
pub(crate) struct Submitter {
    sender: Sender<Request>,
    shared: Arc<Shared>,
}

/// The answer to one submitted operation.
pub(crate) struct Pending<T> {
    /// Where the answer comes from (the committer, or a relaying caller),
    /// or why none will.
    answer: Result<oneshot::Receiver<Delivery<T>>>,
    /// A request the full queue has not taken yet, with the way to queue
    /// it: it waits for room in this future, without blocking the thread
    /// that polls it.
    unsent: Option<(Request, Submitter)>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        if let Some((request, submitter)) = this.unsent.take() {
            match submitter.queue_or_wait(request, cx.waker()) {
                Ok(None) => {}
                Ok(Some(back)) => {
                    this.unsent = Some((back, submitter));
                    return Poll::Pending;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        match &mut this.answer {
            Ok(receiver) => Pin::new(receiver).poll(cx).map(|delivery| match delivery {
                Ok((answer, relay)) => {
                    // Other callers' answers first: they wait on this one.
                    drop(relay);
                    answer
                }
                // The committer stopped without answering: the store is
                // closing.
                Err(oneshot::Canceled) => Err(Error::Closed),
            }),
            Err(err) => Poll::Ready(Err(std::mem::replace(err, Error::Closed))),
        }
    }
}

impl<T> Pending<T> {
    /// Blocks the thread until the answer is there.
    pub fn wait(self) -> Result<T> {
        crate::blocking::block_on(self)
    }
}

impl Submitter {
    fn submit<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Pending<T> {
        let (sender, answer) = oneshot::channel();
        let request = request(Reply::new(sender));
        // The queue holds QUEUE_ROOM operations. A sender beyond that waits for
        // room (backpressure) without blocking: its future is woken when
        // the committer takes a batch out, so an async caller never holds
        // a runtime worker, and a blocking one parks in `wait`.
        match self.try_queue(request) {
            Ok(unsent) => Pending {
                answer: Ok(answer),
                unsent: unsent.map(|back| (back, self.clone())),
            },
            Err(err) => Pending {
                answer: Err(err),
                unsent: None,
            },
        }
    }

    /// Queues `request`, or hands it back if the queue is full.
    fn try_queue(&self, request: Request) -> Result<Option<Request>> {
        if self.shared.dead.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let sent = match self.sender.try_send(request) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(back)) => Ok(Some(back)),
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        };
        // The committer died after the check above: nobody else may drain
        // what was just queued, so this caller does (every request is
        // answered once, by whoever receives it).
        if self.shared.dead.load(Ordering::SeqCst) {
            self.shared.fail_queued();
        }
        sent
    }

    /// Queues `request`, or registers `waker` for room and hands the
    /// request back. The second try after registering closes the window in
    /// which the committer made room before the waker was there.
    fn queue_or_wait(&self, request: Request, waker: &Waker) -> Result<Option<Request>> {
        let Some(back) = self.try_queue(request)? else {
            return Ok(None);
        };
        self.shared.wait_for_room(waker);
        self.try_queue(back)
    }

    pub fn claim(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
    ) -> Pending<Begin<Granted>> {
        self.submit(|reply| Request::Claim {
            key: key.clone(),
            fingerprint,
            terms,
            reply,
        })
    }

    pub fn complete(
        &self,
        key: &Key,
        token: u64,
        response: StoredResponse,
        retention_ms: u64,
    ) -> Pending<Completed> {
        self.submit(|reply| Request::Complete {
            key: key.clone(),
            token,
            response,
            retention_ms,
            reply,
        })
    }

    pub fn release(&self, key: &Key, token: u64) -> Pending<()> {
        self.submit(|reply| Request::Release {
            key: key.clone(),
            token,
            reply,
        })
    }

    /// Extends the claim's lease; with a `point`, records it too (the
    /// recovery point a takeover would inherit).
    pub fn renew(
        &self,
        key: &Key,
        token: u64,
        terms: ClaimTerms,
        point: Option<RecoveryPoint>,
    ) -> Pending<Renewed> {
        self.submit(|reply| Request::Renew {
            key: key.clone(),
            token,
            terms,
            point,
            reply,
        })
    }

    pub fn remove(&self, key: &Key) -> Pending<bool> {
        self.submit(|reply| Request::Remove {
            key: key.clone(),
            reply,
        })
    }

    pub fn sweep(&self, limit: usize) -> Pending<Swept> {
        self.submit(|reply| Request::Sweep { limit, reply })
    }

    /// Writes `records` as they are, all or none: refused with
    /// `ImportConflict` if any key holds a live record. Expired records are
    /// skipped.
    pub fn import(&self, records: Vec<StoredRecord>) -> Pending<Imported> {
        self.submit(|reply| Request::Import { records, reply })
    }
}

impl Committer {
    pub fn start(
        engine: Arc<Engine>,
        config: Config,
        time: Arc<StoreTime>,
        counters: Arc<Counters>,
        health: Arc<HealthCell>,
        opened: &Opened,
        journal: Option<Journal>,
    ) -> Result<Committer> {
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_ROOM);
        let Opened {
            token_ceiling,
            live_records,
            in_flight,
            ..
        } = *opened;
        counters.set_live_records(live_records);
        counters.in_flight.set(in_flight);
        // Only a journaled store leaves pages unsynced between commits.
        let writeback = journal
            .as_ref()
            .and_then(|_| start_writeback(&engine, config.writeback_interval));
        let worker = Worker {
            engine,
            config,
            time,
            counters,
            health,
            token_seq: token_ceiling,
            token_ceiling,
            live_records,
            poisoned: None,
            unsynced: false,
            swept_at_ms: None,
            in_flight,
            writeback,
            journal,
        };
        let shared = Arc::new(Shared {
            receiver,
            dead: AtomicBool::new(false),
            room_waiters: Mutex::new(Vec::new()),
            room_waiting: AtomicUsize::new(0),
            #[cfg(test)]
            panic_gate: Mutex::new(None),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("idemkv-committer".into())
                .spawn(move || shared.run(worker))
                .map_err(Error::io)?
        };
        Ok(Committer {
            submitter: Some(Submitter { sender, shared }),
            thread: Some(thread),
        })
    }

    /// The submitter of this committer, or `Closed` once it is shutting down.
    pub fn submitter(&self) -> Result<&Submitter> {
        self.submitter.as_ref().ok_or(Error::Closed)
    }

    /// Stops the thread once it has answered everything queued, and reports
    /// its final sync (a store with unsynced commits syncs at shutdown). Every
    /// other [`Submitter`] must be gone, or this waits for them.
    pub fn shut_down(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        // Closing the channel lets the worker finish what is queued and exit.
        drop(self.submitter.take());
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(Error::Closed)),
            None => Ok(()),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Nobody is left to return this error to (`Store::close` reports it).
        if let Err(_err) = self.stop() {
            event!(
                error,
                error = %_err,
                "the store's last commit when it was dropped failed"
            );
        }
    }
}

/// A failed commit the committer is recovering from.
struct Poison {
    cause: String,
    next_attempt: Instant,
    backoff: Duration,
    attempts: u64,
}

struct Worker {
    engine: Arc<Engine>,
    config: Config,
    time: Arc<StoreTime>,
    counters: Arc<Counters>,
    health: Arc<HealthCell>,
    /// The last fencing token issued.
    token_seq: u64,
    /// The highest token the file allows; `token_seq <= token_ceiling`.
    token_ceiling: u64,
    /// Records in the file (expired ones included until they are deleted),
    /// as of the last successful commit.
    live_records: u64,
    /// Set by a storage failure; refuses every write until a reopen heals it.
    poisoned: Option<Poison>,
    /// A commit with `Durability::None` happened since the last synced one.
    unsynced: bool,
    /// Set when a sweep in the current batch deleted records: the batch
    /// records the time in `meta`.
    swept_at_ms: Option<u64>,
    /// Records in flight in the file (the `in_flight` gauge).
    in_flight: u64,
    /// The journal's writer, when the store journals its commits.
    journal: Option<Journal>,
    /// Syncs a journaled file store's file between checkpoints.
    writeback: Option<Writeback>,
}

/// The writeback thread of a journaled store: it syncs the file (from a
/// handle of its own) or the custom backend; none for an in-memory store,
/// or when the file cannot be opened a second time (the checkpoints then
/// sync everything themselves, as they would anyway).
fn start_writeback(engine: &Engine, interval: Duration) -> Option<Writeback> {
    let started = match engine.source() {
        Source::File(path) => Writeback::for_file(path, interval),
        Source::Backend(backend, _) => {
            let backend = Arc::clone(backend);
            Writeback::start(interval, move || backend.sync_data())
        }
        Source::Memory => return None,
    };
    match started {
        Ok(writeback) => Some(writeback),
        Err(_err) => {
            event!(
                warn,
                error = %_err,
                "cannot start the writeback thread: checkpoints sync all of the file's pages themselves"
            );
            None
        }
    }
}

/// What the committer thread and the callers share.
struct Shared {
    /// The queue the committer thread serves (and, once it died, whoever
    /// finds it dead drains).
    receiver: Receiver<Request>,
    /// Set once the committer thread has died (a panic, which is a bug):
    /// from then on every request queued or submitted is answered `Closed`.
    dead: AtomicBool,
    /// Callers whose request found the queue full, woken when the
    /// committer takes a batch out (or dies).
    room_waiters: Mutex<Vec<Waker>>,
    /// How many wakers `room_waiters` holds, read without its lock on every
    /// batch.
    room_waiting: AtomicUsize,
    /// Makes the committer thread panic at its next batch, once it has
    /// said so on the first channel and heard back on the second (tests of
    /// the dead-committer path).
    #[cfg(test)]
    panic_gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

/// Marks the committer dead if its thread unwinds, and answers everything
/// queued: a caller never waits for a thread that is gone.
struct DeathWatch<'a> {
    shared: &'a Shared,
    health: Arc<HealthCell>,
    counters: Arc<Counters>,
}

impl Drop for DeathWatch<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let shared = self.shared;
        shared.dead.store(true, Ordering::SeqCst);
        event!(
            error,
            "the committer thread panicked: writes are answered Error::Closed; reopen the store"
        );
        let health = Health::Failed {
            cause: "the committer thread stopped after an internal error (a panic); \
                    close the store and open it again"
                .to_string(),
        };
        self.health.set(health, &self.counters);
        shared.fail_queued();
        shared.made_room();
    }
}

impl Shared {
    /// Answers `Closed` to every request in the queue (once the committer
    /// is dead).
    fn fail_queued(&self) {
        while let Ok(request) = self.receiver.try_recv() {
            request.fail(Error::Closed);
        }
    }

    /// Registers `waker` to be woken when the queue has room.
    fn wait_for_room(&self, waker: &Waker) {
        let mut waiters = self
            .room_waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A future is polled again only after a wake-up, which emptied the
        // list, so a waker is rarely there twice; a duplicate only wakes
        // its task once more.
        waiters.push(waker.clone());
        self.room_waiting.fetch_add(1, Ordering::SeqCst);
        drop(waiters);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Wakes every caller waiting for room in the queue, after a batch was
    /// taken out of it. Costs one atomic load when nobody waits.
    fn made_room(&self) {
        // Orders the batch's removal from the queue before the read of the
        // count, as `wait_for_room` orders its count before its retry: one
        // of the two sees the other (the waker is woken, or its retry
        // finds room).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.room_waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiters = std::mem::take(
            &mut *self
                .room_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.room_waiting.fetch_sub(waiters.len(), Ordering::SeqCst);
        for waker in waiters {
            waker.wake();
        }
    }

    /// The committer thread: serves the queue until every sender is gone,
    /// then syncs (see [`Worker::sync_on_shutdown`]) and drops the worker.
    fn run(&self, mut worker: Worker) -> Result<()> {
        let _watch = DeathWatch {
            shared: self,
            health: Arc::clone(&worker.health),
            counters: Arc::clone(&worker.counters),
        };
        // Operations in the latest batch.
        let mut last_batch = 1;
        loop {
            let first = match worker.next_attempt() {
                // Poisoned: wake up for the next reopen attempt even when no
                // request comes.
                Some(at) => match self.receiver.recv_deadline(at) {
                    Ok(request) => request,
                    Err(RecvTimeoutError::Timeout) => {
                        worker.heal();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.receiver.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            drain_into(&self.receiver, &mut batch, MAX_BATCH);
            // The callers answered by the last commit are likely to come back
            // with their next operation within microseconds; waiting briefly
            // for them makes the next commit carry them all instead of
            // splitting them over two fsyncs. A lone caller (last batch of 1)
            // never waits, and neither does a batch after one of more than
            // `LINGER_MAX_BATCH`.
            if batch.len() < last_batch && last_batch <= LINGER_MAX_BATCH {
                let deadline = Instant::now() + LINGER;
                while batch.len() < last_batch {
                    match self.receiver.recv_deadline(deadline) {
                        Ok(request) => {
                            batch.push(request);
                            drain_into(&self.receiver, &mut batch, last_batch);
                        }
                        Err(_) => break,
                    }
                }
            }
            last_batch = batch.len();
            self.made_room();
            #[cfg(test)]
            if let Some((arrived, go)) = self
                .panic_gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                let _ = arrived.send(());
                let _ = go.recv();
                panic!("injected panic in the committer");
            }
            if worker.next_attempt().is_some_and(|at| Instant::now() >= at) {
                worker.heal();
            }
            worker.run_batch(batch);
        }
        worker.sync_on_shutdown()
    }
}

impl Worker {
    /// When the next reopen is due, while poisoned and able to reopen.
    fn next_attempt(&self) -> Option<Instant> {
        let poison = self.poisoned.as_ref()?;
        self.engine.can_reopen().then_some(poison.next_attempt)
    }

    /// Marks the store poisoned by `cause` and schedules the first reopen.
    fn poison(&mut self, cause: String) {
        bump(&self.counters.failed_commits);
        event!(
            error,
            cause = %cause,
            "a commit failed: writes are refused (Error::Poisoned) until the store reopens its file"
        );
        let health = if self.engine.can_reopen() {
            Health::Recovering {
                cause: cause.clone(),
                attempts: 0,
            }
        } else {
            Health::Failed {
                cause: cause.clone(),
            }
        };
        self.health.set(health, &self.counters);
        let first = self.config.reopen_backoff;
        self.poisoned = Some(Poison {
            cause,
            next_attempt: Instant::now().checked_add(first).unwrap_or_else(far_future),
            backoff: first,
            attempts: 0,
        });
    }

    /// Reopens the database; on success writes resume, on failure the next
    /// attempt waits twice as long.
    fn heal(&mut self) {
        let Some(poison) = self.poisoned.as_mut() else {
            return;
        };
        poison.attempts += 1;
        match self.engine.reopen() {
            Ok((opened, journal)) => {
                self.journal = journal;
                // Tokens issued before the failure may have landed: never
                // reissue one. The file's ceiling covers every durable token.
                self.token_seq = self.token_seq.max(opened.token_ceiling);
                self.token_ceiling = opened.token_ceiling;
                self.live_records = opened.live_records;
                self.counters.set_live_records(opened.live_records);
                self.in_flight = opened.in_flight;
                self.counters.in_flight.set(opened.in_flight);
                self.unsynced = false;
                event!(
                    info,
                    attempts = poison.attempts,
                    records = opened.live_records,
                    "the store reopened its file after a failed commit: writes resume"
                );
                self.poisoned = None;
                bump(&self.counters.recoveries);
                self.health.set(Health::Ok, &self.counters);
            }
            Err(err) => {
                let longest = MAX_BACKOFF.max(self.config.reopen_backoff);
                poison.backoff = poison.backoff.saturating_mul(2).min(longest);
                poison.next_attempt = Instant::now()
                    .checked_add(poison.backoff)
                    .unwrap_or_else(far_future);
                event!(
                    warn,
                    attempts = poison.attempts,
                    error = %err,
                    retry_in_ms = poison.backoff.as_millis() as u64,
                    "reopening the store after a failed commit failed; trying again"
                );
                let cause = format!("{}; reopening failed: {err}", poison.cause);
                // A file that is gone needs an operator; a full disk or an
                // I/O error may pass by itself.
                let health = if matches!(err, Error::FileReplaced { .. }) {
                    Health::Failed { cause }
                } else {
                    Health::Recovering {
                        cause,
                        attempts: poison.attempts,
                    }
                };
                self.health.set(health, &self.counters);
            }
        }
    }

    fn run_batch(&mut self, mut batch: Vec<Request>) {
        if let Some(poison) = &self.poisoned {
            for request in batch {
                request.fail(Error::Poisoned {
                    cause: poison.cause.clone(),
                });
            }
            return;
        }
        // A panic inside redb (damaged pages) fails the batch like any
        // storage error, and poisons the store.
        let engine = Arc::clone(&self.engine);
        let started = Instant::now();
        let committed = engine.read(|db| self.commit_batch(db, &mut batch));
        let took = started.elapsed();
        self.counters.timings.commit(took, batch.len());
        if took > self.config.slow_commit {
            event!(
                warn,
                elapsed_ms = took.as_secs_f64() * 1e3,
                batch = batch.len(),
                threshold_ms = self.config.slow_commit.as_secs_f64() * 1e3,
                "slow commit: {:.1} ms for {} operation(s)",
                took.as_secs_f64() * 1e3,
                batch.len(),
            );
        }
        match committed {
            Ok(()) => {
                bump(&self.counters.commits);
                add(&self.counters.committed_ops, batch.len() as u64);
                Relay::answer(batch);
            }
            Err(err) => {
                engine.committed();
                let cause = err.to_string();
                self.poison(cause.clone());
                let mut err = Some(err);
                for request in batch {
                    // The first caller gets the original error, the others
                    // the same cause as `Poisoned`.
                    let answer = err.take().unwrap_or_else(|| Error::Poisoned {
                        cause: cause.clone(),
                    });
                    request.fail(answer);
                }
            }
        }
    }

    /// Applies `batch` in one write transaction and commits it, leaving each
    /// operation's answer in its reply. An error fails the whole batch;
    /// answers that are errors belong to single operations, which then
    /// changed nothing.
    fn commit_batch(&mut self, db: &Database, batch: &mut [Request]) -> Result<()> {
        self.config
            .write_faults
            .before_commit()
            .map_err(Error::io)?;
        let mut txn = db.begin_write()?;
        let interval = self.config.checkpoint_interval;
        let mut checkpoint = self
            .journal
            .as_ref()
            .is_some_and(|journal| journal.checkpoint_due(interval));
        let journaled = self.journal.is_some() && !checkpoint;
        if self.config.durability == Durability::None || journaled {
            txn.set_durability(redb::Durability::None)?;
        }
        let now_ms = self.time.now_ms();
        let token_ceiling_before = self.token_ceiling;
        let (added, deleted, in_flight_delta, changes) = {
            let mut tables = WriteTables::open(&txn, journaled)?;
            for request in batch.iter_mut() {
                self.apply(&mut tables, request, now_ms)?;
            }
            if self.token_ceiling != token_ceiling_before {
                tables.set_meta(&txn, META_TOKEN_CEILING, self.token_ceiling)?;
            }
            if let Some(swept_at_ms) = self.swept_at_ms.take() {
                tables.set_meta(&txn, META_LAST_SWEEP, swept_at_ms)?;
            }
            let (added, deleted) = tables.record_count_changes();
            (
                added,
                deleted,
                tables.in_flight_change(),
                tables.take_changes(),
            )
        };
        if let Some(journal) = &mut self.journal {
            if journaled && !changes.is_empty() {
                let frame = Change::encode_frame(&changes)?;
                if Journal::fits(frame.len()) {
                    // Synced before the commit makes the batch visible.
                    journal.append(&frame)?;
                } else {
                    txn.set_durability(redb::Durability::Immediate)?;
                    checkpoint = true;
                }
            }
            if checkpoint {
                set_journal_seq(&txn, journal.last_seq())?;
            }
        }
        if checkpoint && self.config.quick_repair {
            // The allocator's state goes into the checkpoint (a two-phase
            // commit), so that the open after a crash loads it instead of
            // walking the whole file (redb's quick-repair).
            txn.set_quick_repair(true);
        }
        txn.commit()?;
        // Before any caller of the batch hears of it.
        self.engine.committed();
        self.config.write_faults.after_commit().map_err(Error::io)?;
        if checkpoint && let Some(journal) = &mut self.journal {
            crate::crash_point::reached("checkpoint.committed");
            journal.checkpointed(journal.last_seq());
        }
        self.live_records = (self.live_records + added).saturating_sub(deleted);
        self.counters.set_live_records(self.live_records);
        self.in_flight = self.in_flight.saturating_add_signed(in_flight_delta);
        self.counters.in_flight.set(self.in_flight);
        self.unsynced = self.config.durability == Durability::None || journaled;
        if journaled && let Some(writeback) = &self.writeback {
            writeback.committed();
        }
        Ok(())
    }

    fn apply(
        &mut self,
        tables: &mut WriteTables<'_>,
        request: &mut Request,
        now_ms: u64,
    ) -> Result<()> {
        match request {
            Request::Claim {
                key,
                fingerprint,
                terms,
                reply,
            } => reply.answer = Some(self.claim(tables, key, fingerprint, *terms, now_ms)?),
            Request::Complete {
                key,
                token,
                response,
                retention_ms,
                reply,
            } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    // The same completion by the same holder landed before
                    // (a retry after an answer that was lost): done.
                    None => match landed_completion(tables, key, *token, response, now_ms)? {
                        Some(expires_at_ms) => Ok(Completed { expires_at_ms }),
                        None => Err(Error::LeaseLost),
                    },
                    Some(mut record) => {
                        let old = record.slot();
                        // Applied once: the request's response moves into
                        // the record instead of being copied.
                        let response = std::mem::replace(
                            response,
                            StoredResponse::from_bytes(0, Bytes::new()),
                        );
                        record.state = StoredState::Completed { response };
                        record.updated_at_ms = now_ms;
                        record.expires_at_ms = now_ms.saturating_add(*retention_ms);
                        let linger_ms = *retention_ms / LINGER_SHARE;
                        tables.put(key, Some(old), &mut record, linger_ms)?;
                        Ok(Completed {
                            expires_at_ms: record.expires_at_ms,
                        })
                    }
                });
            }
            Request::Release { key, token, reply } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    // Nothing live left to release (this release landed
                    // before and its answer was lost, or the record expired
                    // or was removed): the key is free, as asked.
                    None if !has_live_record(tables, key, now_ms)? => Ok(()),
                    None => Err(Error::LeaseLost),
                    Some(record) => tables.delete(key, Some(record.slot())),
                });
            }
            Request::Renew {
                key,
                token,
                terms,
                point,
                reply,
            } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    None => Err(Error::LeaseLost),
                    Some(mut record) => {
                        let old = record.slot();
                        let recovery = match (point.take(), &mut record.state) {
                            (Some(point), _) => Some(point),
                            (None, StoredState::InFlight { recovery, .. }) => recovery.take(),
                            (None, StoredState::Completed { .. }) => None,
                        };
                        let lease_until_ms = lease_from(&mut record, now_ms, *terms, recovery);
                        tables.put(key, Some(old), &mut record, 0)?;
                        Ok(Renewed { lease_until_ms })
                    }
                });
            }
            Request::Remove { key, reply } => {
                reply.answer = Some(Ok(match tables.read(key)? {
                    None => false,
                    Some(existing) => {
                        // A record that fails verification is removed too
                        // (that is how a damaged record is cleared); its
                        // expiry entry, if it cannot be found, is dropped by
                        // the next sweep.
                        let (old, live) = match existing {
                            Ok(record) => (Some(record.slot()), !record.is_expired(now_ms)),
                            Err(_) => (None, true),
                        };
                        tables.delete(key, old)?;
                        live
                    }
                }));
            }
            Request::Sweep { limit, reply } => {
                let (deleted, more) = tables.sweep(*limit, now_ms)?;
                if deleted > 0 {
                    self.swept_at_ms = Some(now_ms);
                }
                reply.answer = Some(Ok(Swept { deleted, more }));
            }
            Request::Import { records, reply } => {
                reply.answer = Some(self.import(tables, records, now_ms)?);
            }
        }
        Ok(())
    }

    /// Claims `key` if the decision rule says so against the record as it is
    /// inside this transaction. The outer error fails the batch; the inner
    /// one (a damaged record) fails this claim only.
    fn claim(
        &mut self,
        tables: &mut WriteTables<'_>,
        key: &Key,
        fingerprint: &Fingerprint,
        terms: ClaimTerms,
        now_ms: u64,
    ) -> Result<Result<Begin<Granted>>> {
        let stored = match tables.read(key)? {
            Some(Err(corrupted)) => return Ok(Err(corrupted)),
            Some(Ok(record)) => Some(record),
            None => None,
        };
        let old = stored
            .as_ref()
            .map(|r| (r.slot(), r.created_at_ms, r.is_expired(now_ms)));
        // A takeover inherits the dead attempt's recovery point, and keeps it
        // for the next one should it die too before its own checkpoint.
        let inherited = match &stored {
            Some(StoredRecord {
                state: StoredState::InFlight { recovery, .. },
                ..
            }) => recovery.clone(),
            _ => None,
        };
        let intent = match decide(stored, fingerprint, now_ms).claim_or_answer() {
            Ok(intent) => intent,
            Err(answer) => return Ok(Ok(answer)),
        };
        let token = self.next_token();
        let created_at_ms = match old {
            // A takeover continues the same logical request.
            Some((_, created, false)) if intent.takeover => created,
            _ => now_ms,
        };
        let mut record = StoredRecord {
            scope: key.scope().to_string(),
            idempotency_key: key.idempotency_key().to_string(),
            fingerprint: *fingerprint.as_bytes(),
            token,
            created_at_ms,
            updated_at_ms: now_ms,
            // Both set below: the expiry by the lease, the sweep time by `put`.
            expires_at_ms: 0,
            sweep_at_ms: 0,
            state: StoredState::InFlight {
                lease_until_ms: 0,
                recovery: None,
            },
        };
        let recovered = if intent.takeover { inherited } else { None };
        let lease_until_ms = lease_from(&mut record, now_ms, terms, recovered.clone());
        tables.put(key, old.map(|(slot, _, _)| slot), &mut record, 0)?;
        Ok(Ok(Begin::Claimed(Granted {
            token,
            lease_until_ms,
            takeover: intent.takeover,
            recovered,
        })))
    }

    /// Writes imported records, all or none (the outer error fails the
    /// batch; the inner one refuses this import only, before it wrote
    /// anything). Tokens issued afterwards are larger than every imported
    /// one, so an imported in-flight claim's holder, if any, is fenced like
    /// any other.
    fn import(
        &mut self,
        tables: &mut WriteTables<'_>,
        records: &[StoredRecord],
        now_ms: u64,
    ) -> Result<Result<Imported>> {
        let mut keyed = Vec::with_capacity(records.len());
        let mut seen = std::collections::HashSet::with_capacity(records.len());
        let mut skipped_expired = 0;
        for record in records {
            if record.is_expired(now_ms) {
                skipped_expired += 1;
                continue;
            }
            let key = match Key::new(&record.scope, &record.idempotency_key) {
                Ok(key) => key,
                Err(err) => return Ok(Err(err)),
            };
            if !seen.insert(*key.hash()) {
                return Ok(Err(Error::ImportConflict {
                    key: key.to_string(),
                }));
            }
            let old = match tables.read(&key)? {
                Some(Ok(existing)) if existing.is_expired(now_ms) => Some(existing.slot()),
                Some(Ok(_)) | Some(Err(_)) => {
                    return Ok(Err(Error::ImportConflict {
                        key: key.to_string(),
                    }));
                }
                None => None,
            };
            keyed.push((key, old, record));
        }
        let mut highest_token = 0;
        for (key, old, record) in &keyed {
            tables.put(key, *old, &mut (*record).clone(), 0)?;
            highest_token = highest_token.max(record.token);
        }
        if highest_token > self.token_seq {
            self.token_seq = highest_token;
            if self.token_seq >= self.token_ceiling {
                self.token_ceiling = self.token_seq.saturating_add(TOKEN_BLOCK);
            }
        }
        Ok(Ok(Imported {
            imported: keyed.len() as u64,
            skipped_expired,
        }))
    }

    /// The next fencing token, reserving a new block when the current one is
    /// used up (the batch then persists the new ceiling).
    fn next_token(&mut self) -> u64 {
        if self.token_seq >= self.token_ceiling {
            self.token_ceiling = self.token_seq.saturating_add(TOKEN_BLOCK);
        }
        self.token_seq += 1;
        self.token_seq
    }

    /// A store opened with `Durability::None` syncs once on a clean shutdown,
    /// so only a crash can lose its commits; the outcome is reported to
    /// `Store::close`.
    fn sync_on_shutdown(&mut self) -> Result<()> {
        if let Some(poison) = &self.poisoned {
            return Err(Error::Poisoned {
                cause: poison.cause.clone(),
            });
        }
        if !self.unsynced {
            return Ok(());
        }
        let covered = self.journal.as_ref().map(Journal::last_seq);
        self.engine.read(|db| {
            let txn = db.begin_write()?;
            if let Some(seq) = covered {
                set_journal_seq(&txn, seq)?;
            }
            txn.commit()?;
            Ok(())
        })
    }
}

/// Makes `record` in flight with a fresh lease and `recovery` as its
/// recovery point; an abandoned claim expires one retention period after its
/// lease ends.
fn lease_from(
    record: &mut StoredRecord,
    now_ms: u64,
    terms: ClaimTerms,
    recovery: Option<RecoveryPoint>,
) -> u64 {
    let lease_until_ms = now_ms.saturating_add(terms.lease_ms);
    record.state = StoredState::InFlight {
        lease_until_ms,
        recovery,
    };
    record.updated_at_ms = now_ms;
    record.expires_at_ms = lease_until_ms.saturating_add(terms.retention_ms);
    lease_until_ms
}

/// An instant no reopen waits for: a backoff too long to add to now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Moves queued requests into `batch` until it holds `limit`.
fn drain_into(receiver: &Receiver<Request>, batch: &mut Vec<Request>, limit: usize) {
    while batch.len() < limit {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// The record of the claim with `token`, if it still holds the key: the one
/// test every holder operation passes or fails with `LeaseLost`.
fn held_record(
    tables: &WriteTables<'_>,
    key: &Key,
    token: u64,
    now_ms: u64,
) -> Result<Option<StoredRecord>> {
    Ok(match tables.read(key)? {
        Some(Ok(record))
            if record.token == token
                && !record.is_expired(now_ms)
                && matches!(record.state, StoredState::InFlight { .. }) =>
        {
            Some(record)
        }
        _ => None,
    })
}

/// Whether `key` has a record that is not expired (a damaged one counts as
/// live: it is not this holder's to judge).
fn has_live_record(tables: &WriteTables<'_>, key: &Key, now_ms: u64) -> Result<bool> {
    Ok(match tables.read(key)? {
        None => false,
        Some(Ok(record)) => !record.is_expired(now_ms),
        Some(Err(_)) => true,
    })
}

/// When `key`'s live record is the completion of the claim with `token`,
/// with exactly `response`: its expiry. So a completion repeated after one
/// that landed (its answer lost to a failed sync, a heal, a dropped reply)
/// is success, not `LeaseLost`. Any other state, token or response is not
/// this completion.
fn landed_completion(
    tables: &WriteTables<'_>,
    key: &Key,
    token: u64,
    response: &StoredResponse,
    now_ms: u64,
) -> Result<Option<u64>> {
    Ok(match tables.read(key)? {
        Some(Ok(record))
            if record.token == token
                && !record.is_expired(now_ms)
                && matches!(&record.state, StoredState::Completed { response: stored } if stored == response) =>
        {
            Some(record.expires_at_ms)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committer over an in-memory database.
    fn in_memory_committer() -> (Committer, Arc<HealthCell>) {
        let (engine, opened, journal) =
            Engine::open(Source::Memory, 1 << 20, false, false, false, false).unwrap();
        let config = Config::default();
        let time = Arc::new(StoreTime::anchored(Arc::clone(&config.clock)));
        let health = Arc::new(HealthCell::new());
        let committer = Committer::start(
            Arc::new(engine),
            config,
            time,
            Arc::new(Counters::default()),
            Arc::clone(&health),
            &opened,
            journal,
        )
        .unwrap();
        (committer, health)
    }

    #[test]
    fn a_dead_committer_answers_every_queued_and_later_request_closed() {
        let (committer, health) = in_memory_committer();
        let submitter = committer.submitter().unwrap().clone();
        // A healthy committer answers.
        assert!(submitter.sweep(1).wait().is_ok());
        let (arrived, arrival) = crossbeam_channel::bounded(0);
        let (go, gate) = crossbeam_channel::bounded(0);
        *submitter.shared.panic_gate.lock().unwrap() = Some((arrived, gate));
        // The thread takes the first request and stops at the gate, while
        // the others stay queued behind it.
        let first = submitter.sweep(1);
        arrival.recv().unwrap();
        let queued: Vec<_> = (0..10).map(|_| submitter.sweep(1)).collect();
        go.send(()).unwrap();
        assert!(matches!(first.wait(), Err(Error::Closed)));
        for pending in queued {
            assert!(matches!(pending.wait(), Err(Error::Closed)));
        }
        // And everything after it, at once.
        assert!(matches!(submitter.sweep(1).wait(), Err(Error::Closed)));
        assert!(
            matches!(health.get(), Health::Failed { .. }),
            "{:?}",
            health.get()
        );
        drop(submitter);
        // Stopping reports that the thread died.
        assert!(matches!(committer.shut_down(), Err(Error::Closed)));
    }

    /// A batch of `n` sweep requests from blocked callers, each answered
    /// with its own index, and their receivers.
    fn batch(n: u64) -> (Vec<Request>, Vec<oneshot::Receiver<Delivery<Swept>>>) {
        (0..n)
            .map(|i| {
                let (sender, receiver) = oneshot::channel();
                let mut reply = Reply::new(sender);
                reply.relays = i % 5 != 4;
                reply.answer = Some(Ok(Swept {
                    deleted: i,
                    more: false,
                }));
                (Request::Sweep { limit: 1, reply }, receiver)
            })
            .unzip()
    }

    /// Takes what `receiver` holds, passing its relay on as a woken caller
    /// does.
    fn receive(receiver: &mut oneshot::Receiver<Delivery<Swept>>) -> Option<u64> {
        let (answer, relay) = receiver.try_recv().ok().flatten()?;
        drop(relay);
        answer.ok().map(|swept| swept.deleted)
    }

    #[test]
    fn a_relay_answers_every_caller_once_through_the_callers() {
        for n in [0, 1, 2, 3, 7, 38, 64, 1_024] {
            let (requests, mut receivers) = batch(n);
            Relay::answer(requests);
            // The committer itself answered every async caller and at most
            // two blocked ones; the blocked ones pass the rest on.
            let first: Vec<(usize, Delivery<Swept>)> = receivers
                .iter_mut()
                .enumerate()
                .filter_map(|(i, receiver)| Some((i, receiver.try_recv().ok().flatten()?)))
                .collect();
            let blocked = first.iter().filter(|(i, _)| i % 5 != 4).count();
            let asynchronous = (0..n).filter(|i| i % 5 == 4).count();
            assert_eq!(first.len() - blocked, asynchronous, "batch of {n}");
            assert!(
                blocked <= 2,
                "batch of {n}: {blocked} woken by the committer"
            );
            let mut answered = vec![None; receivers.len()];
            for (i, (answer, relay)) in first {
                drop(relay);
                answered[i] = answer.ok().map(|swept| swept.deleted);
            }
            // Callers woken in index order; those not answered yet wait
            // for a caller further on, so the loop goes round until none
            // is left.
            for _round in 0..=receivers.len() {
                for (i, receiver) in receivers.iter_mut().enumerate() {
                    if answered[i].is_none() {
                        answered[i] = receive(receiver);
                    }
                }
            }
            let expected: Vec<Option<u64>> = (0..n).map(Some).collect();
            assert_eq!(answered, expected, "batch of {n}");
        }
    }

    #[test]
    fn a_relay_is_passed_on_past_callers_that_gave_up() {
        let (requests, receivers) = batch(100);
        // Every third caller stopped waiting before the answers came.
        let mut kept: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .filter_map(|(i, receiver)| (i % 3 != 0).then_some((i as u64, receiver)))
            .collect();
        Relay::answer(requests);
        let mut answered = vec![None; kept.len()];
        for _round in 0..=kept.len() {
            for (slot, (_, receiver)) in answered.iter_mut().zip(kept.iter_mut()) {
                if slot.is_none() {
                    *slot = receive(receiver);
                }
            }
        }
        let expected: Vec<Option<u64>> = kept.iter().map(|(i, _)| Some(*i)).collect();
        assert_eq!(answered, expected);
    }
}
