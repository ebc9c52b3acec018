//! HTTP middleware for idemkv: the `Idempotency-Key` header of the IETF
//! httpapi draft, backed by an idemkv [`Store`](idemkv::Store), for axum, hyper and any
//! tower service.
//!
//! ```no_run
//! # async fn charge() -> &'static str { "charged" }
//! use axum::{Router, routing::post};
//! use idemkv::{Config, Store};
//! use idemkv_http::{Callers, IdempotencyLayer};
//!
//! let store = Store::open("payments.redb", Config::default())?;
//! let app: Router = Router::new()
//!     .route("/v1/charges", post(charge))
//!     // Keys per authenticated caller: the service's authentication layer
//!     // (added after this one, so that it runs first) inserts a Principal.
//!     .layer(IdempotencyLayer::new(store, Callers::by_principal()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the layer answers by itself (every answer is an HTTP response; the
//! inner service's error type is never changed):
//!
//! | case | status |
//! |---|---|
//! | key required but missing, or malformed | 400 |
//! | the layer tells callers apart and this one is unknown | 401 |
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
//! Every key lives in a scope, so equal keys sent by different callers or to
//! different endpoints name different records: the caller, the method and
//! the path ([`scope_for`]). The caller is the one choice every layer is
//! built with ([`Callers`]): the authenticated [`Principal`] the service's
//! auth layer provides, a function of the request, or deliberately a single
//! tenant. The caller is who is calling, never their credential's bytes: a
//! retry with a refreshed token or a fresh request signature is the same
//! caller's, and replays.
//!
//! An operator who wants to inspect or remove a key with
//! [`Store::get`](idemkv::Store::get)/[`Store::remove`](idemkv::Store::remove)
//! builds the same [`Key`](idemkv::Key):
//!
//! ```
//! let scope = idemkv_http::scope_for(Some("acct_42"), &http::Method::POST, "/v1/charges");
//! let key = idemkv::Key::new(&scope, "order-1001")?;
//! assert_eq!(key.scope(), "acct_42 POST /v1/charges");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
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

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::IdempotencyLayer;
pub use progress::Progress;
pub use retry_safe::RetrySafe;
pub use scope::{Callers, Principal, credential_scope, scope_for};
pub use service::Idempotency;
