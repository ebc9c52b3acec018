//! Online backup: a consistent copy of a live store in a new file that opens
//! on its own.
//!
//! The copy reads one read transaction of the storage engine, which is the
//! state of the latest commit: every write acknowledged before the backup
//! started is in it (acknowledged writes are committed, durably in the file
//! or in the journal), and nothing of a half-applied batch is. It writes
//! every row of the store's tables, as they are, into a new file under a
//! temporary name, commits durably, and links the file into place: a backup
//! interrupted by a crash or a full disk leaves no file at the destination,
//! and never a torn one.
//!
//! Writes go on meanwhile: the read transaction pins the pages it reads
//! (the file grows by the pages that later commits would have reused), and
//! only a heal (a reopen after a failed commit) waits for the copy to end.
//! The backup carries no journal: everything it holds is in its file.

use std::path::Path;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::durability::journal;
use crate::durability::storage::{EXPIRY, INFLIGHT, META, META_JOURNAL_SEQ, RECORDS, shielded};
use crate::durability::whole_file;
use crate::error::{Error, Result};

/// Rows copied per transaction of the destination: bounds the memory the
/// copy's own writes take, whatever the store's size.
const ROWS_PER_TRANSACTION: usize = 16 * 1024;

/// What [`Store::backup_to`](crate::Store::backup_to) wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backup {
    /// Records in the backup (completed and in flight, expired ones not yet
    /// swept included).
    pub records: u64,
    /// Size of the backup file.
    pub bytes: u64,
}

/// Copies the latest commit of `source` into a new store file at `path`.
pub(crate) fn backup(source: &Database, path: &Path) -> Result<Backup> {
    let cannot = |source: std::io::Error| Error::CannotOpen {
        path: path.to_path_buf(),
        source,
    };
    let exists = |what: &Path| {
        cannot(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists; a backup goes to a new path (remove the old backup first)",
                what.display()
            ),
        ))
    };
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(exists(path));
    }
    // A journal directory there would be replayed into the backup at open.
    let journal_dir = journal::dir_of(path);
    if std::fs::symlink_metadata(&journal_dir).is_ok() {
        return Err(exists(&journal_dir));
    }
    let temp = whole_file::temp_beside(path);
    whole_file::clear(&temp).map_err(cannot)?;
    let copied = shielded(|| copy(source, &temp));
    let placed = copied.and_then(|records| match whole_file::link_into_place(&temp, path) {
        Ok(true) => Ok(records),
        Ok(false) => Err(exists(path)),
        Err(err) => Err(cannot(err)),
    });
    // Gone already if it was placed; what a failure left is removed here.
    let _ = std::fs::remove_file(&temp);
    let records = placed?;
    let bytes = std::fs::metadata(path).map_err(cannot)?.len();
    Ok(Backup { records, bytes })
}

/// Writes every row of `source`'s latest commit into a new file at `temp`,
/// durably; returns the records copied.
fn copy(source: &Database, temp: &Path) -> Result<u64> {
    let read = source.begin_read()?;
    let target = Database::builder().create(temp)?;
    let records = copy_rows(&read, &target, RECORDS)? + copy_rows(&read, &target, INFLIGHT)?;
    copy_expiry(&read, &target)?;
    // The last transaction is durable, and covers the ones before it.
    let mut txn = target.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        for row in read.open_table(META)?.iter()? {
            let (name, value) = row?;
            // The backup has no journal: its file covers everything.
            if name.value() != META_JOURNAL_SEQ {
                meta.insert(name.value(), value.value())?;
            }
        }
        // Every table exists in the backup, even an empty one.
        txn.open_table(RECORDS)?;
        txn.open_table(INFLIGHT)?;
        txn.open_table(EXPIRY)?;
    }
    txn.set_quick_repair(true);
    txn.commit()?;
    drop(target);
    Ok(records)
}

/// A write transaction of the backup that does not sync (the last one
/// does, for all of them).
fn unsynced(target: &Database) -> Result<WriteTransaction> {
    let mut txn = target.begin_write()?;
    txn.set_durability(redb::Durability::None)?;
    Ok(txn)
}

/// Copies a table of records, [`ROWS_PER_TRANSACTION`] rows a transaction.
fn copy_rows(
    read: &ReadTransaction,
    target: &Database,
    table: TableDefinition<&[u8; 32], &[u8]>,
) -> Result<u64> {
    let source = read.open_table(table)?;
    let mut rows = source.iter()?;
    let mut copied = 0u64;
    loop {
        let txn = unsynced(target)?;
        let mut in_txn = 0;
        {
            let mut dest = txn.open_table(table)?;
            while in_txn < ROWS_PER_TRANSACTION {
                let Some(row) = rows.next() else { break };
                let (key, value) = row?;
                dest.insert(key.value(), value.value())?;
                in_txn += 1;
            }
        }
        txn.commit()?;
        copied += in_txn as u64;
        if in_txn < ROWS_PER_TRANSACTION {
            return Ok(copied);
        }
    }
}

/// Copies the expiry index, [`ROWS_PER_TRANSACTION`] rows a transaction.
fn copy_expiry(read: &ReadTransaction, target: &Database) -> Result<()> {
    let source = read.open_table(EXPIRY)?;
    let mut rows = source.iter()?;
    loop {
        let txn = unsynced(target)?;
        let mut in_txn = 0;
        {
            let mut dest = txn.open_table(EXPIRY)?;
            while in_txn < ROWS_PER_TRANSACTION {
                let Some(row) = rows.next() else { break };
                let (key, _) = row?;
                dest.insert(key.value(), ())?;
                in_txn += 1;
            }
        }
        txn.commit()?;
        if in_txn < ROWS_PER_TRANSACTION {
            return Ok(());
        }
    }
}
