//! Store configuration.

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

/// Configuration for [`Store::open`](crate::Store::open), built with chained
/// setters.
///
/// ```
/// use std::time::Duration;
/// let config = idemkv::Config::default()
///     .retention(Duration::from_secs(7 * 24 * 3600))
///     .lease(Duration::from_secs(30))
///     .max_response_bytes(64 * 1024);
/// assert_eq!(config.get_lease(), Duration::from_secs(30));
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) retention: Duration,
    pub(crate) lease: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) durability: Durability,
    pub(crate) max_response_bytes: usize,
    pub(crate) cache_bytes: usize,
    pub(crate) storage_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            durability: Durability::Immediate,
            max_response_bytes: 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            storage_cache_bytes: 128 * 1024 * 1024,
        }
    }
}

impl Config {
    /// How long a record is kept after it was last written (default 24 h):
    /// a completed record from its completion, an abandoned in-flight record
    /// from the end of its lease. After that it reads as absent.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a claim stays exclusive without a `renew` (default 60 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The time source (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The commit durability (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The largest response `complete` accepts, counted by
    /// [`StoredResponse::stored_len`](crate::StoredResponse::stored_len)
    /// (default 1 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Memory for the replay cache of completed records (default 64 MiB; 0
    /// turns it off). Replays served from it need no read transaction. Each
    /// entry is charged its response size plus about 128 bytes; the least
    /// recently replayed entries are evicted first (CLOCK).
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Memory for the storage engine's page cache (redb's cache; default
    /// 128 MiB, where redb's own default is 1 GiB). Together with
    /// [`cache_bytes`](Self::cache_bytes) it bounds the store's memory,
    /// whatever the number of records.
    pub fn storage_cache_bytes(mut self, bytes: usize) -> Self {
        self.storage_cache_bytes = bytes;
        self
    }

    /// The configured storage page cache size.
    pub fn get_storage_cache_bytes(&self) -> usize {
        self.storage_cache_bytes
    }

    /// The configured replay cache size.
    pub fn get_cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// The configured retention.
    pub fn get_retention(&self) -> Duration {
        self.retention
    }

    /// The configured lease.
    pub fn get_lease(&self) -> Duration {
        self.lease
    }

    /// The configured durability.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }

    /// The configured response limit.
    pub fn get_max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if duration_millis(self.lease) == 0 {
            return Err(Error::InvalidConfig(
                "lease must be at least 1 ms; use the default 60 s unless handlers are known to be fast".into(),
            ));
        }
        if duration_millis(self.retention) == 0 {
            return Err(Error::InvalidConfig(
                "retention must be at least 1 ms; it should outlast the clients' retry window"
                    .into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn lease_ms(&self) -> u64 {
        duration_millis(self.lease)
    }

    pub(crate) fn retention_ms(&self) -> u64 {
        duration_millis(self.retention)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        crate::clock::to_millis(self.clock.now())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("retention", &self.retention)
            .field("lease", &self.lease)
            .field("durability", &self.durability)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("cache_bytes", &self.cache_bytes)
            .field("storage_cache_bytes", &self.storage_cache_bytes)
            .finish_non_exhaustive()
    }
}
