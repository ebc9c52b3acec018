//! The redb file: table definitions, opening and format checks, and reads.
//!
//! Tables:
//! - `records`: 32-byte key hash → encoded record ([`crate::codec`]).
//! - `expiry`: (expires_at_ms, key hash) → (), one entry per record, ordered by
//!   expiry time so sweeps read only what is due.
//! - `meta`: `format_version` and `token_ceiling` (no fencing token above it
//!   has been issued; a reopened store starts above it).

use std::path::Path;

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::codec;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::record::StoredRecord;

pub(crate) const RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("records");
pub(crate) const EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> = TableDefinition::new("expiry");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The file format this build writes; files with a larger version are refused.
pub(crate) const FORMAT_VERSION: u64 = 1;
const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_TOKEN_CEILING: &str = "token_ceiling";

pub(crate) fn open_file(path: &Path, cache_bytes: usize) -> Result<Database> {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|err| match err {
            // redb checks the magic number first: anything else is not a store.
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::InvalidData =>
            {
                Error::NotAStore {
                    path: path.to_path_buf(),
                }
            }
            other => other.into(),
        })
}

pub(crate) fn open_in_memory(cache_bytes: usize) -> Result<Database> {
    Ok(Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(InMemoryBackend::new())?)
}

/// Checks the file is an idemkv store this build understands, creates the
/// tables of a new one, and returns the fencing token ceiling.
pub(crate) fn prepare(db: &Database, path: &Path) -> Result<u64> {
    let txn = db.begin_write()?;
    let ours = [RECORDS.name(), EXPIRY.name(), META.name()];
    let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    let foreign = tables.iter().any(|name| !ours.contains(&name.as_str()))
        || txn.list_multimap_tables()?.next().is_some();
    if foreign || (!tables.is_empty() && !tables.iter().any(|t| t == META.name())) {
        return Err(Error::NotAStore {
            path: path.to_path_buf(),
        });
    }
    let token_ceiling = {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_FORMAT_VERSION)?.map(|v| v.value());
        match version {
            None if tables.is_empty() => {
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)?;
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
            Some(_) => {}
        }
        meta.get(META_TOKEN_CEILING)?
            .map(|v| v.value())
            .unwrap_or(0)
    };
    txn.open_table(RECORDS)?;
    txn.open_table(EXPIRY)?;
    txn.commit()?;
    Ok(token_ceiling)
}

/// Reads and verifies one key's record in a fresh read transaction.
pub(crate) fn read_record(db: &Database, key: &Key) -> Result<Option<StoredRecord>> {
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORDS)?;
    let Some(bytes) = records.get(key.hash())? else {
        return Ok(None);
    };
    codec::decode_for(key, bytes.value()).map(Some)
}

/// Reads one key's record inside a write transaction. The outer `Result` is
/// the storage engine's (fatal for the batch); the inner one is the record's
/// own verification (it fails only the operation that read it).
pub(crate) fn read_in<T>(records: &T, key: &Key) -> Result<Option<Result<StoredRecord>>>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8]>,
{
    Ok(records
        .get(key.hash())?
        .map(|bytes| codec::decode_for(key, bytes.value())))
}
