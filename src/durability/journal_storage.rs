//! Where the write-ahead journal's segments live: a directory of files for a
//! file store, or any [`JournalStorage`] for a store over a custom backend
//! (fault-injection tests).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use crate::sync::Mutex;

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

    /// Makes the segments that exist durable as entries of the storage
    /// (for files: syncs the directory). Recovery calls it before the
    /// writer may use any of them: a creation whose last step (the
    /// directory's sync) failed leaves a segment that is listed and read
    /// like any other, yet would not survive a power cut, and every frame
    /// acknowledged in it would go with it.
    ///
    /// # Errors
    ///
    /// As for [`segments`](Self::segments). The default has nothing to do
    /// (a storage whose creation is durable when it returns).
    fn sync_segments(&self) -> io::Result<()> {
        Ok(())
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

/// The file-system calls a [`DirJournal`] makes in its directory. The
/// operating system's ([`OsDir`]) is the one a file store uses; a test can
/// put a simulated disk in its place (feature `fault-injection`) and run
/// the journal's real segment creation, with its temporary file, rename
/// and directory sync, against a disk that loses what was not synced.
///
/// Names are plain file names inside the directory. The contract is a
/// POSIX file system's: a created, renamed or removed entry is durable only
/// once [`sync`](Self::sync) returns after it, and a file's bytes only once
/// its own sync returns.
pub trait JournalDir: Debug + Send + Sync + 'static {
    /// A file of the directory.
    type File: SegmentFile;

    /// Whether the directory exists.
    fn exists(&self) -> bool;

    /// Creates the directory (and any missing parents), durably: the
    /// parent is synced after it.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn create(&self) -> io::Result<()>;

    /// The names in the directory; none if it does not exist.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Creates file `name`, or truncates it to nothing if it exists.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn create_file(&self, name: &str) -> io::Result<Self::File>;

    /// Opens the existing file `name` for reading and writing.
    ///
    /// # Errors
    ///
    /// The I/O error; `NotFound` if there is no such file.
    fn open_file(&self, name: &str) -> io::Result<Self::File>;

    /// Renames `from` to `to`, replacing `to` if it exists.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes file `name`.
    ///
    /// # Errors
    ///
    /// The I/O error; `NotFound` if there is no such file.
    fn remove_file(&self, name: &str) -> io::Result<()>;

    /// Makes every earlier change to the directory's entries durable.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn sync(&self) -> io::Result<()>;

    /// How the directory is named in errors.
    fn describe(&self) -> String;
}

/// A file of a [`JournalDir`].
pub trait SegmentFile: Debug + Send + Sync + 'static {
    /// The file's length in bytes.
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn size(&self) -> io::Result<u64>;

    /// Fills `out` with the bytes at `offset`.
    ///
    /// # Errors
    ///
    /// The I/O error; `UnexpectedEof` past the end.
    fn read_at(&self, out: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes `data` at `offset`, growing the file if it ends past it.
    ///
    /// # Errors
    ///
    /// The I/O error; the write may have been applied in part.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Makes every earlier write durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn sync_data(&self) -> io::Result<()>;

    /// Makes every earlier write and the file's length durable (`fsync`).
    ///
    /// # Errors
    ///
    /// The I/O error.
    fn sync_all(&self) -> io::Result<()>;
}

/// A directory of the operating system's file system.
#[derive(Debug)]
pub struct OsDir {
    dir: PathBuf,
}

impl OsDir {
    /// The directory at `dir` (it need not exist yet).
    pub fn new(dir: PathBuf) -> OsDir {
        OsDir { dir }
    }
}

impl JournalDir for OsDir {
    type File = File;

    fn exists(&self) -> bool {
        self.dir.exists()
    }

    fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        sync_dir(parent_of(&self.dir))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn create_file(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))
    }

    fn open_file(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

impl SegmentFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, out: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(out, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

/// The segments of a file store: `segment-<n>` files in one directory,
/// created (with the directory) when the first segment is. Generic over
/// the directory's file system so that a simulated disk can stand in for
/// the operating system's; a file store uses [`OsDir`].
#[derive(Debug)]
pub struct DirJournal<D: JournalDir = OsDir> {
    dir: D,
    /// Open segment files, by index.
    files: Mutex<Vec<Option<Arc<D::File>>>>,
}

impl DirJournal<OsDir> {
    /// The segments in the operating system's directory `dir`.
    pub fn new(dir: PathBuf) -> DirJournal<OsDir> {
        DirJournal::with_dir(OsDir::new(dir))
    }
}

impl<D: JournalDir> DirJournal<D> {
    /// The segments in `dir`.
    pub fn with_dir(dir: D) -> DirJournal<D> {
        DirJournal {
            dir,
            files: Mutex::new(Vec::new()),
        }
    }

    fn name(index: usize) -> String {
        format!("segment-{index}")
    }

    fn temp_name(index: usize) -> String {
        format!("segment-{index}{TEMP_SUFFIX}")
    }

    /// Creates `temp` holding `len` zero bytes, synced.
    fn write_temp(&self, temp: &str, len: u64) -> io::Result<D::File> {
        let file = self.dir.create_file(temp)?;
        crash_point::reached("segment.temp_created");
        let zeros = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < len {
            let chunk = (len - written).min(zeros.len() as u64);
            file.write_at(&zeros[..chunk as usize], written)?;
            written += chunk;
            if written >= len / 2 && written - chunk < len / 2 {
                crash_point::reached("segment.temp_half_filled");
            }
        }
        file.sync_all()?;
        crash_point::reached("segment.temp_synced");
        Ok(file)
    }

    fn file(&self, index: usize) -> io::Result<Arc<D::File>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(file)) = files.get(index) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(self.dir.open_file(&Self::name(index))?);
        if files.len() <= index {
            files.resize(index + 1, None);
        }
        files[index] = Some(Arc::clone(&file));
        Ok(file)
    }
}

impl<D: JournalDir> JournalStorage for DirJournal<D> {
    fn segments(&self) -> io::Result<usize> {
        let mut count = 0;
        for name in self.dir.list()? {
            if let Some(index) = name
                .strip_prefix("segment-")
                .and_then(|n| n.parse::<usize>().ok())
            {
                count = count.max(index + 1);
            }
        }
        Ok(count)
    }

    fn create_segment(&self, index: usize, len: u64) -> io::Result<()> {
        if !self.dir.exists() {
            self.dir.create()?;
        }
        // Written whole and synced under a temporary name, then renamed into
        // place and the directory synced: `segment-<n>` is never seen short
        // or with unsynced zeros, whatever stops the process (or fills the
        // disk) on the way. A leftover temporary file is overwritten by the
        // next attempt and removed at recovery.
        let temp = Self::temp_name(index);
        let file = match self.write_temp(&temp, len) {
            Ok(file) => file,
            Err(err) => {
                let _ = self.dir.remove_file(&temp);
                return Err(err);
            }
        };
        self.dir.rename(&temp, &Self::name(index))?;
        crash_point::reached("segment.renamed");
        self.dir.sync()?;
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
        match self.dir.remove_file(&Self::name(index)) {
            Ok(()) => self.dir.sync(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn sync_segments(&self) -> io::Result<()> {
        if self.dir.exists() {
            self.dir.sync()?;
        }
        Ok(())
    }

    fn remove_leftovers(&self) -> io::Result<()> {
        let mut removed = false;
        for name in self.dir.list()? {
            if name.starts_with("segment-") && name.ends_with(TEMP_SUFFIX) {
                self.dir.remove_file(&name)?;
                removed = true;
            }
        }
        if removed {
            self.dir.sync()?;
        }
        Ok(())
    }

    fn segment_len(&self, index: usize) -> io::Result<u64> {
        self.file(index)?.size()
    }

    fn read(&self, index: usize, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file(index)?.read_at(out, offset)
    }

    fn write(&self, index: usize, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file(index)?.write_at(data, offset)
    }

    fn sync_data(&self, index: usize) -> io::Result<()> {
        self.file(index)?.sync_data()
    }

    fn describe(&self) -> String {
        self.dir.describe()
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
