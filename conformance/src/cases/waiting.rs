//! A `begin` that waits (`Terms::wait`): a waiter gets the holder's outcome (its response, or the
//! key after a release), or `InProgress` at its timeout; racing attempts
//! have exactly one winner.

use std::time::Duration;

use idemkv::{Backend, Begin, Key};
use tokio::task::JoinHandle;

use super::{BackendOf, begin, begin_waiting, fp, info, key, response, until_waiting};
use crate::expect::{claimed, in_progress, mismatch, replayed};
use crate::{BoxError, Harness, Outcome, Setup, Subject};

/// How long the suite's waiters wait before they would time out.
const PATIENCE: Duration = Duration::from_secs(30);

/// A task waiting on `key` (payload "a"), returned once the backend counts
/// it as waiting.
async fn parked_waiter<B: Backend>(
    backend: &B,
    key: &Key,
) -> Result<JoinHandle<idemkv::Result<Begin<B::Claim>>>, BoxError> {
    let waiters_before = backend.metrics().waits;
    let waiter = {
        let (b, k) = (backend.clone(), key.clone());
        tokio::spawn(async move { begin_waiting(&b, &k, fp("a"), PATIENCE).await })
    };
    until_waiting(backend, waiters_before + 1).await?;
    Ok(waiter)
}

/// A waiter parked on a running claim gets the response it completes with.
///
/// Contract: one live claim, the answers' semantics.
pub async fn a_wait_returns_the_holders_response<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("wait-complete");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    let waiter = parked_waiter(b, &k).await?;
    b.complete(claim, response("waited")).await?;
    assert_eq!(replayed(waiter.await??), response("waited"));
    let m = b.metrics();
    assert_eq!((m.waits, m.replays, m.in_progress), (1, 1, 0));
    Ok(())
}

/// A waiter parked on a claim that is released claims the key itself.
///
/// Contract: one live claim, the answers' semantics.
pub async fn a_wait_claims_after_a_release<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("wait-release");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    let waiter = parked_waiter(b, &k).await?;
    b.release(claim).await?;
    let second = claimed(waiter.await??);
    b.complete(second, response("second")).await?;
    Ok(())
}

/// A waiter whose timeout passes first is told `InProgress`; another
/// payload is a mismatch at once, without waiting.
///
/// Contract: the backend's clock, the answers' semantics.
pub async fn a_wait_times_out_as_in_progress<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("wait-timeout");
    let _claim = claimed(begin(b, &k, fp("a")).await?);
    in_progress(begin_waiting(b, &k, fp("a"), Duration::from_millis(20)).await?);
    mismatch(begin_waiting(b, &k, fp("b"), Duration::from_millis(20)).await?);
    let m = b.metrics();
    assert_eq!((m.waits, m.in_progress, m.mismatches), (1, 1, 1));
    Ok(())
}

/// A free key is claimed at once; nothing waits.
///
/// Contract: the answers' semantics.
pub async fn a_wait_on_a_free_key_claims_at_once<H: Harness>(harness: &H) -> Outcome {
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let claim = claimed(begin_waiting(b, &key("free"), fp("a"), Duration::ZERO).await?);
    b.release(claim).await?;
    assert_eq!(b.metrics().waits, 0);
    Ok(())
}

/// Attempts racing on one key from many tasks: exactly one claims, and
/// every other gets the winner's response, whether it arrived while the
/// winner ran (and waited) or after.
///
/// Contract: one live claim, the answers' semantics.
pub async fn racing_attempts_have_one_winner_and_every_loser_its_response<H: Harness>(
    harness: &H,
) -> Outcome {
    const RACERS: usize = 32;
    let subject = harness.open(Setup::default()).await?;
    let b = subject.backend();
    let k = key("race");
    let mut racers = Vec::with_capacity(RACERS);
    for racer in 0..RACERS {
        let (b, k) = (b.clone(), k.clone());
        racers.push(tokio::spawn(async move {
            match begin_waiting(&b, &k, fp("a"), PATIENCE).await? {
                Begin::Claimed(claim) => {
                    tokio::task::yield_now().await;
                    let token = info::<BackendOf<H>>(&claim).token();
                    let answer = response(&format!("racer {racer} with token {token}"));
                    b.complete(claim, answer.clone()).await?;
                    Ok::<_, idemkv::Error>((true, answer))
                }
                other => Ok((false, replayed(other))),
            }
        }));
    }
    let mut answers = Vec::with_capacity(RACERS);
    for racer in racers {
        answers.push(racer.await??);
    }
    let winners: Vec<_> = answers.iter().filter(|(won, _)| *won).collect();
    assert_eq!(winners.len(), 1, "exactly one racer claims");
    let winning = &winners[0].1;
    assert!(answers.iter().all(|(_, answer)| answer == winning));
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), *winning);
    let m = b.metrics();
    assert_eq!((m.claims, m.completions), (1, 1));
    Ok(())
}
