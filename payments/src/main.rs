//! A payments API made idempotent with one `.layer(...)`.
//!
//! ```text
//! cargo run --release -p payments-server -- --listen 127.0.0.1:3000 --db ./payments.redb
//! cargo run --release -p payments-server --features postgres -- --listen 127.0.0.1:3001 --postgres 'host=127.0.0.1 user=postgres dbname=test'
//! cargo run --release -p payments-server -- --help
//! ```
//!
//! With `--postgres URL` (built with the `postgres` feature) the records
//! live in a PostgreSQL table that any number of instances share: a retry
//! sent to another instance replays.
//!
//! - `POST /v1/charges` with `{"amount": 1200, "currency": "eur"}` performs a
//!   simulated charge (about 50 ms) and answers 201 with a charge id;
//! - `GET /v1/charges/count` says how many charges really ran;
//! - `GET /metrics` gives the store's metrics in Prometheus text format
//!   (counters, gauges and latency summaries, through the `metrics` facade
//!   and metrics-exporter-prometheus; docs/grafana/idemkv.json charts them);
//!   with `--postgres`, the backend's counters and its pool's state.
//!
//! With `--admin`, the operator's view of the store, as `idemkv` (the command
//! line) gives of a file no process holds (see docs/operations.md); these
//! routes have no authentication, so bind to a private address:
//!
//! - `GET /admin/stats`: counts by state, claims past their lease, top
//!   scopes, the oldest claim, file size and free space, last sweep;
//! - `GET /admin/records?state=in-flight|completed&scope=PREFIX&stuck=true&limit=N`:
//!   records, filtered (`stuck=true`: in-flight claims past their lease);
//! - `DELETE /admin/records?scope=SCOPE&key=KEY`: removes one record (a stuck
//!   key's next attempt then runs again).
//!
//! Callers authenticate with `Authorization: Bearer <API key>`; the
//! [`authenticate`] middleware maps the API key to the account it belongs to
//! and puts that account in the request as an [`idemkv_http::Principal`].
//! The idempotency layer keeps keys per account (`Callers::by_principal`),
//! not per credential: an account's two API keys (`sk_test_alice` and
//! `sk_test_alice_rotated`, as during a key rotation) share its keys, so a
//! retry sent with the new API key replays; two accounts never share a
//! record. See the README for curl commands that show a replay, a 422 and a
//! 409.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use idemkv::{Backend, Config, Key, Record, RecordStateFilter, ScanFilter, Store};
use idemkv_http::{Callers, IdempotencyLayer, Principal};
#[cfg(feature = "postgres")]
use idemkv_postgres::{PgBackend, PgConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;

/// A payments API behind idemkv's idempotency layer: a retry with the same
/// Idempotency-Key replays the first answer instead of charging again.
#[derive(Parser)]
#[command(name = "payments_server")]
struct Args {
    /// Address to serve on; its port also names this instance in charge ids.
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "HOST:PORT")]
    listen: String,
    /// The embedded store's file (created if missing).
    #[arg(long, default_value = "./payments.redb", value_name = "FILE")]
    db: std::path::PathBuf,
    /// Keep the records in PostgreSQL instead, shared by every instance
    /// given the same database (needs the `postgres` feature).
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    postgres: Option<String>,
    /// Mount the operator's routes (/admin/stats, /admin/records) for the
    /// embedded store. They have no authentication: bind to a private
    /// address.
    #[arg(long)]
    admin: bool,
}

#[derive(Clone)]
struct App {
    /// The embedded store, for the admin routes (`None` on PostgreSQL).
    store: Option<Store>,
    /// The PostgreSQL backend, whose counters `/metrics` publishes before
    /// rendering (`None` on the embedded store, which publishes its own).
    #[cfg(feature = "postgres")]
    postgres: Option<PgBackend>,
    charges: Arc<AtomicU64>,
    /// This instance's port, in its charge ids: two instances sharing a
    /// table never issue the same id.
    instance: String,
    prometheus: PrometheusHandle,
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
            "id": format!("ch_{}_{n:06}", app.instance),
            "amount": request.amount,
            "currency": request.currency,
        })),
    )
}

/// The accounts' API keys. An account may hold two at once while it
/// rotates one; both name the same account, and so the same keys.
const API_KEYS: &[(&str, &str)] = &[
    ("sk_test_alice", "acct_alice"),
    ("sk_test_alice_rotated", "acct_alice"),
    ("sk_test_bob", "acct_bob"),
];

/// The API's authentication: `Authorization: Bearer <API key>` names an
/// account, which goes into the request as its [`Principal`]; anything else
/// is a 401 before the idempotency layer sees the request.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let account = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "))
        .and_then(|key| API_KEYS.iter().find(|(k, _)| *k == key))
        .map(|(_, account)| *account);
    match account {
        Some(account) => {
            request.extensions_mut().insert(Principal::new(account));
            next.run(request).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "send Authorization: Bearer <API key>" })),
        )
            .into_response(),
    }
}

async fn count(State(app): State<App>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "charges_executed": app.charges.load(Ordering::SeqCst) }))
}

/// The store's counters, gauges and latency histograms (published through
/// the `metrics` facade by idemkv's `metrics` feature), or on PostgreSQL the
/// backend's counters and its pool's state (`PgBackend::publish_metrics`),
/// rendered by the Prometheus exporter.
async fn metrics(State(app): State<App>) -> String {
    #[cfg(feature = "postgres")]
    if let Some(backend) = &app.postgres {
        backend.publish_metrics();
    }
    app.prometheus.render()
}

/// Milliseconds since the Unix epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type AdminAnswer = (StatusCode, Json<serde_json::Value>);

fn admin_error(status: StatusCode, message: impl ToString) -> AdminAnswer {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
}

/// Runs a store call that reads or writes the file off the async workers.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> idemkv::Result<T> + Send + 'static,
) -> Result<T, AdminAnswer> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(admin_error(StatusCode::SERVICE_UNAVAILABLE, err)),
        Err(err) => Err(admin_error(StatusCode::INTERNAL_SERVER_ERROR, err)),
    }
}

async fn admin_stats(State(app): State<App>) -> AdminAnswer {
    let store = match admin_store(&app) {
        Ok(store) => store,
        Err(answer) => return answer,
    };
    let stats = match off_runtime(move || store.stats()).await {
        Ok(stats) => stats,
        Err(answer) => return answer,
    };
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "in_flight": stats.in_flight,
            "past_lease": stats.past_lease,
            "completed": stats.completed,
            "expired": stats.expired,
            "damaged": stats.damaged,
            "top_scopes": stats.top_scopes,
            "oldest_in_flight": stats.oldest_in_flight.as_ref().map(|(key, at)| serde_json::json!({
                "scope": key.scope(), "key": key.idempotency_key(), "created_at_ms": millis(*at),
            })),
            "expiring_within_hour": stats.expiring_within_hour,
            "file_bytes": stats.file_bytes,
            "reclaimable_bytes": stats.reclaimable_bytes(),
            "last_sweep_ms": stats.last_sweep.map(millis),
        })),
    )
}

fn record_json(record: &Record) -> serde_json::Value {
    serde_json::json!({
        "scope": record.key().scope(),
        "key": record.key().idempotency_key(),
        "state": if record.lease_until().is_some() { "in_flight" } else { "completed" },
        "token": record.token(),
        "created_at_ms": millis(record.created_at()),
        "expires_at_ms": millis(record.expires_at()),
        "lease_until_ms": record.lease_until().map(millis),
        "status": record.response().map(|r| r.status()),
    })
}

async fn admin_records(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
) -> AdminAnswer {
    let mut filter = ScanFilter::default().limit(
        query
            .get("limit")
            .and_then(|n| n.parse().ok())
            .unwrap_or(100),
    );
    match query.get("state").map(String::as_str) {
        None => {}
        Some("in-flight") => filter = filter.state(RecordStateFilter::InFlight),
        Some("completed") => filter = filter.state(RecordStateFilter::Completed),
        Some(other) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                format!("state {other:?}: use in-flight or completed"),
            );
        }
    }
    if let Some(prefix) = query.get("scope") {
        filter = filter.scope_prefix(prefix.clone());
    }
    if query.get("stuck").is_some_and(|v| v == "true") {
        filter = filter.lease_ended_by(SystemTime::now());
    }
    let store = match admin_store(&app) {
        Ok(store) => store,
        Err(answer) => return answer,
    };
    let scanned = off_runtime(move || {
        let mut records = Vec::new();
        store.scan(&filter, |record| {
            if let Ok(record) = record {
                records.push(record_json(&record));
            }
            ControlFlow::Continue(())
        })?;
        Ok(records)
    });
    match scanned.await {
        Ok(records) => (StatusCode::OK, Json(serde_json::Value::Array(records))),
        Err(answer) => answer,
    }
}

async fn admin_remove(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
) -> AdminAnswer {
    let (Some(scope), Some(key)) = (query.get("scope"), query.get("key")) else {
        return admin_error(StatusCode::BAD_REQUEST, "give scope=...&key=...");
    };
    let key = match Key::new(scope, key) {
        Ok(key) => key,
        Err(err) => return admin_error(StatusCode::BAD_REQUEST, err),
    };
    let store = match admin_store(&app) {
        Ok(store) => store,
        Err(answer) => return answer,
    };
    match off_runtime(move || store.remove(&key)).await {
        Ok(removed) => (
            StatusCode::OK,
            Json(serde_json::json!({ "removed": removed })),
        ),
        Err(answer) => answer,
    }
}

/// The embedded store the admin routes read (they are mounted only with one).
fn admin_store(app: &App) -> Result<Store, AdminAnswer> {
    app.store.clone().ok_or_else(|| {
        admin_error(
            StatusCode::NOT_FOUND,
            "the admin routes inspect the embedded store",
        )
    })
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
    let args = Args::parse();
    let instance = args.listen.rsplit(':').next().unwrap_or("0").to_string();
    // The recorder first: the store takes its metric handles when it opens.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let charges = Arc::new(AtomicU64::new(0));
    let (router, on) = match &args.postgres {
        // Replicas share one table: a retry that lands on another instance
        // replays. Inspect it with SQL; the admin routes are the embedded
        // store's.
        #[cfg(feature = "postgres")]
        Some(url) => {
            let backend = PgBackend::connect(url, PgConfig::default()).await?;
            let app = App {
                store: None,
                postgres: Some(backend.clone()),
                charges,
                instance: instance.clone(),
                prometheus,
            };
            let on = format!("PostgreSQL table {}", backend.table());
            (
                routes(
                    IdempotencyLayer::with_backend(backend, Callers::by_principal()),
                    app,
                    false,
                ),
                on,
            )
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => {
            return Err("this build has no PostgreSQL client: run it with \
                        `cargo run --release -p payments-server --features postgres -- ...`"
                .into());
        }
        None => {
            let store = Store::open(&args.db, Config::default())?;
            let app = App {
                store: Some(store.clone()),
                #[cfg(feature = "postgres")]
                postgres: None,
                charges,
                instance: instance.clone(),
                prometheus,
            };
            (
                routes(
                    IdempotencyLayer::new(store, Callers::by_principal()),
                    app,
                    args.admin,
                ),
                format!("store {}", args.db.display()),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("payments server on http://{}, {on}", args.listen);
    axum::serve(listener, router).await?;
    Ok(())
}

/// The API behind the layer, and with `--admin` (embedded store only) the
/// operator's routes beside it.
fn routes<B: Backend>(idempotency: IdempotencyLayer<B>, app: App, admin: bool) -> Router {
    // Authentication wraps the idempotency layer (the later `.layer` runs
    // first), so the layer sees each request's account.
    let charges = Router::new()
        .route("/v1/charges", post(charge))
        .layer(idempotency)
        .layer(from_fn(authenticate));
    let mut router = Router::new()
        .route("/v1/charges/count", get(count))
        .route("/metrics", get(metrics))
        .merge(charges);
    if admin && app.store.is_some() {
        // Outside the idempotency layer: operator calls are not deduplicated.
        router = router
            .route("/admin/stats", get(admin_stats))
            .route("/admin/records", get(admin_records).delete(admin_remove));
    }
    router.with_state(app)
}
