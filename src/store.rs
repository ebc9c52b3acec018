//! The public handle: [`Store`].

use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::CachedCompletion;
use crate::clock::StoreTime;
use crate::committer::{Committer, Imported, Submitter};
use crate::config::{ClaimTerms, Config, Durability, Recovery, Settings, Terms};
use crate::engine::{Engine, Source};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::health::{Health, HealthCell};
use crate::inspect::{self, ScanFilter, Stats};
#[cfg(feature = "fault-injection")]
use crate::journal_storage::JournalStorage;
use crate::key::Key;
use crate::lock_table::{ClaimTicket, Holder, LockTable, Lookup, Waiter};
use crate::log::{event, span};
use crate::metrics::{self, Counters, MetricLabel, Metrics, add, bump};
use crate::once::{OnError, Once};
use crate::outcome::{Begin, Claim, CompleteError, ReleaseError, Takeover};
use crate::record::{Record, decide};
use crate::recovery::RecoveryPoint;
use crate::response::StoredResponse;
#[cfg(feature = "fault-injection")]
use crate::storage_backend::StorageBackend;
use crate::sweeper::{self, Sweeper};
use crate::verify::{self, EngineCheck, VerifyReport};

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
    // Stopped in this order by `Drop for Inner` and `Store::close`: the
    // sweeper first (it submits to the committer), then the committer drains
    // its queue and stops, then the engine closes the database.
    sweeper: Option<Sweeper>,
    committer: Option<Committer>,
    engine: Arc<Engine>,
    config: Config,
    time: Arc<StoreTime>,
    locks: Arc<LockTable>,
    counters: Arc<Counters>,
    health: Arc<HealthCell>,
    /// The config's lease and retention, for claims without terms of their
    /// own.
    default_terms: ClaimTerms,
}

/// What `begin` decided without waiting.
enum Step {
    Answered(Begin),
    Commit(ClaimTicket),
}

impl Inner {
    fn committer(&self) -> Result<&Submitter> {
        self.committer.as_ref().ok_or(Error::Closed)?.submitter()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.sweeper.take());
        drop(self.committer.take());
        // The engine closes the database when its last reference (this one)
        // goes, behind the panic shield.
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
        Store::start(Source::File(path.as_ref().to_path_buf()), config)
    }

    /// A store that lives in memory only, for tests and throwaway use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero lease or retention.
    pub fn in_memory(config: Config) -> Result<Store> {
        Store::start(Source::Memory, config)
    }

    /// Opens (or creates) a store over a custom [`StorageBackend`] instead
    /// of a file, for fault-injection tests (feature `fault-injection`; not
    /// part of the stable API). The store keeps the backend, and opens it
    /// again to heal after a failed commit.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    #[cfg(feature = "fault-injection")]
    pub fn with_backend(backend: impl StorageBackend, config: Config) -> Result<Store> {
        Store::start(Source::Backend(Arc::new(backend), None), config)
    }

    /// Opens (or creates) a store over a custom [`StorageBackend`] with its
    /// write-ahead journal in a custom [`JournalStorage`]: for
    /// fault-injection tests of the journal (feature `fault-injection`; not
    /// part of the stable API: the journal's layout may change). The
    /// journal is replayed at
    /// open whatever the config; the store writes to it when
    /// [`Config::journal`] is on.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    #[cfg(feature = "fault-injection")]
    pub fn with_journaled_backend(
        backend: impl StorageBackend,
        journal: impl JournalStorage,
        config: Config,
    ) -> Result<Store> {
        Store::start(
            Source::Backend(Arc::new(backend), Some(Arc::new(journal))),
            config,
        )
    }

    fn start(source: Source, config: Config) -> Result<Store> {
        config.validate()?;
        let _open = span!(info_span, "idemkv.open", path = %source.path().display());
        #[cfg(feature = "tracing")]
        let started = Instant::now();
        let journaled = config.journal && config.durability == Durability::Immediate;
        let (engine, opened, journal) = Engine::open(
            source,
            config.storage_cache_bytes,
            config.verify_on_open,
            config.recovery == Recovery::ReleaseAtOpen,
            journaled,
            config.quick_repair,
        )?;
        let engine = Arc::new(engine);
        if config.verify_on_open {
            let report = engine.read(verify::verify_tables)?;
            if !report.is_ok() {
                return Err(Error::corrupted(format!(
                    "the check at open found {} problem(s): {}",
                    report.problems,
                    report.details.join("; ")
                )));
            }
        }
        let time = Arc::new(StoreTime::anchored(Arc::clone(&config.clock)));
        let label = MetricLabel::new(config.metrics_label.clone());
        let counters = Arc::new(Counters::new(&label));
        let health = Arc::new(HealthCell::new());
        add(&counters.recovered_claims, opened.released);
        let committer = Committer::start(
            Arc::clone(&engine),
            config.clone(),
            Arc::clone(&time),
            Arc::clone(&counters),
            Arc::clone(&health),
            &opened,
            journal,
        )?;
        let sweeper = Sweeper::start(
            committer.submitter()?.clone(),
            Arc::clone(&engine),
            config.clone(),
            Arc::clone(&time),
            Arc::clone(&counters),
        )
        .map_err(Error::io)?;
        let default_terms = config.claim_terms(Terms::default())?;
        event!(
            info,
            path = %engine.source().path().display(),
            records = opened.live_records,
            in_flight = opened.in_flight,
            released_claims = opened.released,
            token_ceiling = opened.token_ceiling,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "store opened: {} records, {} claims in flight keep their leases, {} released",
            opened.live_records,
            opened.in_flight,
            opened.released,
        );
        Ok(Store {
            inner: Arc::new(Inner {
                default_terms,
                sweeper: Some(sweeper),
                committer: Some(committer),
                engine,
                locks: Arc::new(LockTable::new(config.cache_bytes, &label)),
                config,
                time,
                counters,
                health,
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
        self.begin_with(key, fingerprint, Terms::default())
    }

    /// Like [`begin`](Self::begin), with a claim that takes `terms` (its own
    /// lease or retention) instead of the store's. Renewals and the
    /// completion of the claim keep them.
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin), and [`Error::InvalidConfig`] for a zero
    /// lease or retention.
    pub fn begin_with(&self, key: &Key, fingerprint: Fingerprint, terms: Terms) -> Result<Begin> {
        let started = metrics::start();
        let terms = self.claim_terms(terms)?;
        let answer = match self.decide_step(key, fingerprint, terms, None)? {
            Step::Answered(answer) => answer,
            Step::Commit(ticket) => {
                crate::blocking::block_on(self.commit_claim(key, fingerprint, terms, ticket))?
            }
        };
        self.count(&answer);
        self.inner.counters.timings.begin(started);
        Ok(answer)
    }

    /// The terms of a claim; the store's own are resolved once, at open.
    fn claim_terms(&self, terms: Terms) -> Result<ClaimTerms> {
        if terms == Terms::default() {
            Ok(self.inner.default_terms)
        } else {
            self.inner.config.claim_terms(terms)
        }
    }

    /// The one implementation of `begin`, for threads (through `block_on`)
    /// and tasks ([`AsyncStore::begin`](crate::AsyncStore::begin)). Only a
    /// claim waits for anything: the commit.
    pub(crate) async fn begin_async(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> Result<Begin> {
        let started = metrics::start();
        let terms = self.claim_terms(terms)?;
        let answer = self.begin_step(key, fingerprint, terms, None).await?;
        self.count(&answer);
        self.inner.counters.timings.begin(started);
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
        self.begin_wait_with(key, fingerprint, timeout, Terms::default())
    }

    /// [`begin_wait`](Self::begin_wait) with a claim that takes `terms`, as
    /// for [`begin_with`](Self::begin_with).
    ///
    /// # Errors
    ///
    /// As [`begin_with`](Self::begin_with).
    pub fn begin_wait_with(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        timeout: Duration,
        terms: Terms,
    ) -> Result<Begin> {
        crate::blocking::block_on(self.begin_wait_async(key, fingerprint, timeout, terms))
    }

    /// The one implementation of `begin_wait`. A task awaiting it holds no
    /// thread while it waits.
    pub(crate) async fn begin_wait_async(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        timeout: Duration,
        terms: Terms,
    ) -> Result<Begin> {
        let terms = self.claim_terms(terms)?;
        // No deadline when `timeout` reaches past what `Instant` can hold.
        let deadline = Instant::now().checked_add(timeout);
        let waiter = self.inner.locks.waiter(key.hash());
        let mut parked = false;
        loop {
            let answer = self
                .begin_step(key, fingerprint, terms, Some(&waiter))
                .await?;
            let Begin::InProgress { retry_after } = answer else {
                self.count(&answer);
                return Ok(answer);
            };
            // A caller that asked to wait and found the key held is
            // counted as waiting, however long its first look took.
            if !parked && !timeout.is_zero() {
                parked = true;
                bump(&self.inner.counters.waits);
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                self.count(&answer);
                return Ok(answer);
            }
            // Woken early by the holder; otherwise re-check when its lease
            // would end (a holder in another process cannot wake us).
            waiter.wait(retry_after.min(left)).await;
        }
    }

    /// One attempt at `begin`, without counting the answer. With `waiter`,
    /// an `InProgress` answer taken from the lock table registers it for a
    /// wake-up. Only the commit of a claim is awaited.
    async fn begin_step(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
        waiter: Option<&Waiter>,
    ) -> Result<Begin> {
        match self.decide_step(key, fingerprint, terms, waiter)? {
            Step::Answered(answer) => Ok(answer),
            Step::Commit(ticket) => self.commit_claim(key, fingerprint, terms, ticket).await,
        }
    }

    /// What `begin` does, decided at once and without waiting: an answer from
    /// the lock table, the replay cache or a read of the record, or a claim
    /// to commit. The blocking `begin` calls it directly, so the common
    /// answers never build the future of a commit.
    fn decide_step(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
        waiter: Option<&Waiter>,
    ) -> Result<Step> {
        let inner = &*self.inner;
        let now_ms = inner.time.now_ms();
        let claiming_retry_after = Duration::from_millis(terms.lease_ms);
        let mut shard = inner.locks.lock(key.hash());
        if let Lookup::Answered(answer) =
            shard.lookup(fingerprint, now_ms, claiming_retry_after, waiter)
        {
            return Ok(Step::Answered(answer.map_claim(|never| match never {})));
        }
        // No claim of this process is live: the disk decides. The record is
        // read without the shard's lock (a read that goes to the disk must
        // not hold up every other key of the shard, nor a runtime worker
        // waiting for the lock), and the table is looked at again before
        // acting on it: a `begin` of this process that claimed the key
        // meanwhile is seen there (its entry is made under the lock), and
        // a claim decided on a record that changed meanwhile is decided
        // again by the committer, inside its transaction.
        drop(shard);
        let stored = inner.engine.read_record(key)?;
        let mut shard = inner.locks.lock(key.hash());
        if let Lookup::Answered(answer) =
            shard.recheck(fingerprint, now_ms, claiming_retry_after, waiter)
        {
            return Ok(Step::Answered(answer.map_claim(|never| match never {})));
        }
        let step = match decide(stored, &fingerprint, now_ms).claim_or_answer() {
            Err(answer) => Step::Answered(answer),
            Ok(_) => Step::Commit(shard.start_claim(&inner.locks, fingerprint)),
        };
        Ok(step)
    }

    /// Commits the claim `begin_step` decided on. The committer decides
    /// again against the record inside its transaction; only its answer
    /// counts. The ticket settles the lock-table entry: held on success,
    /// removed otherwise, and removed too if this future is dropped before
    /// the answer arrives (the claim, if committed, then stays in flight
    /// until its lease runs out: never released blindly).
    async fn commit_claim(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
        ticket: ClaimTicket,
    ) -> Result<Begin> {
        let inner = &*self.inner;
        let granted = match inner
            .committer()?
            .claim(key, fingerprint, terms)
            .await?
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
            takeover: granted.takeover.then(|| {
                Box::new(Takeover {
                    recovered: granted.recovered,
                })
            }),
            terms,
            locks: Arc::clone(&inner.locks),
        }))
    }

    fn count(&self, answer: &Begin) {
        let counters = &self.inner.counters;
        match answer {
            Begin::Claimed(claim) => {
                bump(&counters.claims);
                if claim.is_takeover() {
                    bump(&counters.takeovers);
                    event!(
                        info,
                        key = %claim.key,
                        token = claim.token,
                        phase = claim.recovered().map(RecoveryPoint::phase),
                        "took over a claim whose lease ran out: its holder stopped renewing"
                    );
                }
                if claim.recovered().is_some() {
                    bump(&counters.resumed);
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
    /// have reached the disk, so these transient errors
    /// ([`Error::is_transient`]) hand the claim back
    /// ([`CompleteError::into_claim`]): repeat the same `complete` with it
    /// once the store is healthy (a completion that landed answers `Ok`),
    /// while the lease lasts. A claim dropped instead keeps the key in
    /// flight until its lease runs out; either way no retry runs the side
    /// effect before the lease ends.
    pub fn complete(&self, claim: Claim, response: StoredResponse) -> Result<(), CompleteError> {
        crate::blocking::block_on(self.complete_async(claim, response))
    }

    /// The one implementation of `complete`.
    pub(crate) async fn complete_async(
        &self,
        claim: Claim,
        response: StoredResponse,
    ) -> Result<(), CompleteError> {
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
        let result = match self.inner.committer() {
            Ok(committer) => {
                committer
                    .complete(&claim.key, claim.token, response, claim.terms.retention_ms)
                    .await
            }
            Err(err) => Err(err),
        };
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
            // The write may pass if repeated: the claim stays held here and
            // goes back to the caller, who repeats the completion (which is
            // idempotent by token) or releases or drops the claim.
            Err(err) if err.is_transient() => {
                drop(busy);
                Err(CompleteError::refused(err, claim))
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
    /// Repeating a release is safe: one whose key holds no live record any
    /// more (this release landed before and its answer was lost, or the
    /// record expired or was removed) answers `Ok`, since the key is free
    /// either way.
    ///
    /// # Errors
    ///
    /// A [`ReleaseError`]: [`Error::LeaseLost`] when another claim holds the
    /// key or it was completed; [`Error::WrongStore`] (with the claim back);
    /// [`Error::Storage`] or [`Error::Poisoned`] with the claim back, to
    /// repeat the release once the store heals.
    pub fn release(&self, claim: Claim) -> Result<(), ReleaseError> {
        crate::blocking::block_on(self.release_async(claim))
    }

    /// The one implementation of `release`.
    pub(crate) async fn release_async(&self, claim: Claim) -> Result<(), ReleaseError> {
        if let Err(err) = self.check_claim(&claim) {
            return Err(ReleaseError::refused(err, claim));
        }
        let busy = self.inner.locks.mark_busy(claim.key.hash(), claim.token);
        let result = match self.inner.committer() {
            Ok(committer) => committer.release(&claim.key, claim.token).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                busy.end_claim(|_| {});
                bump(&self.inner.counters.releases);
                Ok(())
            }
            // As for a completion: the claim stays held here and goes back
            // to the caller, who repeats the release (safe to repeat) or
            // drops the claim.
            Err(err) if err.is_transient() => {
                drop(busy);
                Err(ReleaseError::refused(err, claim))
            }
            Err(err) => {
                busy.end_claim(|_| {});
                if matches!(err, Error::LeaseLost) {
                    bump(&self.inner.counters.leases_lost);
                }
                Err(ReleaseError::failed(err))
            }
        }
    }

    /// Extends the claim's lease to `Config::lease` from now, durably. Long
    /// side effects call it before the lease runs out.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`], [`Error::WrongStore`], [`Error::Storage`] or
    /// [`Error::Poisoned`].
    pub fn renew(&self, claim: &Claim) -> Result<()> {
        crate::blocking::block_on(self.renew_async(claim))
    }

    /// The one implementation of `renew`.
    pub(crate) async fn renew_async(&self, claim: &Claim) -> Result<()> {
        self.hold_async(claim, None).await?;
        bump(&self.inner.counters.renewals);
        Ok(())
    }

    /// Records how far the claim's attempt got: `phase` names the last step
    /// that finished (say `"charge_created"`), `state` holds what the next
    /// steps need (say the charge's id). Durable when this returns, like
    /// every write: if this process dies now, the attempt that takes the key
    /// over gets this point from [`Claim::recovered`] and resumes after the
    /// step instead of repeating it. It also restarts the lease, like
    /// [`renew`](Self::renew). A later checkpoint replaces the point;
    /// `complete` and `release` end it with the record's in-flight life.
    ///
    /// Call it right after each step that must not run twice, before the
    /// next one starts (docs/design.md, "Recovery points").
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPhase`] for an empty, oversized (over
    /// [`MAX_PHASE_LEN`](crate::MAX_PHASE_LEN) bytes) or unprintable phase,
    /// [`Error::CheckpointTooLarge`] for a point over
    /// `Config::max_checkpoint_bytes`, [`Error::LeaseLost`] for a holder
    /// whose key was taken over, completed or removed, and otherwise as
    /// [`renew`](Self::renew). An error records nothing.
    pub fn checkpoint(&self, claim: &Claim, phase: &str, state: impl Into<Bytes>) -> Result<()> {
        crate::blocking::block_on(self.checkpoint_async(claim, phase, state.into()))
    }

    /// The one implementation of `checkpoint`.
    pub(crate) async fn checkpoint_async(
        &self,
        claim: &Claim,
        phase: &str,
        state: Bytes,
    ) -> Result<()> {
        let point = RecoveryPoint::within(phase, state, self.inner.config.max_checkpoint_bytes)?;
        self.hold_async(claim, Some(point)).await?;
        bump(&self.inner.counters.checkpoints);
        Ok(())
    }

    /// A holder's write that keeps its claim: restarts the lease and, with a
    /// `point`, records it (`renew` and `checkpoint`).
    async fn hold_async(&self, claim: &Claim, point: Option<RecoveryPoint>) -> Result<()> {
        self.check_claim(claim)?;
        let busy = self.inner.locks.mark_busy(claim.key.hash(), claim.token);
        let result = match self.inner.committer() {
            Ok(committer) => {
                committer
                    .renew(&claim.key, claim.token, claim.terms, point)
                    .await
            }
            Err(err) => Err(err),
        };
        match &result {
            Ok(renewed) => busy.renewed(renewed.lease_until_ms),
            // The record says this claim is over: so is its entry.
            Err(Error::LeaseLost) => busy.end_claim(|_| {}),
            Err(_) => drop(busy),
        }
        self.note_lease_lost(result)?;
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
        Ok(self
            .inner
            .engine
            .read_record(key)?
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
        crate::blocking::block_on(self.remove_async(key))
    }

    /// The one implementation of `remove`.
    pub(crate) async fn remove_async(&self, key: &Key) -> Result<bool> {
        let live = self.inner.committer()?.remove(key).await?;
        self.inner.locks.forget(key.hash());
        if live {
            bump(&self.inner.counters.removed);
        }
        Ok(live)
    }

    /// Deletes every record whose sweep time has come (its expiry, or a
    /// little later for a completion that kept its claim's place in the
    /// expiry index; see [`Config::retention`]), in write transactions of at most
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
            &inner.engine,
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
    /// [`Error::AlreadyOpen`] if a `Store` has the file open,
    /// [`Error::CannotOpen`] for a missing file, the errors of
    /// [`Store::open`] for a file that is not an idemkv store, and
    /// [`Error::Storage`] if compaction fails (the file then stays as it was
    /// or partly compacted, never inconsistent: redb compacts transactionally).
    pub fn compact(path: impl AsRef<Path>) -> Result<Compaction> {
        let path = path.as_ref();
        let size = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|source| Error::CannotOpen {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let bytes_before = size(path)?;
        let (engine, _, _) = Engine::open(
            Source::File(path.to_path_buf()),
            Config::default().storage_cache_bytes,
            false,
            false,
            false,
            false,
        )?;
        engine.exclusive(|db| {
            while db.compact()? {}
            Ok(())
        })?;
        engine.close(false)?;
        Ok(Compaction {
            bytes_before,
            bytes_after: size(path)?,
        })
    }

    /// Checks the whole store: the storage engine's own integrity check (the
    /// checksum of every page), then every record decoded and checked
    /// against the key it is stored under, and the expiry and in-flight
    /// indexes cross-checked against the records. Reads and writes wait
    /// while it runs (it reads the whole file).
    ///
    /// The report lists what is wrong; [`VerifyReport::is_ok`] says whether
    /// anything is. `Config::verify_on_open` runs the same checks at open
    /// and refuses a damaged file.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the file cannot be read at all, or the store is
    /// recovering from a failed commit ([`Error::Poisoned`]).
    pub fn verify(&self) -> Result<VerifyReport> {
        self.inner.engine.exclusive(|db| {
            let engine = match db.check_integrity() {
                Ok(true) => EngineCheck::Passed,
                Ok(false) => EngineCheck::Repaired,
                Err(err) => EngineCheck::Failed(Error::from(err).to_string()),
            };
            let mut report = match &engine {
                // The engine's state is not to be trusted for a table walk.
                EngineCheck::Failed(_) => VerifyReport::default(),
                _ => verify::verify_tables(db)?,
            };
            report.note_engine(engine);
            Ok(report)
        })
    }

    /// Runs `operation` once for `key`: claims the key, runs the operation
    /// only when the claim is new (or takes over an attempt that died),
    /// stores its result, and returns the stored result to every duplicate
    /// without running anything. `on_error` says what an error of the
    /// operation does to the key ([`OnError`]; the default keeps it in
    /// flight until its lease runs out).
    ///
    /// Made for message consumers: acknowledge a message when the outcome
    /// [`is_settled`](Once::is_settled), and only then (docs/consumers.md).
    /// [`idemkv::once`](crate::once) is the async form, for any backend.
    ///
    /// ```
    /// use idemkv::{Config, Fingerprint, Key, OnError, Once, Store, StoredResponse};
    ///
    /// let store = Store::in_memory(Config::default())?;
    /// let key = Key::new("nats orders", "msg-17")?;
    /// let mut effects = 0;
    /// for _delivery in 0..3 {
    ///     let outcome = store.once(&key, Fingerprint::of(b"payload"), OnError::default(), |_claim| {
    ///         effects += 1;
    ///         Ok::<_, std::io::Error>(StoredResponse::new(200, "done"))
    ///     })?;
    ///     assert!(outcome.is_settled(OnError::default()));
    /// }
    /// assert_eq!(effects, 1);
    /// # Ok::<(), idemkv::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of [`begin`](Self::begin), [`complete`](Self::complete)
    /// and [`release`](Self::release). An error after the operation ran
    /// means its result may not be stored: do not acknowledge the message.
    pub fn once<E: std::fmt::Display>(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        on_error: OnError,
        operation: impl FnOnce(crate::ClaimInfo) -> std::result::Result<StoredResponse, E>,
    ) -> Result<Once<E>> {
        crate::once::once_blocking(self, key, fingerprint, on_error, operation)
    }

    /// Visits the records that match `filter` (every live record by
    /// default), in-flight ones first, each group in key-hash order, until
    /// `visit` breaks or the records run out. A record that fails
    /// verification is passed as `Err(Error::Corrupted)`.
    ///
    /// One read transaction covers the whole scan: it sees the store as it
    /// was when the scan began, and writes go on meanwhile.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use idemkv::{Begin, Config, Fingerprint, Key, RecordStateFilter, ScanFilter, Store};
    ///
    /// let store = Store::in_memory(Config::default())?;
    /// let key = Key::new("tenant-1 POST /v1/charges", "order-1")?;
    /// let Begin::Claimed(claim) = store.begin(&key, Fingerprint::of(b"{}"))? else { unreachable!() };
    /// let mut in_flight = Vec::new();
    /// store.scan(&ScanFilter::default().state(RecordStateFilter::InFlight), |record| {
    ///     in_flight.push(record.map(|r| r.key().clone()));
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(in_flight.len(), 1);
    /// # drop(claim);
    /// # Ok::<(), idemkv::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the file cannot be read.
    pub fn scan(
        &self,
        filter: &ScanFilter,
        mut visit: impl FnMut(Result<Record>) -> ControlFlow<()>,
    ) -> Result<()> {
        let now_ms = self.inner.time.now_ms();
        self.inner
            .engine
            .read(|db| inspect::scan(db, filter, now_ms, &mut visit))
    }

    /// A summary of the store: records by state, claims past their lease,
    /// the busiest scopes, the oldest claim, what expires within the hour,
    /// the file's size and free space, its format and its last sweep. It
    /// reads every record once.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the file cannot be read.
    pub fn stats(&self) -> Result<Stats> {
        self.stats_with_progress(|_| {})
    }

    /// [`stats`](Self::stats), calling `progress` with the number of records
    /// read so far as it goes (every 4,096 records and at the end; compare
    /// with `metrics().live_records` for a progress bar).
    ///
    /// # Errors
    ///
    /// As [`stats`](Self::stats).
    pub fn stats_with_progress(&self, mut progress: impl FnMut(u64)) -> Result<Stats> {
        let now_ms = self.inner.time.now_ms();
        let engine = &self.inner.engine;
        let mut stats = engine.read(|db| inspect::record_stats(db, now_ms, &mut progress))?;
        stats.allocated_bytes = engine.read(inspect::allocated_bytes)?;
        if let Source::File(path) = engine.source() {
            stats.file_bytes = std::fs::metadata(path).ok().map(|m| m.len());
        }
        Ok(stats)
    }

    /// Writes `records` exactly as given (state, token, times, fingerprint,
    /// response), all in one transaction: a backup read back, or records
    /// moved from another machine. Records that have already expired are
    /// skipped. Tokens issued afterwards are larger than every imported one.
    ///
    /// # Errors
    ///
    /// [`Error::ImportConflict`] if a key already holds a live record here
    /// or appears twice; nothing is imported then. [`Error::Storage`] or
    /// [`Error::Poisoned`] if the commit failed.
    pub fn import(&self, records: impl IntoIterator<Item = Record>) -> Result<Imported> {
        let stored: Vec<_> = records.into_iter().map(|r| r.to_stored()).collect();
        let hashes: Vec<[u8; 32]> = stored
            .iter()
            .filter_map(|r| Key::new(&r.scope, &r.idempotency_key).ok())
            .map(|key| *key.hash())
            .collect();
        let imported = crate::blocking::block_on(self.inner.committer()?.import(stored))?;
        // Whatever the lock table knew of these keys predates their records.
        for hash in &hashes {
            self.inner.locks.forget(hash);
        }
        Ok(imported)
    }

    /// Closes the store: stops the sweeper, lets the committer answer what is
    /// queued, and closes the file with a last durable commit, reporting its
    /// outcome (dropping the last handle does the same but cannot report).
    ///
    /// # Errors
    ///
    /// [`Error::InUse`] if other handles (clones) of this store are alive:
    /// drop them first; this handle is dropped either way. Otherwise the
    /// error of the final sync ([`Error::Storage`]), or [`Error::Poisoned`]
    /// when the store was recovering from a failed commit.
    pub fn close(self) -> Result<()> {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => {
                return Err(Error::InUse {
                    handles: Arc::strong_count(&shared) - 1,
                });
            }
        };
        drop(inner.sweeper.take());
        let committed = match inner.committer.take() {
            Some(committer) => committer.shut_down(),
            None => Ok(()),
        };
        let closed = inner.engine.close(true);
        committed.and(closed)
    }

    /// The state of the write path: ok, or recovering from a failed commit
    /// (with the cause), or failed for good (an in-memory store).
    pub fn health(&self) -> Health {
        self.inner.health.get()
    }

    /// A snapshot of the outcome counters since the store was opened, and of
    /// its gauges now.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = self.inner.counters.snapshot();
        metrics.waiters = self.inner.locks.waiters();
        metrics.replay_cache_hits = self.inner.locks.cache_hits.get();
        metrics.replay_cache_misses = self.inner.locks.cache_misses.get();
        metrics
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> Settings {
        self.inner.config.settings()
    }
}

impl Store {
    /// Writes a consistent copy of this store, as of the latest commit, to
    /// a new file at `path` that opens on its own (no journal beside it):
    /// every write acknowledged before the call is in it. Safe while the
    /// store serves requests: writes go on during the copy (a heal after a
    /// failed commit waits for it to end), and the copy appears at `path`
    /// only once it is complete and durable. Copying a live store's file
    /// and journal with other tools is not safe (docs/operations.md,
    /// "Backups").
    ///
    /// # Errors
    ///
    /// [`Error::CannotOpen`] if `path` (or `<path>.journal`) exists or
    /// cannot be written; [`Error::Storage`] if reading the store or
    /// writing the copy fails (nothing is left at `path` then);
    /// [`Error::Closed`] or [`Error::Poisoned`] while the store cannot be
    /// read.
    pub fn backup_to(&self, path: impl AsRef<Path>) -> Result<crate::Backup> {
        let path = path.as_ref();
        self.inner.engine.read(|db| crate::backup::backup(db, path))
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
