//! Keys: the (scope, idempotency key) pair that names one record.

use std::fmt;
use std::sync::LazyLock;

use crate::error::{Error, Result};

/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Longest scope accepted, in bytes of UTF-8.
pub const MAX_SCOPE_LEN: usize = 512;

/// Domain separation for the table-key hash, so it can never collide with a
/// fingerprint or any other blake3 use.
const TABLE_KEY_CONTEXT: &str = "idemkv 2026 table key v1";

/// The keyed-hash key derived from [`TABLE_KEY_CONTEXT`] once per process
/// (deriving it costs as much as hashing a short key).
static TABLE_HASH_KEY: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::derive_key(TABLE_KEY_CONTEXT, b"records table key"));

/// Identifies one record: the caller's scope (tenant, endpoint, ...) and the
/// client's idempotency key.
///
/// The same idempotency key under two scopes names two unrelated records. Both
/// parts are stored in the record and hashed (blake3, length-prefixed) into the
/// fixed 32-byte key the tables are indexed by.
///
/// ```
/// let key = idemkv::Key::new("tenant-42 POST /v1/charges", "8e03978e-40d5-43e8-bc93-6894a57f9324")?;
/// assert_eq!(key.scope(), "tenant-42 POST /v1/charges");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    scope: Box<str>,
    idempotency_key: Box<str>,
    hash: [u8; 32],
}

impl Key {
    /// Validates and builds a key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] when the idempotency key is empty, longer than 255
    /// bytes or holds a byte outside visible ASCII (0x21..=0x7E), or the scope
    /// is longer than 512 bytes.
    pub fn new(scope: &str, idempotency_key: &str) -> Result<Key> {
        validate_scope(scope)?;
        validate_idempotency_key(idempotency_key)?;
        Ok(Key {
            hash: table_key(scope, idempotency_key),
            scope: scope.into(),
            idempotency_key: idempotency_key.into(),
        })
    }

    /// The scope this key lives in.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The client's idempotency key.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The 32-byte hash the tables are indexed by.
    pub(crate) fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("scope", &self.scope)
            .field("idempotency_key", &self.idempotency_key)
            .finish()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{}", self.scope, self.idempotency_key)
    }
}

fn validate_scope(scope: &str) -> Result<()> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(Error::invalid_key(format!(
            "scope is {} bytes, the limit is {MAX_SCOPE_LEN}",
            scope.len()
        )));
    }
    Ok(())
}

fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_key("idempotency key is empty"));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(Error::invalid_key(format!(
            "idempotency key is {} bytes, the limit is {MAX_IDEMPOTENCY_KEY_LEN}",
            key.len()
        )));
    }
    if let Some(pos) = key.bytes().position(|b| !(0x21..=0x7E).contains(&b)) {
        return Err(Error::invalid_key(format!(
            "idempotency key has byte 0x{:02X} at offset {pos}, which is not visible ASCII",
            key.as_bytes()[pos]
        )));
    }
    Ok(())
}

/// Length-prefixed so that ("ab", "c") and ("a", "bc") hash differently.
fn table_key(scope: &str, idempotency_key: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(&TABLE_HASH_KEY);
    for part in [scope, idempotency_key] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_boundaries() {
        assert!(Key::new("", "a").is_ok());
        assert!(Key::new(&"s".repeat(MAX_SCOPE_LEN), &"k".repeat(255)).is_ok());
        assert!(Key::new("ünïcödé scope", "!~").is_ok());
    }

    #[test]
    fn rejects_each_rule_with_its_reason() {
        let reason = |r: Result<Key>| match r {
            Err(Error::InvalidKey { reason }) => reason,
            other => panic!("expected InvalidKey, got {other:?}"),
        };
        assert!(reason(Key::new("s", "")).contains("empty"));
        assert!(reason(Key::new("s", &"k".repeat(256))).contains("256 bytes"));
        assert!(reason(Key::new("s", "has space")).contains("0x20"));
        assert!(reason(Key::new("s", "tab\t")).contains("0x09"));
        assert!(reason(Key::new("s", "ümlaut")).contains("0xC3"));
        assert!(reason(Key::new("s", "del\x7f")).contains("0x7F"));
        assert!(reason(Key::new(&"s".repeat(513), "k")).contains("scope"));
    }

    #[test]
    fn parts_are_length_prefixed_in_the_hash() {
        let a = Key::new("ab", "c").unwrap();
        let b = Key::new("a", "bc").unwrap();
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), Key::new("ab", "c").unwrap().hash());
    }
}
