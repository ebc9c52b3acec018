//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use idemkv::{Begin, Claim, Config, Fingerprint, Key, ManualClock, StoredResponse};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const LEASE: Duration = Duration::from_secs(60);
pub const RETENTION: Duration = Duration::from_secs(3600);
/// How long after its claim a record completed at once is swept: a
/// completion keeps its claim's expiry entry (the lease's end plus the
/// retention) when the lease is at most 1/16 of the retention, as here, so
/// it is swept one lease after it starts reading as absent.
pub const SWEPT_AFTER: Duration = Duration::from_secs(LEASE.as_secs() + RETENTION.as_secs());

/// A config on a manual clock with a 60 s lease and a 1 h retention, and no
/// background sweeper (tests that count what `sweep_expired` deletes must not
/// race it; tests/sweeper.rs turns it on).
pub fn manual_config() -> (Config, ManualClock) {
    let clock = ManualClock::default();
    let config = Config::default()
        .clock(clock.clone())
        .lease(LEASE)
        .retention(RETENTION)
        .sweep_interval(None);
    (config, clock)
}

pub fn key(name: &str) -> Key {
    Key::new("tests", name).expect("test keys are valid")
}

pub fn fp(payload: &str) -> Fingerprint {
    Fingerprint::of(payload.as_bytes())
}

pub fn response(body: &str) -> StoredResponse {
    StoredResponse::new(201, body)
        .with_header("content-type", "text/plain")
        .with_header("x-request", body)
}

#[track_caller]
pub fn claimed(begin: Begin) -> Claim {
    match begin {
        Begin::Claimed(claim) => claim,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

#[track_caller]
pub fn replayed(begin: Begin) -> StoredResponse {
    match begin {
        Begin::Replay(response) => response,
        other => panic!("expected Replay, got {other:?}"),
    }
}

#[track_caller]
pub fn in_progress(begin: Begin) -> Duration {
    match begin {
        Begin::InProgress { retry_after } => retry_after,
        other => panic!("expected InProgress, got {other:?}"),
    }
}

#[track_caller]
pub fn mismatch(begin: Begin) {
    match begin {
        Begin::Mismatch => {}
        other => panic!("expected Mismatch, got {other:?}"),
    }
}
