//! HTTP middleware for idemkv: the `Idempotency-Key` header of the IETF
//! httpapi draft, backed by an idemkv [`Store`](idemkv::Store), for axum, hyper and any
//! tower service.
//!
//! ```no_run
//! # async fn charge() -> &'static str { "charged" }
//! use axum::{Router, routing::post};
//! use idemkv::{Config, Store};
//! use idemkv_http::IdempotencyLayer;
//!
//! let store = Store::open("payments.redb", Config::default())?;
//! let app: Router = Router::new()
//!     .route("/v1/charges", post(charge))
//!     .layer(IdempotencyLayer::new(store));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the layer answers by itself (every answer is an HTTP response; the
//! inner service's error type is never changed):
//!
//! | case | status |
//! |---|---|
//! | key required but missing, or malformed | 400 |
//! | request body over the configured limit | 413 |
//! | same key, different payload | 422 |
//! | same key while the first request runs | 409 with `Retry-After` (or wait, if configured) |
//! | same key and payload, completed, response too large to keep | 409 with the original status |
//! | same key and payload, completed | the stored response, plus `Idempotent-Replayed: true` |
//! | the store failed | 503 |
//!
//! Error bodies are `application/problem+json` (RFC 9457). See `docs/http.md`.
//!
//! # Scopes
//!
//! Every key lives in a scope, so equal keys sent to different endpoints (or
//! by different tenants) name different records. The default scope is
//! [`default_scope`]: the method and the path, `"POST /v1/charges"`. An
//! operator who wants to inspect or remove a key with
//! [`Store::get`](idemkv::Store::get)/[`Store::remove`](idemkv::Store::remove)
//! builds the same [`Key`](idemkv::Key):
//!
//! ```
//! let request = http::Request::post("/v1/charges?expand=fee").body(())?;
//! let (parts, ()) = request.into_parts();
//! let scope = idemkv_http::default_scope(&parts);
//! assert_eq!(scope, "POST /v1/charges");
//! let key = idemkv::Key::new(&scope, "order-1001")?;
//! # let _ = key;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Scope by the caller's identity with [`IdempotencyLayer::scope_with`];
//! [`credential_scope`] turns a credential into a digest fit to be stored.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod claimed;
mod future;
mod handlers;
mod key_header;
mod layer;
mod problem;
mod progress;
mod replay;
mod retry_safe;
mod scope;
mod service;
mod settings;

pub use future::ResponseFuture;
pub use layer::IdempotencyLayer;
pub use progress::Progress;
pub use retry_safe::RetrySafe;
pub use scope::{credential_scope, default_scope};
pub use service::Idempotency;
