//! The rewrite before a heal: every byte of the store's file read and
//! written back, then synced, so that what the process reads is what the
//! disk holds.
//!
//! Why: after a sync fails, Linux marks the pages it could not write clean
//! and reports the error once. Reads keep returning those pages from the
//! page cache, and a later sync, from any handle opened since, succeeds
//! without writing them. A reopen in the same process (or a restart without
//! a power loss) would build on pages that are not on disk: a commit
//! header read from the cache can point at them, the journal's frames it
//! covers can be retired, and the next power cut loses both. Written back,
//! the pages are dirty again and the sync that follows puts them on disk
//! or fails.
//!
//! Invariant: a power cut during the rewrite leaves a file the engine opens
//! as after any crash. The length goes first, synced (the engine only
//! accepts lengths it set itself, and a failed sync can give up a growth
//! too); then everything but the first page, synced; the first page, which
//! holds the engine's header, goes last.
//! The engine never overwrites in place a page its last durable header
//! uses, so rewriting the others with what the cache holds changes nothing
//! that header reaches.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::durability::storage_backend::StorageBackend;

/// The first page: the engine's header is in it.
const HEADER_BYTES: u64 = 4096;

/// How much is read and written back at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Rewrites the file at `path` in place (see the module's docs).
/// Fails with `ErrorKind::ResourceBusy` while another handle holds the
/// file's lock: a process writing the file meanwhile would have its writes
/// overwritten with what was read before them, so the rewrite takes the
/// lock the storage engine takes, and releases it when done.
pub(crate) fn rewrite_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "the file is open elsewhere",
            ));
        }
        Err(TryLockError::Error(err)) => return Err(err),
    }
    rewrite(&FileBytes(file))
}

/// Rewrites a custom backend's bytes in place (see the module's docs).
pub(crate) fn rewrite(bytes: &dyn StorageBackend) -> io::Result<()> {
    let len = bytes.len()?;
    bytes.set_len(len)?;
    bytes.sync_data()?;
    let mut buf = vec![0; CHUNK_BYTES];
    let mut offset = HEADER_BYTES.min(len);
    while offset < len {
        let n = (len - offset).min(CHUNK_BYTES as u64) as usize;
        bytes.read(offset, &mut buf[..n])?;
        bytes.write(offset, &buf[..n])?;
        offset += n as u64;
    }
    bytes.sync_data()?;
    let header = HEADER_BYTES.min(len) as usize;
    if header > 0 {
        bytes.read(0, &mut buf[..header])?;
        bytes.write(0, &buf[..header])?;
        bytes.sync_data()?;
    }
    Ok(())
}

/// A plain file as a [`StorageBackend`], for the rewrite only.
#[derive(Debug)]
struct FileBytes(File);

impl StorageBackend for FileBytes {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let bytes: Vec<u8> = (0..(3 * CHUNK_BYTES + 5000))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        rewrite_file(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Shorter than the header page, and empty.
        std::fs::write(&path, &bytes[..100]).unwrap();
        rewrite_file(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), &bytes[..100]);
        std::fs::write(&path, b"").unwrap();
        rewrite_file(&path).unwrap();
        assert!(std::fs::read(&path).unwrap().is_empty());
    }
}
