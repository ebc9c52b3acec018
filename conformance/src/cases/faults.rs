//! Holder writes meeting a real fault ([`Subject::inject`]): a write that
//! fails before it lands, and one that lands with its answer lost. Each
//! fails transiently, leaves the claim with the caller, and its repeat
//! answers `Ok` and leaves the key as one successful write would: the
//! handler's work is never run twice because the store hiccuped.

use std::time::{Duration, Instant};

use idemkv::{Backend, Error, complete_with_retry, release_with_retry};

use super::{BackendOf, begin, fp, info, key, response};
use crate::expect::{claimed, in_progress, replayed};
use crate::{Fault, Harness, LEASE, Outcome, Setup, Subject};

/// How long a case repeats a write while the backend heals (the embedded
/// store reopens its file within tens of milliseconds; a pool reconnects).
const BUDGET: Duration = Duration::from_secs(30);

/// Checks that `err` is transient, as every injected fault must be.
fn transient(err: &Error, what: &str) -> Outcome {
    if err.is_transient() {
        Ok(())
    } else {
        Err(format!("{what} failed with {err}, which is not transient").into())
    }
}

/// `get` repeated while the backend heals, for a case to look at what
/// landed.
async fn get_healed<B: Backend>(b: &B, k: &idemkv::Key) -> idemkv::Result<Option<idemkv::Record>> {
    let started = Instant::now();
    loop {
        match b.get(k).await {
            Err(err) if err.is_transient() && started.elapsed() < BUDGET => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// A completion fails before it lands and hands the claim back; repeating it
/// stores the response once, and retries replay it.
///
/// Contract: writes may be repeated, error kinds, one live claim.
pub async fn a_completion_that_failed_is_repeated_and_lands_once<H: Harness>(
    harness: &H,
) -> Outcome {
    completion_meets(harness, Fault::BeforeLanding, "completion-failed").await
}

/// A completion lands and its answer is lost: the caller sees a transient
/// failure with the claim back, and the repeat (same claim, same response)
/// answers `Ok` without changing the record.
///
/// Contract: writes may be repeated, error kinds.
pub async fn a_completion_whose_answer_was_lost_is_repeated_and_answers_ok<H: Harness>(
    harness: &H,
) -> Outcome {
    completion_meets(harness, Fault::AnswerLost, "completion-lost").await
}

async fn completion_meets<H: Harness>(harness: &H, fault: Fault, name: &str) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key(name);
    let claim = claimed(begin(b, &k, fp("a")).await?);
    let token = info::<BackendOf<H>>(&claim).token();
    subject.inject(fault).await?;
    let Err(err) = b.complete(claim, response("a")).await else {
        return Err(format!("the completion ignored the injected {fault:?}").into());
    };
    transient(err.error(), "the completion")?;
    let (_, claim) = err.into_parts();
    let claim = claim.ok_or("a transient failure must hand the claim back")?;
    if fault == Fault::AnswerLost {
        let record = get_healed(b, &k)
            .await?
            .ok_or("the landed completion is missing")?;
        assert!(
            matches!(record.state(), idemkv::RecordState::Completed { .. }),
            "the completion did not land: {record:?}"
        );
    }
    complete_with_retry(b, claim, response("a"), BUDGET).await?;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), response("a"));
    let record = b.get(&k).await?.ok_or("the completed record is missing")?;
    assert_eq!(record.token(), token, "completed by the one claim");
    assert_eq!(b.metrics().completions, 1, "one completion counted");
    Ok(())
}

/// A release fails before it lands and hands the claim back; repeating it
/// frees the key, and the next attempt claims it afresh.
///
/// Contract: writes may be repeated, error kinds.
pub async fn a_release_that_failed_is_repeated_and_frees_the_key<H: Harness>(
    harness: &H,
) -> Outcome {
    release_meets(harness, Fault::BeforeLanding, "release-failed").await
}

/// A release lands and its answer is lost: the repeat answers `Ok` (the key
/// is free, as asked), not `LeaseLost`.
///
/// Contract: writes may be repeated, error kinds.
pub async fn a_release_whose_answer_was_lost_is_repeated_and_answers_ok<H: Harness>(
    harness: &H,
) -> Outcome {
    release_meets(harness, Fault::AnswerLost, "release-lost").await
}

async fn release_meets<H: Harness>(harness: &H, fault: Fault, name: &str) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key(name);
    let claim = claimed(begin(b, &k, fp("a")).await?);
    let token = info::<BackendOf<H>>(&claim).token();
    subject.inject(fault).await?;
    let Err(err) = b.release(claim).await else {
        return Err(format!("the release ignored the injected {fault:?}").into());
    };
    transient(err.error(), "the release")?;
    let (_, claim) = err.into_parts();
    let claim = claim.ok_or("a transient failure must hand the claim back")?;
    if fault == Fault::AnswerLost {
        assert!(
            get_healed(b, &k).await?.is_none(),
            "the release did not land"
        );
    }
    release_with_retry(b, claim, BUDGET).await?;
    let next = claimed(begin(b, &k, fp("b")).await?);
    assert!(info::<BackendOf<H>>(&next).token() > token);
    assert!(!info::<BackendOf<H>>(&next).is_takeover(), "a fresh claim");
    Ok(())
}

/// A renewal fails before it lands; the claim is still the caller's, and
/// the repeat restarts the lease from its own time.
///
/// Contract: writes may be repeated, error kinds, the backend's clock.
pub async fn a_renewal_that_failed_is_repeated_and_restarts_the_lease<H: Harness>(
    harness: &H,
) -> Outcome {
    renewal_meets(harness, Fault::BeforeLanding, "renewal-failed").await
}

/// A renewal lands and its answer is lost: the repeat answers `Ok` and
/// restarts the lease again.
///
/// Contract: writes may be repeated, error kinds, the backend's clock.
pub async fn a_renewal_whose_answer_was_lost_is_repeated_and_answers_ok<H: Harness>(
    harness: &H,
) -> Outcome {
    renewal_meets(harness, Fault::AnswerLost, "renewal-lost").await
}

async fn renewal_meets<H: Harness>(harness: &H, fault: Fault, name: &str) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key(name);
    let claim = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE / 2).await;
    subject.inject(fault).await?;
    let Err(err) = b.renew(&claim).await else {
        return Err(format!("the renewal ignored the injected {fault:?}").into());
    };
    transient(&err, "the renewal")?;
    let started = Instant::now();
    loop {
        match b.renew(&claim).await {
            Ok(()) => break,
            Err(err) if err.is_transient() && started.elapsed() < BUDGET => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
    // The lease runs a whole lease from the repeat.
    assert_eq!(in_progress(begin(b, &k, fp("a")).await?), LEASE);
    b.complete(claim, response("a")).await?;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), response("a"));
    Ok(())
}
