//! What `begin` answers, and the claim a caller holds while it runs the side
//! effect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ClaimTerms;
use crate::error::Error;
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::recovery::RecoveryPoint;
use crate::model::response::StoredResponse;

/// The answer of [`Store::begin`](crate::Store::begin): exactly one of four.
///
/// The claim type is a parameter so that every layer speaks this one answer
/// type: a [`Store`](crate::Store) answers `Begin<Claim>` (the default), and
/// a backend with claims of its own answers `Begin<ItsClaim>`.
///
/// The enum is deliberately exhaustive: every caller must handle every answer.
#[derive(Debug)]
#[must_use = "a Begin says whether to run the side effect; ignoring it risks a duplicate"]
pub enum Begin<C = Claim> {
    /// This caller owns the key: run the side effect, then
    /// [`complete`](crate::Store::complete) or
    /// [`release`](crate::Store::release). The claim is durable on disk.
    Claimed(C),
    /// An earlier attempt with the same fingerprint completed: answer with
    /// this stored response and do not run the side effect.
    Replay(StoredResponse),
    /// Another attempt holds a live lease on the key; retry after
    /// `retry_after` (the time left on its lease, at least 1 ms) or wait
    /// for it with [`Terms::wait`](crate::Terms::wait).
    InProgress {
        /// Time left on the holder's lease.
        retry_after: Duration,
    },
    /// The key was used with a different fingerprint: the client reused a key
    /// for a different request (HTTP answers 422).
    Mismatch,
}

impl<C> Begin<C> {
    /// The same answer with the claim turned into another type (the other
    /// three answers carry no claim and pass through unchanged).
    pub fn map_claim<D>(self, f: impl FnOnce(C) -> D) -> Begin<D> {
        match self {
            Begin::Claimed(claim) => Begin::Claimed(f(claim)),
            Begin::Replay(response) => Begin::Replay(response),
            Begin::InProgress { retry_after } => Begin::InProgress { retry_after },
            Begin::Mismatch => Begin::Mismatch,
        }
    }

    /// The claim, or the answer that carries none, re-typed for any claim
    /// type.
    pub(crate) fn claim_or_answer<D>(self) -> Result<C, Begin<D>> {
        match self {
            Begin::Claimed(claim) => Ok(claim),
            Begin::Replay(response) => Err(Begin::Replay(response)),
            Begin::InProgress { retry_after } => Err(Begin::InProgress { retry_after }),
            Begin::Mismatch => Err(Begin::Mismatch),
        }
    }
}

/// Ownership of one key, from a `Claimed` answer until
/// [`complete`](crate::Store::complete) or
/// [`release`](crate::Store::release).
///
/// Dropping a claim without either leaves the record in flight until its lease
/// runs out: retries meanwhile are told `InProgress`, and the first retry after
/// the lease takes over. A dropped claim never lets a retry run the side effect
/// while the first attempt may still be running.
#[must_use = "a claim must be completed or released; dropping it blocks the key until its lease runs out"]
pub struct Claim {
    pub(crate) key: Key,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) token: u64,
    /// Set when this claim took over from an attempt whose lease ran out,
    /// with that attempt's recovery point. Boxed, in place of a flag: a
    /// `Claim` travels inside every `Begin`, and the answers that need no
    /// write (replay, mismatch, in progress) should not move more bytes for
    /// it (takeovers are rare; a fresh claim allocates nothing).
    pub(crate) takeover: Option<Box<Takeover>>,
    /// The lease and retention this claim was taken with; renewals and the
    /// completion use them too.
    pub(crate) terms: ClaimTerms,
    /// The lock table of the store that granted the claim, told when the
    /// claim is dropped. A trait object, so that this file does not depend
    /// on the lock table, which answers with [`Begin`] (no import cycle).
    pub(crate) locks: Arc<dyn ClaimOwner>,
}

/// Where a dropped claim is forgotten: the granting store's lock table.
pub(crate) trait ClaimOwner: Send + Sync {
    /// A claim on the key with this hash, and `token`, was dropped without
    /// `complete` or `release`.
    fn abandon(&self, hash: &[u8; 32], token: u64);
}

impl Claim {
    /// Whether `owner` granted this claim (the same lock table).
    pub(crate) fn granted_by(&self, owner: &Arc<impl ClaimOwner>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.locks), Arc::as_ptr(owner))
    }
}

impl Claim {
    /// The claimed key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The fingerprint the key was claimed with.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The fencing token: larger than every earlier claim's token for this key.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// True when this claim took over from an attempt whose lease ran out. That
    /// attempt may have run part of the side effect: check before repeating it.
    pub fn is_takeover(&self) -> bool {
        self.takeover.is_some()
    }

    /// The recovery point of the attempt this claim took over from: the last
    /// step it finished and the state it recorded
    /// ([`Store::record_progress`](crate::Store::record_progress)). Resume after that
    /// step; `None` means start from the beginning (a fresh claim, or a
    /// takeover from an attempt that recorded nothing). It stays what the
    /// claim started from: the points this claim records do not change it.
    pub fn recovered(&self) -> Option<&RecoveryPoint> {
        self.takeover.as_ref()?.recovered.as_ref()
    }

    /// What the claim's holder may want to know, as a value that can travel
    /// apart from the claim (an HTTP handler gets it in its request's
    /// extensions).
    pub fn info(&self) -> ClaimInfo {
        ClaimInfo::new(self.key.clone(), self.token, self.is_takeover())
            .with_recovered(self.recovered().cloned())
    }
}

/// What a takeover knows of the attempt before it.
#[derive(Debug)]
pub(crate) struct Takeover {
    /// That attempt's last recovery point, if it recorded one.
    pub recovered: Option<RecoveryPoint>,
}

/// A claim's key, fencing token and takeover flag, apart from the claim: a
/// handler fences its downstream writes with the token, and reconciles
/// after a takeover (an earlier attempt may have done part of the work).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimInfo {
    key: Key,
    token: u64,
    takeover: bool,
    recovered: Option<RecoveryPoint>,
}

impl ClaimInfo {
    /// A claim's description, for a backend with claims of its own
    /// ([`Backend::claim_info`](crate::Backend::claim_info)).
    pub fn new(key: Key, token: u64, takeover: bool) -> ClaimInfo {
        ClaimInfo {
            key,
            token,
            takeover,
            recovered: None,
        }
    }

    /// The same description with the recovery point the claim inherited.
    #[must_use = "with_recovered returns the changed description"]
    pub fn with_recovered(mut self, recovered: Option<RecoveryPoint>) -> ClaimInfo {
        self.recovered = recovered;
        self
    }

    /// The recovery point the claim inherited from the attempt it took over
    /// from ([`Claim::recovered`]).
    pub fn recovered(&self) -> Option<&RecoveryPoint> {
        self.recovered.as_ref()
    }

    /// The claimed key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The fencing token: larger than every earlier claim's token for this key.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether the claim took over from an attempt whose lease ran out.
    pub fn is_takeover(&self) -> bool {
        self.takeover
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.locks.abandon(self.key.hash(), self.token);
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.key)
            .field("token", &self.token)
            .field("takeover", &self.is_takeover())
            .field("recovered", &self.recovered())
            .finish()
    }
}

/// The error of [`Store::complete`](crate::Store::complete) and
/// [`Store::release`](crate::Store::release) (and of any
/// [`Backend`](crate::Backend)'s), the calls that end a claim: the cause,
/// and the claim itself when the store refused the call before writing
/// anything, or when the write failed in a way that may pass
/// ([`Error::is_transient`]: it may or may not have landed), as
/// [`std::sync::mpsc::SendError`] hands back what it could not send.
///
/// With the claim back a caller can still [`release`](crate::Store::release)
/// it, complete it with a smaller response, or, after a transient failure,
/// repeat the same completion: a completion by the same claim with the same
/// response that landed already answers `Ok` (and a release repeated after
/// one that landed answers `Ok`). `?` turns it into an
/// [`Error`] (dropping the claim, which keeps the key in flight until its
/// lease runs out).
#[must_use = "the claim inside must be completed, released or dropped on purpose"]
pub struct CompleteError<C = Claim>(Box<CompleteErrorParts<C>>);

struct CompleteErrorParts<C> {
    error: Error,
    claim: Option<C>,
}

impl<C> CompleteError<C> {
    /// Refused before anything was written, or failed in a way that may
    /// pass: the claim comes back.
    pub fn refused(error: Error, claim: C) -> CompleteError<C> {
        CompleteError(Box::new(CompleteErrorParts {
            error,
            claim: Some(claim),
        }))
    }

    /// The write was attempted (or the claim is gone): no claim to give back.
    pub fn failed(error: Error) -> CompleteError<C> {
        CompleteError(Box::new(CompleteErrorParts { error, claim: None }))
    }

    /// What went wrong.
    pub fn error(&self) -> &Error {
        &self.0.error
    }

    /// The claim, if the store refused the call before writing anything
    /// ([`Error::ResponseTooLarge`], [`Error::WrongStore`]) or the write
    /// failed in a way that may pass ([`Error::is_transient`]); `None` when
    /// the claim is over ([`Error::LeaseLost`]) or the store is closed.
    pub fn into_claim(self) -> Option<C> {
        self.0.claim
    }

    /// Both parts.
    pub fn into_parts(self) -> (Error, Option<C>) {
        (self.0.error, self.0.claim)
    }
}

/// The error of a release: the same shape as [`CompleteError`], with the
/// claim back after a transient failure so that the release can be
/// repeated.
pub type ReleaseError<C = Claim> = CompleteError<C>;

impl<C> From<CompleteError<C>> for Error {
    fn from(err: CompleteError<C>) -> Error {
        err.0.error
    }
}

impl<C: fmt::Debug> fmt::Debug for CompleteError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteError")
            .field("error", &self.0.error)
            .field("claim", &self.0.claim)
            .finish()
    }
}

impl<C> fmt::Display for CompleteError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.error, f)
    }
}

impl<C: fmt::Debug> std::error::Error for CompleteError<C> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.error)
    }
}
