//! [`Idempotency`]: the service the layer wraps around an inner service.
//!
//! A request the layer does not apply to (another method, no key where none
//! is required) goes straight to the inner service with its own future. One
//! it applies to is handled in steps, each of which reads in one screen:
//! read the key ([`key_of`]), buffer and fingerprint the body
//! ([`buffer_body`]), ask the backend ([`answer`]), and for a claim, run the
//! handler and keep its response ([`run_claimed`]).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::header::{HeaderValue, RETRY_AFTER};
use ::http::{Request, Response, StatusCode, request};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::body::{Read, ResponseBody, read_up_to};
use idemkv::{AsyncStore, Backend, Begin, Key};

use crate::claimed::{finish, run_renewing};
use crate::future::ResponseFuture;
use crate::key_header::parse_key;
use crate::problem::{problem, unavailable};
use crate::progress::Progress;
use crate::replay::{Size, not_kept, replay, stored_response};
use crate::settings::Settings;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service [`IdempotencyLayer`](crate::IdempotencyLayer) wraps around an inner service.
#[derive(Clone)]
pub struct Idempotency<S, B = AsyncStore> {
    pub(crate) inner: S,
    pub(crate) backend: B,
    pub(crate) settings: Arc<Settings>,
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

impl<S, B, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Idempotency<S, B>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Backend,
    ReqBody: http_body::Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        if !applies(&self.settings, &parts) {
            // Untouched and unboxed: the inner service's own future.
            return ResponseFuture::passthrough(self.inner.call(Request::from_parts(parts, body)));
        }
        // The clone takes the readiness of `self.inner` along (tower's
        // documented pattern for services that call their inner service from
        // an async block).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let backend = self.backend.clone();
        let settings = Arc::clone(&self.settings);
        ResponseFuture::handled(handle(inner, backend, settings, parts, body))
    }
}

/// Whether the layer deduplicates this request: its method is covered, the
/// `applies_when` condition holds, and it carries a key (or must).
fn applies(settings: &Settings, parts: &request::Parts) -> bool {
    settings.methods.contains(&parts.method)
        && settings.applies.as_ref().is_none_or(|f| f(parts))
        && (settings.require_key || parts.headers.contains_key(&settings.header))
}

/// A request the layer applies to, from its key to its response.
async fn handle<S, B, ReqBody, ResBody>(
    mut inner: S,
    backend: B,
    settings: Arc<Settings>,
    parts: request::Parts,
    body: ReqBody,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Backend,
    ReqBody: http_body::Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    let key = match key_of(&settings, &parts) {
        Ok(key) => key,
        Err(response) => return Ok(response),
    };
    let body = match buffer_body(&settings, &parts, body).await {
        Ok(body) => body,
        Err(response) => return Ok(response),
    };
    let fingerprint = (settings.fingerprint)(&parts, &body);
    let claim = match answer(&backend, &settings, &key, fingerprint).await {
        Ok(claim) => claim,
        Err(response) => return Ok(response),
    };
    let mut request = Request::from_parts(parts, ReqBody::from(body));
    // The handler sees its claim: the key, the fencing token for its
    // downstream writes, and whether an earlier attempt died holding it.
    request.extensions_mut().insert(B::claim_info(&claim));
    // From here on the side effect may start: the handler runs in a task of
    // its own, so that a client that hangs up (its request future dropped)
    // never cancels it midway. It runs to the end and its answer is stored;
    // the retry replays it (docs/http.md, "A client that hangs up").
    let running = settings.handlers.start();
    let task = tokio::spawn(async move {
        let _running = running;
        run_claimed(&mut inner, &backend, &settings, claim, request).await
    });
    match task.await {
        Ok(result) => result,
        // The handler's panic is this request's, as without the task.
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // The runtime is shutting down: the handler was cut off, and its
        // key stays in flight until its lease ends (as after a crash).
        Err(_) => Ok(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down",
            "the request was cut off; a retry with the same Idempotency-Key is answered once its lease ends",
        )),
    }
}

/// The request's key in its scope, or the 400 (or 401: no known caller)
/// that says what is wrong.
fn key_of<ResBody: From<Bytes>>(
    settings: &Settings,
    parts: &request::Parts,
) -> Result<Key, Response<ResBody>> {
    let Some(raw_key) = parts.headers.get(&settings.header) else {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key is missing",
            &format!("this endpoint requires the {} header", settings.header),
        ));
    };
    let Some(scope) = settings.scope(parts) else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "The caller is unknown",
            "this endpoint keeps idempotency keys per authenticated caller, and this request \
             has none: send credentials",
        ));
    };
    parse_key(raw_key)
        .and_then(|k| Key::new(&scope, &k).map_err(|e| e.to_string()))
        .map_err(|why| {
            problem(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key is malformed",
                &why,
            )
        })
}

/// The request body, read once, within the limit: a declared length over it
/// is refused before reading anything, and the limit is enforced as the body
/// streams in, so an oversized body is never read whole.
async fn buffer_body<ReqBody, ResBody>(
    settings: &Settings,
    parts: &request::Parts,
    body: ReqBody,
) -> Result<Bytes, Response<ResBody>>
where
    ReqBody: http_body::Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: From<Bytes>,
{
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
    let declared = parts
        .headers
        .get(::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > settings.max_request_bytes as u64) {
        return Err(too_large());
    }
    match Limited::new(body, settings.max_request_bytes)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(problem(
            StatusCode::BAD_REQUEST,
            "Request body could not be read",
            &err.to_string(),
        )),
    }
}

/// Asks the backend: the claim to run the request with, or the answer that
/// needs no handler (a replay, a 409, a 422, a 503).
async fn answer<B: Backend, ResBody: From<Bytes>>(
    backend: &B,
    settings: &Settings,
    key: &Key,
    fingerprint: idemkv::Fingerprint,
) -> Result<B::Claim, Response<ResBody>> {
    let terms = match settings.wait {
        Some(timeout) => settings.terms().wait(timeout),
        None => settings.terms(),
    };
    match backend.begin(key, fingerprint, terms).await {
        Ok(Begin::Claimed(claim)) => Ok(claim),
        Ok(Begin::Replay(stored)) => Err(replay(stored)),
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
            Err(response)
        }
        Ok(Begin::Mismatch) => Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key reused with a different request",
            "this key was first used with another payload; use a new key for a new request",
        )),
        Err(err) => Err(unavailable(&err)),
    }
}

/// Runs a claimed request, renewing the lease while it runs, and keeps its
/// response. A panic or a dropped future drops the claim, which stays in
/// flight until its lease runs out: never released blindly.
async fn run_claimed<S, B, ReqBody, ResBody>(
    inner: &mut S,
    backend: &B,
    settings: &Settings,
    claim: B::Claim,
    mut request: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    B: Backend,
    ResBody: http_body::Body,
    ResBody::Error: Into<BoxError>,
{
    let claim = Arc::new(claim);
    // The handler records recovery points through this (it holds the claim
    // weakly, so the claim is still the layer's to finish).
    request
        .extensions_mut()
        .insert(Progress::new(backend, &claim));
    // An inner service that fails without a response, or a body that fails:
    // whether the side effect happened is unknown, so the claim is not
    // released; it stays in flight until its lease runs out.
    let lease = settings.lease.unwrap_or_else(|| backend.lease());
    let response = run_renewing(inner, request, backend, &claim, lease).await?;
    let (parts, body) = response.into_parts();
    // Read within the store's limit: a body past it is never held whole.
    let limit = backend.max_response_bytes();
    let body = match read_up_to(body, limit).await {
        Ok(Read::Whole(body)) => body,
        Ok(Read::Over(streaming)) => {
            // Too large to store: the record is completed with the status
            // and a marker (so the handler never runs a second time), then
            // the body streams on to the client from where it was read.
            let stored =
                keeps(settings, &parts).then(|| not_kept(parts.status, Size::MoreThan(limit)));
            finish(backend, claim, stored, lease, &settings.handlers).await;
            return Ok(Response::from_parts(parts, streaming));
        }
        Err(err) => {
            // Whether the side effect happened is unknown and the answer is
            // incomplete: nothing is stored, the claim stays in flight.
            return Ok(problem(
                StatusCode::BAD_GATEWAY,
                "The response body failed",
                &err.to_string(),
            ));
        }
    };
    let stored = keeps(settings, &parts).then(|| {
        let stored = stored_response(&parts, &body, settings);
        if stored.stored_len() <= limit {
            stored
        } else {
            not_kept(parts.status, Size::Exactly(stored.stored_len()))
        }
    });
    finish(backend, claim, stored, lease, &settings.handlers).await;
    Ok(Response::from_parts(parts, ResponseBody::from(body)))
}

/// Whether a handler's response is kept: a response the handler marked
/// retry-safe (nothing happened), or whose status the settings do not
/// store, releases the key; every other one is stored, a 5xx included. For
/// one too large to store, what is kept is its status and a marker.
fn keeps(settings: &Settings, parts: &::http::response::Parts) -> bool {
    (settings.store_status)(parts.status) && parts.extensions.get::<crate::RetrySafe>().is_none()
}
