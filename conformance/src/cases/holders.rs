//! What a holder's calls do: release, renew, complete late, and fencing
//! after a takeover or a remove; a claim's own terms.

use std::time::Duration;

use idemkv::{Backend, Error, RecordState, Terms};

use super::{BackendOf, begin, fp, info, key, response};
use crate::expect::{claimed, in_progress, mismatch, replayed};
use crate::{Harness, LEASE, Outcome, RETENTION, Setup, Subject};

/// A released key holds no record, and the next claim (of any payload)
/// gets a larger token.
///
/// Contract: tokens grow, the answers' semantics.
pub async fn release_lets_the_next_attempt_claim_with_a_larger_token<H: Harness>(
    harness: &H,
) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("release");
    let first = claimed(begin(b, &k, fp("a")).await?);
    let first_token = info::<BackendOf<H>>(&first).token();
    b.release(first).await?;
    assert!(b.get(&k).await?.is_none());
    let second = claimed(begin(b, &k, fp("b")).await?);
    assert!(info::<BackendOf<H>>(&second).token() > first_token);
    b.complete(second, response("b")).await?;
    assert_eq!(b.metrics().releases, 1);
    Ok(())
}

/// In progress until the last millisecond of the lease; then the same
/// payload takes over (another one is still a mismatch) with a larger
/// token, and every call of the old holder fails with `LeaseLost` and
/// changes nothing.
///
/// Contract: one live claim, tokens grow, the backend's clock, error kinds.
pub async fn expired_lease_is_taken_over_and_the_old_holder_is_fenced<H: Harness>(
    harness: &H,
) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("takeover");

    let old = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE - Duration::from_millis(1)).await;
    assert_eq!(
        in_progress(begin(b, &k, fp("a")).await?),
        Duration::from_millis(1)
    );
    subject.advance(Duration::from_millis(1)).await;

    mismatch(begin(b, &k, fp("b")).await?);
    let new = claimed(begin(b, &k, fp("a")).await?);
    let new_info = info::<BackendOf<H>>(&new);
    assert!(new_info.is_takeover());
    assert!(new_info.token() > info::<BackendOf<H>>(&old).token());

    assert!(matches!(b.renew(&old).await, Err(Error::LeaseLost)));
    let before = b.get(&k).await?;
    let Err(err) = b.complete(old, response("old")).await else {
        return Err("a fenced holder completed".into());
    };
    assert!(matches!(err.error(), Error::LeaseLost), "{err}");
    assert!(err.into_claim().is_none(), "the write was attempted");
    assert_eq!(b.get(&k).await?, before);
    let record = before.ok_or("the takeover's record is missing")?;
    assert_eq!(record.token(), new_info.token());
    assert!(matches!(record.state(), RecordState::InFlight { .. }));

    b.complete(new, response("new")).await?;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), response("new"));
    let m = b.metrics();
    assert_eq!((m.claims, m.takeovers, m.leases_lost), (2, 1, 2));
    Ok(())
}

/// A stale holder's release fails and leaves the takeover's record alone.
///
/// Contract: one live claim, error kinds.
pub async fn stale_release_after_takeover_is_lease_lost<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("stale-release");
    let old = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE).await;
    let new = claimed(begin(b, &k, fp("a")).await?);
    assert!(matches!(
        b.release(old).await.map_err(Error::from),
        Err(Error::LeaseLost)
    ));
    assert_eq!(
        b.get(&k).await?.map(|r| r.token()),
        Some(info::<BackendOf<H>>(&new).token())
    );
    b.complete(new, response("ok")).await?;
    Ok(())
}

/// A renewal restarts the whole lease from the moment of the renewal.
///
/// Contract: one live claim, the backend's clock.
pub async fn renew_extends_the_lease<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("renew");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(Duration::from_secs(40)).await;
    b.renew(&claim).await?;
    subject.advance(Duration::from_secs(40)).await;
    // 80 s after the claim, but only 40 s after the renewal.
    assert_eq!(
        in_progress(begin(b, &k, fp("a")).await?),
        Duration::from_secs(20)
    );
    let record = b.get(&k).await?.ok_or("the record is missing")?;
    assert_eq!(
        record.lease_until(),
        Some(record.created_at() + Duration::from_secs(40) + LEASE)
    );
    b.complete(claim, response("done")).await?;
    assert_eq!(b.metrics().renewals, 1);
    Ok(())
}

/// A lease that ran out with nobody taking over does not stop the holder
/// from completing.
///
/// Contract: one live claim, the backend's clock.
pub async fn an_expired_holder_may_still_complete_if_nobody_took_over<H: Harness>(
    harness: &H,
) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("late");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE * 3).await;
    b.complete(claim, response("late but fine")).await?;
    assert_eq!(
        replayed(begin(b, &k, fp("a")).await?),
        response("late but fine")
    );
    Ok(())
}

/// A holder whose record has fully expired (its lease and then the
/// retention passed, nobody took over) holds nothing any more: its
/// completion is `LeaseLost` and stores nothing, and the key is claimed
/// afresh, not taken over. Checks the expiry bound of every holder write.
///
/// Contract: one live claim, the backend's clock, error kinds.
pub async fn a_holder_whose_record_expired_cannot_complete<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("long-gone");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE + RETENTION).await;
    assert!(b.get(&k).await?.is_none(), "the record has expired");
    let err = b
        .complete(claim, response("too late"))
        .await
        .expect_err("an expired record holds no claim");
    assert!(matches!(err.error(), Error::LeaseLost), "{:?}", err.error());
    let fresh = claimed(begin(b, &k, fp("a")).await?);
    assert!(!info::<BackendOf<H>>(&fresh).is_takeover());
    b.complete(fresh, response("fresh")).await?;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), response("fresh"));
    Ok(())
}

/// A release after its claim's record expired answers `Ok` and deletes the
/// record: nothing is left for the sweep, and a clock that stepped back
/// before the expiry would not bring the released claim back.
///
/// Contract: a release frees the key, the backend's clock.
pub async fn a_release_after_expiry_deletes_the_record<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("released-late");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE + RETENTION).await;
    assert!(b.get(&k).await?.is_none(), "the record has expired");
    b.release(claim).await?;
    assert_eq!(subject.sweep().await?, 0, "the release deleted the record");
    let fresh = claimed(begin(b, &k, fp("b")).await?);
    assert!(!info::<BackendOf<H>>(&fresh).is_takeover());
    Ok(())
}

/// A claim dropped without complete or release keeps the key in flight for
/// its whole lease, then the next attempt takes over.
///
/// Contract: one live claim, the backend's clock.
pub async fn dropped_claim_blocks_until_its_lease_runs_out<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("dropped");
    drop(claimed(begin(b, &k, fp("a")).await?));
    assert_eq!(in_progress(begin(b, &k, fp("a")).await?), LEASE);
    subject.advance(LEASE).await;
    let claim = claimed(begin(b, &k, fp("a")).await?);
    assert!(info::<BackendOf<H>>(&claim).is_takeover());
    b.complete(claim, response("second try")).await?;
    Ok(())
}

/// A takeover whose claim is dropped still fences the old holder: the
/// record's token, not any in-memory state, decides.
///
/// Contract: one live claim, tokens grow.
pub async fn a_dropped_takeover_still_fences_the_old_holder<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("fenced");
    let old = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE).await;
    let new = claimed(begin(b, &k, fp("a")).await?);
    let new_info = info::<BackendOf<H>>(&new);
    assert!(new_info.is_takeover());
    drop(new);
    let Err(err) = b.complete(old, response("stale")).await else {
        return Err("a fenced holder completed".into());
    };
    assert!(matches!(err.error(), Error::LeaseLost), "{err}");
    let record = b.get(&k).await?.ok_or("the takeover's record is missing")?;
    assert_eq!(record.token(), new_info.token());
    assert!(matches!(record.state(), RecordState::InFlight { .. }));
    Ok(())
}

/// `remove` deletes a completed record, and revokes a live claim: the next
/// claim gets a larger token and the revoked holder is fenced.
///
/// Contract: one live claim, tokens grow.
pub async fn remove_deletes_and_revokes<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let done = key("remove-done");
    b.complete(claimed(begin(b, &done, fp("a")).await?), response("x"))
        .await?;
    assert!(b.remove(&done).await?);
    assert!(!b.remove(&done).await?);
    assert!(b.get(&done).await?.is_none());

    let flying = key("remove-flying");
    let claim = claimed(begin(b, &flying, fp("a")).await?);
    assert!(b.remove(&flying).await?);
    let next = claimed(begin(b, &flying, fp("b")).await?);
    assert!(info::<BackendOf<H>>(&next).token() > info::<BackendOf<H>>(&claim).token());
    let Err(err) = b.complete(claim, response("old")).await else {
        return Err("a revoked holder completed".into());
    };
    assert!(matches!(err.error(), Error::LeaseLost), "{err}");
    b.complete(next, response("new")).await?;
    assert_eq!(replayed(begin(b, &flying, fp("b")).await?), response("new"));
    assert_eq!(b.metrics().removed, 2);
    Ok(())
}

/// A claim's own lease and retention replace the backend's, for its
/// renewals and its completion too; a zero lease is a config error.
///
/// Contract: the backend's clock, error kinds.
pub async fn a_claim_can_take_its_own_lease_and_retention<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let terms = Terms::default()
        .lease(Duration::from_secs(5))
        .retention(Duration::from_secs(30));
    let k = key("own-terms");
    let claim = claimed(b.begin(&k, fp("a"), terms).await?);
    assert_eq!(
        in_progress(begin(b, &k, fp("a")).await?),
        Duration::from_secs(5)
    );
    subject.advance(Duration::from_secs(4)).await;
    b.renew(&claim).await?;
    // The renewal restarted the claim's 5 s lease, not the backend's 60 s.
    assert_eq!(
        in_progress(begin(b, &k, fp("a")).await?),
        Duration::from_secs(5)
    );
    b.complete(claim, response("done")).await?;
    subject.advance(Duration::from_secs(29)).await;
    replayed(begin(b, &k, fp("a")).await?);
    subject.advance(Duration::from_secs(1)).await;
    // Retained 30 s, not the backend's hour.
    assert!(b.get(&k).await?.is_none());
    drop(claimed(begin(b, &k, fp("a")).await?));

    let other = key("short-lease");
    let short = Terms::default().lease(Duration::from_secs(2));
    drop(claimed(b.begin(&other, fp("a"), short).await?));
    subject.advance(Duration::from_secs(2)).await;
    assert!(info::<BackendOf<H>>(&claimed(begin(b, &other, fp("a")).await?)).is_takeover());

    let zero = Terms::default().lease(Duration::ZERO);
    assert!(matches!(
        b.begin(&key("zero"), fp("a"), zero).await,
        Err(Error::InvalidConfig(_))
    ));
    Ok(())
}
