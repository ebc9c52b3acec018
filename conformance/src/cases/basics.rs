//! Claim, in progress, complete, replay, mismatch; scopes; what `get` shows.

use std::time::Duration;

use idemkv::{Backend, Key, MAX_IDEMPOTENCY_KEY_LEN, MAX_SCOPE_LEN, StoredResponse};

use super::{BackendOf, begin, fp, info, key, response};
use crate::expect::{claimed, in_progress, mismatch, replayed};
use crate::{Harness, LEASE, Outcome, RETENTION, Setup, Subject};

/// The first attempt claims; a retry while it runs is in progress with the
/// whole lease left; another payload is a mismatch; once completed, a retry
/// replays the exact response (binary body, repeated headers in order) and
/// another payload is still a mismatch. Each answer is counted once.
///
/// Contract: one live claim, the backend's clock, answers that need no write
/// never write, the answers' semantics.
pub async fn claim_in_progress_complete_replay_mismatch<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("order-1");

    let claim = claimed(begin(b, &k, fp("a")).await?);
    let claim_info = info::<BackendOf<H>>(&claim);
    assert_eq!(claim_info.key(), &k);
    assert!(!claim_info.is_takeover());
    assert_eq!(in_progress(begin(b, &k, fp("a")).await?), LEASE);
    mismatch(begin(b, &k, fp("b")).await?);

    let stored = StoredResponse::new(201, vec![0u8, 159, 146, 150, 255])
        .with_header("content-type", "application/octet-stream")
        .with_header("set-cookie", "a=1")
        .with_header("set-cookie", "b=2");
    b.complete(claim, stored.clone()).await?;

    let replay = replayed(begin(b, &k, fp("a")).await?);
    assert_eq!(replay, stored);
    assert_eq!(replay.headers()[2], ("set-cookie".into(), b"b=2".to_vec()));
    mismatch(begin(b, &k, fp("b")).await?);

    let m = b.metrics();
    assert_eq!(
        (
            m.claims,
            m.in_progress,
            m.mismatches,
            m.completions,
            m.replays
        ),
        (1, 1, 2, 1, 1)
    );
    Ok(())
}

/// The same idempotency key in two scopes is two records.
///
/// Contract: the answers' semantics.
pub async fn scopes_keep_equal_keys_apart<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let a = Key::new("tenant-a", "same")?;
    let c = Key::new("tenant-b", "same")?;
    let claim_a = claimed(begin(b, &a, fp("x")).await?);
    let claim_c = claimed(begin(b, &c, fp("y")).await?);
    b.complete(claim_a, response("a")).await?;
    b.complete(claim_c, response("c")).await?;
    assert_eq!(replayed(begin(b, &a, fp("x")).await?), response("a"));
    assert_eq!(replayed(begin(b, &c, fp("y")).await?), response("c"));
    Ok(())
}

/// `get` shows the key, fingerprint, token, times and state, in flight and
/// completed; a completion keeps the creation time and restarts retention.
///
/// Contract: the backend's clock, the answers' semantics.
pub async fn get_reports_the_whole_record<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("inspect");
    assert!(b.get(&k).await?.is_none());
    let claim = claimed(begin(b, &k, fp("a")).await?);
    let token = info::<BackendOf<H>>(&claim).token();
    let flying = b.get(&k).await?.ok_or("the claimed record is missing")?;
    assert_eq!(flying.key(), &k);
    assert_eq!(flying.fingerprint(), fp("a"));
    assert_eq!(flying.token(), token);
    assert_eq!(flying.lease_until(), Some(flying.created_at() + LEASE));
    assert_eq!(flying.expires_at(), flying.created_at() + LEASE + RETENTION);
    assert!(flying.response().is_none());

    subject.advance(Duration::from_secs(5)).await;
    b.complete(claim, response("body")).await?;
    let done = b.get(&k).await?.ok_or("the completed record is missing")?;
    assert_eq!(done.created_at(), flying.created_at());
    assert_eq!(
        done.updated_at(),
        flying.created_at() + Duration::from_secs(5)
    );
    assert_eq!(done.expires_at(), done.updated_at() + RETENTION);
    assert_eq!(done.response(), Some(&response("body")));
    assert_eq!(done.token(), token);
    Ok(())
}

/// The longest scope and key the rules allow, every visible ASCII byte, an
/// empty body, a zero status and raw bytes in header values all round-trip.
///
/// Contract: the answers' semantics.
pub async fn keys_and_responses_round_trip_at_their_limits<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let visible: String = (b'!'..=b'~').map(char::from).collect();
    let longest = Key::new(
        &"s".repeat(MAX_SCOPE_LEN),
        &"k".repeat(MAX_IDEMPOTENCY_KEY_LEN),
    )?;
    let ascii = Key::new("scope with spaces/é", &visible)?;
    let odd = StoredResponse::new(0, Vec::new())
        .with_header("x-raw", vec![0u8, 255, 10, 13])
        .with_header("", "");
    for k in [&longest, &ascii] {
        let claim = claimed(begin(b, k, fp("a")).await?);
        b.complete(claim, odd.clone()).await?;
        assert_eq!(replayed(begin(b, k, fp("a")).await?), odd);
        let record = b.get(k).await?.ok_or("the record is missing")?;
        assert_eq!(record.key(), k);
    }
    Ok(())
}
