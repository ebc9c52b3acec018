//! idemkv's idempotency semantics on a shared PostgreSQL database.
//!
//! The embedded store protects one machine. When a service runs on several,
//! a retry can land on a replica that never saw the key; [`PgBackend`] keeps
//! the records in one PostgreSQL table that every replica claims through,
//! with the same answers as the embedded store (claim, replay, mismatch, in
//! progress, leases, takeovers with fencing tokens, retention) behind the
//! same [`idemkv::Backend`] trait, so the HTTP layer and any other
//! integration run on it unchanged:
//!
//! ```no_run
//! # async fn demo() -> idemkv::Result<()> {
//! use idemkv_postgres::{PgBackend, PgConfig};
//! let backend = PgBackend::connect("postgres://app@db.internal/app", PgConfig::default()).await?;
//! // idemkv_http::IdempotencyLayer::with_backend(backend, Callers::by_principal()) ...
//! # let _ = backend;
//! # Ok(())
//! # }
//! ```
//!
//! docs/postgres.md explains the schema, the statements and their plans,
//! and the choices.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod claim;
mod config;
mod schema;
mod tls;
mod wakeups;

pub use backend::PgBackend;
pub use claim::PgClaim;
pub use config::PgConfig;
pub use schema::SCHEMA_VERSION;

use idemkv::{MetricKind, PublishedMetric};

/// The metrics [`PgBackend::publish_metrics`] publishes besides the
/// embedded store's outcome counters (`idemkv::PUBLISHED_METRICS`).
pub const PUBLISHED_METRICS: &[PublishedMetric] = &[
    PublishedMetric::new(
        "idemkv_pg_pool_connections",
        MetricKind::Gauge,
        "connections the pool holds open",
    ),
    PublishedMetric::new(
        "idemkv_pg_pool_available",
        MetricKind::Gauge,
        "idle connections in the pool",
    ),
    PublishedMetric::new(
        "idemkv_pg_pool_waiting",
        MetricKind::Gauge,
        "callers waiting for a connection",
    ),
    PublishedMetric::new(
        "idemkv_pg_timeouts_total",
        MetricKind::Counter,
        "calls cut off by PgConfig::call_timeout",
    ),
];
