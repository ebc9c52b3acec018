//! Fingerprints: what a retry must repeat exactly.

use std::fmt;

/// A 32-byte blake3 digest over the parts of a request that must match on a
/// retry (method, path, body, ... as the caller decides).
///
/// A retry whose fingerprint differs from the stored one is answered with
/// [`Begin::Mismatch`](crate::Begin::Mismatch).
///
/// ```
/// use idemkv::Fingerprint;
/// let whole = Fingerprint::of(br#"{"amount":100}"#);
/// let parts = Fingerprint::builder().part(b"POST").part(b"/v1/charges").part(br#"{"amount":100}"#).finish();
/// assert_ne!(whole, parts);
/// // Parts are length-prefixed: moving a byte across a boundary changes the digest.
/// assert_ne!(
///     Fingerprint::builder().part(b"ab").part(b"c").finish(),
///     Fingerprint::builder().part(b"a").part(b"bc").finish(),
/// );
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        Fingerprint(*blake3::hash(bytes).as_bytes())
    }

    /// Starts a fingerprint over several parts.
    pub fn builder() -> FingerprintBuilder {
        FingerprintBuilder {
            hasher: blake3::Hasher::new(),
        }
    }

    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// Builds a [`Fingerprint`] from several parts; each part is hashed with its
/// length in front, so part boundaries are part of the digest.
#[derive(Clone)]
#[must_use = "a FingerprintBuilder does nothing until finish() is called"]
pub struct FingerprintBuilder {
    hasher: blake3::Hasher,
}

impl FingerprintBuilder {
    /// Adds one part.
    pub fn part(mut self, bytes: &[u8]) -> Self {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    /// Finishes the digest.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(*self.hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintBuilder").finish_non_exhaustive()
    }
}
