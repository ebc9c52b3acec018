//! Unwrapping the answer a case expects, with a message naming the answer it
//! got instead.

use std::fmt::Debug;
use std::time::Duration;

use idemkv::{Begin, StoredResponse};

/// The claim of a `Claimed` answer; panics on any other.
#[track_caller]
pub fn claimed<C: Debug>(begin: Begin<C>) -> C {
    match begin {
        Begin::Claimed(claim) => claim,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

/// The response of a `Replay` answer; panics on any other.
#[track_caller]
pub fn replayed<C: Debug>(begin: Begin<C>) -> StoredResponse {
    match begin {
        Begin::Replay(response) => response,
        other => panic!("expected Replay, got {other:?}"),
    }
}

/// The `retry_after` of an `InProgress` answer; panics on any other.
#[track_caller]
pub fn in_progress<C: Debug>(begin: Begin<C>) -> Duration {
    match begin {
        Begin::InProgress { retry_after } => retry_after,
        other => panic!("expected InProgress, got {other:?}"),
    }
}

/// Checks for a `Mismatch` answer; panics on any other.
#[track_caller]
pub fn mismatch<C: Debug>(begin: Begin<C>) {
    match begin {
        Begin::Mismatch => {}
        other => panic!("expected Mismatch, got {other:?}"),
    }
}
