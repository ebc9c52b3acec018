//! Where the write-ahead journal's segments live: a directory of files for a
//! file store, or any [`JournalStorage`] for a store over a custom backend
//! (fault-injection tests).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::durability::crash_point;

/// The suffix of a segment file being created, before it is renamed into
/// place.
const TEMP_SUFFIX: &str = ".creating";

/// Segment files for the write-ahead journal of a store over a custom
/// [`StorageBackend`](crate::StorageBackend), for
/// [`Store::with_journaled_backend`](crate::Store::with_journaled_backend).
/// A file store keeps its segments in the directory `<file>.journal`.
///
/// Segments are numbered from 0 and all have the same length. The contract
/// is a file's: reads see every earlier write; `sync_data` makes every
/// earlier write to that segment durable; and `create_segment` is
/// crash-atomic: the segment exists under its index whole (zero-filled and
/// durable) or not at all, and it returns once the segment is durable with
/// its name (for files: written and synced under a temporary name, renamed
/// into place, the directory synced). A write that returns an error may
/// have been applied in part.
pub trait JournalStorage: Debug + Send + Sync + 'static {
    /// How many segments exist: segments `0..count` (one missing among them
    /// is an error when it is read).
    ///
    /// # Errors
    ///
    /// The I/O error, which fails the operation that needed it.
    fn segments(&self) -> io::Result<usize>;

    /// Creates segment `index` (the next one), `len` zero bytes, durably
    /// and crash-atomically (see the trait's contract).
    ///
    /// # Errors
    ///
    /// As for [`segments`](Self::segments).
    fn create_segment(&self, index: usize, len: u64) -> io::Result<()>;

    /// Deletes segment `index`, the newest, durably: recovery calls it for
    /// a newest segment that never got a header and has the wrong length
    /// (left by a storage whose creation is not atomic, such as a journal
    /// directory written by an older idemkv).
    ///
    /// # Errors
    ///
    /// As for [`segments`](Self::segments). The default refuses: a storage
    /// that creates segments atomically never leaves one to delete.
    fn remove_segment(&self, index: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this journal storage cannot remove segment {index}"),
        ))
    }

    /// Removes whatever an interrupted [`create_segment`](Self::create_segment)
    /// left behind (for files: temporary files), so that it takes no space.
    /// Recovery calls it before reading the segments.
    ///
    /// # Errors
    ///
    /// As for [`segments`](Self::segments). The default has nothing to do.
    fn remove_leftovers(&self) -> io::Result<()> {
        Ok(())
    }

    /// The length of segment `index` in bytes.
    ///
    /// # Errors
    ///
    /// As for [`segments`](Self::segments); `NotFound` for a segment that
    /// does not exist.
    fn segment_len(&self, index: usize) -> io::Result<u64>;

    /// Fills `out` with the bytes of segment `index` at `offset`.
    ///
    /// # Errors
    ///
    /// As for [`segment_len`](Self::segment_len).
    fn read(&self, index: usize, offset: u64, out: &mut [u8]) -> io::Result<()>;

    /// Writes `data` into segment `index` at `offset` (within its length).
    ///
    /// # Errors
    ///
    /// As for [`segment_len`](Self::segment_len).
    fn write(&self, index: usize, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every earlier write to segment `index` durable.
    ///
    /// # Errors
    ///
    /// As for [`segment_len`](Self::segment_len).
    fn sync_data(&self, index: usize) -> io::Result<()>;

    /// How the journal is named in errors.
    fn describe(&self) -> String {
        "the journal of a custom storage backend".to_string()
    }
}

/// The segments of a file store: `segment-<n>` files in one directory,
/// created (with the directory) when the first segment is.
#[derive(Debug)]
pub(crate) struct DirJournal {
    dir: PathBuf,
    /// Open segment files, by index.
    files: Mutex<Vec<Option<Arc<File>>>>,
}

impl DirJournal {
    pub fn new(dir: PathBuf) -> DirJournal {
        DirJournal {
            dir,
            files: Mutex::new(Vec::new()),
        }
    }

    fn path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("segment-{index}"))
    }

    fn temp_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("segment-{index}{TEMP_SUFFIX}"))
    }

    /// Creates `temp` holding `len` zero bytes, synced.
    fn write_temp(&self, temp: &Path, len: u64) -> io::Result<File> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(temp)?;
        crash_point::reached("segment.temp_created");
        let zeros = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let chunk = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..chunk])?;
            left -= chunk as u64;
            if left <= len / 2 && left + chunk as u64 > len / 2 {
                crash_point::reached("segment.temp_half_filled");
            }
        }
        file.sync_all()?;
        crash_point::reached("segment.temp_synced");
        Ok(file)
    }

    fn file(&self, index: usize) -> io::Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(file)) = files.get(index) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(index))?,
        );
        if files.len() <= index {
            files.resize(index + 1, None);
        }
        files[index] = Some(Arc::clone(&file));
        Ok(file)
    }
}

impl JournalStorage for DirJournal {
    fn segments(&self) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        let mut count = 0;
        for entry in entries {
            if let Some(index) = entry?
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix("segment-"))
                .and_then(|n| n.parse::<usize>().ok())
            {
                count = count.max(index + 1);
            }
        }
        Ok(count)
    }

    fn create_segment(&self, index: usize, len: u64) -> io::Result<()> {
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir)?;
            sync_dir(parent_of(&self.dir))?;
        }
        // Written whole and synced under a temporary name, then renamed into
        // place and the directory synced: `segment-<n>` is never seen short
        // or with unsynced zeros, whatever stops the process (or fills the
        // disk) on the way. A leftover temporary file is overwritten by the
        // next attempt and removed at recovery.
        let temp = self.temp_path(index);
        let file = match self.write_temp(&temp, len) {
            Ok(file) => file,
            Err(err) => {
                let _ = std::fs::remove_file(&temp);
                return Err(err);
            }
        };
        std::fs::rename(&temp, self.path(index))?;
        crash_point::reached("segment.renamed");
        sync_dir(&self.dir)?;
        crash_point::reached("segment.dir_synced");
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if files.len() <= index {
            files.resize(index + 1, None);
        }
        files[index] = Some(Arc::new(file));
        Ok(())
    }

    fn remove_segment(&self, index: usize) -> io::Result<()> {
        {
            let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = files.get_mut(index) {
                *slot = None;
            }
        }
        match std::fs::remove_file(self.path(index)) {
            Ok(()) => sync_dir(&self.dir),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn remove_leftovers(&self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let mut removed = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("segment-") && name.ends_with(TEMP_SUFFIX))
            {
                std::fs::remove_file(entry.path())?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn segment_len(&self, index: usize) -> io::Result<u64> {
        Ok(self.file(index)?.metadata()?.len())
    }

    fn read(&self, index: usize, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file(index)?.read_exact_at(out, offset)
    }

    fn write(&self, index: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file(index)?.write_all_at(data, offset)
    }

    fn sync_data(&self, index: usize) -> io::Result<()> {
        self.file(index)?.sync_data()
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory that holds `path`: `.` for a bare relative name, whose
/// `parent()` is the empty path.
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_relative_name_lives_in_the_current_directory() {
        assert_eq!(parent_of(Path::new("idem.redb.journal")), Path::new("."));
        assert_eq!(
            parent_of(Path::new("data/idem.redb.journal")),
            Path::new("data")
        );
        assert_eq!(parent_of(Path::new("/idem.redb.journal")), Path::new("/"));
    }
}
