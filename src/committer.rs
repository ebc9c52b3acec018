//! The committer: the one thread that writes to the redb file.
//!
//! Callers send [`Op`]s over a channel and block on a reply. The committer
//! takes everything queued (up to [`MAX_BATCH`]), applies the batch in one
//! write transaction, commits once (one fsync under `Durability::Immediate`)
//! and only then answers every caller in the batch. Under load N concurrent
//! claims share one fsync.
//!
//! Invariants:
//! - No caller is answered before the commit that covers its operation
//!   returned; if the commit fails, every caller in the batch gets the error.
//! - After any storage failure the committer is poisoned: it answers
//!   `Error::Poisoned` to every later write instead of writing into a database
//!   in an unknown state. Reopening the store clears it.
//! - Fencing tokens only grow: tokens are handed out from blocks of
//!   [`TOKEN_BLOCK`]; a block's ceiling is persisted in `meta` in the same
//!   transaction as the first claim that uses it, and a reopened store starts
//!   above the persisted ceiling. So every token is larger than any token
//!   issued before it, across restarts, at the cost of one `meta` write per
//!   block instead of one per commit.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use redb::Database;

use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::metrics::{Counters, add, bump};
use crate::outcome::Begin;
use crate::record::{Decision, StoredRecord, StoredState, decide};
use crate::response::StoredResponse;
use crate::storage::{self, META, META_TOKEN_CEILING, WriteTables};

/// Most operations applied in one write transaction.
pub(crate) const MAX_BATCH: usize = 1024;

/// Longest a batch waits for the callers of the previous batch to come back.
const LINGER: Duration = Duration::from_micros(200);

/// Fencing tokens reserved (and persisted) at a time.
pub(crate) const TOKEN_BLOCK: u64 = 4096;

/// One write, as a caller asks for it.
#[derive(Debug)]
pub(crate) enum Op {
    /// Claim `key` if the decision rule still says so inside the transaction.
    Claim { key: Key, fingerprint: Fingerprint },
    /// Store the response of the claim with `token`.
    Complete {
        key: Key,
        token: u64,
        response: StoredResponse,
    },
    /// Delete the in-flight record of the claim with `token`.
    Release { key: Key, token: u64 },
    /// Extend the lease of the claim with `token`.
    Renew { key: Key, token: u64 },
    /// Delete whatever is stored for `key`.
    Remove { key: Key },
    /// Delete up to `limit` expired records.
    Sweep { limit: usize },
}

/// What a successful operation did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A claim was written.
    Claimed {
        token: u64,
        lease_until_ms: u64,
        takeover: bool,
    },
    /// A `Claim` op found the key not claimable after all.
    Answer(Begin),
    /// Complete applied; the record expires at `expires_at_ms`.
    Completed { expires_at_ms: u64 },
    /// Release applied.
    Released,
    /// Renew applied; the new lease end.
    Renewed { lease_until_ms: u64 },
    /// Remove applied; whether a live record was deleted.
    Removed(bool),
    /// Sweep applied: records deleted, and whether more may be due.
    Swept { deleted: u64, more: bool },
}

struct Request {
    op: Op,
    reply: Sender<Result<Outcome>>,
}

/// The caller's side: a handle that submits operations and, when dropped,
/// stops and joins the thread (once every [`Submitter`] is gone too).
pub(crate) struct Committer {
    submitter: Option<Submitter>,
    thread: Option<JoinHandle<()>>,
}

/// A cloneable way to submit operations, for other threads (the sweeper).
#[derive(Clone)]
pub(crate) struct Submitter {
    sender: Sender<Request>,
}

impl Submitter {
    /// Sends `op` and blocks until the commit that covers it returned.
    pub fn submit(&self, op: Op) -> Result<Outcome> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.sender
            .send(Request { op, reply })
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }
}

impl Committer {
    pub fn start(
        db: Arc<Database>,
        config: Config,
        counters: Arc<Counters>,
        token_ceiling: u64,
        live_records: u64,
    ) -> Result<Committer> {
        let (sender, receiver) = crossbeam_channel::bounded(MAX_BATCH * 4);
        counters.set_live_records(live_records);
        let worker = Worker {
            db,
            config,
            counters,
            token_seq: token_ceiling,
            token_ceiling,
            live_records,
            poisoned: None,
            unsynced: false,
        };
        let thread = std::thread::Builder::new()
            .name("idemkv-committer".into())
            .spawn(move || worker.run(receiver))
            .map_err(|e| Error::Storage(Box::new(redb::Error::Io(e))))?;
        Ok(Committer {
            submitter: Some(Submitter { sender }),
            thread: Some(thread),
        })
    }

    /// Sends `op` and blocks until the commit that covers it returned.
    pub fn submit(&self, op: Op) -> Result<Outcome> {
        self.submitter.as_ref().ok_or(Error::Closed)?.submit(op)
    }

    /// A submitter for another thread. It must be dropped before the
    /// `Committer`, or the drop waits for it.
    pub fn submitter(&self) -> Option<Submitter> {
        self.submitter.clone()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel lets the worker finish what is queued and exit.
        drop(self.submitter.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    db: Arc<Database>,
    config: Config,
    counters: Arc<Counters>,
    /// The last fencing token issued.
    token_seq: u64,
    /// The highest token the file allows; `token_seq <= token_ceiling`.
    token_ceiling: u64,
    /// Records in the file (expired ones included until they are deleted),
    /// as of the last successful commit.
    live_records: u64,
    /// Set by the first storage failure; refuses every later write.
    poisoned: Option<String>,
    /// A commit with `Durability::None` happened since the last synced one.
    unsynced: bool,
}

impl Worker {
    fn run(mut self, receiver: Receiver<Request>) {
        let mut last_batch = 1;
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            drain_into(&receiver, &mut batch, MAX_BATCH);
            // The callers answered by the last commit are likely to come back
            // with their next operation within microseconds; waiting briefly
            // for them makes the next commit carry them all instead of
            // splitting them over two fsyncs. A lone caller (last batch of 1)
            // never waits.
            if batch.len() < last_batch {
                let deadline = Instant::now() + LINGER;
                while batch.len() < last_batch {
                    match receiver.recv_deadline(deadline) {
                        Ok(request) => {
                            batch.push(request);
                            drain_into(&receiver, &mut batch, last_batch);
                        }
                        Err(_) => break,
                    }
                }
            }
            last_batch = batch.len();
            self.run_batch(batch);
        }
        self.sync_on_shutdown();
    }

    fn run_batch(&mut self, batch: Vec<Request>) {
        if let Some(cause) = &self.poisoned {
            for request in batch {
                let _ = request.reply.send(Err(Error::Poisoned {
                    cause: cause.clone(),
                }));
            }
            return;
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        // A panic inside redb (damaged pages) fails the batch like any
        // storage error, and poisons the store.
        match storage::shielded(|| self.commit_batch(&ops)) {
            Ok(results) => {
                bump(&self.counters.commits);
                add(&self.counters.committed_ops, ops.len() as u64);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                let cause = err.to_string();
                self.poisoned = Some(cause.clone());
                let mut err = Some(err);
                for reply in replies {
                    // The first caller gets the original error, the others
                    // the same cause as `Poisoned`.
                    let answer = err.take().unwrap_or_else(|| Error::Poisoned {
                        cause: cause.clone(),
                    });
                    let _ = reply.send(Err(answer));
                }
            }
        }
    }

    /// Applies `ops` in one write transaction and commits it. The outer error
    /// fails the whole batch; inner errors belong to single operations, which
    /// then changed nothing.
    fn commit_batch(&mut self, ops: &[Op]) -> Result<Vec<Result<Outcome>>> {
        let mut txn = self.db.begin_write()?;
        if self.config.durability == Durability::None {
            txn.set_durability(redb::Durability::None)?;
        }
        let now_ms = self.config.now_ms();
        let token_ceiling_before = self.token_ceiling;
        let (results, added, deleted) = {
            let mut tables = WriteTables::open(&txn)?;
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(self.apply(&mut tables, op, now_ms)?);
            }
            let (added, deleted) = tables.record_count_changes();
            if self.token_ceiling != token_ceiling_before {
                txn.open_table(META)?
                    .insert(META_TOKEN_CEILING, self.token_ceiling)?;
            }
            (results, added, deleted)
        };
        txn.commit()?;
        self.live_records = (self.live_records + added).saturating_sub(deleted);
        self.counters.set_live_records(self.live_records);
        self.unsynced = self.config.durability == Durability::None;
        Ok(results)
    }

    fn apply(
        &mut self,
        tables: &mut WriteTables<'_>,
        op: &Op,
        now_ms: u64,
    ) -> Result<Result<Outcome>> {
        match op {
            Op::Claim { key, fingerprint } => self.claim(tables, key, fingerprint, now_ms),
            Op::Complete {
                key,
                token,
                response,
            } => {
                let Some(mut record) = held_record(tables, key, *token, now_ms)? else {
                    return Ok(Err(Error::LeaseLost));
                };
                let old = record.slot();
                record.state = StoredState::Completed {
                    response: response.clone(),
                };
                record.updated_at_ms = now_ms;
                record.expires_at_ms = now_ms.saturating_add(self.config.retention_ms());
                tables.put(key, Some(old), &record)?;
                Ok(Ok(Outcome::Completed {
                    expires_at_ms: record.expires_at_ms,
                }))
            }
            Op::Release { key, token } => {
                let Some(record) = held_record(tables, key, *token, now_ms)? else {
                    return Ok(Err(Error::LeaseLost));
                };
                tables.delete(key, Some(record.slot()))?;
                Ok(Ok(Outcome::Released))
            }
            Op::Renew { key, token } => {
                let Some(mut record) = held_record(tables, key, *token, now_ms)? else {
                    return Ok(Err(Error::LeaseLost));
                };
                let old = record.slot();
                let lease_until_ms = self.lease_from(&mut record, now_ms);
                tables.put(key, Some(old), &record)?;
                Ok(Ok(Outcome::Renewed { lease_until_ms }))
            }
            Op::Remove { key } => {
                let Some(existing) = tables.read(key)? else {
                    return Ok(Ok(Outcome::Removed(false)));
                };
                // A record that fails verification is removed too (that is
                // how a damaged record is cleared); its expiry entry, if it
                // cannot be found, is dropped by the next sweep.
                let (old, live) = match existing {
                    Ok(record) => (Some(record.slot()), !record.is_expired(now_ms)),
                    Err(_) => (None, true),
                };
                tables.delete(key, old)?;
                Ok(Ok(Outcome::Removed(live)))
            }
            Op::Sweep { limit } => {
                let (deleted, more) = tables.sweep(*limit, now_ms)?;
                Ok(Ok(Outcome::Swept { deleted, more }))
            }
        }
    }

    fn claim(
        &mut self,
        tables: &mut WriteTables<'_>,
        key: &Key,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<Result<Outcome>> {
        let stored = match tables.read(key)? {
            Some(Err(corrupted)) => return Ok(Err(corrupted)),
            Some(Ok(record)) => Some(record),
            None => None,
        };
        let old = stored
            .as_ref()
            .map(|r| (r.slot(), r.created_at_ms, r.is_expired(now_ms)));
        let takeover = match decide(stored, fingerprint, now_ms) {
            Decision::Answer(answer) => return Ok(Ok(Outcome::Answer(answer))),
            Decision::Claim { takeover } => takeover,
        };
        let token = self.next_token();
        let created_at_ms = match old {
            // A takeover continues the same logical request.
            Some((_, created, false)) if takeover => created,
            _ => now_ms,
        };
        let mut record = StoredRecord {
            scope: key.scope().to_string(),
            idempotency_key: key.idempotency_key().to_string(),
            fingerprint: *fingerprint.as_bytes(),
            token,
            created_at_ms,
            updated_at_ms: now_ms,
            expires_at_ms: 0,
            state: StoredState::InFlight { lease_until_ms: 0 },
        };
        let lease_until_ms = self.lease_from(&mut record, now_ms);
        tables.put(key, old.map(|(slot, _, _)| slot), &record)?;
        Ok(Ok(Outcome::Claimed {
            token,
            lease_until_ms,
            takeover,
        }))
    }

    /// The next fencing token, reserving a new block when the current one is
    /// used up (the batch then persists the new ceiling).
    fn next_token(&mut self) -> u64 {
        if self.token_seq == self.token_ceiling {
            self.token_ceiling = self.token_ceiling.saturating_add(TOKEN_BLOCK);
        }
        self.token_seq += 1;
        self.token_seq
    }

    /// Starts a fresh lease on an in-flight record; an abandoned claim expires
    /// one retention period after its lease ends.
    fn lease_from(&self, record: &mut StoredRecord, now_ms: u64) -> u64 {
        let lease_until_ms = now_ms.saturating_add(self.config.lease_ms());
        record.state = StoredState::InFlight { lease_until_ms };
        record.updated_at_ms = now_ms;
        record.expires_at_ms = lease_until_ms.saturating_add(self.config.retention_ms());
        lease_until_ms
    }

    /// A store opened with `Durability::None` syncs once on a clean shutdown,
    /// so only a crash can lose its commits.
    fn sync_on_shutdown(&mut self) {
        if !self.unsynced || self.poisoned.is_some() {
            return;
        }
        if let Ok(txn) = self.db.begin_write() {
            let _ = txn.commit();
        }
    }
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

/// The record of the claim with `token`, if it still holds the key.
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
