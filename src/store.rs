//! The public handle: [`Store`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::Database;

use crate::cache::CachedCompletion;
use crate::clock::StoreTime;
use crate::committer::{Committer, Submitter};
use crate::config::{Config, Recovery, Settings};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::lock_table::{ClaimTicket, Holder, LockTable, Lookup, Waiter};
use crate::metrics::{Counters, Metrics, add, bump};
use crate::outcome::{Begin, Claim, CompleteError};
use crate::record::{Record, decide};
use crate::response::StoredResponse;
use crate::storage;
use crate::storage_backend::{EngineBackend, StorageBackend};
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

// A `Store` and its claims move between threads and tasks freely.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    send_sync::<Claim>();
    send_sync::<CompleteError>();
};

struct Inner {
    // Dropped in this order by `Drop for Inner`: the sweeper stops first (it
    // submits to the committer), then the committer drains its queue and
    // stops, then the database closes.
    sweeper: Option<Sweeper>,
    committer: Option<Committer>,
    db: Option<Arc<Database>>,
    config: Config,
    time: Arc<StoreTime>,
    locks: Arc<LockTable>,
    counters: Arc<Counters>,
}

impl Inner {
    fn db(&self) -> Result<&Database> {
        self.db.as_deref().ok_or(Error::Closed)
    }

    fn committer(&self) -> Result<&Submitter> {
        self.committer.as_ref().ok_or(Error::Closed)?.submitter()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.sweeper.take());
        drop(self.committer.take());
        // Closing the database may commit; a panic of the storage engine on
        // damaged data must not escape into the thread dropping the store.
        if let Some(db) = self.db.take() {
            let _ = storage::shielded(move || {
                drop(db);
                Ok(())
            });
        }
    }
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

    /// Opens (or creates) a store over a custom [`StorageBackend`] instead
    /// of a file: for fault-injection tests, or storage that is not a plain
    /// file.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn with_backend(backend: impl StorageBackend, config: Config) -> Result<Store> {
        config.validate()?;
        let db = storage::shielded(|| {
            Ok(Database::builder()
                .set_cache_size(config.storage_cache_bytes)
                .create_with_backend(EngineBackend(backend))?)
        })?;
        Store::start(db, Path::new("<custom storage backend>"), config)
    }

    fn start(db: Database, path: &Path, config: Config) -> Result<Store> {
        let opened = storage::prepare(&db, path, config.recovery == Recovery::ReleaseAtOpen)?;
        let db = Arc::new(db);
        let time = Arc::new(StoreTime::anchored(Arc::clone(&config.clock)));
        let counters = Arc::new(Counters::default());
        add(&counters.recovered_claims, opened.released);
        let committer = Committer::start(
            Arc::clone(&db),
            config.clone(),
            Arc::clone(&time),
            Arc::clone(&counters),
            opened.token_ceiling,
            opened.live_records,
        )?;
        let sweeper = Sweeper::start(
            committer.submitter()?.clone(),
            Arc::clone(&db),
            config.clone(),
            Arc::clone(&time),
            Arc::clone(&counters),
        )
        .map_err(Error::io)?;
        Ok(Store {
            inner: Arc::new(Inner {
                sweeper: Some(sweeper),
                committer: Some(committer),
                db: Some(db),
                locks: Arc::new(LockTable::new(config.cache_bytes)),
                config,
                time,
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
    /// committed. After such an error the claim may or may not have reached
    /// the disk (a failed sync can leave it there): retrying `begin` then
    /// answers `InProgress` until its lease runs out, never a second claim.
    pub fn begin(&self, key: &Key, fingerprint: Fingerprint) -> Result<Begin> {
        let answer = self.begin_step(key, fingerprint, None)?;
        self.count(&answer);
        Ok(answer)
    }

    /// Like [`begin`](Self::begin), but if another attempt holds the key,
    /// waits up to `timeout` (any `Duration`, `Duration::MAX` for no limit)
    /// for it to finish: its completion answers `Replay`, its release lets
    /// this caller claim. When the time runs out the answer is `InProgress`.
    ///
    /// The wait parks the thread: it is woken when the holder in this process
    /// completes, releases or drops its claim, and otherwise when the holder's
    /// lease would run out. A wait that ends, however it ends, leaves nothing
    /// registered (`Metrics::waiters` counts the waits in progress).
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
        // No deadline when `timeout` reaches past what `Instant` can hold.
        let deadline = Instant::now().checked_add(timeout);
        let waiter = self.inner.locks.waiter(key.hash());
        let mut parked = false;
        loop {
            let answer = self.begin_step(key, fingerprint, Some(&waiter))?;
            let Begin::InProgress { retry_after } = answer else {
                self.count(&answer);
                return Ok(answer);
            };
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                self.count(&answer);
                return Ok(answer);
            }
            if !parked {
                parked = true;
                bump(&self.inner.counters.waits);
            }
            // Woken early by the holder; otherwise re-check when its lease
            // would end (a holder in another process cannot wake us).
            waiter.wait(retry_after.min(left));
        }
    }

    /// One attempt at `begin`, without counting the answer. With `waiter`,
    /// an `InProgress` answer taken from the lock table registers it for a
    /// wake-up.
    fn begin_step(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        waiter: Option<&Waiter>,
    ) -> Result<Begin> {
        let inner = &*self.inner;
        let now_ms = inner.time.now_ms();
        let mut shard = inner.locks.lock(key.hash());
        if let Lookup::Answered(answer) =
            shard.lookup(fingerprint, now_ms, inner.config.lease, waiter)
        {
            return Ok(answer.map_claim(|never| match never {}));
        }
        // No claim of this process is live: the disk decides. The shard lock
        // is held across the read so no other `begin` can claim in between.
        let stored = storage::read_record(inner.db()?, key)?;
        match decide(stored, &fingerprint, now_ms).claim_or_answer() {
            Err(answer) => Ok(answer),
            Ok(_) => {
                let ticket = shard.start_claim(&inner.locks, fingerprint);
                self.commit_claim(key, fingerprint, ticket)
            }
        }
    }

    /// Commits the claim `begin_step` decided on. The committer decides
    /// again against the record inside its transaction; only its answer
    /// counts. The ticket settles the lock-table entry: held on success,
    /// removed otherwise.
    fn commit_claim(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        ticket: ClaimTicket,
    ) -> Result<Begin> {
        let inner = &*self.inner;
        let granted = match inner
            .committer()?
            .claim(key, fingerprint)?
            .claim_or_answer()
        {
            Ok(granted) => granted,
            Err(answer) => return Ok(answer),
        };
        ticket.grant(Holder {
            token: granted.token,
            lease_until_ms: granted.lease_until_ms,
        });
        Ok(Begin::Claimed(Claim {
            key: key.clone(),
            fingerprint,
            token: granted.token,
            takeover: granted.takeover,
            locks: Arc::clone(&inner.locks),
        }))
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
    /// A [`CompleteError`]. Refused before anything is written, with the
    /// claim handed back ([`CompleteError::into_claim`]):
    /// [`Error::ResponseTooLarge`] if the response exceeds
    /// `Config::max_response_bytes`, [`Error::WrongStore`]. With the claim
    /// consumed: [`Error::LeaseLost`] if another attempt took the key over or
    /// it was removed (nothing changed); [`Error::Storage`] or
    /// [`Error::Poisoned`] if the commit failed. A failed commit may still
    /// have reached the disk: the key then reads as completed; otherwise it
    /// stays in flight until its lease runs out. Either way no retry runs
    /// the side effect before the lease ends.
    pub fn complete(&self, claim: Claim, response: StoredResponse) -> Result<(), CompleteError> {
        if let Err(err) = self.check_claim(&claim) {
            return Err(CompleteError::refused(err, claim));
        }
        let (size, limit) = (response.stored_len(), self.inner.config.max_response_bytes);
        if size > limit {
            return Err(CompleteError::refused(
                Error::ResponseTooLarge { size, limit },
                claim,
            ));
        }
        let cached = (self.inner.config.cache_bytes > 0).then(|| response.clone());
        let locks = &self.inner.locks;
        let busy = locks.mark_busy(claim.key.hash(), claim.token);
        let result = self
            .inner
            .committer()
            .and_then(|committer| committer.complete(&claim.key, claim.token, response));
        match result {
            Ok(completed) => {
                busy.end_claim(|cache| {
                    if let Some(response) = cached {
                        cache.insert(CachedCompletion {
                            fingerprint: claim.fingerprint,
                            expires_at_ms: completed.expires_at_ms,
                            response,
                        });
                    }
                });
                bump(&self.inner.counters.completions);
                Ok(())
            }
            Err(err) => {
                busy.end_claim(|_| {});
                if matches!(err, Error::LeaseLost) {
                    bump(&self.inner.counters.leases_lost);
                }
                Err(CompleteError::failed(err))
            }
        }
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
        let busy = self.inner.locks.mark_busy(claim.key.hash(), claim.token);
        let result = self
            .inner
            .committer()
            .and_then(|committer| committer.release(&claim.key, claim.token));
        busy.end_claim(|_| {});
        self.note_lease_lost(result)?;
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
        let busy = self.inner.locks.mark_busy(claim.key.hash(), claim.token);
        let result = self
            .inner
            .committer()
            .and_then(|committer| committer.renew(&claim.key, claim.token));
        match &result {
            Ok(renewed) => busy.renewed(renewed.lease_until_ms),
            // The record says this claim is over: so is its entry.
            Err(Error::LeaseLost) => busy.end_claim(|_| {}),
            Err(_) => drop(busy),
        }
        self.note_lease_lost(result)?;
        bump(&self.inner.counters.renewals);
        Ok(())
    }

    /// Counts a `LeaseLost` answer of a holder operation.
    fn note_lease_lost<T>(&self, result: Result<T>) -> Result<T> {
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

    /// The live record of `key`, if any. Expired records read as `None` even
    /// before a sweep deletes them.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] if the record fails verification,
    /// [`Error::Storage`] if it cannot be read.
    pub fn get(&self, key: &Key) -> Result<Option<Record>> {
        let now_ms = self.inner.time.now_ms();
        Ok(storage::read_record(self.inner.db()?, key)?
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
        let live = self.inner.committer()?.remove(key)?;
        self.inner.locks.forget(key.hash());
        if live {
            bump(&self.inner.counters.removed);
        }
        Ok(live)
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
        sweeper::sweep(
            inner.committer()?,
            inner.db()?,
            &inner.config,
            &inner.time,
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
        let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).map_err(Error::io);
        let bytes_before = size(path)?;
        let mut db = storage::open_file(path, Config::default().storage_cache_bytes)?;
        storage::prepare(&db, path, false)?;
        storage::shielded(move || {
            while db.compact()? {}
            drop(db);
            Ok(())
        })?;
        Ok(Compaction {
            bytes_before,
            bytes_after: size(path)?,
        })
    }

    /// A snapshot of the outcome counters since the store was opened, and of
    /// its gauges now.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = self.inner.counters.snapshot();
        metrics.waiters = self.inner.locks.waiters();
        metrics
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> Settings {
        self.inner.config.settings()
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
