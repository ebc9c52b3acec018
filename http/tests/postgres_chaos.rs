//! Exactly once on the unhappy path, over real HTTP and a real database:
//! two replicas of a payments service share one PostgreSQL table, each
//! through a TCP proxy the test controls, while a chaos task, on a fixed
//! schedule, ends every replica connection on the server
//! (`pg_terminate_backend`, as a failover or a restart would), drops a
//! statement before it reaches the server, lets one land and drops its
//! answer, or stalls the network. Clients send 300 charges
//! (`IDEMKV_CHAOS_CHARGES`), each retried
//! (on either replica) until it gets its 201, and give up on a request
//! after a timeout, hanging up, as real clients do. Every charge must run
//! exactly once.
//!
//! Uses the server at 127.0.0.1:5432 (database `test`; `IDEMKV_PG_URL`
//! overrides), in a schema of its own. Unreachable: a failure with
//! `CI=true`, a printed skip otherwise.

mod support;

// The PostgreSQL tests' proxy; this test uses part of it.
#[path = "../../postgres/tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use idemkv_http::{Callers, IdempotencyLayer};
use idemkv_postgres::{PgBackend, PgConfig};
use support::url;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Charges sent: 300, or `IDEMKV_CHAOS_CHARGES`.
fn charges() -> usize {
    std::env::var("IDEMKV_CHAOS_CHARGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}
/// Clients sending them at once.
const CLIENTS: usize = 4;
/// The replicas' lease: completions are repeated for half of it.
const LEASE: Duration = Duration::from_secs(6);
/// How long a client waits for an answer before it hangs up and retries.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many times each key's charge ran, over both replicas.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<HashMap<String, u32>>>);

/// The side effect: the charge is recorded under its key, then the card
/// network takes a while.
async fn charge(State(ledger): State<Ledger>, headers: HeaderMap) -> (StatusCode, String) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let runs = {
        let mut ledger = ledger
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let runs = ledger.entry(key.clone()).or_default();
        *runs += 1;
        *runs
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    (StatusCode::CREATED, format!("charged {key} (run {runs})"))
}

/// A replica: its own pool, through its own proxy, on its own port.
async fn replica(
    schema: &str,
    application: &str,
    ledger: Ledger,
) -> Result<(String, proxy::Proxy), Box<dyn std::error::Error + Send + Sync>> {
    let proxy = proxy::Proxy::start(proxy::upstream(&url()).await?).await?;
    let url = format!(
        "{} application_name={application}",
        proxy::url_via(&url(), proxy.addr())?
    );
    let config = PgConfig::default().schema(schema).pool_size(8).lease(LEASE);
    let backend = PgBackend::connect(&url, config).await?;
    let layer = IdempotencyLayer::with_backend(backend, Callers::single_tenant())
        .wait_for_in_flight(Some(Duration::from_secs(2)));
    let router = Router::new()
        .route("/v1/charges", post(charge))
        .layer(layer)
        .with_state(ledger);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}/v1/charges", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((address, proxy))
}

/// Sends `key`'s charge, alternating replicas, until one answers 201;
/// returns that answer's body.
async fn until_created(
    client: &reqwest::Client,
    replicas: &[String; 2],
    n: usize,
    key: &str,
    attempts: &AtomicU64,
) -> String {
    for attempt in 0usize.. {
        attempts.fetch_add(1, Ordering::SeqCst);
        let sent = client
            .post(&replicas[(n + attempt) % 2])
            .header("idempotency-key", key)
            .body("{\"amount\":1200}")
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == StatusCode::CREATED
            && let Ok(body) = response.text().await
        {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the loop returns")
}

/// What the chaos task did.
#[derive(Default, Debug)]
struct Chaos {
    terminated: AtomicU64,
    cut: AtomicU64,
    lost: AtomicU64,
    stalled: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_charge_runs_once_through_resets_stalls_and_lost_answers() -> TestResult {
    let Some(admin) = support::admin().await? else {
        return Ok(());
    };
    let schema = format!("idemkv_chaos_{}", std::process::id());
    let application = format!("idemkv_chaos_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    let ledger = Ledger::default();
    let (a, proxy_a) = replica(&schema, &application, ledger.clone()).await?;
    let (b, proxy_b) = replica(&schema, &application, ledger.clone()).await?;

    // The chaos: one fault every 150 ms, in a fixed rotation, then a quiet
    // step.
    let done = Arc::new(AtomicBool::new(false));
    let chaos = Arc::new(Chaos::default());
    let chaos_task = {
        let (done, chaos) = (Arc::clone(&done), Arc::clone(&chaos));
        let proxies = [proxy_a, proxy_b];
        tokio::spawn(async move {
            let terminate = format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{application}'"
            );
            let mut step = 0usize;
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let proxy = &proxies[step % 2];
                match step % 5 {
                    0 if admin.simple_query(&terminate).await.is_ok() => {
                        chaos.terminated.fetch_add(1, Ordering::SeqCst);
                    }
                    1 => {
                        proxy.cut_next_request();
                        chaos.cut.fetch_add(1, Ordering::SeqCst);
                    }
                    2 => {
                        proxy.lose_next_answer();
                        chaos.lost.fetch_add(1, Ordering::SeqCst);
                    }
                    3 => {
                        proxy.stall(Duration::from_millis(300));
                        chaos.stalled.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
                step += 1;
            }
            admin
        })
    };

    // The clients: each charge is retried, alternating replicas, until it
    // has its 201; a client that waits too long hangs up and retries. Every
    // third charge is sent once more after its 201, as a client whose
    // response was lost on the way would: it must get the same answer.
    let client = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build()?;
    let total = charges();
    let next = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, next, attempts, answers) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&attempts),
            Arc::clone(&answers),
        );
        let replicas = [a.clone(), b.clone()];
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                if n >= total {
                    return;
                }
                let key = format!("order-{n}");
                let sends = if n.is_multiple_of(3) { 2 } else { 1 };
                for _ in 0..sends {
                    let body = until_created(&client, &replicas, n, &key, &attempts).await;
                    let mut answers = answers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(first) = answers.get(&key)
                        && first != &body
                    {
                        panic!("{key}: the retry got {body:?}, the first request {first:?}");
                    }
                    answers.insert(key.clone(), body);
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    done.store(true, Ordering::SeqCst);
    let admin = chaos_task.await?;
    // Handlers of clients that hung up ran on; every one has finished once
    // its key answered 201.
    let ledger = ledger.0.lock().map_err(|_| "poisoned")?.clone();
    let answers = answers.lock().map_err(|_| "poisoned")?.clone();
    let twice: Vec<_> = ledger.iter().filter(|(_, runs)| **runs > 1).collect();
    eprintln!(
        "{total} charges, {} requests, chaos: {chaos:?}; charges run more than once: {}",
        attempts.load(Ordering::SeqCst),
        twice.len()
    );
    assert!(twice.is_empty(), "charges run more than once: {twice:?}");
    assert_eq!(answers.len(), total, "every charge answered");
    assert_eq!(ledger.len(), total, "every charge ran");
    for (key, body) in &answers {
        assert_eq!(
            body,
            &format!("charged {key} (run 1)"),
            "the first run's answer"
        );
    }
    assert!(
        chaos.terminated.load(Ordering::SeqCst) > 0,
        "the chaos never ran: the test proves nothing"
    );
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
