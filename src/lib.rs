//! idemkv: an embedded, durable idempotency-key store.
//!
//! Networks lose responses, so clients retry; without protection a retry
//! charges a card twice. idemkv sits in front of the side effect:
//!
//! - the first attempt of an operation is **claimed** durably (in a local redb
//!   file) before its side effect starts;
//! - a retry with the same key and payload gets the stored response back
//!   (**replay**);
//! - a retry with a different payload is rejected (**mismatch**);
//! - a retry while the first attempt runs is told so (**in progress**), or
//!   waits for its result ([`Terms::wait`]);
//! - a crashed holder's claim is taken over after its lease, and a fencing
//!   token stops the old holder from overwriting the new result;
//! - completed records expire after a retention window.
//!
//! No server, no network: one file, one process.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("idem.redb"), Config::default())?;
//!
//! // Scope by tenant and endpoint; the client chose the idempotency key.
//! let key = Key::new("acct_42 POST /v1/charges", "3f1c9a7e-charge")?;
//! let request = br#"{"amount":1200,"currency":"eur"}"#;
//! let fingerprint = Fingerprint::of(request);
//!
//! // First attempt: claimed, durably, before the side effect runs.
//! let Begin::Claimed(claim) = store.begin(&key, fingerprint)? else { unreachable!() };
//!
//! // A retry that arrives now is told to come back later.
//! assert!(matches!(store.begin(&key, fingerprint)?, Begin::InProgress { .. }));
//!
//! // ... charge the card ...
//! let response = StoredResponse::new(201, r#"{"id":"ch_1"}"#)
//!     .with_header("content-type", "application/json");
//! store.complete(claim, response.clone())?;
//!
//! // Retries replay the stored answer; a different payload is refused.
//! assert!(matches!(store.begin(&key, fingerprint)?, Begin::Replay(r) if r == response));
//! let other = Fingerprint::of(br#"{"amount":9999,"currency":"eur"}"#);
//! assert!(matches!(store.begin(&key, other)?, Begin::Mismatch));
//!
//! let metrics = store.metrics();
//! assert_eq!((metrics.claims, metrics.replays, metrics.mismatches), (1, 1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Durability
//!
//! Under the default [`Durability::Immediate`], a `Claimed` answer and a
//! successful `complete` are on disk (fsynced) when the call returns.
//! Concurrent callers share fsyncs: one committer thread applies everything
//! queued in one write transaction (group commit). With
//! [`Config::journal`], a batch is made durable by a small append to a
//! write-ahead journal beside the file instead of a durable commit of every
//! page it changed, with a durable checkpoint about once a second; the
//! promise is the same.
//!
//! # Retention
//!
//! Completed records are replayed for `Config::retention` (24 h by default)
//! and read as absent afterwards; a background sweeper thread deletes them in
//! small batches. Memory is bounded by `Config::cache_bytes` and
//! `Config::storage_cache_bytes`, whatever the number of records.
//!
//! # HTTP
//!
//! The `idemkv-http` crate (the `http/` member of this repository) puts all
//! of this behind the `Idempotency-Key` header of an axum, hyper or tower
//! service with one `IdempotencyLayer`.
//!
//! The repository's `docs/` explain the design (states, file format,
//! threads), the benchmarks and the reliability testing.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The journal's positional writes, directory syncs and the file identity a
// heal checks use Unix file APIs; Windows has other semantics for all three
// (and for renaming an open file), so the crate says so instead of
// building something untested.
#[cfg(not(unix))]
compile_error!(
    "idemkv supports Unix-like systems only (Linux, macOS, the BSDs): its journal and file \
     checks use Unix file APIs (positional I/O, directory sync, device and inode numbers). \
     It is developed and tested on Linux."
);

mod admin;
mod async_store;
mod backend;
mod blocking;
mod clock;
mod committer;
mod config;
mod counters;
mod durability;
mod error;
mod health;
mod log;
mod metrics;
mod model;
mod once;
mod request;
mod store;
pub mod support;
mod sweeper;
mod sync;

pub use admin::backup::Backup;
pub use admin::inspect::{RecordStateFilter, ScanFilter, Stats};
pub use admin::verify::{EngineCheck, VerifyReport};
pub use async_store::AsyncStore;
pub use backend::{Backend, complete_with_retry, release_with_retry};
pub use clock::{Clock, ManualClock, SystemClock};
pub use committer::Imported;
pub use config::{Config, Durability, Recovery, Settings, Terms};
#[cfg(feature = "fault-injection")]
pub use durability::journal_storage::JournalStorage;
#[cfg(feature = "fault-injection")]
pub use durability::storage_backend::StorageBackend;
pub use error::{Error, ErrorKind, Result, StorageError};
pub use health::Health;
pub use metrics::{MetricKind, Metrics, PUBLISHED_METRICS, PublishedMetric};
pub use model::fingerprint::{Fingerprint, FingerprintBuilder};
pub use model::key::{Key, MAX_IDEMPOTENCY_KEY_LEN, MAX_SCOPE_LEN};
pub use model::record::{Record, RecordParts, RecordState};
pub use model::recovery::{MAX_PHASE_LEN, RecoveryPoint};
pub use model::response::StoredResponse;
pub use once::{OnError, Once, once};
pub use request::outcome::{Begin, Claim, ClaimInfo, CompleteError, ReleaseError};
pub use store::{Compaction, Store};

/// Test hooks of the `fault-injection` feature: the named points where a
/// process started with `IDEMKV_CRASH_AT=<point>[:<n>]` aborts, as a kill
/// there would stop it, and the switch that fails a store's next commit
/// before or after it lands. Not part of the stable API; never enable the
/// feature in production.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault_injection {
    pub use crate::durability::crash_point::POINTS as CRASH_POINTS;
    pub use crate::durability::journal_storage::{DirJournal, JournalDir, OsDir, SegmentFile};
    pub use crate::durability::write_fault::WriteFaults;
}

/// Entry points for the fuzz targets, their corpus replay tests and the
/// benchmarks (feature `fuzzing`). Not part of the stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// The name of the table completed records live in, for benchmarks that
    /// read a closed store's file with redb directly.
    pub const RECORDS_TABLE: &str = crate::durability::storage::RECORDS_NAME;

    /// The 32-byte hash `key`'s rows are stored under, in every table.
    pub fn table_key(key: &crate::Key) -> [u8; 32] {
        *key.hash()
    }

    /// Decodes `bytes` as a stored record, as a read from the file would.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Corrupted`] for anything that is not a valid record.
    pub fn decode_record(bytes: &[u8]) -> crate::Result<()> {
        crate::model::codec::decode_record(bytes).map(drop)
    }

    /// Encodes a well-formed record, for seeding fuzz corpora.
    ///
    /// # Errors
    ///
    /// None in practice; encoding a record cannot fail.
    pub fn encode_sample_record(
        key: &crate::Key,
        response: Option<crate::StoredResponse>,
    ) -> crate::Result<Vec<u8>> {
        use crate::model::record::{StoredRecord, StoredState};
        let state = match response {
            Some(response) => StoredState::Completed { response },
            None => StoredState::InFlight {
                lease_until_ms: 1_767_225_660_000,
                recovery: None,
            },
        };
        crate::model::codec::encode(&StoredRecord {
            scope: key.scope().to_string(),
            idempotency_key: key.idempotency_key().to_string(),
            fingerprint: *crate::Fingerprint::of(b"seed").as_bytes(),
            token: 7,
            created_at_ms: 1_767_225_600_000,
            updated_at_ms: 1_767_225_600_000,
            expires_at_ms: 1_767_312_000_000,
            sweep_at_ms: 1_767_312_000_000,
            state,
        })
    }
}
