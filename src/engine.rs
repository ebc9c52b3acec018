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

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::Database;
use redb::backends::InMemoryBackend;

use crate::error::{Error, Result};
use crate::log::event;
use crate::storage::{self, Opened};
use crate::storage_backend::{EngineBackend, StorageBackend};

/// Where the database lives, kept so that it can be opened again.
pub(crate) enum Source {
    /// A file at this path.
    File(PathBuf),
    /// A custom backend; the engine holds it through a shared handle.
    Backend(Arc<dyn StorageBackend>),
    /// Memory only: cannot be reopened (the bytes live in the database).
    Memory,
}

impl Source {
    /// How the source is named in errors.
    pub fn path(&self) -> &Path {
        match self {
            Source::File(path) => path,
            Source::Backend(_) => Path::new("<custom storage backend>"),
            Source::Memory => Path::new(":memory:"),
        }
    }
}

/// The shared database of one store.
pub(crate) struct Engine {
    db: RwLock<Slot>,
    source: Source,
    cache_bytes: usize,
    integrity_check: bool,
}

struct Slot {
    db: Option<Database>,
    /// Why `db` is `None`: a failure, or empty once the store was closed.
    closed_by: String,
}

impl Slot {
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
    /// tables of a new file, the recovery policy).
    pub fn open(
        source: Source,
        cache_bytes: usize,
        integrity_check: bool,
        release_in_flight: bool,
    ) -> Result<(Engine, Opened)> {
        let (db, opened) = open_prepared(&source, cache_bytes, integrity_check, release_in_flight)?;
        let engine = Engine {
            db: RwLock::new(Slot {
                db: Some(db),
                closed_by: String::new(),
            }),
            source,
            cache_bytes,
            integrity_check,
        };
        Ok((engine, opened))
    }

    /// Runs `f` on the shared database.
    pub fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match &slot.db {
            Some(db) => storage::shielded(|| f(db)),
            None => Err(slot.closed_error()),
        }
    }

    /// Runs `f` with the database to itself: no transaction of anyone else
    /// is alive meanwhile.
    pub fn exclusive<T>(&self, f: impl FnOnce(&mut Database) -> Result<T>) -> Result<T> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let closed = slot.closed_error();
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
    /// the cause every access reports, until the next `reopen`.
    pub fn reopen(&self) -> Result<Opened> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.db.take() {
            // Closing may commit and fail; what is durable is on disk anyway.
            let _ = close_shielded(old);
        }
        let reopened = open_prepared(&self.source, self.cache_bytes, self.integrity_check, false);
        match reopened {
            Ok((db, opened)) => {
                slot.db = Some(db);
                slot.closed_by.clear();
                Ok(opened)
            }
            Err(err) => {
                slot.closed_by = format!("reopening the store failed: {err}");
                Err(err)
            }
        }
    }

    /// Closes the database. With `final_commit`, a last durable commit runs
    /// first and its outcome is reported: the final sync, which a drop can
    /// only attempt.
    pub fn close(&self, final_commit: bool) -> Result<()> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
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
        // store. Nobody is left to return an error to.
        if let Err(_err) = self.close(false) {
            event!(error, error = %_err, "closing the store's file failed");
        }
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
) -> Result<(Database, Opened)> {
    let db = open_database(source, cache_bytes, integrity_check)?;
    match storage::prepare(&db, source.path(), release_in_flight) {
        Ok(opened) => Ok((db, opened)),
        Err(err) => {
            let _ = close_shielded(db);
            Err(err)
        }
    }
}

/// Drops (closes) `db`, turning a panic of the storage engine into an error.
fn close_shielded(db: Database) -> Result<()> {
    storage::shielded(move || {
        drop(db);
        Ok(())
    })
}

fn open_database(source: &Source, cache_bytes: usize, integrity_check: bool) -> Result<Database> {
    storage::shielded(|| {
        let mut builder = Database::builder();
        builder
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(integrity_check);
        match source {
            Source::File(path) => storage::create_file(&builder, path),
            Source::Backend(backend) => Ok(builder
                .create_with_backend(EngineBackend(Arc::clone(backend)))
                .map_err(|err| storage::open_error(err, source.path()))?),
            Source::Memory => Ok(builder.create_with_backend(InMemoryBackend::new())?),
        }
    })
}
