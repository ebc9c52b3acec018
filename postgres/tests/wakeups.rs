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

/// Waits until `ready` (a query answering one boolean) says true.
async fn until(admin: &tokio_postgres::Client, what: &str, ready: &str) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        if admin.query_one(ready, &[]).await?.get::<_, bool>(0) {
            return Ok(());
        }
        if started.elapsed() > BOUND {
            return Err(format!("{what} never happened").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The race behind a lost wake-up, arranged rather than waited for: the
/// holder's completion has run its statement (the wake trigger found no
/// waiter to notify) but not committed, when a waiter on another replica
/// records its wait and looks at the record. The test holds the
/// completion there with an advisory lock that a deferred trigger of its
/// own takes at commit, starts the waiter, lets it reach its record of the
/// wait (committed, or blocked behind the completion's row), and then lets
/// the completion commit. The waiter must get the replay by push or by its
/// look after the record: its polling is two minutes away.
async fn a_completion_between_its_trigger_and_its_commit() -> Result<(), BoxError> {
    const HOLD: i64 = 0x1de3_0001;
    let admin = support::connect().await?;
    let schema = support::fresh_schema();
    let holder = replica(&schema).await?;
    let waiter = replica(&schema).await?;
    let fp = Fingerprint::of(b"{}");
    let key = Key::new("payments", "order-3")?;
    let Begin::Claimed(claim) = holder.begin(&key, fp, Terms::default()).await? else {
        return Err("a fresh key was not claimed".into());
    };
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".hold_commit() RETURNS trigger LANGUAGE plpgsql AS $hold$
             BEGIN PERFORM pg_advisory_xact_lock({HOLD}); RETURN NULL; END $hold$;
             CREATE CONSTRAINT TRIGGER hold_commit AFTER UPDATE ON \"{schema}\".idemkv_records
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                 EXECUTE FUNCTION \"{schema}\".hold_commit();
             SELECT pg_advisory_lock({HOLD});"
        ))
        .await?;
    let response = StoredResponse::new(201, "ch_3");
    let completing = {
        let (holder, response) = (holder.clone(), response.clone());
        tokio::spawn(async move { holder.complete(claim, response).await })
    };
    until(
        &admin,
        "the completion waiting to commit",
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                             WHERE locktype = 'advisory' AND objid = {HOLD} AND NOT granted)"
        ),
    )
    .await?;
    let waiting = park(&waiter, &key, fp).await;
    // The waiter has recorded its wait, or waits for the completion's
    // row lock to do so.
    until(
        &admin,
        "the waiter's record of its wait",
        &format!(
            "SELECT EXISTS (SELECT 1 FROM \"{schema}\".idemkv_records_waiting)
                 OR EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE wait_event_type = 'Lock'
                               AND query LIKE '%{schema}%idemkv_records_waiting%')"
        ),
    )
    .await?;
    admin
        .execute(&format!("SELECT pg_advisory_unlock({HOLD})"), &[])
        .await?;
    completing
        .await?
        .map_err(|err| format!("the completion failed: {}", err.error()))?;
    let answer = tokio::time::timeout(BOUND, waiting).await.map_err(
        |_| "a completion that committed after its trigger ran did not wake the waiter",
    )???;
    match answer {
        Begin::Replay(stored) => assert_eq!(stored, response),
        other => return Err(format!("expected the replay, got {other:?}").into()),
    }
    support::drop_schema(&schema);
    Ok(())
}

#[test]
fn a_completion_that_commits_after_a_waiter_looked_still_wakes_it() {
    idemkv_conformance::run(a_completion_between_its_trigger_and_its_commit());
}
