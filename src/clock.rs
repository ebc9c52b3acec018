//! Time sources. Leases and retention read time only through a [`Clock`], so
//! tests can drive them with a [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the store reads the current time from.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use idemkv::{Clock, ManualClock};
/// let clock = ManualClock::default();
/// let before = clock.now();
/// clock.clone().advance(Duration::from_secs(61));
/// assert_eq!(clock.now().duration_since(before)?, Duration::from_secs(61));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    /// Milliseconds since the Unix epoch; never decreases.
    now_ms: Arc<AtomicU64>,
}

/// 2026-01-01T00:00:00Z: a fixed, realistic starting point for tests.
const DEFAULT_START_MS: u64 = 1_767_225_600_000;

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(DEFAULT_START_MS)),
        }
    }
}

impl ManualClock {
    /// A clock stopped at `start` (truncated to milliseconds).
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(to_millis(start))),
        }
    }

    /// Moves the clock forward by `by` (truncated to milliseconds).
    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(duration_millis(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        from_millis(self.now_ms.load(Ordering::SeqCst))
    }
}

/// Milliseconds since the Unix epoch; times before it read as 0.
pub(crate) fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(0)
}

pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
