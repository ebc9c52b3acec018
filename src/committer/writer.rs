//! The committer thread: it takes what is queued as a batch, applies it in
//! one write transaction, commits once and answers every caller of the batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::Database;

use super::heal::Poison;
use super::queue::Shared;
use super::reply::{Relay, Request};
use super::{LINGER, LINGER_MAX_BATCH, MAX_BATCH};
use crate::clock::StoreTime;
use crate::config::{Config, Durability};
use crate::counters::Counters;
use crate::durability::engine::{Engine, Source};
use crate::durability::journal::Journal;
use crate::durability::storage::{
    Change, META_LAST_SWEEP, META_TOKEN_CEILING, WriteTables, set_journal_seq,
};
use crate::durability::writeback::Writeback;
use crate::error::{Error, Result};
use crate::health::{Health, HealthCell};
use crate::log::event;
use crate::sync::channel::{Receiver, RecvTimeoutError};

pub(super) struct Worker {
    pub(super) engine: Arc<Engine>,
    pub(super) config: Config,
    pub(super) time: Arc<StoreTime>,
    pub(super) counters: Arc<Counters>,
    pub(super) health: Arc<HealthCell>,
    /// The last fencing token issued.
    pub(super) token_seq: u64,
    /// The highest token the file allows; `token_seq <= token_ceiling`.
    pub(super) token_ceiling: u64,
    /// Records in the file (expired ones included until they are deleted),
    /// as of the last successful commit.
    pub(super) live_records: u64,
    /// Set by a storage failure; refuses every write until a reopen heals it.
    pub(super) poisoned: Option<Poison>,
    /// A commit with `Durability::None` happened since the last synced one.
    pub(super) unsynced: bool,
    /// Set when a sweep in the current batch deleted records: the batch
    /// records the time in `meta`.
    pub(super) swept_at_ms: Option<u64>,
    /// Records in flight in the file (the `in_flight` gauge).
    pub(super) in_flight: u64,
    /// The journal's writer, when the store journals its commits.
    pub(super) journal: Option<Journal>,
    /// Syncs a journaled file store's file between checkpoints.
    pub(super) writeback: Option<Writeback>,
}

/// The writeback thread of a journaled store: it syncs the file (from a
/// handle of its own) or the custom backend; none for an in-memory store,
/// or when the file cannot be opened a second time (the checkpoints then
/// sync everything themselves, as they would anyway).
pub(super) fn start_writeback(engine: &Engine, interval: Duration) -> Option<Writeback> {
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

/// The committer thread: serves the queue until every sender is gone,
/// then syncs (see [`Worker::sync_on_shutdown`]) and drops the worker.
pub(super) fn serve(shared: &Shared, mut worker: Worker) -> Result<()> {
    let _watch = DeathWatch {
        shared,
        health: Arc::clone(&worker.health),
        counters: Arc::clone(&worker.counters),
    };
    // Operations in the latest batch.
    let mut last_batch = 1;
    loop {
        let first = match worker.next_attempt() {
            // Poisoned: wake up for the next reopen attempt even when no
            // request comes.
            Some(at) => match shared.receiver.recv_deadline(at) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    worker.heal();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match shared.receiver.recv() {
                Ok(request) => request,
                Err(_) => break,
            },
        };
        let mut batch = vec![first];
        drain_into(&shared.receiver, &mut batch, MAX_BATCH);
        // The callers answered by the last commit are likely to come back
        // with their next operation within microseconds; waiting briefly
        // for them makes the next commit carry them all instead of
        // splitting them over two fsyncs. A lone caller (last batch of 1)
        // never waits, and neither does a batch after one of more than
        // `LINGER_MAX_BATCH`.
        if batch.len() < last_batch && last_batch <= LINGER_MAX_BATCH {
            let deadline = Instant::now() + LINGER;
            while batch.len() < last_batch {
                match shared.receiver.recv_deadline(deadline) {
                    Ok(request) => {
                        batch.push(request);
                        drain_into(&shared.receiver, &mut batch, last_batch);
                    }
                    Err(_) => break,
                }
            }
        }
        last_batch = batch.len();
        shared.made_room();
        #[cfg(test)]
        if let Some((arrived, go)) = shared
            .panic_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = arrived.send(());
            let _ = go.recv();
            panic!("injected panic in the committer");
        }
        if worker
            .next_attempt()
            .is_some_and(|at| crate::sync::time::Instant::now() >= at)
        {
            worker.heal();
        }
        worker.run_batch(batch);
    }
    worker.sync_on_shutdown()
}

impl Worker {
    pub(super) fn run_batch(&mut self, mut batch: Vec<Request>) {
        self.reopen_if_asked();
        // A heal asks for nothing but the reopen above: answered here, it
        // leaves no empty transaction to commit, time and count.
        for mut heal in batch.extract_if(.., |request| matches!(request, Request::Heal { .. })) {
            match &self.poisoned {
                None => {
                    if let Request::Heal { reply } = &mut heal {
                        reply.answer = Some(Ok(()));
                    }
                    heal.send(Relay::default());
                }
                Some(poison) => heal.fail(Error::Poisoned {
                    cause: poison.cause.clone(),
                }),
            }
        }
        if batch.is_empty() {
            return;
        }
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
        if took > self.config.settings.slow_commit {
            event!(
                warn,
                elapsed_ms = took.as_secs_f64() * 1e3,
                batch = batch.len(),
                threshold_ms = self.config.settings.slow_commit.as_secs_f64() * 1e3,
                "slow commit: {:.1} ms for {} operation(s)",
                took.as_secs_f64() * 1e3,
                batch.len(),
            );
        }
        match committed {
            Ok(()) => {
                self.counters.commits.bump();
                self.counters.committed_ops.add(batch.len() as u64);
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
    pub(super) fn commit_batch(&mut self, db: &Database, batch: &mut [Request]) -> Result<()> {
        self.config
            .write_faults
            .before_commit()
            .map_err(Error::io)?;
        let mut txn = db.begin_write()?;
        let interval = self.config.settings.checkpoint_interval;
        let mut checkpoint = self
            .journal
            .as_ref()
            .is_some_and(|journal| journal.checkpoint_due(interval));
        let journaled = self.journal.is_some() && !checkpoint;
        if self.config.settings.durability == Durability::None || journaled {
            txn.set_durability(redb::Durability::None)?;
        }
        let now_ms = self.time.now_ms();
        let token_ceiling_before = self.token_ceiling;
        let (added, deleted, in_flight_delta, changes) = {
            let mut tables = WriteTables::open(&txn, journaled)?;
            for request in batch.iter_mut() {
                let writes_before = tables.writes();
                self.apply(&mut tables, request, now_ms)?;
                // Invariant: an operation answered with an error of its own
                // wrote nothing, or the batch would commit (and journal)
                // half of it. A storage error midway fails the batch (`?`).
                debug_assert!(
                    !request.refused() || tables.writes() == writes_before,
                    "an operation answered an error after writing: {}",
                    request.name()
                );
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
        if checkpoint && self.config.settings.quick_repair {
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
            crate::durability::crash_point::reached("checkpoint.committed");
            journal.checkpointed(journal.last_seq());
        }
        self.live_records = (self.live_records + added).saturating_sub(deleted);
        self.counters.set_live_records(self.live_records);
        self.in_flight = self.in_flight.saturating_add_signed(in_flight_delta);
        self.counters.in_flight.set(self.in_flight);
        self.unsynced = self.config.settings.durability == Durability::None || journaled;
        if journaled && let Some(writeback) = &self.writeback {
            writeback.committed();
        }
        Ok(())
    }

    /// A store opened with `Durability::None` syncs once on a clean shutdown,
    /// so only a crash can lose its commits; the outcome is reported to
    /// `Store::close`.
    pub(super) fn sync_on_shutdown(&mut self) -> Result<()> {
        self.reopen_if_asked();
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

/// Moves queued requests into `batch` until it holds `limit`.
pub(super) fn drain_into(receiver: &Receiver<Request>, batch: &mut Vec<Request>, limit: usize) {
    while batch.len() < limit {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}
