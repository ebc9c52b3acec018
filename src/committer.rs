//! The committer: the one thread that writes to the redb file.
//!
//! Callers send a [`Request`] over a channel and block on its reply. The
//! committer takes everything queued (up to [`MAX_BATCH`]), applies the batch
//! in one write transaction, commits once (one fsync under
//! `Durability::Immediate`) and only then answers every caller in the batch.
//! Under load N concurrent claims share one fsync.
//!
//! Every operation has its own reply type ([`Granted`], [`Completed`],
//! [`Renewed`], [`Swept`], ...), carried in its own request variant, so a
//! caller gets exactly the answer its operation can give.
//!
//! Invariants:
//! - No caller is answered before the commit that covers its operation
//!   returned; if the commit fails, every caller in the batch gets the error.
//! - Holder operations (complete, release, renew) are judged here, against
//!   the record read inside the write transaction: a token that no longer
//!   holds the key is `LeaseLost`, and nothing else refuses a holder.
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

use crate::clock::StoreTime;
use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::metrics::{Counters, add, bump};
use crate::outcome::Begin;
use crate::record::{StoredRecord, StoredState, decide};
use crate::response::StoredResponse;
use crate::storage::{self, META, META_TOKEN_CEILING, WriteTables};

/// Most operations applied in one write transaction.
pub(crate) const MAX_BATCH: usize = 1024;

/// Longest a batch waits for the callers of the previous batch to come back.
const LINGER: Duration = Duration::from_micros(200);

/// Fencing tokens reserved (and persisted) at a time.
pub(crate) const TOKEN_BLOCK: u64 = 4096;

/// A claim the committer wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Granted {
    pub token: u64,
    pub lease_until_ms: u64,
    pub takeover: bool,
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

/// Where one operation's answer goes once the commit that covers it returned.
struct Reply<T> {
    sender: Sender<Result<T>>,
    /// Set while the batch is applied; sent after the commit.
    answer: Option<Result<T>>,
}

impl<T> Reply<T> {
    fn new(sender: Sender<Result<T>>) -> Reply<T> {
        Reply {
            sender,
            answer: None,
        }
    }

    fn send(self) {
        // A caller that gave up waiting has dropped its receiver.
        let answer = self.answer.unwrap_or(Err(Error::Closed));
        let _ = self.sender.send(answer);
    }

    fn fail(self, err: Error) {
        let _ = self.sender.send(Err(err));
    }
}

/// One write, as a caller asks for it, with its reply.
enum Request {
    /// Claim `key` if the decision rule still says so inside the transaction.
    Claim {
        key: Key,
        fingerprint: Fingerprint,
        reply: Reply<Begin<Granted>>,
    },
    /// Store the response of the claim with `token`.
    Complete {
        key: Key,
        token: u64,
        response: StoredResponse,
        reply: Reply<Completed>,
    },
    /// Delete the in-flight record of the claim with `token`.
    Release {
        key: Key,
        token: u64,
        reply: Reply<()>,
    },
    /// Extend the lease of the claim with `token`.
    Renew {
        key: Key,
        token: u64,
        reply: Reply<Renewed>,
    },
    /// Delete whatever is stored for `key`; answers whether a live record
    /// was deleted.
    Remove { key: Key, reply: Reply<bool> },
    /// Delete up to `limit` expired records.
    Sweep { limit: usize, reply: Reply<Swept> },
}

impl Request {
    fn send(self) {
        match self {
            Request::Claim { reply, .. } => reply.send(),
            Request::Complete { reply, .. } => reply.send(),
            Request::Release { reply, .. } => reply.send(),
            Request::Renew { reply, .. } => reply.send(),
            Request::Remove { reply, .. } => reply.send(),
            Request::Sweep { reply, .. } => reply.send(),
        }
    }

    fn fail(self, err: Error) {
        match self {
            Request::Claim { reply, .. } => reply.fail(err),
            Request::Complete { reply, .. } => reply.fail(err),
            Request::Release { reply, .. } => reply.fail(err),
            Request::Renew { reply, .. } => reply.fail(err),
            Request::Remove { reply, .. } => reply.fail(err),
            Request::Sweep { reply, .. } => reply.fail(err),
        }
    }
}

/// The caller's side: a handle that submits operations and, when dropped,
/// stops and joins the thread (once every [`Submitter`] is gone too).
pub(crate) struct Committer {
    submitter: Option<Submitter>,
    thread: Option<JoinHandle<()>>,
}

/// A cloneable way to submit operations, for other threads (the sweeper).
/// Every method blocks until the commit that covers its operation returned.
#[derive(Clone)]
pub(crate) struct Submitter {
    sender: Sender<Request>,
}

impl Submitter {
    fn submit<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (sender, answer) = crossbeam_channel::bounded(1);
        self.sender
            .send(request(Reply::new(sender)))
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    pub fn claim(&self, key: &Key, fingerprint: Fingerprint) -> Result<Begin<Granted>> {
        self.submit(|reply| Request::Claim {
            key: key.clone(),
            fingerprint,
            reply,
        })
    }

    pub fn complete(&self, key: &Key, token: u64, response: StoredResponse) -> Result<Completed> {
        self.submit(|reply| Request::Complete {
            key: key.clone(),
            token,
            response,
            reply,
        })
    }

    pub fn release(&self, key: &Key, token: u64) -> Result<()> {
        self.submit(|reply| Request::Release {
            key: key.clone(),
            token,
            reply,
        })
    }

    pub fn renew(&self, key: &Key, token: u64) -> Result<Renewed> {
        self.submit(|reply| Request::Renew {
            key: key.clone(),
            token,
            reply,
        })
    }

    pub fn remove(&self, key: &Key) -> Result<bool> {
        self.submit(|reply| Request::Remove {
            key: key.clone(),
            reply,
        })
    }

    pub fn sweep(&self, limit: usize) -> Result<Swept> {
        self.submit(|reply| Request::Sweep { limit, reply })
    }
}

impl Committer {
    pub fn start(
        db: Arc<Database>,
        config: Config,
        time: Arc<StoreTime>,
        counters: Arc<Counters>,
        token_ceiling: u64,
        live_records: u64,
    ) -> Result<Committer> {
        let (sender, receiver) = crossbeam_channel::bounded(MAX_BATCH * 4);
        counters.set_live_records(live_records);
        let worker = Worker {
            db,
            config,
            time,
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
            .map_err(Error::io)?;
        Ok(Committer {
            submitter: Some(Submitter { sender }),
            thread: Some(thread),
        })
    }

    /// The submitter of this committer, or `Closed` once it is shutting down.
    pub fn submitter(&self) -> Result<&Submitter> {
        self.submitter.as_ref().ok_or(Error::Closed)
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
    time: Arc<StoreTime>,
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

    fn run_batch(&mut self, mut batch: Vec<Request>) {
        if let Some(cause) = &self.poisoned {
            for request in batch {
                request.fail(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            return;
        }
        // A panic inside redb (damaged pages) fails the batch like any
        // storage error, and poisons the store.
        match storage::shielded(|| self.commit_batch(&mut batch)) {
            Ok(()) => {
                bump(&self.counters.commits);
                add(&self.counters.committed_ops, batch.len() as u64);
                for request in batch {
                    request.send();
                }
            }
            Err(err) => {
                let cause = err.to_string();
                self.poisoned = Some(cause.clone());
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
    fn commit_batch(&mut self, batch: &mut [Request]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        if self.config.durability == Durability::None {
            txn.set_durability(redb::Durability::None)?;
        }
        let now_ms = self.time.now_ms();
        let token_ceiling_before = self.token_ceiling;
        let (added, deleted) = {
            let mut tables = WriteTables::open(&txn)?;
            for request in batch.iter_mut() {
                self.apply(&mut tables, request, now_ms)?;
            }
            if self.token_ceiling != token_ceiling_before {
                txn.open_table(META)?
                    .insert(META_TOKEN_CEILING, self.token_ceiling)?;
            }
            tables.record_count_changes()
        };
        txn.commit()?;
        self.live_records = (self.live_records + added).saturating_sub(deleted);
        self.counters.set_live_records(self.live_records);
        self.unsynced = self.config.durability == Durability::None;
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
                reply,
            } => reply.answer = Some(self.claim(tables, key, fingerprint, now_ms)?),
            Request::Complete {
                key,
                token,
                response,
                reply,
            } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    None => Err(Error::LeaseLost),
                    Some(mut record) => {
                        let old = record.slot();
                        record.state = StoredState::Completed {
                            response: response.clone(),
                        };
                        record.updated_at_ms = now_ms;
                        record.expires_at_ms = now_ms.saturating_add(self.config.retention_ms());
                        tables.put(key, Some(old), &record)?;
                        Ok(Completed {
                            expires_at_ms: record.expires_at_ms,
                        })
                    }
                });
            }
            Request::Release { key, token, reply } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    None => Err(Error::LeaseLost),
                    Some(record) => tables.delete(key, Some(record.slot())),
                });
            }
            Request::Renew { key, token, reply } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    None => Err(Error::LeaseLost),
                    Some(mut record) => {
                        let old = record.slot();
                        let lease_until_ms = self.lease_from(&mut record, now_ms);
                        tables.put(key, Some(old), &record)?;
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
                reply.answer = Some(Ok(Swept { deleted, more }));
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
            expires_at_ms: 0,
            state: StoredState::InFlight { lease_until_ms: 0 },
        };
        let lease_until_ms = self.lease_from(&mut record, now_ms);
        tables.put(key, old.map(|(slot, _, _)| slot), &record)?;
        Ok(Ok(Begin::Claimed(Granted {
            token,
            lease_until_ms,
            takeover: intent.takeover,
        })))
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
        let _ = storage::shielded(|| {
            self.db.begin_write()?.commit()?;
            Ok(())
        });
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
