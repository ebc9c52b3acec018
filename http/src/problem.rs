//! The layer's own answers: RFC 9457 problem responses.

use ::http::header::HeaderValue;
use ::http::{Response, StatusCode};
use bytes::Bytes;

/// The 503 of a store that failed before any handler ran. Its body says
/// only what the client may act on (retry later, with the same key):
/// the error itself, which can name database hosts, file paths or server
/// messages, goes to the log (`cause`), never to the client.
pub(crate) fn unavailable<ResBody: From<Bytes>>(
    cause: &dyn std::fmt::Display,
) -> Response<ResBody> {
    tracing::error!(
        target: "idemkv_http",
        error = %cause,
        "the idempotency store failed before the handler ran; answered 503, nothing was run"
    );
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "The idempotency store is unavailable",
        "nothing was run; retry later with the same Idempotency-Key",
    );
    response
        .headers_mut()
        .insert(::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An RFC 9457 problem response.
pub(crate) fn problem<ResBody: From<Bytes>>(
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
    fn a_store_failure_never_shows_its_cause_to_the_client() {
        let cause = "the database at secret-host:5432 refused: password authentication failed";
        let response: Response<Bytes> = unavailable(&cause);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = String::from_utf8_lossy(response.body());
        assert!(!body.contains("secret-host"), "{body}");
        assert!(
            body.contains("retry later with the same Idempotency-Key"),
            "{body}"
        );
        assert_eq!(
            response.headers().get(::http::header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
    }

    #[test]
    fn problem_json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
