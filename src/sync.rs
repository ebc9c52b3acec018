//! The store's threads, locks, channels and atomics, in one place.
//!
//! Every build uses the standard library's threads, locks and atomics and
//! crossbeam's channels: these are plain re-exports and cost nothing.
//! Under the `shuttle` feature (a test hook, never for production) the
//! same names are [shuttle](https://docs.rs/shuttle)'s controlled versions,
//! so that a test (tests/interleavings.rs) runs the committer, the
//! writeback thread, the sweeper and its callers under a scheduler that one
//! seed drives: every lock, atomic, channel operation and wake-up is a point
//! where it may switch threads, and a seed fixes every switch. The timers of
//! waiting begins, the reopen backoff and the checkpoint interval (`time`)
//! run on a virtual clock there.
//!
//! Only synchronization between the store's own threads goes through here.
//! Counters that nothing waits on (`counters.rs`) and the store's clocks
//! (leases, expiry) stay on std: they order nothing, and a test drives the
//! store's clock itself (`ManualClock`).

#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};

/// Threads: spawning and joining the store's own.
pub(crate) mod thread {
    #[cfg(not(feature = "shuttle"))]
    pub(crate) use std::thread::{Builder, JoinHandle};

    #[cfg(feature = "shuttle")]
    pub(crate) use shuttle::thread::{Builder, JoinHandle};
}

/// Waiting for time to pass: the instant that a waiting begin's deadline,
/// the committer's reopen backoff and the journal's checkpoint interval
/// are measured from, and a timer future that holds no thread.
#[cfg(not(feature = "shuttle"))]
pub(crate) mod time {
    pub(crate) use std::time::Instant;

    /// A future that is ready once `duration` has passed.
    pub(crate) fn sleep(duration: std::time::Duration) -> futures_timer::Delay {
        futures_timer::Delay::new(duration)
    }
}

/// Waiting for time to pass, under shuttle: a virtual clock, one per
/// execution, that only timers move.
///
/// Shuttle has no clock, and a real timer fires on a thread it does not
/// control, so a wait's outcome would depend on the machine. Here a timer
/// yields to the scheduler once (whatever should wake its waiter early
/// may happen meanwhile; a scheduler that ranks threads, as PCT does,
/// ranks the yielding one lower, as the time a real timer takes lets the
/// others run), then moves the virtual clock to its end if it is not
/// there yet, and fires. A seed thus fixes when every wait times out.
#[cfg(feature = "shuttle")]
pub(crate) mod time {
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    shuttle::lazy_static! {
        /// The time since the execution began, as far as timers say.
        static ref NOW: Mutex<Duration> = Mutex::new(Duration::ZERO);
    }

    fn now() -> Duration {
        *NOW.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A point on the virtual clock.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub(crate) struct Instant(Duration);

    impl Instant {
        pub(crate) fn now() -> Instant {
            Instant(now())
        }

        pub(crate) fn checked_add(self, duration: Duration) -> Option<Instant> {
            self.0.checked_add(duration).map(Instant)
        }

        pub(crate) fn saturating_duration_since(self, earlier: Instant) -> Duration {
            self.0.saturating_sub(earlier.0)
        }
    }

    impl std::ops::Add<Duration> for Instant {
        type Output = Instant;

        fn add(self, duration: Duration) -> Instant {
            Instant(self.0.saturating_add(duration))
        }
    }

    /// A future that is ready once `duration` has passed on the virtual
    /// clock, after one yield to the scheduler.
    pub(crate) async fn sleep(duration: Duration) {
        let end = now().saturating_add(duration);
        shuttle::future::yield_now().await;
        let mut now = NOW.lock().unwrap_or_else(PoisonError::into_inner);
        *now = (*now).max(end);
    }
}

/// Runs `future` to completion on the calling thread, parking it while
/// the future waits.
#[cfg(not(feature = "shuttle"))]
pub(crate) fn park_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

/// Runs `future` to completion on the calling thread, parking it while
/// the future waits (a point where the scheduler switches threads).
#[cfg(feature = "shuttle")]
pub(crate) fn park_on<F: std::future::Future>(future: F) -> F::Output {
    shuttle::future::block_on(future)
}

/// Channels: crossbeam's, or under `shuttle` a channel with the same
/// methods built on shuttle's lock and condition variable.
#[cfg(not(feature = "shuttle"))]
pub(crate) mod channel {
    pub(crate) use crossbeam_channel::{
        Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded,
    };
}

/// Channels: crossbeam's, or under `shuttle` a channel with the same
/// methods built on shuttle's lock and condition variable.
///
/// Shuttle has no clock, so a timed receive cannot wait for time to pass:
/// it yields to the scheduler once, takes what arrived meanwhile, and
/// otherwise times out at once. The scheduler thus chooses whether a
/// batch's linger catches the next caller, and when the writeback thread's
/// interval ends.
#[cfg(feature = "shuttle")]
pub(crate) mod channel {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::Duration;

    pub(crate) use crossbeam_channel::{RecvError, RecvTimeoutError, TryRecvError, TrySendError};
    use shuttle::sync::{Condvar, Mutex, MutexGuard, PoisonError};

    struct State<T> {
        queue: VecDeque<T>,
        room: usize,
        senders: usize,
        receivers: usize,
    }

    struct Channel<T> {
        state: Mutex<State<T>>,
        arrived: Condvar,
    }

    impl<T> Channel<T> {
        fn state(&self) -> MutexGuard<'_, State<T>> {
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// The sending half; the channel disconnects when the last is dropped.
    pub(crate) struct Sender<T>(Arc<Channel<T>>);

    /// The receiving half.
    pub(crate) struct Receiver<T>(Arc<Channel<T>>);

    /// A channel that holds at most `room` messages.
    pub(crate) fn bounded<T>(room: usize) -> (Sender<T>, Receiver<T>) {
        let channel = Arc::new(Channel {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                room,
                senders: 1,
                receivers: 1,
            }),
            arrived: Condvar::new(),
        });
        (Sender(Arc::clone(&channel)), Receiver(channel))
    }

    impl<T> Sender<T> {
        pub(crate) fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
            let mut state = self.0.state();
            if state.receivers == 0 {
                return Err(TrySendError::Disconnected(message));
            }
            if state.queue.len() >= state.room {
                return Err(TrySendError::Full(message));
            }
            state.queue.push_back(message);
            drop(state);
            self.0.arrived.notify_all();
            Ok(())
        }
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            self.0.state().senders += 1;
            Sender(Arc::clone(&self.0))
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            self.0.state().senders -= 1;
            self.0.arrived.notify_all();
        }
    }

    impl<T> Receiver<T> {
        pub(crate) fn recv(&self) -> Result<T, RecvError> {
            let mut state = self.0.state();
            loop {
                if let Some(message) = state.queue.pop_front() {
                    return Ok(message);
                }
                if state.senders == 0 {
                    return Err(RecvError);
                }
                state = self
                    .0
                    .arrived
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }

        pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
            let mut state = self.0.state();
            match state.queue.pop_front() {
                Some(message) => Ok(message),
                None if state.senders == 0 => Err(TryRecvError::Disconnected),
                None => Err(TryRecvError::Empty),
            }
        }

        /// Yields once, then receives what is there or times out.
        pub(crate) fn recv_timeout(&self, _timeout: Duration) -> Result<T, RecvTimeoutError> {
            shuttle::thread::yield_now();
            self.try_recv().map_err(|err| match err {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        }

        /// As [`recv_timeout`](Self::recv_timeout), whatever the deadline
        /// (an instant of std's or of the timers' virtual clock).
        pub(crate) fn recv_deadline<D>(&self, _deadline: D) -> Result<T, RecvTimeoutError> {
            self.recv_timeout(Duration::ZERO)
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            self.0.state().receivers -= 1;
        }
    }
}
