//! The cases, grouped by the rule they state. Each is an `async fn` taking
//! a [`Harness`]; [`suite!`](crate::suite) runs them all.

pub mod basics;
pub mod faults;
pub mod holders;
pub mod limits;
pub mod once;
pub mod recovery;
pub mod retention;
pub mod waiting;

use std::time::Duration;

use crate::{Harness, Subject};
use idemkv::{Backend, Begin, ClaimInfo, Fingerprint, Key, Result, StoredResponse, Terms};

/// The backend type a harness opens.
type BackendOf<H> = <<H as Harness>::Subject as Subject>::Backend;

/// A key in the suite's scope.
fn key(name: &str) -> Key {
    match Key::new("conformance", name) {
        Ok(key) => key,
        Err(err) => panic!("the suite's key {name:?} is invalid: {err}"),
    }
}

/// The fingerprint of a payload.
fn fp(payload: &str) -> Fingerprint {
    Fingerprint::of(payload.as_bytes())
}

/// A response that names its body in a header too.
fn response(body: &str) -> StoredResponse {
    StoredResponse::new(201, body)
        .with_header("content-type", "text/plain")
        .with_header("x-request", body)
}

/// `begin` with the backend's own terms.
async fn begin<B: Backend>(
    backend: &B,
    key: &Key,
    fingerprint: Fingerprint,
) -> Result<Begin<B::Claim>> {
    backend.begin(key, fingerprint, Terms::default()).await
}

/// A `begin` that waits up to `timeout`, on the backend's own lease and
/// retention.
async fn begin_waiting<B: Backend>(
    backend: &B,
    key: &Key,
    fingerprint: Fingerprint,
    timeout: Duration,
) -> Result<Begin<B::Claim>> {
    backend
        .begin(key, fingerprint, Terms::default().wait(timeout))
        .await
}

/// A claim's key, token and takeover flag.
fn info<B: Backend>(claim: &B::Claim) -> ClaimInfo {
    B::claim_info(claim)
}

/// Waits (in real time, up to 30 s) until the backend counts `waits`
/// waiters, so that a case acts only once its waiters are parked.
async fn until_waiting<B: Backend>(backend: &B, waits: u64) -> crate::Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while backend.metrics().waits < waits {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{} of {waits} waiters arrived in 30 s",
                backend.metrics().waits
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
