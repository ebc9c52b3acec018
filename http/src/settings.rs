//! What a layer is configured with; shared by its services behind an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::http::header::HeaderName;
use ::http::{Method, StatusCode, request};
use idemkv::{Fingerprint, Terms};

use crate::scope::{Callers, scope_for};

pub(crate) type PartsFn<T> = Arc<dyn Fn(&request::Parts) -> T + Send + Sync>;
pub(crate) type FingerprintFn = Arc<dyn Fn(&request::Parts, &[u8]) -> Fingerprint + Send + Sync>;
pub(crate) type StatusFn = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Settings {
    pub header: HeaderName,
    pub methods: Vec<Method>,
    pub applies: Option<PartsFn<bool>>,
    pub require_key: bool,
    pub callers: Callers,
    /// Set once the layer has said that keyed requests arrive without a
    /// known caller (an authentication layer in front of it may be missing).
    pub warned_unknown_caller: Arc<AtomicBool>,
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

impl Settings {
    /// The default settings, with the layer's choice of callers.
    pub fn new(callers: Callers) -> Self {
        Settings {
            header: HeaderName::from_static("idempotency-key"),
            methods: vec![Method::POST, Method::PATCH],
            applies: None,
            require_key: false,
            callers,
            warned_unknown_caller: Arc::new(AtomicBool::new(false)),
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

impl Settings {
    /// The scope of a request's key, or `None` when the layer tells callers
    /// apart and does not know this one's (said once per layer in the log).
    pub fn scope(&self, parts: &request::Parts) -> Option<String> {
        let Ok(caller) = self.callers.of(parts) else {
            if !self.warned_unknown_caller.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "idemkv_http",
                    method = %parts.method,
                    path = parts.uri.path(),
                    callers = ?self.callers,
                    "a keyed request arrived without a known caller and was answered 401; if \
                     requests are authenticated, the authentication layer must run before the \
                     idempotency layer (in axum, add it with .layer(..) after it) and insert \
                     idemkv_http::Principal (said once per layer)"
                );
            }
            return None;
        };
        Some(scope_for(
            caller.as_deref(),
            &parts.method,
            parts.uri.path(),
        ))
    }

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
