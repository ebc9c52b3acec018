//! A claimed request: the handler runs while the claim's lease is renewed
//! beside it; then the claim is completed or released.

use std::sync::Arc;
use std::time::Duration;

use ::http::Request;
use idemkv::{Backend, StoredResponse};

use crate::handlers::Handlers;

/// Calls the inner service; every third of the claim's lease, renews it.
pub(crate) async fn run_renewing<S, B, ReqBody>(
    inner: &mut S,
    request: Request<ReqBody>,
    backend: &B,
    claim: &Arc<B::Claim>,
    lease: Duration,
) -> Result<S::Response, S::Error>
where
    S: tower::Service<Request<ReqBody>>,
    B: Backend,
{
    let period = (lease / 3).max(Duration::from_millis(10));
    let call = inner.call(request);
    tokio::pin!(call);
    let mut renewing: Option<tokio::task::JoinHandle<()>> = None;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = &mut call => {
                if let Some(handle) = renewing.take() {
                    // Let a renewal in flight finish, so the claim is ours again.
                    let _ = handle.await;
                }
                return result;
            }
            _ = ticks.tick(), if renewing.is_none() => {
                let (backend, claim) = (backend.clone(), Arc::clone(claim));
                // Renewals run beside the handler, not in its way.
                renewing = Some(tokio::spawn(async move {
                    // A lost lease surfaces again when the request completes.
                    if let Err(err) = backend.renew(&claim).await {
                        let info = B::claim_info(&claim);
                        tracing::warn!(
                            target: "idemkv_http",
                            key = %info.key(),
                            token = info.token(),
                            error = %err,
                            "renewing a running request's lease failed; if it ran out, a retry \
                             may take the key over before this request finishes"
                        );
                    }
                }));
            }
            _ = async { if let Some(handle) = renewing.as_mut() { let _ = handle.await; } }, if renewing.is_some() => {
                renewing = None;
            }
        }
    }
}

/// Completes the claim with `stored`, or releases it. Errors are not the
/// client's concern: the response it gets is the handler's either way, and a
/// claim that could not be finished stays in flight until its lease ends.
pub(crate) async fn finish<B: Backend>(
    backend: &B,
    claim: Arc<B::Claim>,
    stored: Option<StoredResponse>,
    lease: Duration,
    handlers: &Handlers,
) {
    let claim = match Arc::try_unwrap(claim) {
        Ok(claim) => claim,
        Err(claim) => {
            // Only a `Progress::record` still running after its handler returned
            // (a task the handler spawned) holds the claim now.
            let info = B::claim_info(&claim);
            tracing::warn!(
                target: "idemkv_http",
                key = %info.key(),
                token = info.token(),
                "a recovery point was still being recorded when its handler returned, so the response was not stored: retries \
                 see the key in flight until its lease ends, then resume from its last \
                 recovery point; await Progress::record inside the handler"
            );
            handlers.gave_up();
            return;
        }
    };
    let info = B::claim_info(&claim);
    // Once polled, the operation is queued with the committer, so it is
    // committed even if this future is dropped afterwards.
    let (action, outcome) = match stored {
        // A transient failure (the store healing, the database
        // unreachable) is repeated for up to half the lease: the handler
        // ran, and its answer must be stored before a retry could take the
        // key over and run it again. A release is repeated likewise, so
        // that a retry need not wait out the lease.
        Some(stored) => (
            "storing the response",
            idemkv::complete_with_retry(backend, claim, stored, lease / 2)
                .await
                .map_err(|err| err.to_string()),
        ),
        None => (
            "releasing the key",
            idemkv::release_with_retry(backend, claim, lease / 2)
                .await
                .map_err(|err| err.to_string()),
        ),
    };
    if let Err(error) = outcome {
        handlers.gave_up();
        // The client has its response; a retry finds the key in flight until
        // the lease ends (or the write landed after all).
        tracing::error!(
            target: "idemkv_http",
            key = %info.key(),
            token = info.token(),
            %error,
            "{action} failed after the response was sent; retries see the key in flight until \
             its lease ends"
        );
    }
}
