//! What a layer is configured with; shared by its services behind an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::http::header::HeaderName;
use ::http::{Method, StatusCode, request};
use idemkv::{Fingerprint, Terms};

use crate::scope::default_scope;

pub(crate) type PartsFn<T> = Arc<dyn Fn(&request::Parts) -> T + Send + Sync>;
pub(crate) type FingerprintFn = Arc<dyn Fn(&request::Parts, &[u8]) -> Fingerprint + Send + Sync>;
pub(crate) type StatusFn = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Settings {
    pub header: HeaderName,
    pub methods: Vec<Method>,
    pub applies: Option<PartsFn<bool>>,
    pub require_key: bool,
    pub scope: Scope,
    pub fingerprint: FingerprintFn,
    pub max_request_bytes: usize,
    pub wait: Option<Duration>,
    /// This layer's claims' lease and retention, when they differ from the
    /// store's.
    pub lease: Option<Duration>,
    pub retention: Option<Duration>,
    pub store_status: StatusFn,
    pub deny_headers: Vec<HeaderName>,
    /// The claimed handlers running detached (shared by every clone).
    pub handlers: Arc<crate::handlers::Handlers>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header: HeaderName::from_static("idempotency-key"),
            methods: vec![Method::POST, Method::PATCH],
            applies: None,
            require_key: false,
            scope: Scope::Default {
                warned: Arc::new(AtomicBool::new(false)),
            },
            fingerprint: Arc::new(|parts, body| {
                Fingerprint::builder()
                    .part(parts.method.as_str().as_bytes())
                    .part(parts.uri.path().as_bytes())
                    .part(parts.uri.query().unwrap_or("").as_bytes())
                    .part(body)
                    .finish()
            }),
            max_request_bytes: 1024 * 1024,
            wait: None,
            lease: None,
            retention: None,
            store_status: Arc::new(|_| true),
            deny_headers: vec![
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("date"),
            ],
            handlers: Arc::default(),
        }
    }
}

/// Where a layer's scopes come from.
#[derive(Clone)]
pub(crate) enum Scope {
    /// [`default_scope`]: the caller's `Authorization` digest, the method and
    /// the path. `warned` is set once the layer has said that a request
    /// without credentials shares its key with every such caller.
    Default { warned: Arc<AtomicBool> },
    /// The service's own (`scope_with`), which is trusted to name the caller.
    Custom(PartsFn<String>),
}

impl Scope {
    /// The scope of a request's key.
    pub fn of(&self, parts: &request::Parts) -> String {
        match self {
            Scope::Custom(f) => f(parts),
            Scope::Default { warned } => {
                let anonymous = !parts.headers.contains_key(::http::header::AUTHORIZATION);
                if anonymous && !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "idemkv_http",
                        method = %parts.method,
                        path = parts.uri.path(),
                        "a keyed request carries no Authorization header, so the default scope \
                         cannot tell its caller apart: its key is shared by every caller without \
                         credentials on this method and path. Give the layer scope_with(...) to \
                         scope keys by caller (said once per layer)"
                    );
                }
                default_scope(parts)
            }
        }
    }
}

impl Settings {
    /// The terms of this layer's claims.
    pub fn terms(&self) -> Terms {
        let mut terms = Terms::default();
        if let Some(lease) = self.lease {
            terms = terms.lease(lease);
        }
        if let Some(retention) = self.retention {
            terms = terms.retention(retention);
        }
        terms
    }
}
