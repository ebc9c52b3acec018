//! Two instances of a service, on two ports, sharing one PostgreSQL table
//! through the layer: a retry sent to the other instance replays, and
//! duplicates spread over both run the handler once.
//!
//! Uses the server at 127.0.0.1:5432 (database `test`; `IDEMKV_PG_URL`
//! overrides), in a schema of its own. Unreachable: a failure with
//! `CI=true`, a printed skip otherwise.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use idemkv_http::{Callers, IdempotencyLayer};
use idemkv_postgres::{PgBackend, PgConfig};
use support::url;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The side effect, counted over both instances.
async fn charge(State(executions): State<Arc<AtomicU64>>, body: String) -> (StatusCode, String) {
    let n = executions.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    (StatusCode::CREATED, format!("charge #{n} for {body}"))
}

/// An instance: its own pool on the shared table, its own port.
async fn instance(
    schema: &str,
    executions: Arc<AtomicU64>,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let backend =
        PgBackend::connect(&url(), PgConfig::default().schema(schema).pool_size(4)).await?;
    let layer = IdempotencyLayer::with_backend(backend, Callers::single_tenant())
        .wait_for_in_flight(Some(std::time::Duration::from_secs(30)));
    let router = Router::new()
        .route("/v1/charges", post(charge))
        .layer(layer)
        .with_state(executions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/charges", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sent_to_the_other_instance_replays() -> TestResult {
    let Some(admin) = support::admin().await? else {
        return Ok(());
    };
    let schema = format!("idemkv_http_test_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    let executions = Arc::new(AtomicU64::new(0));
    let a = instance(&schema, Arc::clone(&executions)).await?;
    let b = instance(&schema, Arc::clone(&executions)).await?;
    let client = reqwest::Client::new();
    let post = |url: &str, key: &str| {
        client
            .post(url)
            .header("idempotency-key", key)
            .header("authorization", "Bearer alice")
            .body("{\"amount\":1200}")
            .send()
    };

    let first = post(&a, "order-1").await?;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await?;
    let retry = post(&b, "order-1").await?;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await?, first_body);
    assert_eq!(executions.load(Ordering::SeqCst), 1);

    // Twenty duplicates at once, spread over both instances: one execution,
    // one response for all.
    let duplicates: Vec<_> = (0..20)
        .map(|i| post(if i % 2 == 0 { &a } else { &b }, "order-2"))
        .collect();
    let mut bodies = std::collections::HashSet::new();
    for response in futures_join_all(duplicates).await {
        let response = response?;
        assert_eq!(response.status(), 201);
        bodies.insert(response.text().await?);
    }
    assert_eq!(bodies.len(), 1, "every duplicate got the one response");
    assert_eq!(executions.load(Ordering::SeqCst), 2);
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// Awaits every future concurrently (spawned), in order.
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(output) => outputs.push(output),
            Err(err) => panic!("a request task failed: {err}"),
        }
    }
    outputs
}
