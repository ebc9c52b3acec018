//! Files that appear whole: written under a temporary name beside their
//! path, then linked into place, so that a crash or a full disk on the way
//! never leaves a partial file at the path. New store files and backups
//! are made this way; journal segments, which never meet another file at
//! their name, are renamed into place by `journal_storage`.

use std::io;
use std::path::{Path, PathBuf};

use crate::durability::journal_storage::{parent_of, sync_dir};

/// Where the file for `path` is written before it is linked into place:
/// `<path>.creating`. One left by a crash is replaced by the next attempt.
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".creating");
    PathBuf::from(name)
}

/// Removes a temporary file an earlier attempt left; none is fine.
pub(crate) fn clear(temp: &Path) -> io::Result<()> {
    match std::fs::remove_file(temp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Puts the finished, synced `temp` at `path`, removes the temporary name
/// and syncs the directory. A link refuses to replace a file that appeared
/// at `path` meanwhile (`Ok(false)`, nothing placed); a file system without
/// hard links gets a rename, only while `path` is still free.
pub(crate) fn link_into_place(temp: &Path, path: &Path) -> io::Result<bool> {
    let placed = match std::fs::hard_link(temp, path) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) if !path.exists() => std::fs::rename(temp, path).map(|()| true),
        other => other.map(|()| true),
    };
    let _ = std::fs::remove_file(temp);
    if placed? {
        sync_dir(parent_of(path))?;
        return Ok(true);
    }
    Ok(false)
}
