//! The response stored for a completed key and replayed to its retries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a completed attempt answered: a status code, ordered headers and a
/// body. Replays return exactly these bytes.
///
/// The status is a plain `u16` so non-HTTP callers can store their own result
/// codes. The body is a [`Bytes`]: the store, its replay cache and an HTTP
/// response share one buffer, and cloning a response never copies its body. Header names and values are kept as given, in order, duplicates
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
    /// Encoded exactly as a `Vec<u8>` would be (postcard writes both as a
    /// length and the bytes), so records written before the body was
    /// shared read unchanged.
    body: Bytes,
}

impl StoredResponse {
    /// A response with `status` and `body` and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> StoredResponse {
        StoredResponse {
            status,
            headers: Vec::new(),
            body: Bytes::from(body.into()),
        }
    }

    /// A response whose body is an existing shared buffer, kept without a
    /// copy (an HTTP layer stores the very buffer it sends).
    pub fn from_bytes(status: u16, body: Bytes) -> StoredResponse {
        StoredResponse {
            status,
            headers: Vec::new(),
            body,
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

    /// The body as a shared buffer: a reference-counted handle, not a copy.
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone()
    }

    /// Takes the body out (without a copy when nothing else shares it).
    pub fn into_body(self) -> Vec<u8> {
        Vec::from(self.body)
    }

    /// Whether this response may be stored under a limit of `limit` bytes
    /// ([`stored_len`](Self::stored_len)): the check every backend's
    /// `complete` makes before it writes anything.
    ///
    /// # Errors
    ///
    /// [`Error::ResponseTooLarge`](crate::Error::ResponseTooLarge) with the
    /// size and the limit.
    pub fn check_size(&self, limit: usize) -> crate::Result<()> {
        let size = self.stored_len();
        if size > limit {
            return Err(crate::Error::ResponseTooLarge { size, limit });
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_size_counts_the_body_and_every_header() {
        let response = StoredResponse::new(200, "body").with_header("k", "vv");
        assert_eq!(response.stored_len(), 7);
        assert!(response.check_size(7).is_ok());
        assert!(matches!(
            response.check_size(6),
            Err(crate::Error::ResponseTooLarge { size: 7, limit: 6 })
        ));
    }

    /// The shape responses had when their body was a `Vec<u8>`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct VecBodied {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    }

    #[test]
    fn a_shared_body_encodes_exactly_as_a_vec_did() -> Result<(), postcard::Error> {
        for body in [
            Vec::new(),
            vec![0u8, 255, 7],
            vec![b'x'; 300],
            vec![1u8; 70_000],
        ] {
            let old = VecBodied {
                status: 201,
                headers: vec![("a".into(), b"1".to_vec())],
                body: body.clone(),
            };
            let new = StoredResponse::new(201, body).with_header("a", "1");
            let old_bytes = postcard::to_allocvec(&old)?;
            assert_eq!(postcard::to_allocvec(&new)?, old_bytes);
            assert_eq!(postcard::from_bytes::<StoredResponse>(&old_bytes)?, new);
        }
        Ok(())
    }

    #[test]
    fn bodies_are_shared_not_copied() {
        let body = Bytes::from(vec![9u8; 1024]);
        let response = StoredResponse::from_bytes(200, body.clone());
        assert_eq!(response.body_bytes().as_ptr(), body.as_ptr());
        assert_eq!(response.clone().body_bytes().as_ptr(), body.as_ptr());
    }
}
