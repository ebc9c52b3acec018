//! The request path of `begin`: the lock table and replay cache first, then
//! the record, then the decision rule; a claim is committed before it is
//! handed out.

use std::time::Duration;

use crate::config::{ClaimTerms, Terms};
use crate::error::Result;
use crate::log::event;
use crate::metrics;
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::response::StoredResponse;
use crate::once::{OnError, Once};
use crate::request::decide::decide;
use crate::request::lock_table::{ClaimTicket, Holder, Lookup, Waiter};
use crate::request::outcome::{Begin, Claim, Takeover};
use crate::support::ClaimFacts;
use crate::sync::time::Instant;

use super::Store;

/// What `begin` decided without waiting.
enum Step {
    Answered(Begin),
    Commit(ClaimTicket),
}

impl Store {
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
    /// [`Error::Corrupted`](crate::Error::Corrupted) if the stored record fails verification,
    /// [`Error::Storage`](crate::Error::Storage) or [`Error::Poisoned`](crate::Error::Poisoned) if the claim cannot be
    /// committed. After such an error the claim may or may not have reached
    /// the disk (a failed sync can leave it there): retrying `begin` then
    /// answers `InProgress` until its lease runs out, never a second claim.
    pub fn begin(&self, key: &Key, fingerprint: Fingerprint) -> Result<Begin> {
        self.begin_with(key, fingerprint, Terms::default())
    }

    /// Like [`begin`](Self::begin), made on `terms`: a claim with its own
    /// lease or retention instead of the store's (renewals and the
    /// completion of the claim keep them), and, with
    /// [`Terms::wait`](crate::Terms::wait), a wait for an attempt that
    /// already holds the key.
    ///
    /// A wait parks the thread: it is woken when the holder in this process
    /// completes, releases or drops its claim, and otherwise when the
    /// holder's lease would run out. A wait that ends, however it ends,
    /// leaves nothing registered (`Metrics::waiters` counts the waits in
    /// progress).
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin), and [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a zero
    /// lease or retention.
    pub fn begin_with(&self, key: &Key, fingerprint: Fingerprint, terms: Terms) -> Result<Begin> {
        if let Some(timeout) = terms.wait_timeout() {
            return crate::blocking::block_on(self.begin_waiting(key, fingerprint, timeout, terms));
        }
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
        if terms.claims_by_default() {
            Ok(self.inner.default_terms)
        } else {
            self.inner.config.claim_terms(terms)
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
        let stored = inner
            .engine
            .read_record(key)
            .inspect_err(|err| inner.read_failed(err))?;
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
            locks: inner.locks.clone(),
        }))
    }

    fn count(&self, answer: &Begin) {
        self.inner.counters.outcomes.count_begin(answer, |claim| {
            if claim.is_takeover() {
                event!(
                    info,
                    key = %claim.key,
                    token = claim.token,
                    phase = claim.recovered().map(crate::model::recovery::RecoveryPoint::phase),
                    "took over a claim whose lease ran out: its holder stopped renewing"
                );
            }
            ClaimFacts {
                takeover: claim.is_takeover(),
                resumed: claim.recovered().is_some(),
            }
        });
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
    /// [`idemkv::once`](fn@crate::once) is the async form, for any backend.
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

    /// The one implementation of `begin`, for threads (through `block_on`)
    /// and tasks ([`AsyncStore::begin`](crate::AsyncStore::begin)). Only a
    /// claim waits for anything: the commit.
    pub(crate) async fn begin_async(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> Result<Begin> {
        if let Some(timeout) = terms.wait_timeout() {
            return self.begin_waiting(key, fingerprint, timeout, terms).await;
        }
        let started = metrics::start();
        let terms = self.claim_terms(terms)?;
        let answer = self.begin_step(key, fingerprint, terms, None).await?;
        self.count(&answer);
        self.inner.counters.timings.begin(started);
        Ok(answer)
    }

    /// A `begin` that waits up to `timeout` for a running attempt
    /// ([`Terms::wait`]). A task awaiting it holds no thread while it waits.
    async fn begin_waiting(
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
                self.inner.counters.outcomes.waits.bump();
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
}
