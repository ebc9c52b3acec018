//! A claimed request: the handler runs while the claim's lease is renewed
//! beside it; then the claim is completed or released.

use std::sync::Arc;
use std::time::Duration;

use ::http::Request;
use idemkv::{Backend, StoredResponse};

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
                    // A lost lease surfaces when the request completes.
                    let _ = backend.renew(&claim).await;
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
) {
    let Ok(claim) = Arc::try_unwrap(claim) else {
        return;
    };
    // Once polled, the operation is queued with the committer, so it is
    // committed even if this future is dropped afterwards.
    let _ = match stored {
        Some(stored) => backend.complete(claim, stored).await.map_err(drop),
        None => backend.release(claim).await.map_err(drop),
    };
}
