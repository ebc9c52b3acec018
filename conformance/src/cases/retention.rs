//! Retention: records read as absent from the exact moment they expire,
//! before any sweep, and the sweep deletes each expired record once, no
//! later than one lease after it expired. (The embedded store sweeps a
//! completion at its claim's expiry entry, the lease's end plus the
//! retention, so that completing does not rewrite the expiry index;
//! PostgreSQL deletes at the expiry itself. Both are within the contract.)

use std::time::Duration;

use idemkv::Backend;

use super::{begin, fp, key, response};
use crate::expect::{claimed, replayed};
use crate::{Harness, LEASE, Outcome, RETENTION, Setup, Subject};

/// A completed record replays until one millisecond before its retention
/// ends and is absent from then on; the sweep deletes it once, within a
/// lease of its expiry, and any payload may claim the key again.
///
/// Contract: the backend's clock, the answers' semantics.
pub async fn completed_records_expire_exactly_at_retention<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("retention");
    b.complete(claimed(begin(b, &k, fp("a")).await?), response("r"))
        .await?;

    subject.advance(RETENTION - Duration::from_millis(1)).await;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), response("r"));
    assert!(b.get(&k).await?.is_some());
    assert_eq!(subject.sweep().await?, 0);

    subject.advance(Duration::from_millis(1)).await;
    assert!(
        b.get(&k).await?.is_none(),
        "expired records read as absent before any sweep"
    );
    let at_expiry = subject.sweep().await?;
    subject.advance(LEASE).await;
    assert_eq!(at_expiry + subject.sweep().await?, 1);
    assert_eq!(b.metrics().expired, 1);
    let claim = claimed(begin(b, &k, fp("b")).await?);
    b.release(claim).await?;
    Ok(())
}

/// An expired record is replaced by a fresh claim (not a takeover) before
/// the sweep comes, and the sweep then leaves the new record alone.
///
/// Contract: the backend's clock, the answers' semantics.
pub async fn an_expired_record_is_claimable_before_the_sweep<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("lazy");
    b.complete(claimed(begin(b, &k, fp("a")).await?), response("old"))
        .await?;
    subject.advance(RETENTION).await;
    let claim = claimed(begin(b, &k, fp("b")).await?);
    assert!(!<H::Subject as Subject>::Backend::claim_info(&claim).is_takeover());
    b.complete(claim, response("new")).await?;
    assert_eq!(subject.sweep().await?, 0);
    assert_eq!(replayed(begin(b, &k, fp("b")).await?), response("new"));
    Ok(())
}

/// A claim nobody completes expires one retention after its lease ends.
///
/// Contract: the backend's clock, the answers' semantics.
pub async fn abandoned_claims_expire_one_retention_after_their_lease<H: Harness>(
    harness: &H,
) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("abandoned");
    drop(claimed(begin(b, &k, fp("a")).await?));
    subject
        .advance(LEASE + RETENTION - Duration::from_millis(1))
        .await;
    assert!(b.get(&k).await?.is_some());
    assert_eq!(subject.sweep().await?, 0);
    subject.advance(Duration::from_millis(1)).await;
    assert!(b.get(&k).await?.is_none());
    assert_eq!(subject.sweep().await?, 1);
    Ok(())
}

/// More expired records than one sweep batch: all go, each once, and the
/// live ones stay.
///
/// Contract: the answers' semantics.
pub async fn sweep_deletes_every_expired_record<H: Harness>(harness: &H) -> Outcome {
    let setup = Setup {
        sweep_batch: 100,
        ..Setup::default()
    };
    let subject = harness.open(setup).await?;
    let b = subject.backend();
    for i in 0..250 {
        let k = key(&format!("bulk-{i}"));
        b.complete(claimed(begin(b, &k, fp("a")).await?), response("x"))
            .await?;
    }
    // Past every record's sweep time: at most a lease after its expiry.
    subject.advance(LEASE + RETENTION).await;
    let live = key("live");
    b.complete(claimed(begin(b, &live, fp("a")).await?), response("y"))
        .await?;
    assert_eq!(subject.sweep().await?, 250);
    assert_eq!(subject.sweep().await?, 0);
    assert_eq!(replayed(begin(b, &live, fp("a")).await?), response("y"));
    assert_eq!(b.metrics().expired, 250);
    Ok(())
}
