//! The PostgreSQL backend's metrics, as payments_server's `/metrics` serves
//! them in `--postgres` mode: its outcome counters under the embedded
//! store's names and its pool's state, rendered by the Prometheus exporter.
//!
//! Uses the server at 127.0.0.1:5432 (database `test`; `IDEMKV_PG_URL`
//! overrides), in a schema of its own. Unreachable: a failure with
//! `CI=true`, a printed skip otherwise.

mod support;

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_postgres::{PgBackend, PgConfig};
use support::url;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_publishes_its_counters_and_its_pool() -> TestResult {
    let schema = format!("idemkv_metrics_test_{}", std::process::id());
    let Some(admin) = support::admin().await? else {
        return Ok(());
    };
    let backend = PgBackend::connect(&url(), PgConfig::default().schema(&schema)).await?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let key = Key::new("payments", "order-1")?;
    let fp = Fingerprint::of(b"{}");
    let Begin::Claimed(claim) = backend.begin(&key, fp, Terms::default()).await? else {
        return Err("a fresh key was not claimed".into());
    };
    backend
        .complete(claim, StoredResponse::new(201, "ch_1"))
        .await?;
    let _replay = backend.begin(&key, fp, Terms::default()).await?;
    backend.publish_metrics();
    let text = prometheus.render();
    for line in [
        "idemkv_claims_total 1",
        "idemkv_completions_total 1",
        "idemkv_replays_total 1",
        "idemkv_pg_timeouts_total 0",
        "idemkv_pg_pool_waiting 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("idemkv_pg_pool_connections ")),
        "{text}"
    );

    // A second backend in the process, named: its metrics are apart from
    // the first one's.
    let named = PgBackend::connect(
        &url(),
        PgConfig::default()
            .schema(&schema)
            .metrics_label("replica_b"),
    )
    .await?;
    let other = Key::new("payments", "order-2")?;
    let _claimed = named.begin(&other, fp, Terms::default()).await?;
    named.publish_metrics();
    backend.publish_metrics();
    let text = prometheus.render();
    for line in [
        "idemkv_claims_total 1",
        "idemkv_claims_total{store=\"replica_b\"} 1",
        "idemkv_replays_total{store=\"replica_b\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
