//! What every idempotency backend offers: the operations the integrations
//! (the HTTP layer, message consumers) are written against, so that any
//! backend can sit under them. [`AsyncStore`](crate::AsyncStore) implements it over the
//! embedded store; a shared SQL database can implement it for services that
//! run on several machines.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Terms;
use crate::error::Result;
use crate::log::event;
use crate::metrics::Metrics;
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::record::Record;
use crate::model::response::StoredResponse;
use crate::request::outcome::{Begin, ClaimInfo, CompleteError, ReleaseError};

/// The first wait before a completion is repeated after a transient
/// failure; each further one doubles, up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest wait between two attempts: a heal takes tens of
/// milliseconds, a database failover seconds.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Completes `claim` with `response`, repeating the completion with backoff
/// (10 ms, doubling up to 1 s) while it fails transiently
/// ([`Error::is_transient`](crate::Error::is_transient): the store heals, the
/// database is unreachable) and the next attempt would start within
/// `budget` of the first. A repeat after a completion that landed but whose
/// answer was lost answers `Ok`: completions are idempotent by token. The
/// HTTP layer and [`once`](fn@crate::once) use it with half the lease as the
/// budget, so that the claim's lease outlasts the attempts and no retry of
/// the request takes the key over meanwhile.
///
/// # Errors
///
/// The last attempt's error: not transient, or transient past the budget
/// (with the claim handed back, as [`Backend::complete`] does).
pub async fn complete_with_retry<B: Backend>(
    backend: &B,
    claim: B::Claim,
    response: StoredResponse,
    budget: Duration,
) -> std::result::Result<(), CompleteError<B::Claim>> {
    with_retry("completing", claim, budget, |claim| {
        backend.complete(claim, response.clone())
    })
    .await
}

/// Releases `claim`, repeating the release with backoff while it fails
/// transiently, within `budget`, as [`complete_with_retry`] repeats a
/// completion. A repeat after a release that landed answers `Ok`.
///
/// # Errors
///
/// As [`complete_with_retry`].
pub async fn release_with_retry<B: Backend>(
    backend: &B,
    claim: B::Claim,
    budget: Duration,
) -> std::result::Result<(), ReleaseError<B::Claim>> {
    with_retry("releasing", claim, budget, |claim| backend.release(claim)).await
}

/// Runs `call` on `claim` until it succeeds, fails for good, or the next
/// attempt would start past `budget`; a transient failure hands the claim
/// back for the next attempt.
async fn with_retry<C, F, Fut>(
    _action: &str,
    mut claim: C,
    budget: Duration,
    mut call: F,
) -> std::result::Result<(), CompleteError<C>>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = std::result::Result<(), CompleteError<C>>>,
{
    let started = Instant::now();
    let mut backoff = RETRY_BACKOFF_FIRST;
    // Counted for the events (which compile to nothing without `tracing`).
    let mut _attempts = 1u32;
    loop {
        let err = match call(claim).await {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        let within_budget = started.elapsed() + backoff <= budget;
        if !err.error().is_transient() || !within_budget {
            if err.error().is_transient() {
                event!(
                    warn,
                    attempts = _attempts,
                    error = %err,
                    "{_action} a claim failed transiently until the retry budget ran out; \
                     the key stays in flight until its lease ends"
                );
            }
            return Err(err);
        }
        let (error, back) = err.into_parts();
        let Some(back) = back else {
            return Err(CompleteError::failed(error));
        };
        event!(
            debug,
            attempts = _attempts,
            error = %error,
            retry_in_ms = backoff.as_millis() as u64,
            "{_action} a claim failed transiently; repeating it"
        );
        crate::sync::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        _attempts += 1;
        claim = back;
    }
}

/// An idempotency backend: claim a key, wait for it, complete, release or
/// renew a claim, read a record, with the semantics of [`crate::Store`]
/// (docs/design.md, "The contract a backend keeps"). The conformance suite
/// (`idemkv-conformance`) checks every rule below against a backend.
///
/// - **One live claim per key.** While a claim's lease runs, `begin` on its
///   key answers `InProgress` (or `Mismatch`, or waits); a takeover after
///   the lease revokes the old claim, whose writes then fail with
///   `LeaseLost` and change nothing.
/// - **Tokens grow per key.** A claim's fencing token is larger than every
///   token issued earlier for the same key, across restarts and deletions.
///   Nothing is promised across keys: a backend may draw tokens from one
///   counter (the embedded store, PostgreSQL's sequence) or keep one per
///   key (a distributed store without a hot counter).
/// - **The backend owns the clock.** Leases and retention are judged by the
///   backend's own time (the embedded store's [`Clock`](crate::Clock),
///   PostgreSQL's `now()`); callers never pass a time, and several
///   processes sharing a backend need not agree on theirs. Its tests must
///   be able to move that clock.
/// - **Durable before it answers.** `Claimed` means the claim survives a
///   crash of the process that asked (and, with a database, of the
///   database as far as its commits do); a completion that answers `Ok` is
///   replayed from then on. A backend that can lose an acknowledged write
///   (the embedded store with `Durability::None`) says so in its own docs.
/// - **Answers that need no write never write.** A replay, a mismatch and
///   an in-progress answer change nothing.
/// - **Writes may be repeated.** A completion, release, renewal or recovery
///   point whose answer was lost can be sent again with the same claim and
///   answers `Ok` if the first landed; a transient error
///   ([`Error::is_transient`](crate::Error::is_transient)) hands the claim
///   back to repeat with.
/// - **Errors fall in five kinds** ([`ErrorKind`](crate::ErrorKind)):
///   `Refused` (the call broke a rule; nothing changed), `Fenced`
///   (`LeaseLost`; nothing changed), `Transient` (may pass; the write may
///   have landed, so repeat it with the claim handed back), `Damaged`
///   (stored data failed its checks) and `Unusable` (the store cannot serve
///   calls as opened). A backend maps each of its own failures to one of
///   them: a lost connection or a failed statement is `Unavailable`
///   (transient), a row that does not decode is `Corrupted`. The input
///   checks every backend shares ([`Key`](crate::Key),
///   [`StoredResponse::check_size`](crate::StoredResponse::check_size),
///   [`RecoveryPoint::within`](crate::RecoveryPoint::within),
///   [`Terms::resolve`](crate::Terms::resolve)) give the same `Refused`
///   errors everywhere. A key without a record is not an error.
///
/// Every method returns a future that must not block the runtime worker that
/// polls it.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Ownership of a key while its operation runs (`Debug` so that errors
    /// that hand a claim back can be reported).
    type Claim: std::fmt::Debug + Send + Sync + 'static;

    /// Starts an attempt ([`crate::Store::begin_with`]); `terms` (a lease or
    /// retention of the claim's own) default to the backend's. With
    /// [`Terms::wait_timeout`] set, an attempt that holds the key is waited
    /// for up to that long: its completion answers `Replay`, its release lets
    /// this caller claim, and at the end of the time the answer is
    /// `InProgress`. The wait must hold no thread.
    ///
    /// # Errors
    ///
    /// The backend's errors; no error leaves a second live claim.
    fn begin(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> impl Future<Output = Result<Begin<Self::Claim>>> + Send;

    /// Stores the response of a claim ([`crate::Store::complete`]).
    ///
    /// # Errors
    ///
    /// A [`CompleteError`], with the claim back when nothing was written.
    fn complete(
        &self,
        claim: Self::Claim,
        response: StoredResponse,
    ) -> impl Future<Output = Result<(), CompleteError<Self::Claim>>> + Send;

    /// Gives a key up without storing anything ([`crate::Store::release`]);
    /// repeating a release that landed answers `Ok`.
    ///
    /// # Errors
    ///
    /// A [`ReleaseError`]: `LeaseLost` for a stale holder, or the backend's
    /// errors, with the claim back when the release may pass if repeated.
    fn release(
        &self,
        claim: Self::Claim,
    ) -> impl Future<Output = Result<(), ReleaseError<Self::Claim>>> + Send;

    /// Restarts a claim's lease ([`crate::Store::renew`]).
    ///
    /// # Errors
    ///
    /// `LeaseLost` for a stale holder, or the backend's errors.
    fn renew(&self, claim: &Self::Claim) -> impl Future<Output = Result<()>> + Send;

    /// Records a recovery point and restarts the lease
    /// ([`crate::Store::record_progress`]): a claim that takes the key over
    /// inherits it ([`ClaimInfo::recovered`]).
    ///
    /// # Errors
    ///
    /// `InvalidPhase`, `RecoveryPointTooLarge`, `LeaseLost` for a stale
    /// holder, or the backend's errors; an error records nothing.
    fn record_progress(
        &self,
        claim: &Self::Claim,
        phase: &str,
        state: Bytes,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The live record of a key ([`crate::Store::get`]).
    ///
    /// # Errors
    ///
    /// The backend's errors.
    fn get(&self, key: &Key) -> impl Future<Output = Result<Option<Record>>> + Send;

    /// Deletes a key's record whatever its state, revoking a live claim
    /// (its holder's next call fails with `LeaseLost`); true if there was
    /// one ([`crate::Store::remove`]). An operator's tool, not a request
    /// path's.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    fn remove(&self, key: &Key) -> impl Future<Output = Result<bool>> + Send;

    /// A snapshot of the outcome counters ([`crate::Store::metrics`]);
    /// every backend counts the same outcomes.
    fn metrics(&self) -> Metrics;

    /// A claim's key, fencing token and takeover flag.
    fn claim_info(claim: &Self::Claim) -> ClaimInfo;

    /// How long a claim is exclusive without a renewal.
    fn lease(&self) -> Duration;

    /// The largest response `complete` stores.
    fn max_response_bytes(&self) -> usize;
}
