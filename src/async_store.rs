//! The async face of a store: [`AsyncStore`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::Backend;
use crate::config::{Settings, Terms};
use crate::error::Result;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::record::Record;
use crate::model::response::StoredResponse;
use crate::request::outcome::{Begin, Claim, ClaimInfo, CompleteError, ReleaseError};
use crate::store::Store;

/// A [`Store`] for async code: the same store and the same methods, as
/// futures that never block a runtime worker while they wait.
///
/// - Answers that need no write (replay, mismatch, in progress) are ready
///   at once, without a thread hop: a lock-table lookup, the replay cache,
///   or a read of the record (a page-cache read, microseconds).
/// - A claim, completion, release or renewal waits for its group commit
///   through a oneshot the committer answers; the task is woken then.
/// - a waiting [`begin_with`](Self::begin_with) ([`Terms::wait`](crate::Terms::wait)) parks no thread: the task is woken by
///   the holder's completion, release or dropped claim, or by a timer when
///   the holder's lease would end.
///
/// It needs no particular runtime (tokio, async-std, smol, a plain
/// `block_on` all work): wake-ups are futures-channel oneshots and timers are
/// futures-timer's. Cloning is cheap; [`AsyncStore::blocking`] gives the
/// blocking [`Store`] back, and both share one file, one committer and one
/// lock table.
///
/// A future dropped before it finishes (a cancelled request) changes nothing
/// it had not already committed: a claim that was committed stays in flight
/// until its lease runs out, and is never released blindly.
///
/// ```
/// use idemkv::{AsyncStore, Begin, Config, Fingerprint, Key, Store, StoredResponse};
///
/// # pollster::block_on(async {
/// let store = AsyncStore::from(Store::in_memory(Config::default())?);
/// let key = Key::new("acct_42 POST /v1/charges", "charge-1")?;
/// let fingerprint = Fingerprint::of(b"{\"amount\":1200}");
/// if let Begin::Claimed(claim) = store.begin(&key, fingerprint).await? {
///     store.complete(claim, StoredResponse::new(201, "charged")).await?;
/// }
/// assert!(matches!(store.begin(&key, fingerprint).await?, Begin::Replay(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct AsyncStore {
    store: Store,
}

impl From<Store> for AsyncStore {
    fn from(store: Store) -> AsyncStore {
        AsyncStore { store }
    }
}

impl AsyncStore {
    /// The blocking handle of the same store.
    pub fn blocking(&self) -> &Store {
        &self.store
    }

    /// [`Store::begin`], without blocking.
    ///
    /// # Errors
    ///
    /// As [`Store::begin`].
    pub async fn begin(&self, key: &Key, fingerprint: Fingerprint) -> Result<Begin> {
        self.store
            .begin_async(key, fingerprint, Terms::default())
            .await
    }

    /// [`Store::begin_with`], without blocking: with
    /// [`Terms::wait`](crate::Terms::wait) the task waits, no thread does.
    ///
    /// # Errors
    ///
    /// As [`Store::begin_with`].
    pub async fn begin_with(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> Result<Begin> {
        self.store.begin_async(key, fingerprint, terms).await
    }

    /// [`Store::complete`], without blocking.
    ///
    /// # Errors
    ///
    /// As [`Store::complete`].
    pub async fn complete(
        &self,
        claim: Claim,
        response: StoredResponse,
    ) -> Result<(), CompleteError> {
        self.store.complete_async(claim, response).await
    }

    /// [`Store::release`], without blocking.
    ///
    /// # Errors
    ///
    /// As [`Store::release`].
    pub async fn release(&self, claim: Claim) -> Result<(), ReleaseError> {
        self.store.release_async(claim).await
    }

    /// [`Store::renew`], without blocking.
    ///
    /// # Errors
    ///
    /// As [`Store::renew`].
    pub async fn renew(&self, claim: &Claim) -> Result<()> {
        self.store.renew_async(claim).await
    }

    /// [`Store::record_progress`], without blocking.
    ///
    /// # Errors
    ///
    /// As [`Store::record_progress`].
    pub async fn record_progress(
        &self,
        claim: &Claim,
        phase: &str,
        state: impl Into<bytes::Bytes>,
    ) -> Result<()> {
        self.store
            .record_progress_async(claim, phase, state.into())
            .await
    }

    /// [`Store::remove`], without blocking.
    ///
    /// # Errors
    ///
    /// As [`Store::remove`].
    pub async fn remove(&self, key: &Key) -> Result<bool> {
        self.store.remove_async(key).await
    }

    /// [`Store::get`], as a future like every other operation here (and
    /// like [`Backend::get`]). It never waits for the writer: the record is
    /// read from the latest commit's snapshot when the future is first
    /// polled, which makes it ready at once.
    ///
    /// # Errors
    ///
    /// As [`Store::get`].
    pub async fn get(&self, key: &Key) -> Result<Option<Record>> {
        self.store.get(key)
    }

    /// [`Store::metrics`].
    pub fn metrics(&self) -> Metrics {
        self.store.metrics()
    }

    /// [`Store::health`].
    pub fn health(&self) -> Health {
        self.store.health()
    }

    /// [`Store::settings`].
    pub fn settings(&self) -> Settings {
        self.store.settings()
    }
}

impl Store {
    /// This store as an [`AsyncStore`] (the same store, cloned handle).
    pub fn to_async(&self) -> AsyncStore {
        AsyncStore::from(self.clone())
    }
}

// The futures of an `AsyncStore` can move between a runtime's workers.
const _: () = {
    fn assert_send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn futures_are_send(store: &AsyncStore, key: &Key, claim: Claim, response: StoredResponse) {
        let fp = Fingerprint::of(b"");
        assert_send(&store.begin(key, fp));
        assert_send(&store.begin_with(key, fp, Terms::default().wait(Duration::ZERO)));
        assert_send(&store.renew(&claim));
        assert_send(&store.complete(claim, response));
    }
};

/// The embedded store as a [`Backend`]: what the HTTP layer, `once` and
/// the conformance suite take.
impl Backend for AsyncStore {
    type Claim = Claim;

    fn begin(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> impl Future<Output = Result<Begin>> + Send {
        AsyncStore::begin_with(self, key, fingerprint, terms)
    }

    fn complete(
        &self,
        claim: Claim,
        response: StoredResponse,
    ) -> impl Future<Output = Result<(), CompleteError>> + Send {
        AsyncStore::complete(self, claim, response)
    }

    fn release(&self, claim: Claim) -> impl Future<Output = Result<(), ReleaseError>> + Send {
        AsyncStore::release(self, claim)
    }

    fn renew(&self, claim: &Claim) -> impl Future<Output = Result<()>> + Send {
        AsyncStore::renew(self, claim)
    }

    fn record_progress(
        &self,
        claim: &Claim,
        phase: &str,
        state: Bytes,
    ) -> impl Future<Output = Result<()>> + Send {
        AsyncStore::record_progress(self, claim, phase, state)
    }

    fn get(&self, key: &Key) -> impl Future<Output = Result<Option<Record>>> + Send {
        AsyncStore::get(self, key)
    }

    fn remove(&self, key: &Key) -> impl Future<Output = Result<bool>> + Send {
        AsyncStore::remove(self, key)
    }

    fn metrics(&self) -> Metrics {
        AsyncStore::metrics(self)
    }

    fn claim_info(claim: &Claim) -> ClaimInfo {
        claim.info()
    }

    fn lease(&self) -> Duration {
        self.settings().lease()
    }

    fn max_response_bytes(&self) -> usize {
        self.settings().max_response_bytes()
    }
}
