//! The layer's own answers: RFC 9457 problem responses.

use ::http::header::HeaderValue;
use ::http::{Response, StatusCode};
use bytes::Bytes;

pub(crate) fn unavailable<ResBody: From<Bytes>>(detail: &str) -> Response<ResBody> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "The idempotency store is unavailable",
        detail,
    )
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
    fn problem_json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
