//! The open database and its lifecycle: where it comes from, how every
//! access to it is guarded, and how it is reopened after a failure.
//!
//! Invariants:
//! - Every call into the storage engine runs behind [`storage::shielded`]: a
//!   panic of the engine on damaged data becomes `Error::Corrupted`.
//! - Readers and the committer share the database (a read lock); only
//!   [`Engine::reopen`], [`Engine::exclusive`] and [`Engine::close`] take it
//!   alone, so a reopen never pulls the file from under a transaction.
//! - While the database is closed (between a failed reopen and the next, or
//!   after `close`) every access answers the error recorded in `closed_by`.
//! - The lookups' shared snapshot ([`Latest`]) holds every commit that was
//!   acknowledged: the single writer clears it after each commit, before
//!   anyone is told of that commit ([`Engine::committed`]), and a lookup
//!   installs the snapshot it opened only if no commit ended since it saw
//!   the slot empty. So a lookup that starts after a commit was
//!   acknowledged sees that commit, as with a transaction of its own.
//!
//! Longer than most files here on purpose: most of it is the open and reopen
//! path with its documentation.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use redb::Database;
use redb::backends::InMemoryBackend;

use crate::durability::doubted::{self, StorageName};
use crate::durability::journal::{self, Journal};
use crate::durability::journal_storage::{DirJournal, JournalStorage};
use crate::durability::storage::{self, JournalAt, Opened, Snapshot};
use crate::durability::storage_backend::{EngineBackend, StorageBackend};
use crate::durability::{rewrite, whole_file};
use crate::error::{Error, Result};
use crate::log::event;
use crate::model::key::Key;
use crate::model::record::StoredRecord;
use crate::sync::{AtomicBool, Mutex, RwLock, RwLockWriteGuard};

/// Where the database lives, kept so that it can be opened again.
pub(crate) enum Source {
    /// A file at this path.
    File(PathBuf),
    /// A custom backend, and the journal's storage if it has one; the engine
    /// holds them through shared handles.
    // Made only by the fault-injection feature's constructors.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    Backend(Arc<dyn StorageBackend>, Option<Arc<dyn JournalStorage>>),
    /// Memory only: cannot be reopened (the bytes live in the database).
    Memory,
}

impl Source {
    /// How the source is named in errors.
    pub fn path(&self) -> &Path {
        match self {
            Source::File(path) => path,
            Source::Backend(..) => Path::new("<custom storage backend>"),
            Source::Memory => Path::new(":memory:"),
        }
    }

    /// What names the storage across opens in this process, if anything
    /// does (src/durability/doubted.rs).
    fn name(&self) -> Option<StorageName> {
        match self {
            Source::File(path) => Some(StorageName::File(path.clone())),
            Source::Backend(backend, _) => backend.name().map(StorageName::Backend),
            Source::Memory => None,
        }
    }

    /// Marks the storage doubted: its next open in this process writes it
    /// back first.
    fn doubt(&self) {
        if let Some(name) = self.name() {
            doubted::doubt(&name);
        }
    }

    /// Marks the storage doubted if `err`, the failure of an open or a
    /// close, may have come from a failed sync.
    fn doubt_after(&self, err: &Error) {
        if err.is_transient() {
            self.doubt();
        }
    }

    /// Reads every byte of the storage and writes it back, synced: pages a
    /// failed sync gave up reach the disk, or this fails
    /// (src/durability/rewrite.rs says why). A completed rewrite clears the
    /// storage's doubt.
    fn rewrite(&self) -> Result<()> {
        match self {
            Source::File(path) => rewrite::rewrite_file(path).map_err(|err| {
                if err.kind() == std::io::ErrorKind::ResourceBusy {
                    Error::AlreadyOpen { path: path.clone() }
                } else {
                    Error::io(err)
                }
            })?,
            Source::Backend(backend, _) => rewrite::rewrite(&**backend).map_err(Error::io)?,
            Source::Memory => {}
        }
        if let Some(name) = self.name() {
            doubted::trust(&name);
        }
        Ok(())
    }

    /// Before an open: writes the storage back if a failure earlier in
    /// this process left it doubted. A file that does not exist has
    /// nothing to write back.
    fn rewrite_if_doubted(&self) -> Result<()> {
        let Some(name) = self.name() else {
            return Ok(());
        };
        if !doubted::is_doubted(&name) {
            return Ok(());
        }
        if let Source::File(path) = self
            && matches!(path.try_exists(), Ok(false))
        {
            doubted::trust(&name);
            return Ok(());
        }
        storage::shielded(|| self.rewrite())?;
        event!(
            warn,
            path = %self.path().display(),
            "the store's file was written back before this open: an earlier failure in this process may have left the page cache holding pages the disk does not"
        );
        Ok(())
    }
}

/// The shared database of one store.
pub(crate) struct Engine {
    db: RwLock<DatabaseHandle>,
    /// The file a file store opened (device and inode): a reopen opens this
    /// file or fails, and never creates a new one in its place.
    file_identity: Option<FileIdentity>,
    /// The snapshot lookups share (see the module's invariants).
    latest: RwLock<Latest>,
    source: Source,
    cache_bytes: usize,
    integrity_check: bool,
    /// Whether the store writes a journal (a file store only); a file's
    /// journal is replayed at every open either way.
    journal: bool,
    /// Whether the open's commit records the allocator state
    /// (`Config::quick_repair`).
    quick_repair: bool,
    /// Why the database must be reopened before it takes another write,
    /// when something outside the committer left it unable to write (an
    /// integrity check that failed gives the engine's allocator state up).
    /// The committer takes it before its next batch and heals.
    reopen_cause: Mutex<Option<String>>,
    /// Whether `reopen_cause` holds a cause: the committer's check before
    /// every batch reads this flag alone.
    must_reopen: AtomicBool,
}

/// The snapshot lookups share, and how many commits have ended: a lookup
/// opens a snapshot when there is none, and installs it if no commit ended
/// meanwhile.
#[derive(Default)]
struct Latest {
    commits: u64,
    snapshot: Option<Arc<Snapshot>>,
}

struct DatabaseHandle {
    db: Option<Database>,
    /// Why `db` is `None`: a failure, or empty once the store was closed.
    closed_by: String,
}

impl DatabaseHandle {
    fn closed_error(&self) -> Error {
        if self.closed_by.is_empty() {
            Error::Closed
        } else {
            Error::Poisoned {
                cause: self.closed_by.clone(),
            }
        }
    }
}

impl Engine {
    /// Opens the database from `source` and prepares it (format checks,
    /// tables of a new file, the journal's replay, the recovery policy).
    /// With `journal`, a file store's journal writer comes back too.
    pub fn open(
        source: Source,
        cache_bytes: usize,
        integrity_check: bool,
        release_in_flight: bool,
        journal: bool,
        quick_repair: bool,
    ) -> Result<(Engine, Opened, Option<Journal>)> {
        // The file's directory as an absolute path, so that the process
        // changing its working directory cannot send a reopen elsewhere.
        let source = match source {
            Source::File(path) => Source::File(absolute_dir(&path)),
            other => other,
        };
        source.rewrite_if_doubted()?;
        let (db, opened, writer) = open_prepared(
            &source,
            cache_bytes,
            integrity_check,
            release_in_flight,
            JournalMode {
                keep: journal,
                quick_repair,
            },
            true,
        )
        .inspect_err(|err| source.doubt_after(err))?;
        let file_identity = match &source {
            Source::File(path) => match FileIdentity::of(path) {
                Ok(identity) => Some(identity),
                Err(err) => {
                    let _ = close_shielded(db);
                    return Err(Error::CannotOpen {
                        path: path.clone(),
                        source: err,
                    });
                }
            },
            _ => None,
        };
        let engine = Engine {
            file_identity,
            db: RwLock::new(DatabaseHandle {
                db: Some(db),
                closed_by: String::new(),
            }),
            latest: RwLock::new(Latest::default()),
            source,
            cache_bytes,
            integrity_check,
            journal,
            quick_repair,
            reopen_cause: Mutex::new(None),
            must_reopen: AtomicBool::new(false),
        };
        Ok((engine, opened, writer))
    }

    /// Runs `f` on the shared database.
    pub fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match &slot.db {
            Some(db) => storage::shielded(|| f(db)),
            None => Err(slot.closed_error()),
        }
    }

    /// Reads and verifies one key's record, in the snapshot lookups share.
    /// The first lookup after a commit opens it, in a read transaction, and
    /// the lookups after it until the next commit share it: two B-tree
    /// searches each, without a transaction and two table opens of their
    /// own.
    pub fn read_record(&self, key: &Key) -> Result<Option<StoredRecord>> {
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = &slot.db else {
            return Err(slot.closed_error());
        };
        // Cloned, not read under the lock: the writer clearing it never
        // waits for a lookup.
        let (seen, shared) = {
            let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
            (latest.commits, latest.snapshot.clone())
        };
        let snapshot = match shared {
            Some(snapshot) => snapshot,
            None => {
                // Opened after `seen` commits ended, so it holds all of
                // them (and perhaps a later one not yet acknowledged).
                let fresh = Arc::new(Snapshot::open(db)?);
                #[cfg(test)]
                tests::AFTER_SNAPSHOT_OPEN.with(|hook| {
                    if let Some(hook) = hook.borrow_mut().as_mut() {
                        hook();
                    }
                });
                let mut latest = self.latest_mut();
                if latest.commits == seen && latest.snapshot.is_none() {
                    latest.snapshot = Some(Arc::clone(&fresh));
                }
                fresh
            }
        };
        snapshot.read_record(key)
    }

    /// Tells lookups that a commit ended: the next one opens a fresh
    /// snapshot. The single writer calls it after each commit, before the
    /// commit is acknowledged, and after a failed one too (what it left
    /// visible is for a fresh transaction to tell).
    pub fn committed(&self) {
        let old = {
            let mut latest = self.latest_mut();
            latest.commits += 1;
            latest.snapshot.take()
        };
        // The last holder of the old snapshot ends its read transaction,
        // here or in a lookup still using it, outside the lock.
        drop(old);
    }

    fn latest_mut(&self) -> RwLockWriteGuard<'_, Latest> {
        self.latest.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the committer to reopen the database before its next write,
    /// because of `cause`.
    pub fn must_reopen(&self, cause: String) {
        *self
            .reopen_cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cause);
        self.must_reopen.store(true, Ordering::Release);
    }

    /// Why the database must be reopened before the next write, if it
    /// must; asking clears it.
    pub fn take_reopen_cause(&self) -> Option<String> {
        if !self.must_reopen.load(Ordering::Acquire) {
            return None;
        }
        self.must_reopen.store(false, Ordering::Release);
        self.reopen_cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Runs `f` with the database to itself: no transaction of anyone else
    /// is alive meanwhile (the lookups' snapshot included).
    pub fn exclusive<T>(&self, f: impl FnOnce(&mut Database) -> Result<T>) -> Result<T> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let closed = slot.closed_error();
        // Every lookup runs under the shared lock, so once the snapshot is
        // out of `latest` nobody holds it; `f` may write, so it counts as a
        // commit.
        self.committed();
        match &mut slot.db {
            Some(db) => storage::shielded(|| f(db)),
            None => Err(closed),
        }
    }

    /// Where the database lives.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Whether the database can be opened again after a failure.
    pub fn can_reopen(&self) -> bool {
        !matches!(self.source, Source::Memory)
    }

    /// Closes the database and opens it again from its source (the engine
    /// then recovers the file as after a crash: what was committed durably
    /// is there). On failure the database stays closed, with the error as
    /// the cause every access reports, until the next `reopen`. The journal,
    /// if any, is replayed, and its new writer comes back.
    pub fn reopen(&self) -> Result<(Opened, Option<Journal>)> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        self.committed();
        if let Some(old) = slot.db.take() {
            // Closing may commit and fail; what is durable is on disk anyway.
            let _ = close_shielded(old);
        }
        let reopened = self.check_same_file().and_then(|()| {
            self.source.rewrite()?;
            open_prepared(
                &self.source,
                self.cache_bytes,
                self.integrity_check,
                false,
                JournalMode {
                    keep: self.journal,
                    quick_repair: self.quick_repair,
                },
                false,
            )
        });
        match reopened {
            Ok((db, opened, writer)) => {
                slot.db = Some(db);
                slot.closed_by.clear();
                Ok((opened, writer))
            }
            Err(err) => {
                self.source.doubt_after(&err);
                slot.closed_by = format!("reopening the store failed: {err}");
                Err(err)
            }
        }
    }

    /// Marks the storage doubted after a failed commit: until a rewrite
    /// completes (the heal's, or the next open's), an open of it in this
    /// process writes it back first.
    pub fn doubt(&self) {
        self.source.doubt();
    }

    /// Checks that the file at the store's path is still the file it
    /// opened: a reopen must never create an empty store where the file
    /// was (moved, deleted, or replaced), which would forget every answer.
    fn check_same_file(&self) -> Result<()> {
        let (Some(identity), Source::File(path)) = (&self.file_identity, &self.source) else {
            return Ok(());
        };
        let found = FileIdentity::of(path);
        match found {
            Ok(found) if found == *identity => Ok(()),
            Ok(_) => Err(Error::FileReplaced {
                path: path.clone(),
                detail: "another file is at its path now".to_string(),
            }),
            Err(err) => Err(Error::FileReplaced {
                path: path.clone(),
                detail: err.to_string(),
            }),
        }
    }

    /// After a close that failed on I/O (its final commit, or a commit
    /// before it that left the store recovering): a failed sync gives up the pages it
    /// was to write, which stay in the operating system's page cache, so an
    /// open of the file later in this boot would read them and build on
    /// pages the disk never got; a power cut would then leave a file that
    /// does not open. Writing the file back, synced, as a heal does before
    /// its reopen, makes the disk hold what the page cache shows. Failing
    /// that, the storage stays doubted and the next open in this process
    /// writes it back first; the failure is logged.
    pub fn rewrite_after_failed_close(&self) {
        self.source.doubt();
        // A custom backend may panic as redb's calls may: never into the
        // thread closing the store.
        if let Err(_err) = storage::shielded(|| self.source.rewrite()) {
            event!(error, error = %_err, "rewriting the store's file after a failed close failed; the next open in this process writes it back first (from another process, restart the machine before opening it)");
        }
    }

    /// Closes the database. With `final_commit`, a last durable commit runs
    /// first and its outcome is reported: the final sync, which a drop can
    /// only attempt.
    pub fn close(&self, final_commit: bool) -> Result<()> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        self.committed();
        let db = slot.db.take();
        slot.closed_by.clear();
        match db {
            Some(db) => storage::shielded(move || {
                if final_commit {
                    db.begin_write()?.commit()?;
                }
                drop(db);
                Ok(())
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the database may commit, and so meet damaged pages: a
        // panic of the engine must not escape into the thread dropping the
        // store. Nobody is left to return an error to; a failed sync
        // leaves the file doubted for the next open in this process.
        if let Err(err) = self.close(false) {
            self.source.doubt_after(&err);
            event!(error, error = %err, "closing the store's file failed");
        }
    }
}

/// Whether the store journals its commits, and whether its durable
/// commits record the allocator state.
#[derive(Clone, Copy)]
struct JournalMode {
    keep: bool,
    quick_repair: bool,
}

/// Which file a path names: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path)?;
        Ok(FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// `path` with its directory made absolute and resolved (the file name
/// itself is kept: a store opened through a symbolic link keeps its journal
/// beside the link). Unchanged if the directory cannot be resolved: opening
/// then reports the error.
fn absolute_dir(path: &Path) -> PathBuf {
    let (Some(name), dir) = (path.file_name(), path.parent()) else {
        return path.to_path_buf();
    };
    let dir = match dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::canonicalize(dir) {
        Ok(dir) => dir.join(name),
        Err(_) => path.to_path_buf(),
    }
}

/// Opens the database and prepares it (format check, recovery policy). A
/// database that fails preparation is closed behind the shield: closing
/// commits, and after redb panicked on a damaged page its own state (a
/// poisoned lock) can make closing panic too.
fn open_prepared(
    source: &Source,
    cache_bytes: usize,
    integrity_check: bool,
    release_in_flight: bool,
    journal: JournalMode,
    create: bool,
) -> Result<(Database, Opened, Option<Journal>)> {
    if let Source::File(path) = source
        && create
        && matches!(std::fs::symlink_metadata(path), Err(err) if err.kind() == std::io::ErrorKind::NotFound)
        && let Some(created) = create_whole(
            path,
            cache_bytes,
            integrity_check,
            release_in_flight,
            journal,
        )?
    {
        return Ok(created);
    }
    let db = open_database(source, cache_bytes, integrity_check, create)?;
    let storage: Option<Arc<dyn JournalStorage>> = match source {
        Source::File(path) => Some(Arc::new(DirJournal::new(journal::dir_of(path)))),
        Source::Backend(_, storage) => storage.clone(),
        Source::Memory => None,
    };
    let at = storage.map(|storage| JournalAt {
        storage,
        keep: journal.keep,
        quick_repair: journal.quick_repair,
    });
    match storage::prepare(&db, source.path(), release_in_flight, at) {
        Ok((opened, writer)) => Ok((db, opened, writer)),
        Err(err) => {
            let _ = close_shielded(db);
            Err(err)
        }
    }
}

/// Creates a new store file whole: under a temporary name, prepared (its
/// tables and format in one durable commit), then linked into place and
/// its directory synced. A crash or a full disk on the way leaves at most
/// the temporary file, which the next creation replaces, never a file at
/// the store's path that does not open. `None` if another process created
/// the file meanwhile (the caller then opens that one).
fn create_whole(
    path: &Path,
    cache_bytes: usize,
    integrity_check: bool,
    release_in_flight: bool,
    journal: JournalMode,
) -> Result<Option<(Database, Opened, Option<Journal>)>> {
    let cannot = |source: std::io::Error| Error::CannotOpen {
        path: path.to_path_buf(),
        source,
    };
    let temp = whole_file::temp_beside(path);
    whole_file::clear(&temp).map_err(cannot)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(cannot)?;
    let created = (|| {
        let db = storage::shielded(|| {
            redb::backends::FileBackend::new(file)
                .and_then(|backend| {
                    builder(cache_bytes, integrity_check).create_with_backend(backend)
                })
                .map_err(|err| storage::open_error(err, path))
        })?;
        let at = JournalAt {
            storage: Arc::new(DirJournal::new(journal::dir_of(path))),
            keep: journal.keep,
            quick_repair: journal.quick_repair,
        };
        let (opened, writer) = match storage::prepare(&db, path, release_in_flight, Some(at)) {
            Ok(prepared) => prepared,
            Err(err) => {
                let _ = close_shielded(db);
                return Err(err);
            }
        };
        match whole_file::link_into_place(&temp, path) {
            Ok(true) => Ok(Some((db, opened, writer))),
            // Another process created the file meanwhile.
            Ok(false) => {
                let _ = close_shielded(db);
                Ok(None)
            }
            Err(err) => {
                let _ = close_shielded(db);
                Err(cannot(err))
            }
        }
    })();
    // Gone already if it was placed; what a failure left is removed here.
    let _ = std::fs::remove_file(&temp);
    created
}

/// Drops (closes) `db`, turning a panic of the storage engine into an error.
fn close_shielded(db: Database) -> Result<()> {
    storage::shielded(move || {
        drop(db);
        Ok(())
    })
}

/// The storage engine's settings for a store.
fn builder(cache_bytes: usize, integrity_check: bool) -> redb::Builder {
    let mut builder = Database::builder();
    builder
        .set_cache_size(cache_bytes)
        .set_check_integrity_on_open(integrity_check);
    builder
}

/// Opens the database; a file store's file is created when `create` (a
/// reopen never creates one).
fn open_database(
    source: &Source,
    cache_bytes: usize,
    integrity_check: bool,
    create: bool,
) -> Result<Database> {
    storage::shielded(|| {
        let builder = builder(cache_bytes, integrity_check);
        match source {
            Source::File(path) if create => storage::create_file(&builder, path),
            Source::File(path) => builder
                .open(path)
                .map_err(|err| storage::open_error(err, path)),
            Source::Backend(backend, _) => Ok(builder
                .create_with_backend(EngineBackend(Arc::clone(backend)))
                .map_err(|err| storage::open_error(err, source.path()))?),
            Source::Memory => Ok(builder.create_with_backend(InMemoryBackend::new())?),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// Runs in a lookup between opening its snapshot and installing
        /// it: where a commit ending meanwhile must stop the install.
        pub(super) static AFTER_SNAPSHOT_OPEN: RefCell<Option<Box<dyn FnMut()>>> =
            RefCell::new(None);
    }

    fn shared_snapshot(engine: &Engine) -> bool {
        engine
            .latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot
            .is_some()
    }

    #[test]
    fn a_lookup_never_installs_a_snapshot_older_than_a_commit_that_ended_meanwhile() {
        let (engine, _, _) =
            Engine::open(Source::Memory, 1 << 20, false, false, false, false).unwrap();
        let engine = Arc::new(engine);
        let key = Key::new("t", "k").unwrap();
        let writer = Arc::clone(&engine);
        AFTER_SNAPSHOT_OPEN.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || writer.committed()));
        });
        engine.read_record(&key).unwrap();
        AFTER_SNAPSHOT_OPEN.with(|hook| *hook.borrow_mut() = None);
        // The snapshot predates the commit: the next lookup opens a fresh one.
        assert!(!shared_snapshot(&engine), "a stale snapshot was installed");
        // Without a commit in between, lookups share one.
        engine.read_record(&key).unwrap();
        assert!(shared_snapshot(&engine));
        engine.committed();
        assert!(!shared_snapshot(&engine));
    }

    /// Bytes in memory that log every operation and fail syncs or writes
    /// when asked.
    #[derive(Debug, Default)]
    struct Recorded {
        bytes: Mutex<Vec<u8>>,
        log: Mutex<Vec<&'static str>>,
        fail_syncs: AtomicBool,
        fail_writes: AtomicBool,
    }

    impl Recorded {
        fn note(&self, op: &'static str) {
            self.log.lock().unwrap().push(op);
        }

        fn failing(flag: &AtomicBool) -> std::io::Result<()> {
            if flag.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            Ok(())
        }

        /// The operations since the last call.
        fn take_log(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }
    }

    impl StorageBackend for Arc<Recorded> {
        fn len(&self) -> std::io::Result<u64> {
            self.note("len");
            Ok(self.bytes.lock().unwrap().len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.note("read");
            let bytes = self.bytes.lock().unwrap();
            let range = offset as usize..offset as usize + out.len();
            let found = bytes.get(range).ok_or(std::io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(found);
            Ok(())
        }

        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.note("set_len");
            Recorded::failing(&self.fail_writes)?;
            self.bytes.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }

        fn sync_data(&self) -> std::io::Result<()> {
            self.note("sync");
            Recorded::failing(&self.fail_syncs)
        }

        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.note("write");
            Recorded::failing(&self.fail_writes)?;
            let mut bytes = self.bytes.lock().unwrap();
            let end = offset as usize + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[offset as usize..end].copy_from_slice(data);
            Ok(())
        }

        fn name(&self) -> Option<String> {
            Some(format!("recorded {:p}", Arc::as_ptr(self)))
        }
    }

    fn open_recorded(storage: &Arc<Recorded>) -> Result<Engine> {
        let source = Source::Backend(Arc::new(Arc::clone(storage)), None);
        Engine::open(source, 1 << 20, false, false, false, false).map(|(engine, ..)| engine)
    }

    #[test]
    fn an_open_that_fails_on_a_sync_leaves_the_storage_doubted() {
        let storage = Arc::new(Recorded::default());
        drop(open_recorded(&storage).unwrap());
        let name = StorageName::Backend(storage.name().unwrap());
        storage.fail_syncs.store(true, Ordering::SeqCst);
        assert!(
            open_recorded(&storage)
                .map(drop)
                .unwrap_err()
                .is_transient()
        );
        assert!(doubted::is_doubted(&name));
        // The disk answers again: the next open writes every byte back,
        // synced, before the engine reads anything, and trusts it after.
        storage.fail_syncs.store(false, Ordering::SeqCst);
        storage.take_log();
        drop(open_recorded(&storage).unwrap());
        let log = storage.take_log();
        assert_eq!(log[..3], ["len", "set_len", "sync"], "{log:?}");
        assert!(!doubted::is_doubted(&name));
        // A trusted storage opens without the rewrite.
        drop(open_recorded(&storage).unwrap());
        let log = storage.take_log();
        assert_ne!(log[1], "set_len", "{log:?}");
    }

    #[test]
    fn a_rewrite_that_fails_fails_the_open_and_the_storage_stays_doubted() {
        let storage = Arc::new(Recorded::default());
        drop(open_recorded(&storage).unwrap());
        let name = StorageName::Backend(storage.name().unwrap());
        doubted::doubt(&name);
        storage.fail_writes.store(true, Ordering::SeqCst);
        storage.take_log();
        assert!(
            open_recorded(&storage)
                .map(drop)
                .unwrap_err()
                .is_transient()
        );
        assert_eq!(storage.take_log(), ["len", "set_len"]);
        assert!(doubted::is_doubted(&name));
        storage.fail_writes.store(false, Ordering::SeqCst);
        drop(open_recorded(&storage).unwrap());
        assert!(!doubted::is_doubted(&name));
    }

    #[test]
    fn a_doubted_file_is_written_back_only_while_nobody_else_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let source = || Source::File(path.clone());
        let open = || Engine::open(source(), 1 << 20, false, false, false, false);
        let name = StorageName::File(absolute_dir(&path));
        // A doubted file that does not exist yet has nothing to write back.
        doubted::doubt(&name);
        let (holder, ..) = open().unwrap();
        assert!(!doubted::is_doubted(&name));
        // While another handle holds the file, writing it back could
        // overwrite that handle's writes: the open fails as the engine's
        // would, and the doubt stays.
        doubted::doubt(&name);
        assert!(matches!(open(), Err(Error::AlreadyOpen { .. })));
        assert!(doubted::is_doubted(&name));
        drop(holder);
        let before = std::fs::read(&path).unwrap();
        let (engine, ..) = open().unwrap();
        assert!(!doubted::is_doubted(&name));
        drop(engine);
        assert_eq!(std::fs::read(&path).unwrap().len(), before.len());
    }
}
