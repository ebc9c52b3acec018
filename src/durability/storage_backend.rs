//! Storage under the store other than a plain file: a trait of idemkv's own,
//! so that no storage-engine type is part of the public API and an engine
//! upgrade is not a breaking change for implementors.

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

/// A byte store that behaves like a file, for [`Store::with_backend`]
/// (fault-injection tests, storage that is not a plain file).
///
/// The contract is a file's: a read sees every earlier write; bytes past the
/// end read as an error; `set_len` zero-fills what it adds; and `sync_data`
/// makes every earlier write durable. A write that returns an error may have
/// been applied in part.
///
/// [`Store::with_backend`]: crate::Store::with_backend
// A file has a length, not an emptiness; the engine asks for the length only.
#[allow(clippy::len_without_is_empty)]
pub trait StorageBackend: Debug + Send + Sync + 'static {
    /// The current length in bytes.
    ///
    /// # Errors
    ///
    /// The I/O error, which fails the operation that needed it.
    fn len(&self) -> io::Result<u64>;

    /// Fills `out` with the bytes at `offset`; reading past the end is an
    /// error.
    ///
    /// # Errors
    ///
    /// As for [`len`](Self::len).
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;

    /// Grows (zero-filled) or shrinks the store to `len` bytes.
    ///
    /// # Errors
    ///
    /// As for [`len`](Self::len).
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes every earlier write durable.
    ///
    /// # Errors
    ///
    /// As for [`len`](Self::len).
    fn sync_data(&self) -> io::Result<()>;

    /// Writes `data` at `offset`, growing the store if needed.
    ///
    /// # Errors
    ///
    /// As for [`len`](Self::len).
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// A name that stays the same for this storage across opens in this
    /// process, or `None` (the default).
    ///
    /// With a name, an open, reopen, commit or close that fails on I/O
    /// marks the storage doubted, and the next open of a backend giving
    /// the same name in this process writes every byte back, synced,
    /// before it reads anything: after a failed sync, a file's page cache
    /// can hold pages the disk never got, and an open must not build on
    /// them. Storage whose reads always come from the device may keep the
    /// default.
    fn name(&self) -> Option<String> {
        None
    }
}

/// Adapts a [`StorageBackend`] to the storage engine's own trait. The
/// backend is shared, so that the store can open it again after a failure.
#[derive(Debug)]
pub(crate) struct EngineBackend(pub Arc<dyn StorageBackend>);

impl redb::StorageBackend for EngineBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}
