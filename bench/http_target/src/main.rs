//! The server `bench/http_load.sh` drives with wrk.
//!
//! `idemkv-http-target DB PORT` serves, through the idempotency layer (wait
//! mode, 60 s) over a durable store at `DB`:
//!
//! - `POST /v1/charges`: answers 201 at once with a small JSON body (no
//!   sleeping: the layer and the store are all there is to measure);
//! - `POST /v1/hold`: the same, but only once `POST /release` was called,
//!   so that duplicates of its key pile up waiting;
//! - `POST /release`: lets held requests finish (no idempotency key needed).
//!
//! With `IDEMKV_STORAGE_CACHE_MIB` set, the store's storage cache is that
//! many MiB instead of the default.
//!
//! Only the layer's public API of both versions compared is used
//! (`IdempotencyLayer::new`, `wait_for_in_flight`), so this file builds
//! against either.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use idemkv::{Config, Store};
use idemkv_http::{Callers, IdempotencyLayer};
use tokio::sync::watch;

#[derive(Clone)]
struct App {
    charges: Arc<AtomicU64>,
    released: watch::Receiver<bool>,
}

async fn charge(State(app): State<App>, body: String) -> (StatusCode, String) {
    let n = app.charges.fetch_add(1, Ordering::Relaxed) + 1;
    (
        StatusCode::CREATED,
        format!(r#"{{"id":"ch_{n}","request_bytes":{}}}"#, body.len()),
    )
}

async fn hold(State(app): State<App>, body: String) -> (StatusCode, String) {
    let mut released = app.released.clone();
    let _ = released.wait_for(|go| *go).await;
    charge(State(app), body).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(port)) = (args.next(), args.next()) else {
        return Err("usage: idemkv-http-target DB PORT".into());
    };
    let mut config = Config::default();
    if let Ok(mib) = std::env::var("IDEMKV_STORAGE_CACHE_MIB") {
        config = config.storage_cache_bytes(mib.parse::<usize>()? << 20);
    }
    let store = Store::open(&db, config)?;
    let (release, released) = watch::channel(false);
    let release = Arc::new(release);
    let app = App {
        charges: Arc::new(AtomicU64::new(0)),
        released,
    };
    let layer = IdempotencyLayer::new(store, Callers::single_tenant()).wait_for_in_flight(Some(Duration::from_secs(60)));
    let router = Router::new()
        .route("/v1/charges", post(charge))
        .route("/v1/hold", post(hold))
        .layer(layer)
        .route(
            "/release",
            post(move || {
                let release = Arc::clone(&release);
                async move {
                    let _ = release.send(true);
                    StatusCode::NO_CONTENT
                }
            }),
        )
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
