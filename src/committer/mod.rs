//! The committer: the one thread that writes to the redb file.
//!
//! Callers send a [`Request`](reply::Request) over a channel and wait for its reply, a
//! oneshot that a thread blocks on and a task awaits alike. The
//! committer takes everything queued (up to [`MAX_BATCH`]), applies the batch
//! in one write transaction, commits once (one fsync under
//! `Durability::Immediate`) and only then answers every caller in the batch.
//! Under load N concurrent claims share one fsync. Every write goes this
//! one way, whoever the caller is: a blocked thread and an async task queue
//! alike, so no caller's thread ever runs a commit.
//!
//! Every operation has its own reply type ([`Granted`](reply::Granted), [`Completed`](reply::Completed),
//! [`Renewed`](reply::Renewed), [`Swept`], ...), carried in its own request variant, so a
//! caller gets exactly the answer its operation can give.
//!
//! The parts: [`queue`] (the callers' side: submit, wait for room, the
//! answer's future), [`reply`] (each operation as a request and the answers
//! it can get), [`writer`] (the thread: batching and the batch's commit),
//! [`apply`] (what each operation does inside the transaction: the
//! semantics) and [`heal`] (poison after a failed commit, reopen with
//! backoff).
//!
//! Invariants:
//! - One writer: the writer's state ([`Worker`]) belongs to the committer
//!   thread alone.
//! - No caller is answered before the commit that covers its operation
//!   returned; if the commit fails, every caller in the batch gets the error.
//! - Every operation of a committed batch is answered exactly once: by the
//!   committer, or by a blocked caller of the batch to whom it handed the
//!   answer ([`Relay`](reply::Relay)), and by whoever drops that caller's share if the
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
//! - With the journal ([`crate::durability::journal`]), a batch's changes are one frame,
//!   synced before the transaction commits without a sync, so readers never
//!   see what is not on disk; a checkpoint batch (about once a second)
//!   commits with a sync instead, writes no frame, and records the last
//!   frame it covers in `meta`. A batch too large for a frame is a
//!   checkpoint too. Between checkpoints a writeback thread
//!   ([`crate::durability::writeback`]) syncs the file's pages that the engine has
//!   already written, so that a checkpoint waits for fewer of them.
//! - Fencing tokens only grow: tokens are handed out from blocks of
//!   [`TOKEN_BLOCK`]; a block's ceiling is persisted in `meta` in the same
//!   transaction as the first claim that uses it, and a reopened store starts
//!   above the persisted ceiling. So every token is larger than any token
//!   issued before it, across restarts, at the cost of one `meta` write per
//!   block instead of one per commit.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::StoreTime;
use crate::config::Config;
use crate::counters::Counters;
use crate::durability::engine::Engine;
use crate::durability::journal::Journal;
use crate::durability::storage::Opened;
use crate::error::{Error, Result};
use crate::health::HealthCell;
use crate::log::event;
use crate::sync::thread::{Builder, JoinHandle};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, channel};
use queue::Shared;
use writer::{Worker, start_writeback};

mod apply;
mod heal;
mod queue;
mod reply;
mod writer;

pub(crate) use queue::Submitter;
pub use reply::Imported;
pub(crate) use reply::Swept;

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

/// The caller's side: a handle that submits operations and, when dropped,
/// stops and joins the thread (once every [`Submitter`] is gone too).
pub(crate) struct Committer {
    submitter: Option<Submitter>,
    thread: Option<JoinHandle<Result<()>>>,
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
        let (sender, receiver) = channel::bounded(QUEUE_ROOM);
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
            .and_then(|_| start_writeback(&engine, config.settings.writeback_interval));
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
            Builder::new()
                .name("idemkv-committer".into())
                .spawn(move || writer::serve(&shared, worker))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::engine::Source;
    use crate::health::Health;

    /// A committer over an in-memory database.
    fn in_memory_committer() -> (Committer, Arc<HealthCell>, Arc<Counters>) {
        let (engine, opened, journal) =
            Engine::open(Source::Memory, 1 << 20, false, false, false, false).unwrap();
        let config = Config::default();
        let time = Arc::new(StoreTime::anchored(Arc::clone(&config.clock)));
        let health = Arc::new(HealthCell::new());
        let counters = Arc::new(Counters::default());
        let committer = Committer::start(
            Arc::new(engine),
            config,
            time,
            Arc::clone(&counters),
            Arc::clone(&health),
            &opened,
            journal,
        )
        .unwrap();
        (committer, health, counters)
    }

    /// A heal batch writes nothing, so it is no commit: the metrics count
    /// only batches that wrote.
    #[test]
    fn a_heal_alone_commits_nothing() {
        let (committer, _health, counters) = in_memory_committer();
        let submitter = committer.submitter().unwrap();
        assert!(submitter.heal().wait().is_ok());
        assert_eq!(counters.commits.get(), 0);
        assert!(submitter.sweep(1).wait().is_ok());
        assert_eq!(counters.commits.get(), 1);
    }

    #[test]
    fn a_dead_committer_answers_every_queued_and_later_request_closed() {
        let (committer, health, _counters) = in_memory_committer();
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
}
