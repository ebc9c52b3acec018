//! Store configuration.
//!
//! Longer than most files here on purpose: most of it is the documentation of
//! each setting.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, duration_millis};
use crate::error::{Error, Result};

/// When a commit counts as done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Every acknowledged claim and completion is fsynced before the call
    /// returns (group commit shares one fsync between concurrent callers).
    #[default]
    Immediate,
    /// Commits are not fsynced; a crash may lose any of them (a clean drop of
    /// the last `Store` handle still syncs). Only for throwaway stores and
    /// tests: it gives up rule 2 of the store's promise.
    None,
}

/// What `Store::open` does with claims a dead process left in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// They keep their leases: retries answer `InProgress` until the lease
    /// runs out, then the next retry takes over. Right when the side effect
    /// may have happened (or may still be completing elsewhere, e.g. a
    /// payment provider call): a retry must not run it again too early.
    #[default]
    KeepLeases,
    /// They are released when the store opens, so the first retry claims at
    /// once. Right when a claim cannot outlive its process (the side effect is
    /// local and transactional, or harmless to repeat) and waiting out a lease
    /// after every restart is the bigger cost.
    ReleaseAtOpen,
}

/// Configuration for [`Store::open`](crate::Store::open), built with chained
/// setters.
///
/// ```
/// use std::time::Duration;
/// let config = idemkv::Config::default()
///     .retention(Duration::from_secs(7 * 24 * 3600))
///     .lease(Duration::from_secs(30))
///     .max_response_bytes(64 * 1024);
/// assert_eq!(config.settings().lease(), Duration::from_secs(30));
/// ```
#[derive(Clone)]
#[must_use = "a Config does nothing until a store is opened with it"]
pub struct Config {
    /// Every setting but the clock, the metrics label and the fault hooks:
    /// what [`Config::settings`] reads back.
    pub(crate) settings: Settings,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics_label: Option<Arc<str>>,
    /// Injected commit failures (a zero-sized no-op without the
    /// `fault-injection` feature).
    pub(crate) write_faults: crate::durability::write_fault::WriteFaults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            settings: Settings {
                retention: Duration::from_secs(24 * 3600),
                lease: Duration::from_secs(60),
                durability: Durability::Immediate,
                max_response_bytes: 1024 * 1024,
                max_recovery_point_bytes: 64 * 1024,
                cache_bytes: 64 * 1024 * 1024,
                storage_cache_bytes: 128 * 1024 * 1024,
                recovery: Recovery::KeepLeases,
                sweep_interval: Some(Duration::from_secs(1)),
                sweep_batch: 100,
                verify_on_open: false,
                journal: true,
                checkpoint_interval: Duration::from_secs(1),
                writeback_interval: crate::durability::writeback::WRITEBACK_INTERVAL,
                quick_repair: true,
                reopen_backoff: Duration::from_millis(50),
                slow_commit: Duration::from_millis(500),
            },
            clock: Arc::new(SystemClock),
            metrics_label: None,
            write_faults: Default::default(),
        }
    }
}

impl Config {
    /// How long a record is kept after it was last written (default 24 h):
    /// a completed record from its completion, an abandoned in-flight record
    /// from the end of its lease. After that it reads as absent; the sweep
    /// deletes it then, or for a completion up to the rest of its lease and
    /// at most 1/16 of the retention later (it may keep its claim's place in
    /// the expiry index; see docs/design.md, "Retention and expiry").
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings.retention = retention;
        self
    }

    /// How long a claim stays exclusive without a `renew` (default 60 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// The time source (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The commit durability (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.settings.durability = durability;
        self
    }

    /// The largest response `complete` accepts, counted by
    /// [`StoredResponse::stored_len`](crate::StoredResponse::stored_len)
    /// (default 1 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.settings.max_response_bytes = limit;
        self
    }

    /// The largest recovery point
    /// [`Store::record_progress`](crate::Store::record_progress) accepts, phase name
    /// plus state (default 64 KiB). A recovery point should hold the ids the
    /// next steps need, not the operation's data.
    pub fn max_recovery_point_bytes(mut self, limit: usize) -> Self {
        self.settings.max_recovery_point_bytes = limit;
        self
    }

    /// Memory for the replay cache of completed records (default 64 MiB; 0
    /// turns it off). Replays served from it need no read transaction. Each
    /// entry is charged its response size plus about 128 bytes; the least
    /// recently replayed entries are evicted first (CLOCK).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.settings.cache_bytes = bytes;
        self
    }

    /// Memory for the storage engine's page cache (redb's cache; default
    /// 128 MiB, where redb's own default is 1 GiB). With
    /// [`cache_bytes`](Self::cache_bytes) it sizes the store's caches,
    /// whatever the number of records. They are not all of the store's
    /// memory: redb's working memory while it writes comes on top
    /// (docs/benchmarks.md, "Scale", has the peak resident set measured
    /// from 100k to 10M records).
    ///
    /// With the journal, up to half of it holds the pages of commits not
    /// synced yet, and a checkpoint writes them out while writes wait, so
    /// it also bounds that stall. A smaller cache shortens the slowest
    /// write under heavy load, at the cost of peak write rate and of reads
    /// that no longer fit it (docs/benchmarks.md, "Checkpoint stalls").
    pub fn storage_cache_bytes(mut self, bytes: usize) -> Self {
        self.settings.storage_cache_bytes = bytes;
        self
    }

    /// What to do at open with claims a dead process left in flight (default
    /// [`Recovery::KeepLeases`]).
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.settings.recovery = recovery;
        self
    }

    /// How often the background sweeper deletes expired records (default
    /// every second). `None` turns the sweeper off; expired records then stay
    /// in the file (still reading as absent) until `sweep_expired` is called.
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Self {
        self.settings.sweep_interval = interval;
        self
    }

    /// Records deleted per write transaction by a sweep (default 100).
    /// Claims share the commit of the sweep batch they queue behind, so the
    /// batch size bounds what a large sweep adds to claim latency; larger
    /// batches sweep faster and stall claims longer. The default still
    /// sweeps several times faster than the disk takes claims
    /// (docs/benchmarks.md, "Retention").
    pub fn sweep_batch(mut self, records: usize) -> Self {
        self.settings.sweep_batch = records;
        self
    }

    /// Whether `Store::open` checks the whole file first, as
    /// [`Store::verify`](crate::Store::verify) does, and refuses a damaged
    /// file with `Error::Corrupted` (default false). It reads the whole
    /// file: an open takes about as long as a full scan.
    pub fn verify_on_open(mut self, enabled: bool) -> Self {
        self.settings.verify_on_open = enabled;
        self
    }

    /// Whether a file store makes its commits durable with a write-ahead
    /// journal (default true). With it, a batch's changes are appended to a
    /// journal beside the file (`<file>.journal/`, a few 4 MiB segments
    /// that are reused) and synced, and the batch is then committed to the
    /// file without a sync; about once a second a commit syncs the file
    /// instead (a checkpoint). A small sequential append replaces the sync
    /// of every page a batch changed, which raises throughput under
    /// concurrent load (see docs/benchmarks.md). The promise is the same:
    /// what a call acknowledged is on disk and nothing unsynced is ever
    /// visible; opening the file replays the journal. The price is the tail:
    /// the checkpoint writes a second's worth of pages while the writer
    /// waits, so under load the p99 of a write rises to tens of
    /// milliseconds once a second. Off, every batch is one durable commit
    /// of the file.
    ///
    /// A file written with the journal is format 4, which builds before the
    /// journal refuse. Any store opening the file replays its journal, also
    /// with this off. Ignored for [`Durability::None`], in-memory stores and
    /// the fault-injection feature's custom backends without a journal.
    pub fn journal(mut self, enabled: bool) -> Self {
        self.settings.journal = enabled;
        self
    }

    /// With the journal, the longest the store goes without a checkpoint
    /// while commits come (default 1 s): the batch that finds the last one
    /// this old commits durably instead of writing a frame. Shorter keeps
    /// less in the journal and in redb's write buffer, at more writes of
    /// the same pages, which costs throughput and p99 under load
    /// (docs/benchmarks.md, "Checkpoint stalls"). Zero checkpoints every batch that follows a
    /// journaled one (the fault tests use it to put checkpoints everywhere).
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.settings.checkpoint_interval = interval;
        self
    }

    /// With the journal, how often the writeback thread syncs the store's
    /// file between checkpoints while commits come (default 25 ms), so that
    /// a checkpoint finds most pages on disk already (see docs/design.md,
    /// "The write-ahead journal"). Must be positive.
    pub fn writeback_interval(mut self, interval: Duration) -> Self {
        self.settings.writeback_interval = interval;
        self
    }

    /// With the journal, whether checkpoints (and the commit of every open)
    /// record redb's allocator state (redb's quick-repair; default on), so
    /// that the open after a crash and every heal load it instead of
    /// walking the whole file (docs/benchmarks.md, "Recovery after a
    /// kill").
    /// The price: one more sync per checkpoint, and a known weakness of the
    /// storage engine with damaged files: redb can panic inside a
    /// destructor while it unwinds from damage it met in its freed-page
    /// records, which aborts the process instead of answering
    /// `Error::Corrupted` (docs/reliability.md, damaged files). A service
    /// that prefers an error to an abort on a damaged disk over a fast
    /// recovery turns it off.
    pub fn quick_repair(mut self, enabled: bool) -> Self {
        self.settings.quick_repair = enabled;
        self
    }

    /// How long the store waits after a failed commit before it reopens its
    /// file to heal (default 50 ms). Each failed reopen doubles the wait, up
    /// to 5 s or this value if larger. While it waits writes are refused;
    /// reads go on with the database as it was.
    pub fn reopen_backoff(mut self, first: Duration) -> Self {
        self.settings.reopen_backoff = first;
        self
    }

    /// A commit that takes longer than this is logged as slow (with the
    /// `tracing` feature: a warning with its duration and batch size;
    /// default 500 ms, a hundred times this disk's fsync).
    pub fn slow_commit(mut self, threshold: Duration) -> Self {
        self.settings.slow_commit = threshold;
        self
    }

    /// Commit failures a test injects through `faults` (the
    /// `fault-injection` feature's test hook; not for production).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn write_faults(mut self, faults: crate::fault_injection::WriteFaults) -> Self {
        self.write_faults = faults;
        self
    }

    /// A name for this store in its published metrics (feature `metrics`):
    /// every metric it publishes carries the label `store="<name>"`.
    /// Without it (the default) the metrics carry no label, and two stores
    /// in one process add to the same counters and overwrite each other's
    /// gauges: give each store its own name when a process opens more than
    /// one.
    pub fn metrics_label(mut self, name: impl Into<String>) -> Self {
        self.metrics_label = Some(Arc::from(name.into()));
        self
    }

    /// A read view of these settings (the clock aside).
    pub fn settings(&self) -> Settings {
        self.settings
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if duration_millis(self.settings.lease) == 0 {
            return Err(Error::InvalidConfig(
                "lease must be at least 1 ms; use the default 60 s unless handlers are known to be fast".into(),
            ));
        }
        if duration_millis(self.settings.retention) == 0 {
            return Err(Error::InvalidConfig(
                "retention must be at least 1 ms; it should outlast the clients' retry window"
                    .into(),
            ));
        }
        if self.settings.writeback_interval.is_zero() {
            return Err(Error::InvalidConfig(
                "writeback_interval must be positive; the default is 25 ms".into(),
            ));
        }
        if self.settings.sweep_batch == 0 {
            return Err(Error::InvalidConfig(
                "sweep_batch must be at least 1; the default is 100 records".into(),
            ));
        }
        if self.settings.sweep_interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::InvalidConfig(
                "sweep_interval must be positive; pass None to turn the sweeper off".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The settings of a [`Config`] or of an open store, read back
/// ([`Config::settings`], [`Store::settings`](crate::Store::settings)).
/// Each accessor documents its setter's default. A `Config` holds one and
/// its setters write into it, so each setting lives in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub(crate) retention: Duration,
    pub(crate) lease: Duration,
    pub(crate) durability: Durability,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_recovery_point_bytes: usize,
    pub(crate) cache_bytes: usize,
    pub(crate) storage_cache_bytes: usize,
    pub(crate) recovery: Recovery,
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) sweep_batch: usize,
    pub(crate) verify_on_open: bool,
    pub(crate) journal: bool,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) writeback_interval: Duration,
    pub(crate) quick_repair: bool,
    pub(crate) reopen_backoff: Duration,
    pub(crate) slow_commit: Duration,
}

impl Settings {
    /// [`Config::max_recovery_point_bytes`].
    pub fn max_recovery_point_bytes(&self) -> usize {
        self.max_recovery_point_bytes
    }

    /// [`Config::slow_commit`].
    pub fn slow_commit(&self) -> Duration {
        self.slow_commit
    }

    /// [`Config::reopen_backoff`].
    pub fn reopen_backoff(&self) -> Duration {
        self.reopen_backoff
    }

    /// [`Config::verify_on_open`].
    pub fn verify_on_open(&self) -> bool {
        self.verify_on_open
    }

    /// [`Config::journal`].
    pub fn journal(&self) -> bool {
        self.journal
    }

    /// [`Config::checkpoint_interval`].
    pub fn checkpoint_interval(&self) -> Duration {
        self.checkpoint_interval
    }

    /// [`Config::writeback_interval`].
    pub fn writeback_interval(&self) -> Duration {
        self.writeback_interval
    }

    /// [`Config::quick_repair`].
    pub fn quick_repair(&self) -> bool {
        self.quick_repair
    }

    /// [`Config::retention`].
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// [`Config::lease`].
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// [`Config::durability`].
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// [`Config::max_response_bytes`].
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// [`Config::cache_bytes`].
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// [`Config::storage_cache_bytes`].
    pub fn storage_cache_bytes(&self) -> usize {
        self.storage_cache_bytes
    }

    /// [`Config::recovery`].
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// [`Config::sweep_interval`].
    pub fn sweep_interval(&self) -> Option<Duration> {
        self.sweep_interval
    }

    /// [`Config::sweep_batch`].
    pub fn sweep_batch(&self) -> usize {
        self.sweep_batch
    }
}

/// How one `begin` is made, where it should differ from the store's
/// defaults: the claim's own lease and retention (an endpoint whose handler
/// runs long, a route whose answers must be replayed for longer), and how
/// long to wait for an attempt that is already running. Unset terms take
/// the store's values; without [`wait`](Self::wait) a running attempt is
/// answered `InProgress` at once.
///
/// This is the one options value of the `begin` family: `begin(key, fp)`
/// is `begin_with(key, fp, Terms::default())`.
///
/// ```
/// use std::time::Duration;
/// let terms = idemkv::Terms::default()
///     .lease(Duration::from_secs(600))
///     .retention(Duration::from_secs(7 * 24 * 3600))
///     .wait(Duration::from_secs(5));
/// assert_eq!(terms.wait_timeout(), Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "Terms do nothing until passed to begin_with"]
pub struct Terms {
    lease: Option<Duration>,
    retention: Option<Duration>,
    wait: Option<Duration>,
}

impl Terms {
    /// This claim's lease instead of `Config::lease`.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// This claim's retention instead of `Config::retention`: a completed
    /// record is kept this long after its completion.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// If another attempt holds the key, wait up to `timeout` (any
    /// `Duration`, `Duration::MAX` for no limit) for it to finish: its
    /// completion answers `Replay`, its release lets this caller claim, and
    /// when the time runs out the answer is `InProgress`. A blocking caller
    /// parks its thread; an async one holds no thread while it waits. The
    /// wait is not part of the claim: renewals and the completion do not
    /// see it.
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.wait = Some(timeout);
        self
    }

    /// How long a `begin` with these terms waits for a running attempt, if
    /// it waits at all (for backends of other crates).
    pub fn wait_timeout(&self) -> Option<Duration> {
        self.wait
    }

    /// Whether these terms leave the claim's lease and retention to the
    /// store (a wait may still be set).
    pub(crate) fn claims_by_default(&self) -> bool {
        self.lease.is_none() && self.retention.is_none()
    }

    /// The lease and retention these terms give a claim on a backend whose
    /// own are `lease` and `retention` (for backends of other crates).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if either is under 1 ms.
    pub fn resolve(&self, lease: Duration, retention: Duration) -> Result<(Duration, Duration)> {
        let lease = self.lease.unwrap_or(lease);
        let retention = self.retention.unwrap_or(retention);
        if lease < Duration::from_millis(1) || retention < Duration::from_millis(1) {
            return Err(Error::InvalidConfig(
                "a claim's lease and retention must be at least 1 ms each".into(),
            ));
        }
        Ok((lease, retention))
    }
}

/// A claim's lease and retention in milliseconds, resolved against the
/// store's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClaimTerms {
    pub lease_ms: u64,
    pub retention_ms: u64,
}

impl Config {
    /// The terms of a claim: `terms` where set, the config's values otherwise.
    pub(crate) fn claim_terms(&self, terms: Terms) -> Result<ClaimTerms> {
        let (lease, retention) = terms.resolve(self.settings.lease, self.settings.retention)?;
        Ok(ClaimTerms {
            lease_ms: duration_millis(lease),
            retention_ms: duration_millis(retention),
        })
    }
}
