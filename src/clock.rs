//! Time sources, and the store's own time.
//!
//! A [`Clock`] gives two readings: the wall clock (what persisted timestamps
//! mean after a restart) and a monotonic clock (what cannot be stepped). A
//! store reads the wall clock once, when it opens, and from then on counts
//! monotonic time from that anchor ([`StoreTime`]). So an NTP step or a
//! changed system time never moves a lease, a retention window or the replay
//! cache's idea of expiry while the store is open: every in-process decision
//! (lock table, cache, committer, sweeper) reads the same time, which never
//! goes back.
//!
//! Tests drive both readings with a [`ManualClock`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the store reads the current time from.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time. A store reads it once, at open, to anchor
    /// its own time; persisted timestamps are in this time.
    fn now(&self) -> SystemTime;

    /// Time elapsed since an arbitrary fixed origin on a clock that is never
    /// stepped and never goes back (the operating system's monotonic clock).
    /// Leases and retention advance by this reading while the store is open.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clocks: [`SystemTime`] for the wall clock,
/// [`Instant`] for the monotonic one.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The origin of [`SystemClock::monotonic`]: the first reading in this process.
static PROCESS_ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        PROCESS_ORIGIN.elapsed()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// [`advance`](Self::advance) lets time pass (both readings move);
/// [`step_forward`](Self::step_forward) and [`step_back`](Self::step_back)
/// change the wall clock alone, as an NTP step or an operator's `date -s`
/// would.
///
/// ```
/// use std::time::Duration;
/// use idemkv::{Clock, ManualClock};
/// let clock = ManualClock::default();
/// let before = clock.now();
/// clock.clone().advance(Duration::from_secs(61));
/// assert_eq!(clock.now().duration_since(before)?, Duration::from_secs(61));
/// assert_eq!(clock.monotonic(), Duration::from_secs(61));
/// clock.step_back(Duration::from_secs(3600));
/// assert_eq!(clock.monotonic(), Duration::from_secs(61), "a step is not time passing");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    /// Wall clock, milliseconds since the Unix epoch.
    wall_ms: Arc<AtomicU64>,
    /// Monotonic clock, milliseconds since the clock was made; never decreases.
    monotonic_ms: Arc<AtomicU64>,
}

/// 2026-01-01T00:00:00Z: a fixed, realistic starting point for tests.
const DEFAULT_START_MS: u64 = 1_767_225_600_000;

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::at_millis(DEFAULT_START_MS)
    }
}

impl ManualClock {
    /// A clock stopped at `start` (truncated to milliseconds).
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock::at_millis(to_millis(start))
    }

    fn at_millis(wall_ms: u64) -> ManualClock {
        ManualClock {
            wall_ms: Arc::new(AtomicU64::new(wall_ms)),
            monotonic_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Lets `by` pass (truncated to milliseconds): both readings move forward.
    pub fn advance(&self, by: Duration) {
        let ms = duration_millis(by);
        self.monotonic_ms.fetch_add(ms, Ordering::SeqCst);
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps the wall clock forward by `by` without time passing (an NTP
    /// step, a VM resumed with a corrected clock).
    pub fn step_forward(&self, by: Duration) {
        self.wall_ms
            .fetch_add(duration_millis(by), Ordering::SeqCst);
    }

    /// Steps the wall clock back by `by` (to the epoch at most) without time
    /// passing.
    pub fn step_back(&self, by: Duration) {
        let ms = duration_millis(by);
        // An update closure that always returns Some cannot fail.
        let _ = self
            .wall_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_sub(ms))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        from_millis(self.wall_ms.load(Ordering::SeqCst))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.monotonic_ms.load(Ordering::SeqCst))
    }
}

/// The time of one open store, in milliseconds since the Unix epoch: the wall
/// clock read at open plus the monotonic time elapsed since.
///
/// Invariant: `now_ms` never returns less than it returned before, even for a
/// custom [`Clock`] whose monotonic reading goes back.
pub(crate) struct StoreTime {
    clock: Arc<dyn Clock>,
    anchor_wall_ms: u64,
    anchor_monotonic: Duration,
    latest_ms: AtomicU64,
}

impl StoreTime {
    /// Anchors the store's time to `clock`'s wall time now.
    pub fn anchored(clock: Arc<dyn Clock>) -> StoreTime {
        let anchor_wall_ms = to_millis(clock.now());
        let anchor_monotonic = clock.monotonic();
        StoreTime {
            clock,
            anchor_wall_ms,
            anchor_monotonic,
            latest_ms: AtomicU64::new(anchor_wall_ms),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = self.clock.monotonic().saturating_sub(self.anchor_monotonic);
        let now = self.anchor_wall_ms.saturating_add(duration_millis(elapsed));
        self.latest_ms.fetch_max(now, Ordering::SeqCst).max(now)
    }
}

impl std::fmt::Debug for StoreTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTime")
            .field("anchor_wall_ms", &self.anchor_wall_ms)
            .field("now_ms", &self.now_ms())
            .finish_non_exhaustive()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_time_ignores_wall_steps_and_follows_time_passing() {
        let clock = ManualClock::default();
        let time = StoreTime::anchored(Arc::new(clock.clone()));
        let start = time.now_ms();
        assert_eq!(start, DEFAULT_START_MS);
        clock.step_forward(Duration::from_secs(3600));
        clock.step_back(Duration::from_secs(7200));
        assert_eq!(time.now_ms(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(time.now_ms(), start + 1500);
    }

    /// A clock whose monotonic reading goes back.
    struct Broken(AtomicU64);
    impl Clock for Broken {
        fn now(&self) -> SystemTime {
            from_millis(1_000_000)
        }
        fn monotonic(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn store_time_never_goes_back_even_on_a_broken_clock() {
        let broken = Arc::new(Broken(AtomicU64::new(500)));
        let time = StoreTime::anchored(Arc::clone(&broken) as Arc<dyn Clock>);
        broken.0.store(900, Ordering::SeqCst);
        assert_eq!(time.now_ms(), 1_000_400);
        broken.0.store(100, Ordering::SeqCst);
        assert_eq!(time.now_ms(), 1_000_400);
    }
}
