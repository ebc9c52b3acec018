//! Push wake-ups across replicas: a waiting `begin` on one backend gets the
//! holder's response as soon as another backend (its own pool, as another
//! replica would have) completes the key, through `LISTEN`/`NOTIFY`; its
//! polling is set to look only once a minute, so only the push can answer
//! within the test's bound. A release wakes a waiter likewise, which then
//! claims the key itself.

mod support;

use std::time::{Duration, Instant};

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_conformance::BoxError;
use idemkv_postgres::{PgBackend, PgConfig};

/// Far below the polling interval: an answer within it came by push.
const BOUND: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(120);

async fn replica(schema: &str) -> Result<PgBackend, BoxError> {
    let config = PgConfig::default()
        .schema(schema)
        .lease(Duration::from_secs(600))
        .wait_polling(POLL, POLL)
        .pool_size(2);
    let backend = PgBackend::connect(&support::url(), config).await?;
    // The listening connection comes up on its own task.
    let started = Instant::now();
    while !backend.listening() {
        if started.elapsed() > BOUND {
            return Err("the listening connection never came up".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(backend)
}

/// A waiting `begin` on `key` through `waiter`, on a task of its own, once it
/// is parked (it counted its wait).
async fn park(
    waiter: &PgBackend,
    key: &Key,
    fp: Fingerprint,
) -> tokio::task::JoinHandle<idemkv::Result<Begin<idemkv_postgres::PgClaim>>> {
    let parked = waiter.metrics().waits;
    let waiting = {
        let (waiter, key) = (waiter.clone(), key.clone());
        tokio::spawn(async move {
            waiter
                .begin(&key, fp, Terms::default().wait(Duration::from_secs(3600)))
                .await
        })
    };
    while waiter.metrics().waits == parked {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    waiting
}

async fn wakeups() -> Result<(), BoxError> {
    let _admin = support::connect().await?;
    let schema = support::fresh_schema();
    let holder = replica(&schema).await?;
    let waiter = replica(&schema).await?;
    let fp = Fingerprint::of(b"{}");

    // A completion on the holder's replica answers the waiter's.
    let key = Key::new("payments", "order-1")?;
    let Begin::Claimed(claim) = holder.begin(&key, fp, Terms::default()).await? else {
        return Err("a fresh key was not claimed".into());
    };
    let waiting = park(&waiter, &key, fp).await;
    let response = StoredResponse::new(201, "ch_1");
    holder.complete(claim, response.clone()).await?;
    let answer = tokio::time::timeout(BOUND, waiting)
        .await
        .map_err(|_| "the completion did not wake the waiter on the other replica")???;
    match answer {
        Begin::Replay(stored) => assert_eq!(stored, response),
        other => return Err(format!("expected the replay, got {other:?}").into()),
    }

    // A release wakes a waiter, which claims the key.
    let key = Key::new("payments", "order-2")?;
    let Begin::Claimed(claim) = holder.begin(&key, fp, Terms::default()).await? else {
        return Err("a fresh key was not claimed".into());
    };
    let waiting = park(&waiter, &key, fp).await;
    holder.release(claim).await?;
    let answer = tokio::time::timeout(BOUND, waiting)
        .await
        .map_err(|_| "the release did not wake the waiter on the other replica")???;
    assert!(matches!(answer, Begin::Claimed(_)), "{answer:?}");
    support::drop_schema(&schema);
    Ok(())
}

#[test]
fn a_completion_or_release_on_one_replica_wakes_waiters_on_another() {
    idemkv_conformance::run(wakeups());
}
