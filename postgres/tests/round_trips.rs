//! How many round trips each operation takes once its statements are
//! prepared on the connection, counted by a proxy between the pool and the
//! server: a claiming `begin` two (read the key, claim it), a replay one, a
//! `complete` one, and none of them prepares a statement again. With
//! unnamed statements each round trip parses its statement too, and the
//! counts are the same.

mod support;

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_conformance::BoxError;
use idemkv_postgres::{PgBackend, PgConfig};
use support::proxy::{Proxy, upstream, url_via};

async fn round_trips(unnamed: bool) -> Result<(), BoxError> {
    let _admin = support::connect().await?;
    let proxy = Proxy::start(upstream(&support::url()).await?).await?;
    // One connection, so that every statement runs where it was prepared.
    let config = PgConfig::default()
        .schema(support::fresh_schema())
        .pool_size(1)
        .unnamed_statements(unnamed);
    let backend = PgBackend::connect(&url_via(&support::url(), proxy.addr())?, config).await?;
    let fp = Fingerprint::of(b"{}");
    let response = StoredResponse::new(201, "ch_1");
    // The first claim, completion and replay prepare their statements.
    let claim_of = |answer: Begin<_>| match answer {
        Begin::Claimed(claim) => Ok(claim),
        other => Err(format!("expected a claim, got {other:?}")),
    };
    let warm = Key::new("payments", "warm-up")?;
    let claim = claim_of(backend.begin(&warm, fp, Terms::default()).await?)?;
    backend.complete(claim, response.clone()).await?;
    let _replay = backend.begin(&warm, fp, Terms::default()).await?;
    let (parsed, _) = proxy.take_round_trips();
    assert!(
        parsed >= 3,
        "the first uses prepared their statements ({parsed})"
    );

    // Named: run by name (Bind first). Unnamed: parsed and run in the same
    // round trip (Parse first), every time.
    let trips = |n: u64| if unnamed { (n, 0) } else { (0, n) };
    let key = Key::new("payments", "order-1")?;
    let claim = claim_of(backend.begin(&key, fp, Terms::default()).await?)?;
    assert_eq!(proxy.take_round_trips(), trips(2), "a claiming begin");
    backend.complete(claim, response.clone()).await?;
    assert_eq!(proxy.take_round_trips(), trips(1), "a completion");
    assert!(matches!(
        backend.begin(&key, fp, Terms::default()).await?,
        Begin::Replay(_)
    ));
    assert_eq!(proxy.take_round_trips(), trips(1), "a replay");
    Ok(())
}

#[test]
fn each_operation_takes_its_minimum_round_trips() {
    idemkv_conformance::run(round_trips(false));
}

#[test]
fn unnamed_statements_take_as_many_round_trips() {
    idemkv_conformance::run(round_trips(true));
}
