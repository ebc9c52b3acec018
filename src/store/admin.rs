//! Inspecting and administering records: get, remove, sweep, verify,
//! scan, stats, import, backup and compaction.

use std::ops::ControlFlow;
use std::path::Path;

use crate::admin::inspect::{self, ScanFilter, Stats};
use crate::admin::verify::{self, EngineCheck, VerifyReport};
use crate::committer::Imported;
use crate::config::Config;
use crate::durability::engine::{Engine, Source};
use crate::error::{Error, Result};
use crate::model::key::Key;
use crate::model::record::Record;
use crate::sweeper::{self};

use super::Store;

/// What [`Store::compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compaction {
    /// File size before compaction.
    pub bytes_before: u64,
    /// File size after compaction.
    pub bytes_after: u64,
}

impl Store {
    /// The live record of `key`, if any. Expired records read as `None` even
    /// before a sweep deletes them.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] if the record fails verification,
    /// [`Error::Storage`] if it cannot be read. After an I/O error the
    /// storage engine refuses every read and write until its file is
    /// opened again, so a failed read (here, in `begin`, `scan`, `stats` or
    /// `verify`) has the store reopen its file at once, as after a failed
    /// commit: repeat the read shortly ([`Store::health`] says when the
    /// store is back).
    pub fn get(&self, key: &Key) -> Result<Option<Record>> {
        let now_ms = self.inner.time.now_ms();
        let inner = &self.inner;
        Ok(inner
            .engine
            .read_record(key)
            .inspect_err(|err| inner.read_failed(err))?
            .filter(|record| !record.is_expired(now_ms))
            .map(|record| record.into_public(key)))
    }

    /// Deletes whatever is stored for `key`, in flight or completed (a
    /// damaged record included). A live claim on it is revoked: its holder's
    /// `complete`/`release`/`renew` fail with `LeaseLost`. Returns whether a
    /// live record was deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Poisoned`] if the commit failed.
    pub fn remove(&self, key: &Key) -> Result<bool> {
        crate::blocking::block_on(self.remove_async(key))
    }

    /// Deletes every record whose sweep time has come (its expiry, or a
    /// little later for a completion that kept its claim's place in the
    /// expiry index; see [`Config::retention`]), in write transactions of at most
    /// `Config::sweep_batch` records so claims are not stalled behind one long
    /// transaction. The background sweeper does the same every
    /// `Config::sweep_interval`; this is for stores that turned it off, and
    /// for tests. Returns how many records were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] or [`Error::Poisoned`] if a commit failed; records
    /// deleted by earlier batches stay deleted.
    pub fn sweep_expired(&self) -> Result<u64> {
        let inner = &*self.inner;
        sweeper::sweep(
            inner.committer()?,
            &inner.engine,
            &inner.config,
            &inner.time,
            &inner.counters,
            || false,
        )
    }

    /// Compacts the store file at `path` in place, returning freed space to the
    /// file system. redb reuses freed pages on its own, so a store under
    /// steady churn does not need this; it is for shrinking a file after its
    /// live set got smaller for good. The file must not be open: call it
    /// before `Store::open` (or after the last handle is dropped).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyOpen`] if a `Store` has the file open,
    /// [`Error::CannotOpen`] for a missing file, the errors of
    /// [`Store::open`] for a file that is not an idemkv store, and
    /// [`Error::Storage`] if compaction fails (the file then stays as it was
    /// or partly compacted, never inconsistent: redb compacts transactionally).
    pub fn compact(path: impl AsRef<Path>) -> Result<Compaction> {
        let path = path.as_ref();
        let size = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|source| Error::CannotOpen {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let bytes_before = size(path)?;
        let (engine, _, _) = Engine::open(
            Source::File(path.to_path_buf()),
            Config::default().settings.storage_cache_bytes,
            false,
            false,
            false,
            false,
        )?;
        engine.exclusive(|db| {
            while db.compact()? {}
            Ok(())
        })?;
        engine.close(false)?;
        Ok(Compaction {
            bytes_before,
            bytes_after: size(path)?,
        })
    }

    /// Checks the whole store: the storage engine's own integrity check (the
    /// checksum of every page), then every record decoded and checked
    /// against the key it is stored under, and the expiry and in-flight
    /// indexes cross-checked against the records. Reads and writes wait
    /// while it runs (it reads the whole file).
    ///
    /// The report lists what is wrong; [`VerifyReport::is_ok`] says whether
    /// anything is. `Config::verify_on_open` runs the same checks at open
    /// and refuses a damaged file.
    ///
    /// The engine's check first makes the latest commit durable (with the
    /// journal, commits between checkpoints are not synced into the file),
    /// so it writes, and a full disk can fail it.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the file cannot be read at all, or the engine's
    /// check fails on an I/O error (a full disk: free space and verify
    /// again); the store then reopens its file at once, as after any read
    /// that failed (see [`Store::get`]). The store is recovering from a
    /// failed commit: [`Error::Poisoned`].
    pub fn verify(&self) -> Result<VerifyReport> {
        let engine = &self.inner.engine;
        let checked = engine.exclusive(|db| {
            let check = match db.check_integrity() {
                Ok(true) => EngineCheck::Passed,
                Ok(false) => EngineCheck::Repaired,
                Err(err) => {
                    let err = Error::from(err);
                    // An I/O failure (a full disk) is not damage: it is
                    // returned, and asks for the reopen below as any read
                    // that failed does.
                    if err.is_transient() {
                        return Err(err);
                    }
                    // A failed check gives the engine's allocator state
                    // up: no write works until the file is reopened.
                    self.inner
                        .ask_reopen(format!("verify: the storage engine's check failed: {err}"));
                    EngineCheck::Failed(err.to_string())
                }
            };
            let mut report = match &check {
                // The engine's state is not to be trusted for a table walk.
                EngineCheck::Failed(_) => VerifyReport::default(),
                _ => verify::verify_tables(db)?,
            };
            report.note_engine(check);
            Ok(report)
        });
        // A table walk's I/O error leaves the engine as the check's does.
        checked.inspect_err(|err| self.inner.read_failed(err))
    }

    /// Visits the records that match `filter` (every live record by
    /// default), in-flight ones first, each group in key-hash order, until
    /// `visit` breaks or the records run out. A record that fails
    /// verification is passed as `Err(Error::Corrupted)`.
    ///
    /// One read transaction covers the whole scan: it sees the store as it
    /// was when the scan began, and writes go on meanwhile.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use idemkv::{Begin, Config, Fingerprint, Key, RecordStateFilter, ScanFilter, Store};
    ///
    /// let store = Store::in_memory(Config::default())?;
    /// let key = Key::new("tenant-1 POST /v1/charges", "order-1")?;
    /// let Begin::Claimed(claim) = store.begin(&key, Fingerprint::of(b"{}"))? else { unreachable!() };
    /// let mut in_flight = Vec::new();
    /// store.scan(&ScanFilter::default().state(RecordStateFilter::InFlight), |record| {
    ///     in_flight.push(record.map(|r| r.key().clone()));
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(in_flight.len(), 1);
    /// # drop(claim);
    /// # Ok::<(), idemkv::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the file cannot be read.
    pub fn scan(
        &self,
        filter: &ScanFilter,
        mut visit: impl FnMut(Result<Record>) -> ControlFlow<()>,
    ) -> Result<()> {
        let now_ms = self.inner.time.now_ms();
        let inner = &self.inner;
        inner
            .engine
            .read(|db| inspect::scan(db, filter, now_ms, &mut visit))
            .inspect_err(|err| inner.read_failed(err))
    }

    /// A summary of the store: records by state, claims past their lease,
    /// the busiest scopes, the oldest claim, what expires within the hour,
    /// the file's size and free space, its format and its last sweep. It
    /// reads every record once, then counts the file's pages with writes
    /// and lookups held off for that moment.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the file cannot be read.
    pub fn stats(&self) -> Result<Stats> {
        self.stats_with_progress(|_| {})
    }

    /// [`stats`](Self::stats), calling `progress` with the number of records
    /// read so far as it goes (every 4,096 records and at the end; compare
    /// with `metrics().live_records` for a progress bar).
    ///
    /// # Errors
    ///
    /// As [`stats`](Self::stats).
    pub fn stats_with_progress(&self, mut progress: impl FnMut(u64)) -> Result<Stats> {
        let now_ms = self.inner.time.now_ms();
        let engine = &self.inner.engine;
        let inner = &self.inner;
        let mut stats = engine
            .read(|db| inspect::record_stats(db, now_ms, &mut progress))
            .inspect_err(|err| inner.read_failed(err))?;
        // The count needs the engine's write lock: taken with the database
        // to itself, between two of the committer's batches, so that it
        // never waits inside the engine for a batch (and never holds one
        // up there).
        stats.allocated_bytes = engine
            .exclusive(|db| inspect::allocated_bytes(db))
            .inspect_err(|err| inner.read_failed(err))?;
        if let Source::File(path) = engine.source() {
            stats.file_bytes = std::fs::metadata(path).ok().map(|m| m.len());
        }
        Ok(stats)
    }

    /// Writes `records` exactly as given (state, token, times, fingerprint,
    /// response), all in one transaction: a backup read back, or records
    /// moved from another machine. Records that have already expired are
    /// skipped. Tokens issued afterwards are larger than every imported one.
    ///
    /// # Errors
    ///
    /// [`Error::ImportConflict`] if a key already holds a live record here
    /// or appears twice; nothing is imported then. [`Error::Storage`] or
    /// [`Error::Poisoned`] if the commit failed.
    pub fn import(&self, records: impl IntoIterator<Item = Record>) -> Result<Imported> {
        let stored: Vec<_> = records.into_iter().map(|r| r.to_stored()).collect();
        let hashes: Vec<[u8; 32]> = stored
            .iter()
            .filter_map(|r| Key::new(&r.scope, &r.idempotency_key).ok())
            .map(|key| *key.hash())
            .collect();
        let imported = crate::blocking::block_on(self.inner.committer()?.import(stored))?;
        // Whatever the lock table knew of these keys predates their records.
        for hash in &hashes {
            self.inner.locks.forget(hash);
        }
        Ok(imported)
    }

    /// Writes a consistent copy of this store, as of the latest commit, to
    /// a new file at `path` that opens on its own (no journal beside it):
    /// every write acknowledged before the call is in it. Safe while the
    /// store serves requests: writes go on during the copy (a heal after a
    /// failed commit waits for it to end), and the copy appears at `path`
    /// only once it is complete and durable. Copying a live store's file
    /// and journal with other tools is not safe (docs/operations.md,
    /// "Backups").
    ///
    /// # Errors
    ///
    /// [`Error::CannotOpen`] if `path` (or `<path>.journal`) exists or
    /// cannot be written; [`Error::Storage`] if reading the store or
    /// writing the copy fails (nothing is left at `path` then);
    /// [`Error::Closed`] or [`Error::Poisoned`] while the store cannot be
    /// read.
    pub fn backup_to(&self, path: impl AsRef<Path>) -> Result<crate::Backup> {
        let path = path.as_ref();
        self.inner
            .engine
            .read(|db| crate::admin::backup::backup(db, path))
    }

    /// The one implementation of `remove`.
    pub(crate) async fn remove_async(&self, key: &Key) -> Result<bool> {
        let removed = self.inner.committer()?.remove(key).await;
        // Whatever the answer: a remove that failed may have landed (its
        // frame can be replayed when the store heals), and an entry left
        // behind would answer `begin` for a record that is gone. Without
        // the entry `begin` reads the record, which is right either way.
        self.inner.locks.forget(key.hash());
        let live = removed?;
        if live {
            self.inner.counters.outcomes.removed.bump();
        }
        Ok(live)
    }
}
