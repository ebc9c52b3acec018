//! Running an operation once per key: claim, run only when the claim is
//! new, store the result, and hand duplicates the stored result
//! ([`Store::once`](crate::Store::once) and [`once`] for any backend). The
//! shape message consumers need: a broker redelivers, the operation does
//! not run again.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::backend::Backend;
use crate::config::Terms;
use crate::error::Result;
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::response::StoredResponse;
use crate::request::outcome::{Begin, ClaimInfo};

/// What happens to the key when the operation returns an error. The caller
/// chooses; the default is [`KeepInFlight`](OnError::KeepInFlight).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Leave the key claimed until its lease runs out (the default, and the
    /// safe choice: an operation that failed may have done part of its
    /// effect). A redelivery during the lease is told `InProgress`; the
    /// first one after it takes over and sees `is_takeover`, so it can
    /// check what the failed attempt did before repeating it.
    #[default]
    KeepInFlight,
    /// Release the key: the next delivery runs the operation again at once.
    /// Right when an error means the effect did not happen (a validation
    /// failure, a refused connection before anything was sent).
    Release,
    /// Store the error as the outcome, with this status and the error's
    /// text as the body: every redelivery replays it and nothing runs
    /// again. Right for errors that retrying cannot fix.
    Store {
        /// The status stored with the error.
        status: u16,
    },
}

/// What [`Store::once`](crate::Store::once) (or [`once`]) did with a
/// delivery.
#[derive(Debug)]
#[must_use = "the outcome says whether to acknowledge the message"]
pub enum Once<E> {
    /// The operation ran now, and its result is stored.
    Ran(StoredResponse),
    /// An earlier delivery ran it: this is its stored result (or its error,
    /// stored under `OnError::Store`). Nothing ran now.
    Replayed(StoredResponse),
    /// The operation ran now and failed; the key was left as the
    /// [`OnError`] policy says. Under `OnError::Store` the error is stored
    /// too (later deliveries get `Replayed`).
    Failed(E),
    /// Another delivery holds the key and may still be running: try again
    /// after `retry_after` (do not acknowledge the message).
    InProgress {
        /// Time left on the holder's lease.
        retry_after: Duration,
    },
    /// The key was used before with a different payload: a producer reused
    /// a message id. Nothing ran.
    Mismatch,
}

impl<E> Once<E> {
    /// Whether the message is settled: its effect happened (now or before)
    /// and its result is stored, or it can never run (a mismatch), so
    /// acknowledging it loses nothing. `Failed` is settled only under
    /// `OnError::Store`; `InProgress` never is.
    pub fn is_settled(&self, policy: OnError) -> bool {
        match self {
            Once::Ran(_) | Once::Replayed(_) | Once::Mismatch => true,
            Once::Failed(_) => matches!(policy, OnError::Store { .. }),
            Once::InProgress { .. } => false,
        }
    }
}

/// The answer of `begin` as an outcome, when it is not a claim.
fn settled_without_running<C, E>(answer: Begin<C>) -> std::result::Result<C, Once<E>> {
    match answer {
        Begin::Claimed(claim) => Ok(claim),
        Begin::Replay(response) => Err(Once::Replayed(response)),
        Begin::InProgress { retry_after } => Err(Once::InProgress { retry_after }),
        Begin::Mismatch => Err(Once::Mismatch),
    }
}

/// What a claim's holder does with the operation's result: the response to
/// store (`Some`) or a release (`None`, under `OnError::Release`), and the
/// outcome to report. `KeepInFlight` leaves the claim alone (`keep`).
enum Settle<E> {
    Complete(StoredResponse, Once<E>),
    Release(Once<E>),
    Keep(Once<E>),
}

fn settle<E: Display>(
    result: std::result::Result<StoredResponse, E>,
    policy: OnError,
) -> Settle<E> {
    match (result, policy) {
        (Ok(response), _) => Settle::Complete(response.clone(), Once::Ran(response)),
        (Err(err), OnError::Store { status }) => {
            let stored = StoredResponse::new(status, err.to_string());
            Settle::Complete(stored, Once::Failed(err))
        }
        (Err(err), OnError::Release) => Settle::Release(Once::Failed(err)),
        (Err(err), OnError::KeepInFlight) => Settle::Keep(Once::Failed(err)),
    }
}

/// Runs `operation` once for `key` on any [`Backend`] (the async form of
/// [`Store::once`](crate::Store::once)): claims the key, runs the operation
/// only when the claim is new (or takes over a dead attempt), stores its
/// result, and returns the stored result to every duplicate.
///
/// The operation gets the claim's [`ClaimInfo`]: its fencing token,
/// whether it took over from an attempt that died, and that attempt's last
/// recovery point ([`ClaimInfo::recovered`]), if it recorded one: resume
/// after that step instead of repeating it. It should finish within the
/// lease; a longer operation, or one that records recovery points of its
/// own, uses `begin`/`record_progress`/`complete` itself.
///
/// ```
/// use idemkv::{Config, Fingerprint, Key, OnError, Once, Store, StoredResponse};
///
/// # pollster::block_on(async {
/// let store = Store::in_memory(Config::default())?.to_async();
/// let key = Key::new("mqtt sensors/dev-7", "msg-0042")?;
/// let payload = br#"{"t":21.5}"#;
/// for delivery in 0..2 {
///     let outcome = idemkv::once(&store, &key, Fingerprint::of(payload), OnError::KeepInFlight, |_claim| async {
///         // The side effect: write the reading, publish it, ...
///         Ok::<_, std::io::Error>(StoredResponse::new(200, "stored"))
///     })
///     .await?;
///     match (delivery, outcome) {
///         (0, Once::Ran(_)) | (1, Once::Replayed(_)) => {}
///         (_, other) => panic!("unexpected {other:?}"),
///     }
/// }
/// # Ok::<(), idemkv::Error>(())
/// # })?;
/// # Ok::<(), idemkv::Error>(())
/// ```
///
/// # Errors
///
/// The backend's errors from `begin`, `complete` or `release`. After the
/// operation ran, a completion that fails transiently is repeated with
/// backoff for up to half the lease ([`complete_with_retry`](crate::complete_with_retry)).
/// An error after that means its result may not be stored: the key stays
/// in flight (or holds the result, if the write landed), so do not
/// acknowledge the message; a redelivery after the lease takes over.
pub async fn once<B, F, Fut, E>(
    backend: &B,
    key: &Key,
    fingerprint: Fingerprint,
    on_error: OnError,
    operation: F,
) -> Result<Once<E>>
where
    B: Backend,
    F: FnOnce(ClaimInfo) -> Fut,
    Fut: Future<Output = std::result::Result<StoredResponse, E>>,
    E: Display,
{
    let answer = backend.begin(key, fingerprint, Terms::default()).await?;
    let claim = match settled_without_running(answer) {
        Ok(claim) => claim,
        Err(outcome) => return Ok(outcome),
    };
    let result = operation(B::claim_info(&claim)).await;
    match settle(result, on_error) {
        Settle::Complete(response, outcome) => {
            // The operation ran: its result is stored even if the backend
            // hiccups now, as long as half the lease lasts.
            crate::backend::complete_with_retry(backend, claim, response, backend.lease() / 2)
                .await?;
            Ok(outcome)
        }
        Settle::Release(outcome) => {
            crate::backend::release_with_retry(backend, claim, backend.lease() / 2).await?;
            Ok(outcome)
        }
        Settle::Keep(outcome) => {
            drop(claim);
            Ok(outcome)
        }
    }
}

/// The blocking form, for [`Store::once`](crate::Store::once).
pub(crate) fn once_blocking<E: Display>(
    store: &crate::Store,
    key: &Key,
    fingerprint: Fingerprint,
    on_error: OnError,
    operation: impl FnOnce(ClaimInfo) -> std::result::Result<StoredResponse, E>,
) -> Result<Once<E>> {
    let claim = match settled_without_running(store.begin(key, fingerprint)?) {
        Ok(claim) => claim,
        Err(outcome) => return Ok(outcome),
    };
    let result = operation(claim.info());
    match settle(result, on_error) {
        Settle::Complete(response, outcome) => {
            let backend = store.to_async();
            let budget = crate::backend::Backend::lease(&backend) / 2;
            crate::blocking::block_on(crate::backend::complete_with_retry(
                &backend, claim, response, budget,
            ))?;
            Ok(outcome)
        }
        Settle::Release(outcome) => {
            store.release(claim)?;
            Ok(outcome)
        }
        Settle::Keep(outcome) => {
            drop(claim);
            Ok(outcome)
        }
    }
}
