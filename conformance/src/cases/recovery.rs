//! Recovery points: a holder records how far it got, a takeover inherits
//! the last point, and nothing else ever sees or changes it.

use std::time::Duration;

use bytes::Bytes;
use idemkv::{Backend, Error, RecoveryPoint};

use super::{BackendOf, begin, fp, info, key, response};
use crate::expect::{claimed, in_progress, replayed};
use crate::{Harness, LEASE, Outcome, Setup, Subject};

fn point(phase: &str, state: &str) -> Option<RecoveryPoint> {
    RecoveryPoint::new(phase, Bytes::copy_from_slice(state.as_bytes())).ok()
}

/// A first claim has nothing to resume from, and neither has a takeover of
/// an attempt that recorded nothing.
///
/// Contract: the answers' semantics.
pub async fn a_fresh_claim_starts_with_no_recovery_point<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("fresh-point");
    let first = claimed(begin(b, &k, fp("a")).await?);
    assert_eq!(info::<BackendOf<H>>(&first).recovered(), None);
    drop(first);
    subject.advance(LEASE).await;
    let second = claimed(begin(b, &k, fp("a")).await?);
    let second_info = info::<BackendOf<H>>(&second);
    assert!(second_info.is_takeover());
    assert_eq!(second_info.recovered(), None);
    assert_eq!(b.metrics().resumed, 0);
    b.complete(second, response("done")).await?;
    Ok(())
}

/// A renewal restarts the lease and keeps the recovery point: a handler
/// that records a point and then renews (the HTTP layer renews every third of
/// the lease) must not lose its point, or a takeover would repeat its
/// steps.
///
/// Contract: the answers' semantics.
pub async fn a_renewal_keeps_the_recovery_point<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("renew-keeps");
    let first = claimed(begin(b, &k, fp("a")).await?);
    b.record_progress(&first, "charged", Bytes::from_static(b"ch_9"))
        .await?;
    b.renew(&first).await?;
    let record = b.get(&k).await?.ok_or("the claim's record is missing")?;
    assert_eq!(record.recovery_point().cloned(), point("charged", "ch_9"));
    drop(first);
    subject.advance(LEASE).await;
    let second = claimed(begin(b, &k, fp("a")).await?);
    assert_eq!(
        info::<BackendOf<H>>(&second).recovered().cloned(),
        point("charged", "ch_9")
    );
    b.complete(second, response("done")).await?;
    Ok(())
}

/// The holder records two points and dies: the takeover gets the second
/// point, `get` shows it, and a takeover of that takeover (which recorded
/// nothing of its own) still gets it.
///
/// Contract: one live claim, the answers' semantics.
pub async fn a_takeover_resumes_from_the_last_recovery_point<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("resume");
    let first = claimed(begin(b, &k, fp("a")).await?);
    b.record_progress(&first, "charge_created", Bytes::from_static(b"ch_1"))
        .await?;
    b.record_progress(&first, "order_written", Bytes::from_static(b"ch_1 ord_7"))
        .await?;
    let record = b.get(&k).await?.ok_or("the claim's record is missing")?;
    assert_eq!(
        record.recovery_point().cloned(),
        point("order_written", "ch_1 ord_7")
    );
    drop(first);

    subject.advance(LEASE).await;
    let second = claimed(begin(b, &k, fp("a")).await?);
    let second_info = info::<BackendOf<H>>(&second);
    assert!(second_info.is_takeover());
    assert_eq!(
        second_info.recovered().cloned(),
        point("order_written", "ch_1 ord_7")
    );
    drop(second);

    subject.advance(LEASE).await;
    let third = claimed(begin(b, &k, fp("a")).await?);
    assert_eq!(
        info::<BackendOf<H>>(&third).recovered().cloned(),
        point("order_written", "ch_1 ord_7")
    );
    b.complete(third, response("done")).await?;
    let m = b.metrics();
    assert_eq!((m.recovery_points, m.takeovers, m.resumed), (2, 2, 2));
    Ok(())
}

/// Recording a point restarts the lease, as a renewal does.
///
/// Contract: the backend's clock.
pub async fn recording_progress_restarts_the_lease<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("point-lease");
    let holder = claimed(begin(b, &k, fp("a")).await?);
    subject.advance(LEASE - Duration::from_millis(10)).await;
    b.record_progress(&holder, "step_1", Bytes::new()).await?;
    subject.advance(Duration::from_millis(10)).await;
    assert_eq!(
        in_progress(begin(b, &k, fp("a")).await?),
        LEASE - Duration::from_millis(10)
    );
    b.complete(holder, response("done")).await?;
    Ok(())
}

/// After a takeover the old holder's `record_progress` fails with `LeaseLost` and
/// changes nothing: the new holder's record keeps its own point.
///
/// Contract: one live claim, error kinds.
pub async fn a_stale_holder_cannot_record_progress<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("stale-point");
    let old = claimed(begin(b, &k, fp("a")).await?);
    b.record_progress(&old, "charge_created", Bytes::from_static(b"ch_1"))
        .await?;
    subject.advance(LEASE).await;
    let new = claimed(begin(b, &k, fp("a")).await?);
    b.record_progress(&new, "order_written", Bytes::from_static(b"ord_2"))
        .await?;
    let before = b.get(&k).await?;
    let err = b
        .record_progress(&old, "receipt_sent", Bytes::from_static(b"stale"))
        .await;
    assert!(matches!(err, Err(Error::LeaseLost)), "{err:?}");
    assert_eq!(b.get(&k).await?, before);

    // Completed by the new holder: the old one still cannot write.
    b.complete(new, response("new")).await?;
    let err = b.record_progress(&old, "receipt_sent", Bytes::new()).await;
    assert!(matches!(err, Err(Error::LeaseLost)), "{err:?}");
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), response("new"));
    assert_eq!(b.metrics().recovery_points, 2);
    Ok(())
}

/// A completion replaces the in-flight record (the point goes with it); a
/// release deletes it, so the next claim starts from nothing.
///
/// Contract: the answers' semantics.
pub async fn completion_and_release_end_the_recovery_point<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let done = key("point-completed");
    let holder = claimed(begin(b, &done, fp("a")).await?);
    b.record_progress(&holder, "charge_created", Bytes::from_static(b"ch_1"))
        .await?;
    b.complete(holder, response("done")).await?;
    let record = b
        .get(&done)
        .await?
        .ok_or("the completed record is missing")?;
    assert_eq!(record.recovery_point(), None);

    let released = key("point-released");
    let holder = claimed(begin(b, &released, fp("a")).await?);
    b.record_progress(&holder, "charge_created", Bytes::from_static(b"ch_1"))
        .await?;
    b.release(holder).await?;
    let next = claimed(begin(b, &released, fp("a")).await?);
    let next_info = info::<BackendOf<H>>(&next);
    assert!(!next_info.is_takeover());
    assert_eq!(next_info.recovered(), None);
    b.complete(next, response("again")).await?;
    Ok(())
}

/// An empty, oversized or unprintable phase and an oversized state are
/// refused with their own errors, and the record keeps its last point.
///
/// Contract: error kinds, answers that need no write never write.
pub async fn bad_recovery_points_are_refused_and_change_nothing<H: Harness>(
    harness: &H,
) -> Outcome {
    let setup = Setup {
        max_recovery_point_bytes: 100,
        ..Setup::default()
    };
    let subject = harness.open(setup).await?;
    let b = subject.backend();
    let k = key("bad-point");
    let holder = claimed(begin(b, &k, fp("a")).await?);
    b.record_progress(&holder, "charge_created", Bytes::from_static(b"ch_1"))
        .await?;
    let before = b.get(&k).await?;
    let long = "p".repeat(idemkv::MAX_PHASE_LEN + 1);
    for phase in ["", long.as_str(), "two\nlines"] {
        let err = b.record_progress(&holder, phase, Bytes::new()).await;
        assert!(
            matches!(err, Err(Error::InvalidPhase { .. })),
            "{phase:?}: {err:?}"
        );
    }
    let err = b
        .record_progress(&holder, "big", Bytes::from(vec![b's'; 98]))
        .await;
    assert!(
        matches!(
            err,
            Err(Error::RecoveryPointTooLarge {
                size: 101,
                limit: 100
            })
        ),
        "{err:?}"
    );
    assert_eq!(b.get(&k).await?, before);
    assert_eq!(b.metrics().recovery_points, 1);
    drop(holder);
    subject.advance(LEASE).await;
    let next = claimed(begin(b, &k, fp("a")).await?);
    assert_eq!(
        info::<BackendOf<H>>(&next).recovered().cloned(),
        point("charge_created", "ch_1")
    );
    b.complete(next, response("done")).await?;
    Ok(())
}

/// A point of exactly the limit is stored, with binary state intact.
///
/// Contract: the answers' semantics.
pub async fn the_recovery_point_limit_is_inclusive<H: Harness>(harness: &H) -> Outcome {
    let setup = Setup {
        max_recovery_point_bytes: 100,
        ..Setup::default()
    };
    let subject = harness.open(setup).await?;
    let b = subject.backend();
    let k = key("point-limit");
    let holder = claimed(begin(b, &k, fp("a")).await?);
    let state: Vec<u8> = (0..97u8).map(|i| i.wrapping_mul(37)).collect();
    b.record_progress(&holder, "big", Bytes::from(state.clone()))
        .await?;
    drop(holder);
    subject.advance(LEASE).await;
    let next = claimed(begin(b, &k, fp("a")).await?);
    let recovered = info::<BackendOf<H>>(&next)
        .recovered()
        .cloned()
        .ok_or("the point was not inherited")?;
    assert_eq!(
        (recovered.phase(), recovered.state()),
        ("big", state.as_slice())
    );
    b.complete(next, response("done")).await?;
    Ok(())
}
