//! What a claim's holder does: complete, release, renew and record progress.
//! Every one goes to the committer, which judges the fencing token against
//! the record inside its write transaction.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::model::recovery::RecoveryPoint;
use crate::model::response::StoredResponse;
use crate::request::cache::CachedCompletion;
use crate::request::outcome::{Claim, CompleteError, ReleaseError};

use super::Store;

impl Store {
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

    /// Gives the key up without storing a result: the record is deleted and
    /// the next `begin` claims afresh (use it when the side effect did not
    /// happen, e.g. a validation error or a failure worth retrying).
    ///
    /// Repeating a release is safe: one whose key holds no live record any
    /// more (this release landed before and its answer was lost, or the
    /// record expired or was removed) answers `Ok`, since the key is free
    /// either way. The claim's own record is deleted even once it expired,
    /// so that a restart with the wall clock stepped back before its expiry
    /// does not bring the released claim back.
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

    /// Records how far the claim's attempt got: `phase` names the last step
    /// that finished (say `"charge_created"`), `state` holds what the next
    /// steps need (say the charge's id). Durable when this returns, like
    /// every write: if this process dies now, the attempt that takes the key
    /// over gets this point from [`Claim::recovered`] and resumes after the
    /// step instead of repeating it. It also restarts the lease, like
    /// [`renew`](Self::renew). A later point replaces it;
    /// `complete` and `release` end it with the record's in-flight life.
    ///
    /// Call it right after each step that must not run twice, before the
    /// next one starts (docs/design.md, "Recovery points").
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPhase`] for an empty, oversized (over
    /// [`MAX_PHASE_LEN`](crate::MAX_PHASE_LEN) bytes) or unprintable phase,
    /// [`Error::RecoveryPointTooLarge`] for a point over
    /// `Config::max_recovery_point_bytes`, [`Error::LeaseLost`] for a holder
    /// whose key was taken over, completed or removed, and otherwise as
    /// [`renew`](Self::renew). An error records nothing.
    pub fn record_progress(
        &self,
        claim: &Claim,
        phase: &str,
        state: impl Into<Bytes>,
    ) -> Result<()> {
        crate::blocking::block_on(self.record_progress_async(claim, phase, state.into()))
    }

    /// A holder's write that keeps its claim: restarts the lease and, with a
    /// `point`, records it (`renew` and `record_progress`).
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
            self.inner.counters.outcomes.leases_lost.bump();
        }
        result
    }

    fn check_claim(&self, claim: &Claim) -> Result<()> {
        if claim.granted_by(&self.inner.locks) {
            Ok(())
        } else {
            Err(Error::WrongStore)
        }
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
        if let Err(err) = response.check_size(self.inner.config.settings.max_response_bytes) {
            return Err(CompleteError::refused(err, claim));
        }
        let cached = (self.inner.config.settings.cache_bytes > 0).then(|| response.clone());
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
                busy.end_completed_claim(|cache| {
                    if let Some(response) = cached {
                        cache.insert(CachedCompletion {
                            fingerprint: claim.fingerprint,
                            expires_at_ms: completed.expires_at_ms,
                            response,
                        });
                    }
                });
                self.inner.counters.outcomes.completions.bump();
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
                    self.inner.counters.outcomes.leases_lost.bump();
                }
                Err(CompleteError::failed(err))
            }
        }
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
                self.inner.counters.outcomes.releases.bump();
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
                    self.inner.counters.outcomes.leases_lost.bump();
                }
                Err(ReleaseError::failed(err))
            }
        }
    }

    /// The one implementation of `renew`.
    pub(crate) async fn renew_async(&self, claim: &Claim) -> Result<()> {
        self.hold_async(claim, None).await?;
        self.inner.counters.outcomes.renewals.bump();
        Ok(())
    }

    /// The one implementation of `record_progress`.
    pub(crate) async fn record_progress_async(
        &self,
        claim: &Claim,
        phase: &str,
        state: Bytes,
    ) -> Result<()> {
        let point = RecoveryPoint::within(
            phase,
            state,
            self.inner.config.settings.max_recovery_point_bytes,
        )?;
        self.hold_async(claim, Some(point)).await?;
        self.inner.counters.outcomes.recovery_points.bump();
        Ok(())
    }
}
