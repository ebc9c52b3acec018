//! [`Progress`]: a handler's way to record recovery points on the claim the
//! layer holds for its request, found in the request's extensions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use idemkv::{Backend, ClaimInfo, Error, RecoveryPoint};

type Record =
    dyn Fn(String, Bytes) -> Pin<Box<dyn Future<Output = idemkv::Result<()>> + Send>> + Send + Sync;

/// The running request's claim, as far as its handler needs it: where an
/// earlier attempt got to ([`recovered`](Self::recovered)) and a way to
/// record how far this one gets ([`record`](Self::record)).
///
/// The layer puts one in every claimed request's extensions (beside the
/// [`ClaimInfo`]); with axum, take it with `Extension<Progress>`:
///
/// ```no_run
/// use axum::Extension;
/// use idemkv_http::Progress;
///
/// async fn charge(Extension(progress): Extension<Progress>) -> Result<String, String> {
///     let charge_id = match progress.recovered() {
///         // An earlier attempt created the charge and died: reuse it.
///         Some(point) if point.phase() == "charge_created" => {
///             String::from_utf8_lossy(point.state()).into_owned()
///         }
///         _ => {
///             let id = "ch_1".to_string(); // create the charge at the card network
///             progress
///                 .record("charge_created", id.clone())
///                 .await
///                 .map_err(|e| e.to_string())?;
///             id
///         }
///     };
///     Ok(charge_id)
/// }
/// ```
///
/// Await every `record` inside the handler: once the handler has returned,
/// the layer completes (or releases) the claim, and a `record` after that
/// fails with `LeaseLost`.
#[derive(Clone)]
pub struct Progress {
    info: ClaimInfo,
    record: Arc<Record>,
}

impl Progress {
    /// A handle on `claim`, which the layer keeps; it does not keep the
    /// claim alive.
    pub(crate) fn new<B: Backend>(backend: &B, claim: &Arc<B::Claim>) -> Progress {
        let info = B::claim_info(claim);
        let (backend, claim): (B, Weak<B::Claim>) = (backend.clone(), Arc::downgrade(claim));
        Progress {
            info,
            record: Arc::new(move |phase: String, state: Bytes| {
                let (backend, claim) = (backend.clone(), claim.upgrade());
                Box::pin(async move {
                    // The request has finished: its claim is completed or
                    // released, and no longer this handler's.
                    let claim = claim.ok_or(Error::LeaseLost)?;
                    backend.record_progress(&claim, &phase, state).await
                })
            }),
        }
    }

    /// The key, fencing token and takeover flag of the claim.
    pub fn info(&self) -> &ClaimInfo {
        &self.info
    }

    /// The recovery point of the attempt this request took over from, if
    /// any: resume after its phase instead of starting over.
    pub fn recovered(&self) -> Option<&RecoveryPoint> {
        self.info.recovered()
    }

    /// Records a recovery point on the claim (durably, and restarting its
    /// lease): `phase` names the step that just finished, `state` what the
    /// next steps need.
    ///
    /// # Errors
    ///
    /// As [`Store::record_progress`](idemkv::Store::record_progress); `LeaseLost` too
    /// once the request has finished.
    pub async fn record(&self, phase: &str, state: impl Into<Bytes>) -> idemkv::Result<()> {
        (self.record)(phase.to_string(), state.into()).await
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}
