//! Durability: the storage engine (redb) and the file's tables, the
//! write-ahead journal and where its segments live, the writeback thread,
//! and the fault and crash hooks the tests use.

pub(crate) mod crash_point;
pub(crate) mod doubted;
pub(crate) mod engine;
pub(crate) mod journal;
pub(crate) mod journal_storage;
pub(crate) mod rewrite;
pub(crate) mod storage;
pub(crate) mod storage_backend;
pub(crate) mod whole_file;
pub(crate) mod write_fault;
pub(crate) mod writeback;
