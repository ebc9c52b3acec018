//! A payments API made idempotent with one `.layer(...)`.
//!
//! ```text
//! cargo run --release -p idemkv-http --example payments_server -- --listen 127.0.0.1:3000 --db ./payments.redb
//! ```
//!
//! - `POST /v1/charges` with `{"amount": 1200, "currency": "eur"}` performs a
//!   simulated charge (about 50 ms) and answers 201 with a charge id;
//! - `GET /v1/charges/count` says how many charges really ran;
//! - `GET /metrics` gives the store's metrics in Prometheus text format.
//!
//! Keys are scoped by the `Authorization` header (one client's key never
//! reaches another client's charge) plus the route. See the README for curl
//! commands that show a replay, a 422 and a 409.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use idemkv::{Config, Store};
use idemkv_http::{IdempotencyLayer, credential_scope};
use serde::Deserialize;

#[derive(Clone)]
struct App {
    store: Store,
    charges: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct ChargeRequest {
    amount: u64,
    currency: String,
}

async fn charge(
    State(app): State<App>,
    Json(request): Json<ChargeRequest>,
) -> (StatusCode, Json<serde_json::Value>) {
    // The side effect: talking to a card network takes a while.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let n = app.charges.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": format!("ch_{n:06}"),
            "amount": request.amount,
            "currency": request.currency,
        })),
    )
}

async fn count(State(app): State<App>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "charges_executed": app.charges.load(Ordering::SeqCst) }))
}

async fn metrics(State(app): State<App>) -> String {
    let m = app.store.metrics();
    let mut out = String::new();
    for (name, help, value) in [
        ("claims", "begin answers of Claimed", m.claims),
        ("replays", "begin answers of Replay", m.replays),
        ("mismatches", "begin answers of Mismatch", m.mismatches),
        ("in_progress", "begin answers of InProgress", m.in_progress),
        ("waits", "begin_wait calls that parked", m.waits),
        (
            "takeovers",
            "claims that took over an expired lease",
            m.takeovers,
        ),
        ("completions", "successful completes", m.completions),
        ("releases", "successful releases", m.releases),
        ("expired", "records deleted after expiry", m.expired),
        ("commits", "write transactions", m.commits),
        (
            "committed_ops",
            "operations in write transactions",
            m.committed_ops,
        ),
    ] {
        out.push_str(&format!(
            "# HELP idemkv_{name}_total {help}\n# TYPE idemkv_{name}_total counter\nidemkv_{name}_total {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP idemkv_live_records records in the store file\n# TYPE idemkv_live_records gauge\nidemkv_live_records {}\n",
        m.live_records
    ));
    out
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Errors are printed with Display: idemkv's messages say what to do.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let listen = arg("--listen", "127.0.0.1:3000");
    let db = arg("--db", "./payments.redb");
    let store = Store::open(&db, Config::default())?;
    let app = App {
        store: store.clone(),
        charges: Arc::new(AtomicU64::new(0)),
    };
    let idempotency = IdempotencyLayer::new(store).scope_with(|parts| {
        // Hashed: the scope is stored in every record, a credential should not be.
        let principal = parts.headers.get("authorization").map_or_else(
            || "anonymous".to_string(),
            |v| credential_scope(v.as_bytes()),
        );
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or(parts.uri.path(), |m| m.as_str());
        format!("{principal} {} {route}", parts.method)
    });
    let router = Router::new()
        .route("/v1/charges", post(charge))
        .route("/v1/charges/count", get(count))
        .route("/metrics", get(metrics))
        .layer(idempotency)
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("payments server on http://{listen}, store {db}");
    axum::serve(listener, router).await?;
    Ok(())
}
