//! The redb file: table definitions, opening and format checks, and reads.
//!
//! Tables:
//! - `records`: 32-byte key hash → encoded completed record ([`crate::model::codec`]).
//! - `inflight`: 32-byte key hash → encoded in-flight record. Kept apart from
//!   `records` so a claim rewrites a few pages of a small, hot table instead of
//!   a random leaf of the large one: a completed record costs one random
//!   B-tree leaf write instead of two.
//! - `expiry`: (sweep_at_ms, key hash) → (), one entry per record, ordered by
//!   time so sweeps read only what is due.
//!
//! Invariant: a key is in at most one of `records` and `inflight`, and the
//! `expiry` table has exactly one entry for it, matching its `sweep_at_ms`,
//! which is never before its `expires_at_ms`. A claim's entry is at its
//! lease's end plus the retention; its completion, which expires one
//! retention after it, keeps that entry when it comes at most
//! 1/[`KEEP_ENTRY_SHARE`] of the retention later (see [`WriteTables::put`]). So
//! a completed record is swept at most that long after it starts reading as
//! absent, and such a completion writes nothing to `expiry`.
//! - `meta`: `format_version`, `token_ceiling` (no fencing token above it
//!   has been issued; a reopened store starts above it), `last_sweep_ms`,
//!   and `journal_seq` (the last journal frame the file holds, see
//!   [`crate::durability::journal`]).
//!
//! With the journal, every write a transaction makes through
//! [`WriteTables`] is also recorded as a [`Change`]; a batch's changes are
//! one journal frame, and replaying the frames after `journal_seq` in order
//! makes the tables what they were. Replay is idempotent: each change sets a
//! row or deletes it, so applying a suffix of the changes again to tables
//! that already hold some of it leaves them as the whole sequence did.
//!
//! Longer than most files here on purpose: the table definitions, the format
//! versions and the write tables keep one invariant together (a record's
//! expiry entry).

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::durability::journal::Journal;
use crate::durability::journal_storage::JournalStorage;
use crate::error::{Error, Result};
use crate::model::codec;
use crate::model::key::Key;
use crate::model::record::{StoredRecord, StoredState};

/// The name of the `records` table (also given to benchmarks that read a
/// closed store's file with redb, as `fuzzing::RECORDS_TABLE` with the
/// `fuzzing` feature).
pub(crate) const RECORDS_NAME: &str = "records";
pub(crate) const RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new(RECORDS_NAME);
pub(crate) const INFLIGHT: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("inflight");
pub(crate) const EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> = TableDefinition::new("expiry");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A completion keeps its claim's expiry entry when that comes at most
/// 1/`KEEP_ENTRY_SHARE` of the retention after the completion's own expiry: with
/// the defaults (a 60 s lease, a 24 h retention) every completion within its
/// lease does, and the records kept past their expiry are at most that
/// share of a retention's worth (6.25%, and 0.07% with the defaults).
///
/// Trades disk space held by expired records (and a sweep that comes up to
/// the rest of a lease late) against a third table written by every
/// completion. The journal did not make it cheap: moving the entry costs
/// the committer about a third more instructions per fresh-key cycle, and
/// the 64-client figure dropped with it (docs/benchmarks.md, "A completion
/// keeps its claim's expiry entry"). The share is a round number, not
/// tuned.
pub(crate) const KEEP_ENTRY_SHARE: u64 = 16;

/// The file format this build writes; files with a larger version are refused.
///
/// - 1: the first format.
/// - 2: records may use record encoding 2 (recovery points in in-flight
///   records).
/// - 3: records may use record encoding 3, and a record's expiry entry may
///   come after its expiry time (`sweep_at_ms`).
/// - 4: a journal beside the file may hold commits the file does not
///   (written by a store opened with `Config::journal`).
///
/// An older file is upgraded when it is opened: its records stay as they are
/// (this build reads encodings 1 and 2, whose expiry entries are at their
/// expiry times) and the version in `meta` becomes the current one, so that
/// an older build refuses the file instead of failing on its new records or
/// looking for their expiry entries in the wrong place. A store without the
/// journal upgrades to [`FORMAT_WITHOUT_JOURNAL`] only, so that a file never
/// journaled stays readable by the builds before the journal.
pub(crate) const FORMAT_VERSION: u64 = 4;
/// The newest format a store opened without the journal writes.
pub(crate) const FORMAT_WITHOUT_JOURNAL: u64 = 3;
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_TOKEN_CEILING: &str = "token_ceiling";
/// When a sweep last deleted records (store time, ms); absent until then.
/// Older builds ignore it.
pub(crate) const META_LAST_SWEEP: &str = "last_sweep_ms";
/// The sequence number of the last journal frame the file holds (0 or
/// absent: none).
pub(crate) const META_JOURNAL_SEQ: &str = "journal_seq";

/// Runs `f`, turning a panic inside the storage engine into
/// `Error::Corrupted`. redb trusts the structure of pages it reads back and
/// panics on some impossible values (a page type byte it does not know, for
/// one); a damaged file must be an error for the caller, never a crash of
/// the caller's thread. Everything idemkv itself does returns errors, so a
/// panic here can only come from redb meeting damaged data.
pub(crate) fn shielded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::corrupted(format!(
            "the storage engine met damaged data and stopped ({detail})"
        )))
    })
}

/// Opens or creates the database file at `path` (behind the caller's
/// shield).
pub(crate) fn create_file(builder: &redb::Builder, path: &Path) -> Result<Database> {
    builder.create(path).map_err(|err| open_error(err, path))
}

/// The error for a database that could not be opened from `path`.
pub(crate) fn open_error(err: redb::DatabaseError, path: &Path) -> Error {
    match err {
        // redb checks the magic number first: anything else is not a store.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::NotAStore {
                path: path.to_path_buf(),
            }
        }
        // Opening the file itself failed (nothing was read yet).
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem
                    | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Error::CannotOpen {
                path: path.to_path_buf(),
                source: io,
            }
        }
        redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen {
            path: path.to_path_buf(),
        },
        other => other.into(),
    }
}

/// What opening found in the file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opened {
    /// No fencing token above it has been issued.
    pub token_ceiling: u64,
    /// Records in the file after recovery.
    pub live_records: u64,
    /// In-flight records released by `Recovery::ReleaseAtOpen`.
    pub released: u64,
    /// In-flight records kept (claims of a process that stopped, or of this
    /// one before a reopen): they keep their leases.
    pub in_flight: u64,
}

/// The journal at open: where it is, and whether the store goes on writing
/// to it.
pub(crate) struct JournalAt {
    pub storage: Arc<dyn JournalStorage>,
    pub keep: bool,
    /// Whether durable commits record the allocator state
    /// (`Config::quick_repair`).
    pub quick_repair: bool,
}

/// Checks the file is an idemkv store this build understands, creates the
/// tables of a new one, replays the journal if there is one (whether or not
/// the store goes on journaling), applies the recovery policy, and reports
/// what it found. All of it is one durable commit, which covers every
/// replayed frame; the journal's writer comes back when `journal.keep`.
pub(crate) fn prepare(
    db: &Database,
    path: &Path,
    release_in_flight: bool,
    journal: Option<JournalAt>,
) -> Result<(Opened, Option<Journal>)> {
    shielded(|| prepare_unshielded(db, path, release_in_flight, journal))
}

fn prepare_unshielded(
    db: &Database,
    path: &Path,
    release_in_flight: bool,
    journal: Option<JournalAt>,
) -> Result<(Opened, Option<Journal>)> {
    let mut txn = db.begin_write()?;
    let ours = [RECORDS.name(), INFLIGHT.name(), EXPIRY.name(), META.name()];
    let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    let foreign = tables.iter().any(|name| !ours.contains(&name.as_str()))
        || txn.list_multimap_tables()?.next().is_some();
    if foreign || (!tables.is_empty() && !tables.iter().any(|t| t == META.name())) {
        return Err(Error::NotAStore {
            path: path.to_path_buf(),
        });
    }
    let target = match &journal {
        Some(JournalAt { keep: true, .. }) => FORMAT_VERSION,
        _ => FORMAT_WITHOUT_JOURNAL,
    };
    let quick_repair = journal
        .as_ref()
        .is_some_and(|at| at.keep && at.quick_repair);
    let covered_seq = {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_FORMAT_VERSION)?.map(|v| v.value());
        match version {
            None if tables.is_empty() => {
                meta.insert(META_FORMAT_VERSION, target)?;
            }
            None => {
                return Err(Error::NotAStore {
                    path: path.to_path_buf(),
                });
            }
            Some(found) if found > FORMAT_VERSION => {
                return Err(Error::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Some(found) if found < target => {
                meta.insert(META_FORMAT_VERSION, target)?;
            }
            Some(_) => {}
        }
        meta.get(META_JOURNAL_SEQ)?.map_or(0, |v| v.value())
    };
    let (journal, token_ceiling, live_records, released, in_flight) = {
        let mut tables = WriteTables::open(&txn, false)?;
        let journal = match journal {
            Some(at) => {
                let name = at.storage.describe();
                let recovered = Journal::recover(at.storage, covered_seq)?;
                for (seq, payload) in &recovered.frames {
                    let changes = Change::decode_frame(payload).map_err(|err| {
                        Error::corrupted(format!(
                            "journal frame {seq} of {name} cannot be decoded ({err}); restore the store's file and journal from a backup"
                        ))
                    })?;
                    tables.replay(&txn, changes)?;
                }
                let last = recovered.journal.last_seq();
                if last != covered_seq {
                    set_journal_seq(&txn, last)?;
                }
                Some((recovered.journal, last, at.keep))
            }
            None => None,
        };
        // Read after the replay, which may have raised it.
        let token_ceiling = txn
            .open_table(META)?
            .get(META_TOKEN_CEILING)?
            .map_or(0, |v| v.value());
        let released = if release_in_flight {
            tables.release_all_in_flight()?
        } else {
            0
        };
        (
            journal,
            token_ceiling,
            tables.len()?,
            released,
            tables.in_flight_len()?,
        )
    };
    // Durable; with quick repair, with the allocator's state, so that an
    // open after a crash that follows it needs no full repair.
    txn.set_quick_repair(quick_repair);
    txn.commit()?;
    let opened = Opened {
        token_ceiling,
        live_records,
        released,
        in_flight,
    };
    // The commit covers every replayed frame: the journal's segments are
    // free from now on.
    let journal = match journal {
        Some((mut journal, last, true)) => {
            journal.checkpointed(last);
            Some(journal)
        }
        _ => None,
    };
    Ok((opened, journal))
}

/// The tables a record is read from, as one committed state of the database
/// holds them (a read transaction's view, kept open as long as the snapshot
/// lives). Lookups share one until the next commit
/// ([`crate::durability::engine::Engine::read_record`]).
pub(crate) struct Snapshot {
    records: ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    inflight: ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
}

impl Snapshot {
    /// The state of `db`'s latest commit.
    pub fn open(db: &Database) -> Result<Snapshot> {
        shielded(|| {
            let txn = db.begin_read()?;
            Ok(Snapshot {
                records: txn.open_table(RECORDS)?,
                inflight: txn.open_table(INFLIGHT)?,
            })
        })
    }

    /// Reads and verifies one key's record. `records` comes first: a key
    /// read without a claim of this process on it is most often completed.
    pub fn read_record(&self, key: &Key) -> Result<Option<StoredRecord>> {
        shielded(|| {
            for table in [&self.records, &self.inflight] {
                if let Some(bytes) = table.get(key.hash())? {
                    return codec::decode_for(key, bytes.value()).map(Some);
                }
            }
            Ok(None)
        })
    }
}

/// Whether any record's sweep time has come: one read of the first entry of
/// the `expiry` index, so a sweeper with nothing to do writes nothing.
pub(crate) fn anything_due(db: &Database, now_ms: u64) -> Result<bool> {
    shielded(|| {
        let txn = db.begin_read()?;
        let expiry = txn.open_table(EXPIRY)?;
        Ok(match expiry.first()? {
            Some((index, _)) => index.value().0 <= now_ms,
            None => false,
        })
    })
}

/// Where a stored record lives and where its expiry entry is: what
/// rewriting or deleting it must clean up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowPlace {
    pub sweep_at_ms: u64,
    pub in_flight: bool,
}

impl StoredRecord {
    pub fn place(&self) -> RowPlace {
        RowPlace {
            sweep_at_ms: self.sweep_at_ms,
            in_flight: matches!(self.state, StoredState::InFlight { .. }),
        }
    }
}

type ByHash<'t> = Table<'t, &'static [u8; 32], &'static [u8]>;

/// One write to a table, as a journal frame carries it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Change {
    /// A row of `inflight` (or of `records`) set to `bytes` (a `Bytes`, so
    /// that postcard writes it as one slice, not byte by byte).
    Row {
        in_flight: bool,
        hash: [u8; 32],
        bytes: bytes::Bytes,
    },
    /// A row of `inflight` (or of `records`) deleted.
    RowDeleted { in_flight: bool, hash: [u8; 32] },
    /// An `expiry` entry added.
    Expiry { at_ms: u64, hash: [u8; 32] },
    /// An `expiry` entry deleted.
    ExpiryDeleted { at_ms: u64, hash: [u8; 32] },
    /// A `meta` value set.
    Meta { name: String, value: u64 },
}

impl Change {
    /// One batch's changes as a journal frame's payload (postcard).
    pub fn encode_frame(changes: &[Change]) -> Result<Vec<u8>> {
        let failed = |err| {
            Error::corrupted(format!(
                "a batch could not be encoded for the journal: {err}"
            ))
        };
        // Sized first, so a batch of many rows is written into one
        // allocation instead of a vector that doubles a dozen times.
        let len = postcard::experimental::serialized_size(changes).map_err(failed)?;
        postcard::to_extend(changes, Vec::with_capacity(len)).map_err(failed)
    }

    /// A journal frame's payload back as the batch's changes.
    pub fn decode_frame(payload: &[u8]) -> std::result::Result<Vec<Change>, postcard::Error> {
        postcard::from_bytes(payload)
    }
}

/// Records in `meta` that the file holds every journal frame up to `seq`
/// (what a checkpoint writes).
pub(crate) fn set_journal_seq(txn: &WriteTransaction, seq: u64) -> Result<()> {
    txn.open_table(META)?.insert(META_JOURNAL_SEQ, seq)?;
    Ok(())
}

/// The tables of one write transaction, with the operations that keep the
/// invariants above.
pub(crate) struct WriteTables<'t> {
    records: ByHash<'t>,
    inflight: ByHash<'t>,
    expiry: Table<'t, (u64, &'static [u8; 32]), ()>,
    /// Records added and deleted in this transaction.
    added: u64,
    deleted: u64,
    /// How the number of in-flight records changed in this transaction.
    in_flight_change: i64,
    /// Every write made through this handle, when it is journaled.
    changes: Option<Vec<Change>>,
    /// Row and expiry-entry writes attempted through this handle.
    writes: u64,
}

impl<'t> WriteTables<'t> {
    /// The tables of `txn`; with `journaled`, every write is recorded for
    /// [`take_changes`](Self::take_changes).
    pub fn open(txn: &'t WriteTransaction, journaled: bool) -> Result<WriteTables<'t>> {
        Ok(WriteTables {
            records: txn.open_table(RECORDS)?,
            inflight: txn.open_table(INFLIGHT)?,
            expiry: txn.open_table(EXPIRY)?,
            added: 0,
            deleted: 0,
            in_flight_change: 0,
            changes: journaled.then(Vec::new),
            writes: 0,
        })
    }

    /// Row and expiry-entry writes attempted so far, failed ones included:
    /// an operation that answers with an error of its own must not have
    /// moved it.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The writes made so far (empty unless journaled), in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Sets a `meta` value in `txn` (recorded like the table writes).
    pub fn set_meta(&mut self, txn: &WriteTransaction, name: &str, value: u64) -> Result<()> {
        txn.open_table(META)?.insert(name, value)?;
        if let Some(changes) = &mut self.changes {
            changes.push(Change::Meta {
                name: name.to_string(),
                value,
            });
        }
        Ok(())
    }

    /// Applies journaled `changes` as they were made.
    pub fn replay(&mut self, txn: &WriteTransaction, changes: Vec<Change>) -> Result<()> {
        for change in changes {
            match change {
                Change::Row {
                    in_flight,
                    hash,
                    bytes,
                } => self.set_row(in_flight, &hash, bytes)?,
                Change::RowDeleted { in_flight, hash } => {
                    self.delete_row(in_flight, &hash)?;
                }
                Change::Expiry { at_ms, hash } => self.add_expiry(at_ms, &hash)?,
                Change::ExpiryDeleted { at_ms, hash } => self.delete_expiry(at_ms, &hash)?,
                Change::Meta { name, value } => self.set_meta(txn, &name, value)?,
            }
        }
        Ok(())
    }

    fn rows(&mut self, in_flight: bool) -> &mut ByHash<'t> {
        if in_flight {
            &mut self.inflight
        } else {
            &mut self.records
        }
    }

    /// Sets a row; `bytes` is shared with the journal's change, not copied.
    fn set_row(&mut self, in_flight: bool, hash: &[u8; 32], bytes: bytes::Bytes) -> Result<()> {
        self.writes += 1;
        self.rows(in_flight).insert(hash, &*bytes)?;
        if let Some(changes) = &mut self.changes {
            changes.push(Change::Row {
                in_flight,
                hash: *hash,
                bytes,
            });
        }
        Ok(())
    }

    /// Deletes a row; answers whether there was one.
    fn delete_row(&mut self, in_flight: bool, hash: &[u8; 32]) -> Result<bool> {
        self.writes += 1;
        let existed = self.rows(in_flight).remove(hash)?.is_some();
        if existed && let Some(changes) = &mut self.changes {
            changes.push(Change::RowDeleted {
                in_flight,
                hash: *hash,
            });
        }
        Ok(existed)
    }

    fn add_expiry(&mut self, at_ms: u64, hash: &[u8; 32]) -> Result<()> {
        self.writes += 1;
        self.expiry.insert((at_ms, hash), ())?;
        if let Some(changes) = &mut self.changes {
            changes.push(Change::Expiry { at_ms, hash: *hash });
        }
        Ok(())
    }

    fn delete_expiry(&mut self, at_ms: u64, hash: &[u8; 32]) -> Result<()> {
        self.writes += 1;
        let existed = self.expiry.remove((at_ms, hash))?.is_some();
        if existed && let Some(changes) = &mut self.changes {
            changes.push(Change::ExpiryDeleted { at_ms, hash: *hash });
        }
        Ok(())
    }

    /// Records stored, in flight and completed.
    pub fn len(&self) -> Result<u64> {
        Ok(self.records.len()? + self.inflight.len()?)
    }

    /// Records in flight.
    pub fn in_flight_len(&self) -> Result<u64> {
        Ok(self.inflight.len()?)
    }

    /// How the number of in-flight records changed through this handle.
    pub fn in_flight_change(&self) -> i64 {
        self.in_flight_change
    }

    /// Records added and deleted through this handle so far.
    pub fn record_count_changes(&self) -> (u64, u64) {
        (self.added, self.deleted)
    }

    /// Reads one key's record. The outer `Result` is the storage engine's
    /// (fatal for the batch); the inner one is the record's own verification
    /// (it fails only the operation that read it).
    ///
    /// `inflight` is looked in first: a key is in at most one of the two
    /// tables, so the order changes no answer, and the writes that read
    /// are mostly a holder's (a completion, a renewal, a release), whose
    /// record is in flight. A miss in the small `inflight` table is cheap;
    /// one in `records` is a descent to a random leaf of the large one.
    pub fn read(&self, key: &Key) -> Result<Option<Result<StoredRecord>>> {
        for table in [&self.inflight, &self.records] {
            if let Some(bytes) = table.get(key.hash())? {
                return Ok(Some(codec::decode_for(key, bytes.value())));
            }
        }
        Ok(None)
    }

    /// Writes `record` for `key`, replacing the record that was in `old`, and
    /// sets its `sweep_at_ms`.
    ///
    /// The old record's expiry entry is kept when it comes no earlier than
    /// the new record's expiry and at most `keep_within_ms` after it; otherwise
    /// the entry moves to the new expiry. A completion passes a share of its
    /// retention: its claim's entry is at the lease's end plus the
    /// retention, and the completion expires one retention after now, so a
    /// completion within its lease keeps the entry whenever the rest of the
    /// lease is at most `keep_within_ms`, and its commit rewrites no `expiry`
    /// page. The record reads as absent from its expiry on and is swept at
    /// most `keep_within_ms` later.
    pub fn put(
        &mut self,
        key: &Key,
        old: Option<RowPlace>,
        record: &mut StoredRecord,
        keep_within_ms: u64,
    ) -> Result<()> {
        let hash = key.hash();
        let kept = old.map(|old| old.sweep_at_ms).filter(|&at| {
            at.checked_sub(record.expires_at_ms)
                .is_some_and(|late| late <= keep_within_ms)
        });
        if let Some(at) = kept {
            record.sweep_at_ms = at;
        } else {
            match old {
                Some(old) => self.delete_expiry(old.sweep_at_ms, hash)?,
                None => self.added += 1,
            }
            record.sweep_at_ms = record.expires_at_ms;
            self.add_expiry(record.sweep_at_ms, hash)?;
        }
        let bytes = bytes::Bytes::from(codec::encode(record)?);
        let in_flight = record.place().in_flight;
        self.set_row(in_flight, hash, bytes)?;
        if old.is_some_and(|old| old.in_flight != in_flight) {
            self.delete_row(!in_flight, hash)?;
        }
        let was_in_flight = old.is_some_and(|old| old.in_flight);
        self.in_flight_change += i64::from(in_flight) - i64::from(was_in_flight);
        Ok(())
    }

    /// Deletes `key`'s record. With `old` unknown (a record that failed
    /// verification) both tables are cleared and the expiry index is walked
    /// for the key's entries.
    pub fn delete(&mut self, key: &Key, old: Option<RowPlace>) -> Result<()> {
        let hash = key.hash();
        match old {
            Some(old) => {
                self.delete_expiry(old.sweep_at_ms, hash)?;
                if self.delete_row(old.in_flight, hash)? {
                    self.deleted += 1;
                    self.in_flight_change -= i64::from(old.in_flight);
                }
            }
            None => {
                if self.delete_row(false, hash)? {
                    self.deleted += 1;
                }
                if self.delete_row(true, hash)? {
                    self.deleted += 1;
                    self.in_flight_change -= 1;
                }
                // The record could not be read, so its expiry time is
                // unknown: find its index entries by walking the index. Only
                // the removal of a damaged record pays for this.
                let mut stale = Vec::new();
                for entry in self.expiry.iter()? {
                    let (index, _) = entry?;
                    let (sweep_at_ms, entry_hash) = index.value();
                    if entry_hash == hash {
                        stale.push(sweep_at_ms);
                    }
                }
                for sweep_at_ms in stale {
                    self.delete_expiry(sweep_at_ms, hash)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes up to `limit` records whose sweep time has come, oldest
    /// first; returns how many, and whether more may be due. Each record is
    /// re-read before it is deleted: only one whose own `sweep_at_ms`
    /// matches the index entry goes (it has expired, since its expiry is
    /// never later), and index entries matching no record are dropped.
    pub fn sweep(&mut self, limit: usize, now_ms: u64) -> Result<(u64, bool)> {
        let due: Vec<(u64, [u8; 32])> = {
            let mut due = Vec::new();
            for entry in self
                .expiry
                .range((0, &[0u8; 32])..=(now_ms, &[0xFFu8; 32]))?
            {
                let (index, _) = entry?;
                let (sweep_at_ms, hash) = index.value();
                due.push((sweep_at_ms, *hash));
                if due.len() == limit {
                    break;
                }
            }
            due
        };
        let more = due.len() == limit;
        let mut deleted = 0;
        for (sweep_at_ms, hash) in &due {
            self.delete_expiry(*sweep_at_ms, hash)?;
            for in_flight in [false, true] {
                let verdict = match self.rows(in_flight).get(hash)? {
                    Some(bytes) => match codec::decode_record(bytes.value()) {
                        Ok(record) => record.sweep_at_ms == *sweep_at_ms,
                        // A damaged record whose index entry says it expired
                        // is deleted: it could never be replayed anyway.
                        Err(_) => true,
                    },
                    None => false,
                };
                if verdict {
                    self.delete_row(in_flight, hash)?;
                    deleted += 1;
                    self.in_flight_change -= i64::from(in_flight);
                }
            }
        }
        self.deleted += deleted;
        Ok((deleted, more))
    }

    /// Deletes every in-flight record (crash recovery that releases the
    /// claims of a dead process); returns how many.
    pub fn release_all_in_flight(&mut self) -> Result<u64> {
        let mut doomed = Vec::new();
        for entry in self.inflight.iter()? {
            let (hash, bytes) = entry?;
            let sweep_at = codec::decode_record(bytes.value())
                .ok()
                .map(|r| r.sweep_at_ms);
            doomed.push((*hash.value(), sweep_at));
        }
        for (hash, sweep_at) in &doomed {
            if let Some(sweep_at_ms) = sweep_at {
                self.delete_expiry(*sweep_at_ms, hash)?;
            }
            self.delete_row(true, hash)?;
        }
        self.deleted += doomed.len() as u64;
        self.in_flight_change -= doomed.len() as i64;
        Ok(doomed.len() as u64)
    }
}
