//! Responses as the store keeps them, and replays of them.

use ::http::header::{HeaderName, HeaderValue};
use ::http::{Response, StatusCode};
use bytes::Bytes;
use idemkv::StoredResponse;

use crate::problem::problem;
use crate::settings::Settings;

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

/// The stored form of a response: status, the headers worth replaying, body.
/// The body is the buffer the response is sent from, shared, not copied.
pub(crate) fn stored_response(
    parts: &::http::response::Parts,
    body: &Bytes,
    settings: &Settings,
) -> StoredResponse {
    let mut stored = StoredResponse::from_bytes(parts.status.as_u16(), body.clone());
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

/// How large a response that was not kept was: its size, or for one
/// streamed past the limit (never read whole), a lower bound.
pub(crate) enum Size {
    Exactly(usize),
    MoreThan(usize),
}

/// The record of a completed request whose response exceeded the store's
/// limit: the original status and the size, no headers and no body.
pub(crate) fn not_kept(status: StatusCode, size: Size) -> StoredResponse {
    // The marker's value: the size in bytes, or ">N" (more than N bytes).
    let size = match size {
        Size::Exactly(n) => n.to_string(),
        Size::MoreThan(n) => format!(">{n}"),
    };
    StoredResponse::new(status.as_u16(), Vec::new()).with_header(NOT_KEPT, size)
}

pub(crate) fn replay<ResBody: From<Bytes>>(stored: StoredResponse) -> Response<ResBody> {
    if let Some((_, size)) = stored.headers().iter().find(|(name, _)| name == NOT_KEPT) {
        let size = String::from_utf8_lossy(size);
        let size = match size.strip_prefix('>') {
            Some(limit) => format!("more than {limit} bytes"),
            None => format!("{size} bytes"),
        };
        let mut response = problem(
            StatusCode::CONFLICT,
            "The response to this request was not kept",
            &format!(
                "the first request with this key completed with status {}, but its response \
                 ({size}) was larger than the store keeps, so it cannot be replayed; \
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
    // The stored buffer itself (the replay cache's, or the one just read),
    // not a copy.
    let mut response = Response::new(ResBody::from(stored.body_bytes()));
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
