//! [`IdempotencyLayer`]: the layer and its settings' builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::HeaderName;
use ::http::{Method, StatusCode, request};
use idemkv::{AsyncStore, Fingerprint, Store};

use crate::scope::Callers;
use crate::service::Idempotency;
use crate::settings::Settings;

/// A [`tower::Layer`] that makes the requests it wraps idempotent by their
/// `Idempotency-Key` header. Build it with [`IdempotencyLayer::new`] and the
/// chained setters; every setter documents its default. How the layer tells
/// callers apart ([`Callers`]) has no default: it is chosen at construction.
#[derive(Clone)]
pub struct IdempotencyLayer<B = AsyncStore> {
    backend: B,
    settings: Arc<Settings>,
}

impl IdempotencyLayer<AsyncStore> {
    /// A layer over `store` that tells callers apart as `callers` says,
    /// with the default settings. The layer uses the store's async API: no
    /// store call blocks a runtime worker, and waiting requests park no
    /// thread.
    pub fn new(store: Store, callers: Callers) -> Self {
        IdempotencyLayer::with_backend(store.to_async(), callers)
    }
}

impl<B> IdempotencyLayer<B> {
    /// A layer over any [`Backend`](idemkv::Backend) that tells callers
    /// apart as `callers` says.
    pub fn with_backend(backend: B, callers: Callers) -> Self {
        IdempotencyLayer {
            backend,
            settings: Arc::new(Settings::new(callers)),
        }
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// The header carrying the key (default `Idempotency-Key`).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.settings().header = name;
        self
    }

    /// The methods the layer applies to (default POST and PATCH); requests
    /// with other methods pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.settings().methods = methods.into_iter().collect();
        self
    }

    /// A further condition on the request (default none): the layer applies
    /// only when it returns true.
    pub fn applies_when(
        mut self,
        f: impl Fn(&request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings().applies = Some(Arc::new(f));
        self
    }

    /// Whether a request the layer applies to must carry the header (default
    /// false: requests without it pass through, not deduplicated). When true,
    /// a missing header is a 400.
    pub fn require_key(mut self, required: bool) -> Self {
        self.settings().require_key = required;
        self
    }

    /// What a retry must repeat exactly (default: blake3 over method, path,
    /// query and body, each length-prefixed).
    pub fn fingerprint_with(
        mut self,
        f: impl Fn(&request::Parts, &[u8]) -> Fingerprint + Send + Sync + 'static,
    ) -> Self {
        self.settings().fingerprint = Arc::new(f);
        self
    }

    /// The largest request body buffered to fingerprint it (default 1 MiB);
    /// larger bodies are answered 413.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.settings().max_request_bytes = bytes;
        self
    }

    /// Wait up to `timeout` for a request holding the same key, and answer
    /// with its response, instead of a 409 (default: no waiting).
    pub fn wait_for_in_flight(mut self, timeout: Option<Duration>) -> Self {
        self.settings().wait = timeout;
        self
    }

    /// The lease of this layer's claims, instead of the store's (default:
    /// the store's `Config::lease`). Layers are per route in axum
    /// (`.route(..).layer(..)` or `route_layer`), so this is how one
    /// endpoint gets a longer lease than the rest; renewals follow it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings().lease = Some(lease);
        self
    }

    /// How long this layer's completed responses are replayed, instead of
    /// the store's `Config::retention` (default: the store's).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings().retention = Some(retention);
        self
    }

    /// Which response statuses are stored (default: all of them, 5xx
    /// included). A response that is not stored releases the claim, so a
    /// retry runs the request again; so does any response carrying the
    /// [`RetrySafe`](crate::RetrySafe) extension, whatever its status.
    pub fn store_status_when(
        mut self,
        f: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings().store_status = Arc::new(f);
        self
    }

    /// Response headers that are neither stored nor replayed, besides the
    /// hop-by-hop ones (default `set-cookie` and `date`).
    pub fn deny_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings().deny_headers = names.into_iter().collect();
        self
    }
}

impl<B> IdempotencyLayer<B> {
    /// Claimed handlers of this layer's services running right now.
    pub fn handlers_running(&self) -> usize {
        self.settings.handlers.running()
    }

    /// Claimed handlers of this layer's services whose outcome could not be
    /// recorded: a completion or release that still failed after its
    /// repeats (for half the lease), or a `Progress::record` that outlived its
    /// handler. Each leaves its key in flight until its lease ends (and
    /// logs an `error` event); a rising count means the store or the
    /// database has been failing for longer than the repeats last.
    pub fn unsettled(&self) -> u64 {
        self.settings.handlers.unsettled()
    }

    /// Resolves once no claimed handler of this layer's services is
    /// running. A claimed handler runs in a task of its own, so that a
    /// client that hangs up never cancels it midway; at shutdown, stop
    /// accepting requests, then await this before the runtime stops, so
    /// that every handler finishes and stores its answer (a handler cut off
    /// by the runtime's end leaves its key in flight until its lease ends,
    /// as a crash would).
    pub async fn drain(&self) {
        self.settings.handlers.drained().await;
    }
}

impl<S, B: Clone> tower::Layer<S> for IdempotencyLayer<B> {
    type Service = Idempotency<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            backend: self.backend.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<B> fmt::Debug for IdempotencyLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("header", &self.settings.header)
            .field("methods", &self.settings.methods)
            .field("callers", &self.settings.callers)
            .finish_non_exhaustive()
    }
}
