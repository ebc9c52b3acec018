//! The scope a key lives in by default, and digests of credentials for
//! scopes of one's own.

use ::http::request;

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
///   with [`IdempotencyLayer::scope_with`](crate::IdempotencyLayer::scope_with).
///
/// Build a [`Key`](idemkv::Key) with it to look up or remove a key the layer stored
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
