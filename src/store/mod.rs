//! The public handle: [`Store`]: opening, closing and what it reports
//! (health, metrics, settings). Its operations live beside it:
//! - `claim.rs`: the request path of `begin` (lock table, replay cache,
//!   the decision rule, the claim's commit) and `once`;
//! - `holder.rs`: what a claim's holder does (complete, release, renew,
//!   record progress), judged by the committer against the fencing token;
//! - `admin.rs`: inspecting and administering records (get, remove,
//!   sweep, verify, scan, stats, import, backup, compaction).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::admin::verify;
use crate::clock::StoreTime;
use crate::committer::{Committer, Submitter};
use crate::config::{ClaimTerms, Config, Durability, Recovery, Settings, Terms};
use crate::counters::Counters;
use crate::durability::engine::{Engine, Source};
#[cfg(feature = "fault-injection")]
use crate::durability::journal_storage::JournalStorage;
#[cfg(feature = "fault-injection")]
use crate::durability::storage_backend::StorageBackend;
use crate::error::{Error, Result};
use crate::health::{Health, HealthCell};
use crate::log::{event, span};
use crate::metrics::{MetricLabel, Metrics};
use crate::request::lock_table::LockTable;
use crate::request::outcome::{Claim, CompleteError};
use crate::sweeper::Sweeper;

mod admin;
mod claim;
mod holder;

pub use admin::Compaction;

/// An idempotency-key store over one redb file.
///
/// `Store` is a cheap handle: clone it into every thread or task that needs
/// it. The file stays open, and the committer thread running, until the last
/// clone is dropped; dropping it joins the thread.
///
/// ```
/// use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};
///
/// let store = Store::in_memory(Config::default())?;
/// let key = Key::new("tenant-1 POST /orders", "order-7f3a")?;
/// let fingerprint = Fingerprint::of(br#"{"sku":"A1","qty":2}"#);
///
/// match store.begin(&key, fingerprint)? {
///     Begin::Claimed(claim) => {
///         // ... run the side effect exactly once ...
///         store.complete(claim, StoredResponse::new(201, "order 991 created"))?;
///     }
///     Begin::Replay(response) => println!("replaying {}", response.status()),
///     Begin::InProgress { retry_after } => println!("busy, retry in {retry_after:?}"),
///     Begin::Mismatch => println!("key reused for a different request"),
/// }
///
/// // The retry gets the stored answer back.
/// let Begin::Replay(response) = store.begin(&key, fingerprint)? else { unreachable!() };
/// assert_eq!(response.body(), b"order 991 created");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

// A `Store` and its claims move between threads and tasks freely.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Store>();
    send_sync::<Claim>();
    send_sync::<CompleteError>();
};

struct Inner {
    // Stopped in this order by `Drop for Inner` and `Store::close`: the
    // sweeper first (it submits to the committer), then the committer drains
    // its queue and stops, then the engine closes the database.
    sweeper: Option<Sweeper>,
    committer: Option<Committer>,
    engine: Arc<Engine>,
    config: Config,
    time: Arc<StoreTime>,
    locks: Arc<LockTable>,
    counters: Arc<Counters>,
    health: Arc<HealthCell>,
    /// The config's lease and retention, for claims without terms of their
    /// own.
    default_terms: ClaimTerms,
}

impl Inner {
    fn committer(&self) -> Result<&Submitter> {
        self.committer.as_ref().ok_or(Error::Closed)?.submitter()
    }

    /// What a read that failed with `err` leaves to do (callers pass it to
    /// `Result::inspect_err`): a storage error asks for a reopen. After an
    /// I/O error the storage engine refuses every later read and write of
    /// the database ("previous I/O error") until it is opened again, so the
    /// committer is asked to reopen it now, with a batch that writes
    /// nothing, rather than before the next write: a store that only
    /// serves lookups heals as well.
    #[cold]
    fn read_failed(&self, err: &Error) {
        if let Error::Storage(_) = err {
            self.ask_reopen(format!("a read failed: {err}"));
        }
    }

    /// Has the committer reopen the database at once (see
    /// [`read_failed`](Self::read_failed)); nobody waits for it.
    fn ask_reopen(&self, cause: String) {
        self.health.reopen_asked(&cause, &self.counters);
        self.engine.must_reopen(cause);
        if let Ok(committer) = self.committer() {
            drop(committer.heal());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.sweeper.take());
        drop(self.committer.take());
        // The engine closes the database when its last reference (this one)
        // goes, behind the panic shield.
    }
}

impl Store {
    /// Opens (or creates) the store file at `path`.
    ///
    /// InFlight records left by a process that died keep their leases: a
    /// `begin` on them answers `InProgress` until the lease runs out, then the
    /// next `begin` takes over.
    ///
    /// If a failure on I/O earlier in this process (a failed open, a store
    /// that was recovering from a failed commit, a failed close) may have
    /// left pages a failed sync gave up in the page cache, the file is
    /// first read and written back, synced (docs/design.md, "Healing"):
    /// opening again after an I/O error is safe from the same process.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero lease or retention,
    /// [`Error::AlreadyOpen`] if another `Store` has the file open,
    /// [`Error::NotAStore`] for a redb file idemkv did not write,
    /// [`Error::UnsupportedVersion`] for a file from a newer idemkv,
    /// [`Error::Corrupted`] or [`Error::Storage`] if the file cannot be read.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        Store::start(Source::File(path.as_ref().to_path_buf()), config)
    }

    /// A store that lives in memory only, for tests and throwaway use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero lease or retention.
    pub fn in_memory(config: Config) -> Result<Store> {
        Store::start(Source::Memory, config)
    }

    /// Opens (or creates) a store over a custom [`StorageBackend`] instead
    /// of a file, for fault-injection tests (feature `fault-injection`; not
    /// part of the stable API). The store keeps the backend, and opens it
    /// again to heal after a failed commit.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    #[cfg(feature = "fault-injection")]
    pub fn with_backend(backend: impl StorageBackend, config: Config) -> Result<Store> {
        Store::start(Source::Backend(Arc::new(backend), None), config)
    }

    /// Opens (or creates) a store over a custom [`StorageBackend`] with its
    /// write-ahead journal in a custom [`JournalStorage`]: for
    /// fault-injection tests of the journal (feature `fault-injection`; not
    /// part of the stable API: the journal's layout may change). The
    /// journal is replayed at
    /// open whatever the config; the store writes to it when
    /// [`Config::journal`] is on.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    #[cfg(feature = "fault-injection")]
    pub fn with_journaled_backend(
        backend: impl StorageBackend,
        journal: impl JournalStorage,
        config: Config,
    ) -> Result<Store> {
        Store::start(
            Source::Backend(Arc::new(backend), Some(Arc::new(journal))),
            config,
        )
    }

    fn start(source: Source, config: Config) -> Result<Store> {
        config.validate()?;
        let _open = span!(info_span, "idemkv.open", path = %source.path().display());
        #[cfg(feature = "tracing")]
        let started = std::time::Instant::now();
        let journaled =
            config.settings.journal && config.settings.durability == Durability::Immediate;
        let (engine, opened, journal) = Engine::open(
            source,
            config.settings.storage_cache_bytes,
            config.settings.verify_on_open,
            config.settings.recovery == Recovery::ReleaseAtOpen,
            journaled,
            config.settings.quick_repair,
        )?;
        let engine = Arc::new(engine);
        if config.settings.verify_on_open {
            let report = engine.read(verify::verify_tables)?;
            if !report.is_ok() {
                return Err(Error::corrupted(format!(
                    "the check at open found {} problem(s): {}",
                    report.problems,
                    report.details.join("; ")
                )));
            }
        }
        let time = Arc::new(StoreTime::anchored(Arc::clone(&config.clock)));
        let label = MetricLabel::new(config.metrics_label.clone());
        let counters = Arc::new(Counters::new(&label));
        let health = Arc::new(HealthCell::new());
        counters.recovered_claims.add(opened.released);
        let committer = Committer::start(
            Arc::clone(&engine),
            config.clone(),
            Arc::clone(&time),
            Arc::clone(&counters),
            Arc::clone(&health),
            &opened,
            journal,
        )?;
        let sweeper = Sweeper::start(
            committer.submitter()?.clone(),
            Arc::clone(&engine),
            config.clone(),
            Arc::clone(&time),
            Arc::clone(&counters),
        )
        .map_err(Error::io)?;
        let default_terms = config.claim_terms(Terms::default())?;
        event!(
            info,
            path = %engine.source().path().display(),
            records = opened.live_records,
            in_flight = opened.in_flight,
            released_claims = opened.released,
            token_ceiling = opened.token_ceiling,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "store opened: {} records, {} claims in flight keep their leases, {} released",
            opened.live_records,
            opened.in_flight,
            opened.released,
        );
        Ok(Store {
            inner: Arc::new(Inner {
                default_terms,
                sweeper: Some(sweeper),
                committer: Some(committer),
                engine,
                locks: Arc::new(LockTable::new(config.settings.cache_bytes, &label)),
                config,
                time,
                counters,
                health,
            }),
        })
    }

    /// Closes the store: stops the sweeper, lets the committer answer what is
    /// queued, and closes the file with a last durable commit, reporting its
    /// outcome (dropping the last handle does the same but cannot report).
    ///
    /// # Errors
    ///
    /// [`Error::InUse`] if other handles (clones) of this store are alive:
    /// drop them first; this handle is dropped either way. Otherwise the
    /// error of the final sync ([`Error::Storage`]), or [`Error::Poisoned`]
    /// when the store was recovering from a failed commit. After either,
    /// the file is written back and synced before `close` returns, so that
    /// an open later in the same boot reads what the disk holds rather
    /// than pages a failed sync gave up (if that fails too, it is logged,
    /// and the next open of the file in this process writes it back
    /// first; another process should open it only after a restart of the
    /// machine).
    pub fn close(self) -> Result<()> {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => {
                return Err(Error::InUse {
                    handles: Arc::strong_count(&shared) - 1,
                });
            }
        };
        drop(inner.sweeper.take());
        let committed = match inner.committer.take() {
            Some(committer) => committer.shut_down(),
            None => Ok(()),
        };
        let closed = inner.engine.close(true);
        let outcome = committed.and(closed);
        // Only an I/O failure can have given pages up; damage is not
        // repaired by writing the file back.
        if outcome.as_ref().is_err_and(Error::is_transient) {
            inner.engine.rewrite_after_failed_close();
        }
        outcome
    }

    /// The state of the write path: ok, or recovering from a failed commit
    /// (with the cause), or failed for good (an in-memory store).
    pub fn health(&self) -> Health {
        self.inner.health.get()
    }

    /// A snapshot of the outcome counters since the store was opened, and of
    /// its gauges now.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = self.inner.counters.snapshot();
        metrics.waiters = self.inner.locks.waiters();
        metrics.replay_cache_hits = self.inner.locks.cache_hits.get();
        metrics.replay_cache_misses = self.inner.locks.cache_misses.get();
        metrics
    }

    /// The settings the store was opened with.
    pub fn settings(&self) -> Settings {
        self.inner.config.settings()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
