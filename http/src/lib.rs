//! HTTP middleware for idemkv: the `Idempotency-Key` header of the IETF
//! httpapi draft, backed by an idemkv [`Store`], for axum, hyper and any
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
//! [`Store::get`]/[`Store::remove`] builds the same [`Key`]:
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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use ::http::{Method, Request, Response, StatusCode, request};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use idemkv::{AsyncStore, Backend, Begin, Fingerprint, Key, Store, StoredResponse};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type PartsFn<T> = Arc<dyn Fn(&request::Parts) -> T + Send + Sync>;
type FingerprintFn = Arc<dyn Fn(&request::Parts, &[u8]) -> Fingerprint + Send + Sync>;
type StatusFn = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

/// Headers never stored or replayed: hop-by-hop headers (RFC 9110 §7.6.1),
/// and the layer's own marker. `content-length` is not one of them: it
/// describes the stored body, which a replay sends whole.
const NEVER_STORED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    NOT_KEPT,
];

/// The layer's default scope: who is calling, the method and the path.
///
/// - With an `Authorization` header: its [`credential_scope`] digest, a
///   space, the method and the path, as in
///   `"1f3e…(32 hex) POST /v1/charges"`. Two clients that send the same key
///   and payload to the same endpoint never share a record, so a client that
///   learns another's key (keys end up in logs) cannot read its response.
/// - Without one: the method and the path, `"POST /v1/charges"` (no query
///   string, no host); the layer cannot tell callers apart, so services with
///   more than one client should scope by their own notion of the caller
///   with [`IdempotencyLayer::scope_with`].
///
/// Build a [`Key`] with it to look up or remove a key the layer stored
/// under the default settings.
pub fn default_scope(parts: &request::Parts) -> String {
    match parts.headers.get(::http::header::AUTHORIZATION) {
        Some(credential) => format!(
            "{} {} {}",
            credential_scope(credential.as_bytes()),
            parts.method,
            parts.uri.path()
        ),
        None => format!("{} {}", parts.method, parts.uri.path()),
    }
}

/// A digest of a credential (an `Authorization` header value, an API key)
/// fit to be part of a scope: 32 hex characters of a keyed blake3 hash. The
/// scope is stored in every record, the raw credential never should be.
///
/// ```
/// let alice = idemkv_http::credential_scope(b"Bearer sk_test_alice");
/// assert_eq!(alice.len(), 32);
/// assert_ne!(alice, idemkv_http::credential_scope(b"Bearer sk_test_bob"));
/// ```
pub fn credential_scope(credential: &[u8]) -> String {
    const CONTEXT: &str = "idemkv-http 2026 credential scope v1";
    let digest = blake3::Hasher::new_derive_key(CONTEXT)
        .update(credential)
        .finalize();
    digest.to_hex()[..32].to_string()
}

#[derive(Clone)]
struct Settings {
    header: HeaderName,
    methods: Vec<Method>,
    applies: Option<PartsFn<bool>>,
    require_key: bool,
    scope: PartsFn<String>,
    fingerprint: FingerprintFn,
    max_request_bytes: usize,
    wait: Option<Duration>,
    store_status: StatusFn,
    deny_headers: Vec<HeaderName>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header: HeaderName::from_static("idempotency-key"),
            methods: vec![Method::POST, Method::PATCH],
            applies: None,
            require_key: false,
            scope: Arc::new(default_scope),
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
            store_status: Arc::new(|status| {
                !(status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS)
            }),
            deny_headers: vec![
                HeaderName::from_static("set-cookie"),
                HeaderName::from_static("date"),
            ],
        }
    }
}

/// A [`tower::Layer`] that makes the requests it wraps idempotent by their
/// `Idempotency-Key` header. Build it with [`IdempotencyLayer::new`] and the
/// chained setters; every setter documents its default.
#[derive(Clone)]
pub struct IdempotencyLayer<B = AsyncStore> {
    backend: B,
    settings: Arc<Settings>,
}

impl IdempotencyLayer<AsyncStore> {
    /// A layer over `store` with the default settings. The layer uses the
    /// store's async API: no store call blocks a runtime worker, and waiting
    /// requests park no thread.
    pub fn new(store: Store) -> Self {
        IdempotencyLayer::with_backend(store.to_async())
    }
}

impl<B> IdempotencyLayer<B> {
    /// A layer over any [`Backend`].
    pub fn with_backend(backend: B) -> Self {
        IdempotencyLayer {
            backend,
            settings: Arc::new(Settings::default()),
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

    /// The scope a key lives in (default: [`default_scope`], the method and
    /// path). Scope by tenant, API key or authenticated principal so that one
    /// client's key can never reach another client's stored response;
    /// [`credential_scope`] digests a credential for that.
    pub fn scope_with(
        mut self,
        f: impl Fn(&request::Parts) -> String + Send + Sync + 'static,
    ) -> Self {
        self.settings().scope = Arc::new(f);
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

    /// Which response statuses are stored (default: all but 5xx, 408 and
    /// 429). A response that is not stored releases the claim, so a retry
    /// runs the request again.
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
            .finish_non_exhaustive()
    }
}

/// The service [`IdempotencyLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct Idempotency<S, B = AsyncStore> {
    inner: S,
    backend: B,
    settings: Arc<Settings>,
}

impl<S, B> Idempotency<S, B> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, B> fmt::Debug for Idempotency<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response future of [`Idempotency`].
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = T> + Send>>,
}

impl<T> Future for ResponseFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Idempotency<S, B>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Backend,
    ReqBody: http_body::Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body + From<Bytes> + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone takes the readiness of `self.inner` along (tower's
        // documented pattern for services that call their inner service from
        // an async block).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let backend = self.backend.clone();
        let settings = Arc::clone(&self.settings);
        ResponseFuture {
            inner: Box::pin(handle(inner, backend, settings, request)),
        }
    }
}

async fn handle<S, B, ReqBody, ResBody>(
    mut inner: S,
    backend: B,
    settings: Arc<Settings>,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    B: Backend,
    ReqBody: http_body::Body + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body + From<Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let applies = settings.methods.contains(&parts.method)
        && settings.applies.as_ref().is_none_or(|f| f(&parts));
    if !applies {
        return inner.call(Request::from_parts(parts, body)).await;
    }
    let raw_key = match parts.headers.get(&settings.header) {
        Some(value) => value,
        None if settings.require_key => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key is missing",
                &format!("this endpoint requires the {} header", settings.header),
            ));
        }
        None => return inner.call(Request::from_parts(parts, body)).await,
    };
    let key = match parse_key(raw_key)
        .and_then(|k| Key::new(&(settings.scope)(&parts), &k).map_err(|e| e.to_string()))
    {
        Ok(key) => key,
        Err(why) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key is malformed",
                &why,
            ));
        }
    };
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            &format!(
                "requests with an idempotency key are buffered up to {} bytes",
                settings.max_request_bytes
            ),
        )
    };
    // A declared length over the limit is refused before reading anything;
    // otherwise the limit is enforced as the body streams in, so an
    // oversized body is never read whole.
    let declared = parts
        .headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > settings.max_request_bytes as u64) {
        return Ok(too_large());
    }
    let body = match Limited::new(body, settings.max_request_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Ok(too_large()),
        Err(err) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "Request body could not be read",
                &err.to_string(),
            ));
        }
    };
    let fingerprint = (settings.fingerprint)(&parts, &body);

    let answer = match settings.wait {
        Some(timeout) => backend.begin_wait(&key, fingerprint, timeout).await,
        None => backend.begin(&key, fingerprint).await,
    };
    let claim = match answer {
        Ok(Begin::Claimed(claim)) => claim,
        Ok(Begin::Replay(stored)) => return Ok(replay(stored)),
        Ok(Begin::InProgress { retry_after }) => {
            // The holder's lease left, in whole seconds (at least 1): an
            // upper bound on how long the first request can still run.
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            // Only this is known: another attempt holds the key. It may
            // finish (a retry then gets its response) or may have died (a
            // retry after its lease runs it again).
            let mut response = problem(
                StatusCode::CONFLICT,
                "A request with this Idempotency-Key is in progress",
                &format!("another attempt holds this key; retry after {seconds} s"),
            );
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            return Ok(response);
        }
        Ok(Begin::Mismatch) => {
            return Ok(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key reused with a different request",
                "this key was first used with another payload; use a new key for a new request",
            ));
        }
        Err(err) => return Ok(unavailable(&err.to_string())),
    };

    // Claimed: run the request, renewing the lease while it runs. A panic or
    // a dropped future drops the claim, which stays in flight until its
    // lease runs out: never released blindly.
    let claim = Arc::new(claim);
    let result = run_renewing(
        &mut inner,
        Request::from_parts(parts, ReqBody::from(body)),
        &backend,
        &claim,
    )
    .await;
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            // The inner service failed without a response: whether its side
            // effect happened is unknown, so the claim is not released; it
            // stays in flight until its lease runs out, as for a panic.
            drop(claim);
            return Err(err);
        }
    };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            // The handler ran; its body failed. Leave the claim in flight.
            drop(claim);
            return Ok(problem(
                StatusCode::BAD_GATEWAY,
                "The response body failed",
                &err.into().to_string(),
            ));
        }
    };
    // What to keep: the response; for one too large to store, its status
    // and a marker, so that the handler never runs a second time; nothing
    // for a status the settings do not store (the claim is released).
    let stored = (settings.store_status)(parts.status).then(|| {
        let stored = stored_response(&parts, &body, &settings);
        if stored.stored_len() <= backend.max_response_bytes() {
            stored
        } else {
            not_kept(parts.status, stored.stored_len())
        }
    });
    finish(&backend, claim, stored).await;
    Ok(Response::from_parts(parts, ResBody::from(body)))
}

/// Calls the inner service; every third of a lease, renews the claim.
async fn run_renewing<S, B, ReqBody>(
    inner: &mut S,
    request: Request<ReqBody>,
    backend: &B,
    claim: &Arc<B::Claim>,
) -> Result<S::Response, S::Error>
where
    S: tower::Service<Request<ReqBody>>,
    B: Backend,
{
    let period = (backend.lease() / 3).max(Duration::from_millis(10));
    let call = inner.call(request);
    tokio::pin!(call);
    let mut renewing: Option<tokio::task::JoinHandle<()>> = None;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = &mut call => {
                if let Some(handle) = renewing.take() {
                    // Let a renewal in flight finish, so the claim is ours again.
                    let _ = handle.await;
                }
                return result;
            }
            _ = ticks.tick(), if renewing.is_none() => {
                let (backend, claim) = (backend.clone(), Arc::clone(claim));
                // Renewals run beside the handler, not in its way.
                renewing = Some(tokio::spawn(async move {
                    // A lost lease surfaces when the request completes.
                    let _ = backend.renew(&claim).await;
                }));
            }
            _ = async { if let Some(handle) = renewing.as_mut() { let _ = handle.await; } }, if renewing.is_some() => {
                renewing = None;
            }
        }
    }
}

/// Completes the claim with `stored`, or releases it. Errors are not the
/// client's concern: the response it gets is the handler's either way, and a
/// claim that could not be finished stays in flight until its lease ends.
async fn finish<B: Backend>(backend: &B, claim: Arc<B::Claim>, stored: Option<StoredResponse>) {
    let Ok(claim) = Arc::try_unwrap(claim) else {
        return;
    };
    // Once polled, the operation is queued with the committer, so it is
    // committed even if this future is dropped afterwards.
    let _ = match stored {
        Some(stored) => backend.complete(claim, stored).await.map_err(drop),
        None => backend.release(claim).await.map_err(drop),
    };
}

/// The stored form of a response: status, the headers worth replaying, body.
fn stored_response(
    parts: &::http::response::Parts,
    body: &Bytes,
    settings: &Settings,
) -> StoredResponse {
    let mut stored = StoredResponse::new(parts.status.as_u16(), body.to_vec());
    for (name, value) in &parts.headers {
        let skip = NEVER_STORED.contains(&name.as_str()) || settings.deny_headers.contains(name);
        if !skip {
            stored = stored.with_header(name.as_str(), value.as_bytes());
        }
    }
    stored
}

/// Marks a completed record whose response was too large to keep; its value
/// is the size of what was not kept.
const NOT_KEPT: &str = "idemkv-response-not-kept";

/// The record of a completed request whose response exceeded the store's
/// limit: the original status and the size, no headers and no body.
fn not_kept(status: StatusCode, size: usize) -> StoredResponse {
    StoredResponse::new(status.as_u16(), Vec::new()).with_header(NOT_KEPT, size.to_string())
}

fn replay<ResBody: From<Bytes>>(stored: StoredResponse) -> Response<ResBody> {
    if let Some((_, size)) = stored.headers().iter().find(|(name, _)| name == NOT_KEPT) {
        let size = String::from_utf8_lossy(size);
        let mut response = problem(
            StatusCode::CONFLICT,
            "The response to this request was not kept",
            &format!(
                "the first request with this key completed with status {}, but its response \
                 ({size} bytes) was larger than the store keeps, so it cannot be replayed; \
                 the request is not run again",
                stored.status()
            ),
        );
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
        if let Ok(status) = HeaderValue::from_str(&stored.status().to_string()) {
            headers.insert(
                HeaderName::from_static("idempotency-original-status"),
                status,
            );
        }
        return response;
    }
    let mut response = Response::new(ResBody::from(Bytes::from(stored.body().to_vec())));
    *response.status_mut() = StatusCode::from_u16(stored.status()).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in stored.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

/// Parses the header: the draft's structured-field string (`"abc"`) or the
/// bare token clients send in practice.
fn parse_key(value: &HeaderValue) -> Result<String, String> {
    let text = value
        .to_str()
        .map_err(|_| "the header is not visible ASCII".to_string())?
        .trim();
    let Some(quoted) = text.strip_prefix('"') else {
        return Ok(text.to_string());
    };
    let mut key = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            Some('"') if chars.as_str().is_empty() => return Ok(key),
            Some('"') => return Err("text after the closing quote".into()),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => key.push(c),
                _ => return Err("a backslash may only escape \" or \\".into()),
            },
            Some(c) => key.push(c),
            None => return Err("the quoted string is not closed".into()),
        }
    }
}

fn unavailable<ResBody: From<Bytes>>(detail: &str) -> Response<ResBody> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "The idempotency store is unavailable",
        detail,
    )
}

/// An RFC 9457 problem response.
fn problem<ResBody: From<Bytes>>(
    status: StatusCode,
    title: &str,
    detail: &str,
) -> Response<ResBody> {
    let body = format!(
        r#"{{"type":"about:blank","title":{},"status":{},"detail":{}}}"#,
        json_string(title),
        status.as_u16(),
        json_string(detail)
    );
    let mut response = Response::new(ResBody::from(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        ::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_header_forms() {
        let parse = |s: &str| parse_key(&HeaderValue::from_str(s).unwrap());
        assert_eq!(parse("abc-123").unwrap(), "abc-123");
        assert_eq!(parse("\"abc-123\"").unwrap(), "abc-123");
        assert_eq!(parse(r#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert!(parse("\"open").is_err());
        assert!(parse("\"a\"b").is_err());
        assert!(parse(r#""a\x""#).is_err());
    }

    #[test]
    fn problem_json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
