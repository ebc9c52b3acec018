//! The response stored for a completed key and replayed to its retries.

use serde::{Deserialize, Serialize};

/// What a completed attempt answered: a status code, ordered headers and a
/// body. Replays return exactly these bytes.
///
/// The status is a plain `u16` so non-HTTP callers can store their own result
/// codes. Header names and values are kept as given, in order, duplicates
/// included.
///
/// ```
/// let response = idemkv::StoredResponse::new(201, r#"{"id":"ch_1"}"#)
///     .with_header("content-type", "application/json")
///     .with_header("location", "/v1/charges/ch_1");
/// assert_eq!(response.status(), 201);
/// assert_eq!(response.headers()[0], ("content-type".to_string(), b"application/json".to_vec()));
/// assert_eq!(response.body(), br#"{"id":"ch_1"}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl StoredResponse {
    /// A response with `status` and `body` and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> StoredResponse {
        StoredResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Appends a header.
    #[must_use = "with_header returns the changed response"]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the body out.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The size counted against `Config::max_response_bytes`: the body plus
    /// every header name and value.
    pub fn stored_len(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
    }
}
