//! A network partition that drops packets silently (no reset, as a cloud
//! firewall or a dead route does), made by a proxy the test controls
//! between the backend's pool and the server: every call answers
//! `Unavailable` (transient) within `PgConfig::call_timeout` instead of
//! hanging, a completion hands its claim back, and once the network heals
//! the same backend serves again and the completion lands once.

mod support;

use std::time::{Duration, Instant};

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms, complete_with_retry};
use idemkv_conformance::BoxError;
use idemkv_postgres::{PgBackend, PgConfig};
use support::proxy::{Proxy, upstream, url_via};

type TestResult = Result<(), BoxError>;

/// The bound under test.
const BOUND: Duration = Duration::from_millis(300);

/// Fails the test if `call` has not answered long after the bound: a hang.
async fn answers<T>(what: &str, call: impl Future<Output = T>) -> Result<T, BoxError> {
    let started = Instant::now();
    let answer = tokio::time::timeout(BOUND * 40, call)
        .await
        .map_err(|_| format!("{what} hung through the partition"))?;
    eprintln!("{what} answered in {:?}", started.elapsed());
    Ok(answer)
}

async fn a_partition_turns_into_unavailable_within_the_bound() -> TestResult {
    let _admin = support::connect().await?;
    let proxy = Proxy::start(upstream(&support::url()).await?).await?;
    let config = PgConfig::default()
        .schema(support::fresh_schema())
        .pool_size(2)
        .call_timeout(BOUND)
        .connect_timeout(BOUND);
    let backend = PgBackend::connect(&url_via(&support::url(), proxy.addr())?, config).await?;
    let fp = Fingerprint::of(b"{\"amount\":1200}");
    let held = Key::new("payments", "held")?;
    let Begin::Claimed(claim) = backend.begin(&held, fp, Terms::default()).await? else {
        return Err("a fresh key was not claimed".into());
    };

    proxy.stall(Duration::from_secs(3600));
    let other = Key::new("payments", "other")?;
    let begin = answers("begin", backend.begin(&other, fp, Terms::default())).await?;
    let err = begin
        .err()
        .ok_or("a begin succeeded through the partition")?;
    assert!(err.is_transient(), "{err}");
    let get = answers("get", backend.get(&held)).await?;
    assert!(get.is_err_and(|e| e.is_transient()));
    let response = StoredResponse::new(201, "ch_1");
    let complete = answers("complete", backend.complete(claim, response.clone())).await?;
    let err = complete
        .err()
        .ok_or("a completion succeeded through the partition")?;
    assert!(err.error().is_transient(), "{}", err.error());
    let claim = err.into_claim().ok_or("the claim must come back")?;
    assert!(backend.timed_out_calls() >= 3);

    // The network heals: the same backend serves again, and the completion
    // repeated lands once.
    proxy.end_stall();
    answers(
        "the repeated completion",
        complete_with_retry(&backend, claim, response.clone(), Duration::from_secs(30)),
    )
    .await??;
    match backend.begin(&held, fp, Terms::default()).await? {
        Begin::Replay(stored) => assert_eq!(stored, response),
        other => return Err(format!("expected the replay, got {other:?}").into()),
    }
    assert!(matches!(
        backend.begin(&other, fp, Terms::default()).await?,
        Begin::Claimed(_)
    ));
    Ok(())
}

#[test]
fn a_partition_turns_into_unavailable_within_the_bound_then_heals() {
    idemkv_conformance::run(a_partition_turns_into_unavailable_within_the_bound());
}
