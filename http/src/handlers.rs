//! Claimed handlers that run in tasks of their own, detached from their
//! connection, and how a service waits for them at shutdown.
//!
//! Invariant: `running` counts the tasks started by [`Handlers::start`]
//! whose [`Running`] guard is alive; the guard drops when the task ends
//! (its answer stored or given up), panics included, and the last one out
//! wakes every [`Handlers::drained`] waiter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The layer's detached handlers, shared by every service it made.
#[derive(Debug, Default)]
pub(crate) struct Handlers {
    running: AtomicUsize,
    idle: Notify,
    /// Handlers whose outcome could not be recorded (see
    /// [`Handlers::gave_up`]).
    unsettled: AtomicU64,
}

/// One running handler; dropping it marks it finished.
pub(crate) struct Running(Arc<Handlers>);

impl Handlers {
    /// Counts a handler in until the guard drops.
    pub fn start(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(Arc::clone(self))
    }

    /// Counts a handler whose answer could not be stored, or whose key
    /// could not be released, after the repeats: its key stays in flight
    /// until its lease ends.
    pub fn gave_up(&self) {
        self.unsettled.fetch_add(1, Ordering::Relaxed);
    }

    /// How many handlers [`gave_up`](Self::gave_up) so far.
    pub fn unsettled(&self) -> u64 {
        self.unsettled.load(Ordering::Relaxed)
    }

    /// Handlers running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Resolves once no handler is running.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so that the last handler's
            // wake-up cannot fall between the check and the wait.
            notified.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
