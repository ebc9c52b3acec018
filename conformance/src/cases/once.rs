//! `idemkv::once` over the backend: the operation runs once per key, its
//! result is replayed to duplicates, and each error policy leaves the key
//! as it says.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use idemkv::{Backend, OnError, Once, StoredResponse, once};

use super::{fp, key, response};
use crate::{Harness, LEASE, Outcome, Setup, Subject};

/// A failure of the operation.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Three deliveries: one run, two replays of its result; another payload
/// under the same id is a mismatch and runs nothing.
///
/// Contract: one live claim, the answers' semantics.
pub async fn once_runs_the_operation_once_and_replays_its_result<H: Harness>(
    harness: &H,
) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("message-1");
    let runs = AtomicU32::new(0);
    for delivery in 0..3 {
        let outcome = once(b, &k, fp("a"), OnError::default(), |claim| {
            runs.fetch_add(1, Ordering::SeqCst);
            let token = claim.token();
            async move { Ok::<_, Refused>(response(&format!("effect with token {token}"))) }
        })
        .await?;
        assert!(outcome.is_settled(OnError::default()));
        match (delivery, outcome) {
            (0, Once::Ran(stored)) | (_, Once::Replayed(stored)) => {
                assert!(stored.body().starts_with(b"effect with token"));
            }
            (_, other) => return Err(format!("delivery {delivery}: {other:?}").into()),
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let other = once(b, &k, fp("b"), OnError::default(), |_| async {
        Ok::<_, Refused>(response("never"))
    })
    .await?;
    assert!(matches!(other, Once::Mismatch), "{other:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
}

/// `KeepInFlight`: the key stays claimed for the lease (a redelivery is in
/// progress, not settled), then the next delivery takes over and runs.
///
/// Contract: one live claim, the backend's clock, the answers' semantics.
pub async fn once_keeps_a_failed_key_in_flight_until_its_lease_ends<H: Harness>(
    harness: &H,
) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("message-keep");
    let failed = once(b, &k, fp("a"), OnError::KeepInFlight, |_| async {
        Err::<StoredResponse, _>(Refused("downstream timed out"))
    })
    .await?;
    assert!(matches!(failed, Once::Failed(_)));
    assert!(!failed.is_settled(OnError::KeepInFlight));
    let again = once(b, &k, fp("a"), OnError::KeepInFlight, |_| async {
        Ok::<_, Refused>(response("too early"))
    })
    .await?;
    assert!(matches!(again, Once::InProgress { .. }), "{again:?}");
    subject.advance(LEASE).await;
    let took_over = AtomicBool::new(false);
    let retried = once(b, &k, fp("a"), OnError::KeepInFlight, |claim| {
        took_over.store(claim.is_takeover(), Ordering::SeqCst);
        async { Ok::<_, Refused>(response("second try")) }
    })
    .await?;
    assert!(matches!(retried, Once::Ran(_)), "{retried:?}");
    assert!(
        took_over.load(Ordering::SeqCst),
        "the retry knows an attempt died holding the key"
    );
    Ok(())
}

/// `Release`: the next delivery runs again at once.
///
/// Contract: the answers' semantics.
pub async fn once_releases_a_failed_key_when_asked<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("message-release");
    let failed = once(b, &k, fp("a"), OnError::Release, |_| async {
        Err::<StoredResponse, _>(Refused("validation failed before anything was sent"))
    })
    .await?;
    assert!(matches!(failed, Once::Failed(_)));
    assert!(b.get(&k).await?.is_none(), "released");
    let retried = once(b, &k, fp("a"), OnError::Release, |claim| {
        let takeover = claim.is_takeover();
        async move {
            assert!(!takeover);
            Ok::<_, Refused>(response("ran again"))
        }
    })
    .await?;
    assert!(matches!(retried, Once::Ran(_)), "{retried:?}");
    assert_eq!(b.metrics().releases, 1);
    Ok(())
}

/// `Store`: the error is the outcome; redeliveries replay it and run
/// nothing.
///
/// Contract: the answers' semantics.
pub async fn once_stores_a_failure_as_the_outcome_when_asked<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("message-store");
    let policy = OnError::Store { status: 422 };
    let failed = once(b, &k, fp("a"), policy, |_| async {
        Err::<StoredResponse, _>(Refused("unknown device"))
    })
    .await?;
    assert!(matches!(failed, Once::Failed(_)));
    assert!(failed.is_settled(policy));
    let replayed = once(b, &k, fp("a"), policy, |_| async {
        Ok::<_, Refused>(response("never"))
    })
    .await?;
    let Once::Replayed(stored) = replayed else {
        return Err(format!("expected the stored failure, got {replayed:?}").into());
    };
    assert_eq!(stored.status(), 422);
    assert_eq!(stored.body(), b"unknown device");
    Ok(())
}

/// A delivery whose holder recorded a recovery point and died: the next
/// delivery after the lease hands the point to the operation, which
/// resumes from it.
///
/// Contract: the answers' semantics.
pub async fn once_hands_the_operation_the_recovered_point<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("message-resumed");
    let idemkv::Begin::Claimed(first) = b.begin(&k, fp("a"), idemkv::Terms::default()).await?
    else {
        return Err("the first delivery did not claim".into());
    };
    b.record_progress(&first, "row_written", bytes::Bytes::from_static(b"row 17"))
        .await?;
    drop(first);
    subject.advance(LEASE).await;
    let outcome = once(b, &k, fp("a"), OnError::default(), |claim| {
        let resumed = claim
            .recovered()
            .map(|point| (point.phase().to_string(), point.state().to_vec()));
        async move {
            match resumed {
                Some((phase, state)) if phase == "row_written" && state == b"row 17" => {
                    Ok(StoredResponse::new(200, "resumed after row 17"))
                }
                other => Err(Refused(if other.is_none() {
                    "no recovery point"
                } else {
                    "the wrong recovery point"
                })),
            }
        }
    })
    .await?;
    let Once::Ran(stored) = outcome else {
        return Err(format!("expected Ran, got {outcome:?}").into());
    };
    assert_eq!(stored.body(), b"resumed after row 17");
    Ok(())
}
