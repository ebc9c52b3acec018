//! Storage this process no longer trusts to read back what the disk holds.
//!
//! A failed sync gives up the pages it was to write while the page cache
//! keeps them (src/durability/rewrite.rs says why that matters). The
//! failure that may have met one cannot always mend it on the spot: an open
//! that fails inside a stretch of I/O errors fails its rewrite too, and the
//! open that gets through later has no way to tell from the file. So every
//! such failure (an open or a heal's reopen failing on I/O, a commit that
//! poisons the store, a close that fails) leaves the storage's name here
//! before anything else, and the next open of that name in this process
//! writes it back first and clears the name.
//!
//! Invariant: a name is cleared only by a rewrite that read every byte,
//! wrote it back and synced it, after the failure that left the name.
//!
//! What it does not cover: the set lives in this process. Another
//! process, or this program started again without a restart of the
//! machine, does not see it (docs/operations.md says to restart the
//! machine then). A file is named by its path with the directory resolved,
//! so the same file reached through another name of its directory entry (a
//! hard link) is not recognised.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// What names a store's storage across opens in one process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StorageName {
    /// A file, by its absolute path.
    File(PathBuf),
    /// A custom backend, by the name it gives itself
    /// (`StorageBackend::name`).
    Backend(String),
}

/// The names doubted now. A set, not a list: a name whose storage is never
/// opened again stays in it (a simulated disk that restarted, a file
/// deleted), and a long-lived process may gather many.
static DOUBTED: LazyLock<Mutex<HashSet<StorageName>>> = LazyLock::new(Mutex::default);

fn doubted() -> MutexGuard<'static, HashSet<StorageName>> {
    DOUBTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records that `name`'s page cache may hold pages the disk does not.
pub(crate) fn doubt(name: &StorageName) {
    doubted().insert(name.clone());
}

/// Whether `name` must be written back before it is opened again.
pub(crate) fn is_doubted(name: &StorageName) -> bool {
    doubted().contains(name)
}

/// Clears `name` after a rewrite that completed (see the invariant).
pub(crate) fn trust(name: &StorageName) {
    doubted().remove(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_stays_doubted_until_it_is_trusted_again() {
        let name = StorageName::Backend("doubted::tests".into());
        let other = StorageName::File("/doubted/tests".into());
        assert!(!is_doubted(&name));
        doubt(&name);
        doubt(&name);
        assert!(is_doubted(&name));
        assert!(!is_doubted(&other));
        trust(&name);
        assert!(!is_doubted(&name));
    }
}
