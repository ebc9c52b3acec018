//! The public handle: [`Store`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::Database;

use crate::cache::CachedCompletion;
use crate::committer::{Committer, Op, Outcome};
use crate::config::{Config, Recovery};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::lock_table::{Entry, EntryState, Holder, LockTable, Shard};
use crate::metrics::{Counters, Metrics, add, bump};
use crate::outcome::{Begin, Claim};
use crate::record::{Decision, Record, decide, in_progress};
use crate::response::StoredResponse;
use crate::storage;
use crate::sweeper::{self, Sweeper};

/// An idempotency-key store over one redb file.
///
/// `Store` is a cheap handle: clone it into every thread or task that needs
/// it. The file stays open, and the committer thread running, until the last
/// clone is dropped; dropping it joins the thread.
///
/// ```
/// use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};
///
/// let store = Store::in_memory(Config::default())?;
/// let key = Key::new("tenant-1 POST /orders", "order-7f3a")?;
/// let fingerprint = Fingerprint::of(br#"{"sku":"A1","qty":2}"#);
///
/// match store.begin(&key, fingerprint)? {
///     Begin::Claimed(claim) => {
///         // ... run the side effect exactly once ...
///         store.complete(claim, StoredResponse::new(201, "order 991 created"))?;
///     }
///     Begin::Replay(response) => println!("replaying {}", response.status()),
///     Begin::InProgress { retry_after } => println!("busy, retry in {retry_after:?}"),
///     Begin::Mismatch => println!("key reused for a different request"),
/// }
///
/// // The retry gets the stored answer back.
/// let Begin::Replay(response) = store.begin(&key, fingerprint)? else { unreachable!() };
/// assert_eq!(response.body(), b"order 991 created");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    // Dropped in declaration order: the sweeper stops first (it submits to
    // the committer), then the committer drains its queue and stops.
    /// Held for its `Drop`, which stops and joins the sweeper thread.
    _sweeper: Sweeper,
    committer: Committer,
    db: Arc<Database>,
    config: Config,
    locks: Arc<LockTable>,
    counters: Arc<Counters>,
}

impl Store {
    /// Opens (or creates) the store file at `path`.
    ///
    /// InFlight records left by a process that died keep their leases: a
    /// `begin` on them answers `InProgress` until the lease runs out, then the
    /// next `begin` takes over.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero lease or retention,
    /// [`Error::AlreadyOpen`] if another `Store` has the file open,
    /// [`Error::NotAStore`] for a redb file idemkv did not write,
    /// [`Error::UnsupportedVersion`] for a file from a newer idemkv,
    /// [`Error::Corrupted`] or [`Error::Storage`] if the file cannot be read.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        config.validate()?;
        let path = path.as_ref();
        let db = storage::open_file(path, config.storage_cache_bytes)?;
        Store::start(db, path, config)
    }

    /// A store that lives in memory only, for tests and throwaway use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero lease or retention.
    pub fn in_memory(config: Config) -> Result<Store> {
        config.validate()?;
        let db = storage::open_in_memory(config.storage_cache_bytes)?;
        Store::start(db, Path::new(":memory:"), config)
    }

    /// Opens (or creates) a store over a custom redb storage backend instead
    /// of a file: for fault-injection tests, or storage that is not a plain
    /// file. The backend must behave like a file (reads see earlier writes;
    /// `sync_data` makes them durable).
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn with_backend(backend: impl redb::StorageBackend, config: Config) -> Result<Store> {
        config.validate()?;
        let db = Database::builder()
            .set_cache_size(config.storage_cache_bytes)
            .create_with_backend(backend)?;
        Store::start(db, Path::new("<custom storage backend>"), config)
    }

    fn start(db: Database, path: &Path, config: Config) -> Result<Store> {
        let opened = storage::prepare(&db, path, config.recovery == Recovery::ReleaseAtOpen)?;
        let db = Arc::new(db);
        let counters = Arc::new(Counters::default());
        add(&counters.recovered_claims, opened.released);
        let committer = Committer::start(
            Arc::clone(&db),
            config.clone(),
            Arc::clone(&counters),
            opened.token_ceiling,
            opened.live_records,
        )?;
        let sweeper = match committer.submitter() {
            Some(submitter) => Sweeper::start(
                submitter,
                Arc::clone(&db),
                config.clone(),
                Arc::clone(&counters),
            )
            .map_err(|e| Error::Storage(Box::new(redb::Error::Io(e))))?,
            None => return Err(Error::Closed),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                _sweeper: sweeper,
                committer,
                db,
                locks: Arc::new(LockTable::new(config.cache_bytes)),
                config,
                counters,
            }),
        })
    }

    /// Starts an attempt of the operation named by `key`.
    ///
    /// Answers exactly one of [`Begin::Claimed`] (run the side effect; the
    /// claim is durable before this returns), [`Begin::Replay`],
    /// [`Begin::InProgress`] or [`Begin::Mismatch`]. Only `Claimed` writes to
    /// the disk; a second `begin` for a key being claimed or held by this
    /// process is answered from memory.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] if the stored record fails verification,
    /// [`Error::Storage`] or [`Error::Poisoned`] if the claim cannot be
    /// committed. No error leaves a claim behind.
    pub fn begin(&self, key: &Key, fingerprint: Fingerprint) -> Result<Begin> {
        let answer = self.begin_step(key, fingerprint, None)?;
        self.count(&answer);
        Ok(answer)
    }

    /// Like [`begin`](Self::begin), but if another attempt holds the key,
    /// waits up to `timeout` for it to finish: its completion answers
    /// `Replay`, its release lets this caller claim. When the time runs out
    /// the answer is `InProgress`.
    ///
    /// The wait parks the thread: it is woken when the holder in this process
    /// completes, releases or drops its claim, and otherwise when the holder's
    /// lease would run out.
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin).
    pub fn begin_wait(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        timeout: Duration,
    ) -> Result<Begin> {
        let deadline = Instant::now() + timeout;
        let (wake, woken) = crossbeam_channel::bounded(1);
        let mut parked = false;
        loop {
            let answer = self.begin_step(key, fingerprint, Some(&wake))?;
            let Begin::InProgress { retry_after } = answer else {
                self.count(&answer);
                return Ok(answer);
            };
            let now = Instant::now();
            if now >= deadline {
                self.count(&answer);
                return Ok(answer);
            }
            if !parked {
                parked = true;
                bump(&self.inner.counters.waits);
            }
            // Woken early by the holder; otherwise re-check when its lease
            // would end (a holder in another process cannot wake us).
            let _ = woken.recv_timeout(retry_after.min(deadline - now));
        }
    }

    /// One attempt at `begin`, without counting the answer. With `waiter`,
    /// an `InProgress` answer taken from the lock table registers it for a
    /// wake-up.
    fn begin_step(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        waiter: Option<&crossbeam_channel::Sender<()>>,
    ) -> Result<Begin> {
        let inner = &*self.inner;
        let hash = key.hash();
        let now_ms = inner.config.now_ms();
        let mut shard = inner.locks.shard(hash);
        let mut previous = None;
        if let Some(entry) = shard.claims.get_mut(hash) {
            let answer = match entry.state {
                // The holder's lease ran out and it has nothing in flight: the
                // record decides (takeover, mismatch, or claim afresh if it
                // expired altogether), as for a claim of a dead process.
                EntryState::Held { holder, busy: 0 } if holder.lease_until_ms <= now_ms => {
                    previous = Some((holder, entry.fingerprint));
                    None
                }
                _ if entry.fingerprint != fingerprint => Some(Begin::Mismatch),
                EntryState::Held { holder, .. } => Some(in_progress(holder.lease_until_ms, now_ms)),
                EntryState::Claiming { .. } => Some(Begin::InProgress {
                    retry_after: inner.config.lease,
                }),
            };
            if let Some(answer) = answer {
                if let (Some(waiter), Begin::InProgress { .. }) = (waiter, &answer) {
                    entry.add_waiter(waiter);
                }
                return Ok(answer);
            }
        }
        // The common retry: a completed record in the replay cache.
        if let Some(cached) = shard.cache.get(hash, now_ms) {
            return Ok(if cached.fingerprint == fingerprint {
                Begin::Replay(cached.response.clone())
            } else {
                Begin::Mismatch
            });
        }
        // No claim of this process is live: the disk decides. The shard lock
        // is held across the read so no other `begin` can claim in between.
        let stored = storage::read_record(&inner.db, key)?;
        match decide(stored, &fingerprint, now_ms) {
            Decision::Answer(answer) => Ok(answer),
            Decision::Claim { .. } => {
                let ticket = inner.locks.ticket();
                let claiming = Entry::claiming(fingerprint, ticket, previous);
                match shard.claims.get_mut(hash) {
                    // Keep the waiters of the holder being taken over.
                    Some(entry) => entry.become_claiming(claiming),
                    None => {
                        shard.claims.insert(*hash, claiming);
                    }
                }
                drop(shard);
                self.commit_claim(key, fingerprint, ticket)
            }
        }
    }

    /// Commits the claim `begin_step` decided on, then settles its lock-table
    /// entry: held on success, restored to the previous holder (or removed)
    /// otherwise.
    fn commit_claim(&self, key: &Key, fingerprint: Fingerprint, ticket: u64) -> Result<Begin> {
        let inner = &*self.inner;
        let hash = key.hash();
        let result = inner.committer.submit(Op::Claim {
            key: key.clone(),
            fingerprint,
        });
        let mut shard = inner.locks.shard(hash);
        let mine = shard
            .claims
            .get(hash)
            .is_some_and(|e| e.is_claimed_by(ticket));
        match result {
            Ok(Outcome::Claimed {
                token,
                lease_until_ms,
                takeover,
            }) => {
                let holder = Holder {
                    token,
                    lease_until_ms,
                };
                if mine {
                    if let Some(entry) = shard.claims.get_mut(hash) {
                        entry.state = EntryState::Held { holder, busy: 0 };
                        entry.wake_all();
                    }
                } else if !shard.claims.contains_key(hash) {
                    // `remove` dropped the entry while the claim was queued
                    // behind it; the disk says this claim holds the key.
                    shard.claims.insert(*hash, Entry::held(fingerprint, holder));
                }
                Ok(Begin::Claimed(Claim {
                    key: key.clone(),
                    fingerprint,
                    token,
                    takeover,
                    locks: Arc::clone(&inner.locks),
                }))
            }
            other => {
                if mine {
                    LockTable::restore_or_remove(&mut shard, hash);
                }
                match other? {
                    Outcome::Answer(answer) => Ok(answer),
                    unexpected => unreachable!("claim answered with {unexpected:?}"),
                }
            }
        }
    }

    fn count(&self, answer: &Begin) {
        let counters = &self.inner.counters;
        match answer {
            Begin::Claimed(claim) => {
                bump(&counters.claims);
                if claim.takeover {
                    bump(&counters.takeovers);
                }
            }
            Begin::Replay(_) => bump(&counters.replays),
            Begin::InProgress { .. } => bump(&counters.in_progress),
            Begin::Mismatch => bump(&counters.mismatches),
        }
    }

    /// Stores `response` for the claimed key; retries with the same
    /// fingerprint replay it until the retention period runs out. Durable
    /// when this returns.
    ///
    /// A holder whose lease ran out may still complete as long as nobody took
    /// the key over: fencing is by token, not by time.
    ///
    /// # Errors
    ///
    /// [`Error::ResponseTooLarge`] if the response exceeds
    /// `Config::max_response_bytes` (check first with
    /// [`check_response`](Self::check_response) to release instead);
    /// [`Error::LeaseLost`] if another attempt took the key over or it was
    /// removed; [`Error::WrongStore`]; [`Error::Storage`] or
    /// [`Error::Poisoned`] if the commit failed. On every error nothing is
    /// stored and the record stays in flight until its lease runs out.
    pub fn complete(&self, claim: Claim, response: StoredResponse) -> Result<()> {
        self.check_claim(&claim)?;
        self.check_response(&response)?;
        let cached = (self.inner.config.cache_bytes > 0).then(|| response.clone());
        let op = Op::Complete {
            key: claim.key.clone(),
            token: claim.token,
            response,
        };
        let outcome = self.finish(&claim, op, |shard, outcome| {
            if let (Outcome::Completed { expires_at_ms }, Some(response)) = (outcome, cached) {
                shard.cache.insert(
                    *claim.key.hash(),
                    CachedCompletion {
                        fingerprint: claim.fingerprint,
                        expires_at_ms: *expires_at_ms,
                        response,
                    },
                );
            }
        })?;
        debug_assert!(matches!(outcome, Outcome::Completed { .. }));
        bump(&self.inner.counters.completions);
        Ok(())
    }

    /// Gives the key up without storing a result: the record is deleted and
    /// the next `begin` claims afresh (use it when the side effect did not
    /// happen, e.g. a validation error or a failure worth retrying).
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`], [`Error::WrongStore`], [`Error::Storage`] or
    /// [`Error::Poisoned`], as for [`complete`](Self::complete).
    pub fn release(&self, claim: Claim) -> Result<()> {
        self.check_claim(&claim)?;
        let op = Op::Release {
            key: claim.key.clone(),
            token: claim.token,
        };
        self.finish(&claim, op, |_, _| {})?;
        bump(&self.inner.counters.releases);
        Ok(())
    }

    /// Extends the claim's lease to `Config::lease` from now, durably. Long
    /// side effects call it before the lease runs out.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`], [`Error::WrongStore`], [`Error::Storage`] or
    /// [`Error::Poisoned`].
    pub fn renew(&self, claim: &Claim) -> Result<()> {
        self.check_claim(claim)?;
        let op = Op::Renew {
            key: claim.key.clone(),
            token: claim.token,
        };
        let result = self.holder_op(claim, op);
        let hash = claim.key.hash();
        let mut shard = self.inner.locks.shard(hash);
        match (&result, shard.claims.get_mut(hash)) {
            (Ok(Outcome::Renewed { lease_until_ms }), Some(entry))
                if entry.is_held_by(claim.token) =>
            {
                if let EntryState::Held { holder, busy } = &mut entry.state {
                    holder.lease_until_ms = *lease_until_ms;
                    *busy -= 1;
                }
            }
            (Err(Error::LeaseLost), Some(entry)) if entry.is_held_by(claim.token) => {
                LockTable::remove_and_wake(&mut shard, hash);
            }
            (Err(_), Some(entry)) if entry.is_held_by(claim.token) => {
                if let EntryState::Held { busy, .. } = &mut entry.state {
                    *busy = busy.saturating_sub(1);
                }
            }
            _ => {}
        }
        drop(shard);
        result?;
        bump(&self.inner.counters.renewals);
        Ok(())
    }

    /// Runs `complete` or `release`, then ends the claim in the lock table
    /// whatever the outcome, waking waiters. `on_success` runs under the
    /// shard lock, only if the claim still held the key there: a `remove`
    /// that revoked it in the meantime must not be undone by a cache insert.
    fn finish(
        &self,
        claim: &Claim,
        op: Op,
        on_success: impl FnOnce(&mut Shard, &Outcome),
    ) -> Result<Outcome> {
        let result = self.holder_op(claim, op);
        let hash = claim.key.hash();
        let mut shard = self.inner.locks.shard(hash);
        if shard
            .claims
            .get(hash)
            .is_some_and(|e| e.is_held_by(claim.token))
        {
            if let Ok(outcome) = &result {
                on_success(&mut shard, outcome);
            }
            LockTable::remove_and_wake(&mut shard, hash);
        }
        drop(shard);
        result
    }

    /// Marks the claim busy (no takeover may start while its write is in
    /// flight) and submits `op`. A claim another `begin` is taking over, or
    /// has taken over, fails at once without touching the disk; a claim
    /// absent from the lock table is judged by the committer from the record.
    fn holder_op(&self, claim: &Claim, op: Op) -> Result<Outcome> {
        let hash = claim.key.hash();
        {
            let mut shard = self.inner.locks.shard(hash);
            match shard.claims.get_mut(hash) {
                Some(Entry {
                    state: EntryState::Held { holder, busy },
                    ..
                }) if holder.token == claim.token => *busy += 1,
                Some(_) => {
                    bump(&self.inner.counters.leases_lost);
                    return Err(Error::LeaseLost);
                }
                None => {}
            }
        }
        let result = self.inner.committer.submit(op);
        if matches!(result, Err(Error::LeaseLost)) {
            bump(&self.inner.counters.leases_lost);
        }
        result
    }

    fn check_claim(&self, claim: &Claim) -> Result<()> {
        if Arc::ptr_eq(&claim.locks, &self.inner.locks) {
            Ok(())
        } else {
            Err(Error::WrongStore)
        }
    }

    /// Checks that `response` fits `Config::max_response_bytes`, so a caller
    /// can release its claim instead of losing it to a failed `complete`.
    ///
    /// # Errors
    ///
    /// [`Error::ResponseTooLarge`].
    pub fn check_response(&self, response: &StoredResponse) -> Result<()> {
        let size = response.stored_len();
        let limit = self.inner.config.max_response_bytes;
        if size > limit {
            return Err(Error::ResponseTooLarge { size, limit });
        }
        Ok(())
    }

    /// The live record of `key`, if any. Expired records read as `None` even
    /// before a sweep deletes them.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] if the record fails verification,
    /// [`Error::Storage`] if it cannot be read.
    pub fn get(&self, key: &Key) -> Result<Option<Record>> {
        let now_ms = self.inner.config.now_ms();
        Ok(storage::read_record(&self.inner.db, key)?
            .filter(|record| !record.is_expired(now_ms))
            .map(|record| record.into_public(key)))
    }

    /// Deletes whatever is stored for `key`, in flight or completed (a
    /// damaged record included). A live claim on it is revoked: its holder's
    /// `complete`/`release`/`renew` fail with `LeaseLost`. Returns whether a
    /// live record was deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Poisoned`] if the commit failed.
    pub fn remove(&self, key: &Key) -> Result<bool> {
        let outcome = self
            .inner
            .committer
            .submit(Op::Remove { key: key.clone() })?;
        let hash = key.hash();
        let mut shard = self.inner.locks.shard(hash);
        shard.cache.invalidate(hash);
        if matches!(
            shard.claims.get(hash),
            Some(Entry {
                state: EntryState::Held { .. },
                ..
            })
        ) {
            LockTable::remove_and_wake(&mut shard, hash);
        }
        drop(shard);
        match outcome {
            Outcome::Removed(live) => {
                if live {
                    bump(&self.inner.counters.removed);
                }
                Ok(live)
            }
            unexpected => unreachable!("remove answered with {unexpected:?}"),
        }
    }

    /// Deletes every expired record now, in write transactions of at most
    /// `Config::sweep_batch` records so claims are not stalled behind one long
    /// transaction. The background sweeper does the same every
    /// `Config::sweep_interval`; this is for stores that turned it off, and
    /// for tests. Returns how many records were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Poisoned`] if a commit failed; records
    /// deleted by earlier batches stay deleted.
    pub fn sweep_expired(&self) -> Result<u64> {
        let inner = &*self.inner;
        let submitter = inner.committer.submitter().ok_or(Error::Closed)?;
        sweeper::sweep(
            &submitter,
            &inner.db,
            &inner.config,
            &inner.counters,
            || false,
        )
    }

    /// Compacts the store file at `path` in place, returning freed space to the
    /// file system. redb reuses freed pages on its own, so a store under
    /// steady churn does not need this; it is for shrinking a file after its
    /// live set got smaller for good. The file must not be open: call it
    /// before `Store::open` (or after the last handle is dropped).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyOpen`] if a `Store` has the file open, the errors of
    /// [`Store::open`] for a file that is missing or not an idemkv store, and
    /// [`Error::Storage`] if compaction fails (the file then stays as it was
    /// or partly compacted, never inconsistent: redb compacts transactionally).
    pub fn compact(path: impl AsRef<Path>) -> Result<Compaction> {
        let path = path.as_ref();
        let size = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| Error::Storage(Box::new(redb::Error::Io(e))))
        };
        let bytes_before = size(path)?;
        let mut db = storage::open_file(path, Config::default().storage_cache_bytes)?;
        storage::prepare(&db, path, false)?;
        storage::shielded(|| {
            while db.compact()? {}
            Ok(())
        })?;
        drop(db);
        Ok(Compaction {
            bytes_before,
            bytes_after: size(path)?,
        })
    }

    /// A snapshot of the outcome counters since the store was opened.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}

/// What [`Store::compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compaction {
    /// File size before compaction.
    pub bytes_before: u64,
    /// File size after compaction.
    pub bytes_after: u64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
