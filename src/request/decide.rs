//! The decision rule of `begin`: what a stored record (or none) means for a
//! request with a given fingerprint, at a given time.

use std::time::Duration;

use crate::model::fingerprint::Fingerprint;
use crate::model::record::{StoredRecord, StoredState};
use crate::request::outcome::Begin;

/// What `decide` asks for instead of a claim: a new claim, and whether it
/// takes over from an attempt whose lease ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClaimIntent {
    pub takeover: bool,
}

/// The whole answer rule of `begin`, in one place. It is applied twice: on the
/// read path to decide whether a write is needed, and again by the committer
/// inside the write transaction, whose answer is the one that counts.
/// `Claimed` means "write a new claim"; every other answer needs no write.
pub(crate) fn decide(
    stored: Option<StoredRecord>,
    fingerprint: &Fingerprint,
    now_ms: u64,
) -> Begin<ClaimIntent> {
    let Some(record) = stored.filter(|r| !r.is_expired(now_ms)) else {
        return Begin::Claimed(ClaimIntent { takeover: false });
    };
    if record.fingerprint != *fingerprint.as_bytes() {
        return Begin::Mismatch;
    }
    match record.state {
        StoredState::Completed { response } => Begin::Replay(response),
        StoredState::InFlight { lease_until_ms, .. } if lease_until_ms > now_ms => {
            in_progress(lease_until_ms, now_ms)
        }
        StoredState::InFlight { .. } => Begin::Claimed(ClaimIntent { takeover: true }),
    }
}

/// `InProgress` with the time left on a lease, at least 1 ms so callers never
/// spin on zero.
pub(crate) fn in_progress<C>(lease_until_ms: u64, now_ms: u64) -> Begin<C> {
    Begin::InProgress {
        retry_after: Duration::from_millis(lease_until_ms.saturating_sub(now_ms).max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::response::StoredResponse;

    fn record(fingerprint: &Fingerprint, state: StoredState, expires_at_ms: u64) -> StoredRecord {
        StoredRecord {
            scope: "s".into(),
            idempotency_key: "k".into(),
            fingerprint: *fingerprint.as_bytes(),
            token: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms,
            sweep_at_ms: expires_at_ms,
            state,
        }
    }

    const FRESH: ClaimIntent = ClaimIntent { takeover: false };
    const TAKEOVER: ClaimIntent = ClaimIntent { takeover: true };

    #[test]
    fn decide_covers_every_answer() {
        let fp = Fingerprint::of(b"a");
        let other = Fingerprint::of(b"b");
        let done = || StoredState::Completed {
            response: StoredResponse::new(200, "ok"),
        };
        let flying = || StoredState::InFlight {
            lease_until_ms: 100,
            recovery: None,
        };
        let rec = |fp: &Fingerprint, state| Some(record(fp, state, 500));

        assert!(matches!(decide(None, &fp, 0), Begin::Claimed(FRESH)));
        assert!(matches!(
            decide(rec(&fp, done()), &fp, 10),
            Begin::Replay(_)
        ));
        assert!(matches!(
            decide(rec(&fp, done()), &other, 10),
            Begin::Mismatch
        ));
        // Expired at exactly expires_at, not a millisecond before.
        assert!(matches!(
            decide(rec(&fp, done()), &fp, 499),
            Begin::Replay(_)
        ));
        assert!(matches!(
            decide(rec(&fp, done()), &other, 500),
            Begin::Claimed(FRESH)
        ));
        match decide(rec(&fp, flying()), &fp, 40) {
            Begin::InProgress { retry_after } => assert_eq!(retry_after, Duration::from_millis(60)),
            other => panic!("expected InProgress, got {other:?}"),
        }
        assert!(matches!(
            decide(rec(&fp, flying()), &fp, 100),
            Begin::Claimed(TAKEOVER)
        ));
        assert!(matches!(
            decide(rec(&fp, flying()), &other, 100),
            Begin::Mismatch
        ));
    }

    #[test]
    fn retry_after_is_never_zero() {
        let ms = |b: Begin<ClaimIntent>| match b {
            Begin::InProgress { retry_after } => retry_after.as_millis(),
            other => panic!("expected InProgress, got {other:?}"),
        };
        assert_eq!(ms(in_progress(10, 10)), 1);
        assert_eq!(ms(in_progress(10, 50)), 1);
        assert_eq!(ms(in_progress(50, 10)), 40);
    }
}
