//! The syncer: the thread that syncs a batch's journal frame and answers its
//! callers while the committer goes on with the next batch.
//!
//! Without it, a journaled commit is: apply the batch, write its frame,
//! `fdatasync`, commit, answer. With it, the committer thread writes the
//! frame, commits the transaction without a sync (readers wait for the
//! sync, see [`crate::visibility`]) and hands the batch over as a
//! [`Flight`]; the syncer syncs the frame, publishes the batch as durable
//! and answers its callers, while the committer applies the next batch. So
//! the sync and the wake-ups of the callers overlap the next batch's
//! B-tree work instead of following it.
//!
//! Invariants:
//! - At most one flight at a time: the committer waits until the previous
//!   flight's batch is durable ([`Visibility::wait_for`]) before it writes
//!   the next frame. So only the newest frame is ever unsynced, as journal
//!   recovery requires.
//! - No caller of a flight is answered before its frame's sync returned.
//! - After a failed sync every later flight fails too, unsynced: the store
//!   poisons itself and reopens, and the syncer of the reopened store is a
//!   new one.

use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use crate::journal::SegmentSync;
use crate::visibility::Visibility;
use std::sync::Arc;

/// One committed, unsynced batch: its number, the journal segment holding
/// its frame, and what to answer once the sync returned.
pub(crate) struct Flight<T> {
    pub batch: u64,
    pub segment: usize,
    pub answers: T,
}

/// The syncer thread of one journal; dropping it lets the thread finish the
/// flights handed over and joins it.
pub(crate) struct Syncer<T> {
    sender: Option<Sender<Flight<T>>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Syncer<T> {
    /// Starts the thread. `settle` answers a flight's callers: with `Ok` once
    /// its frame is durable, or with the error of the failed sync.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the thread cannot be started.
    pub fn start(
        sync: SegmentSync,
        visibility: Arc<Visibility>,
        mut settle: impl FnMut(T, Result<()>) + Send + 'static,
    ) -> Result<Syncer<T>> {
        // One flight at a time (see the invariants); the slot lets the
        // committer hand one over without waiting for the thread to take it.
        let (sender, receiver) = crossbeam_channel::bounded::<Flight<T>>(1);
        let thread = std::thread::Builder::new()
            .name("idemkv-syncer".into())
            .spawn(move || {
                let mut failed: Option<String> = None;
                for flight in receiver {
                    let result = match &failed {
                        Some(cause) => Err(Error::Poisoned {
                            cause: cause.clone(),
                        }),
                        None => sync.sync(flight.segment),
                    };
                    match &result {
                        Ok(()) => visibility.synced(flight.batch),
                        Err(err) => {
                            let cause = failed.get_or_insert_with(|| err.to_string());
                            visibility.failed(cause.clone());
                        }
                    }
                    settle(flight.answers, result);
                }
            })
            .map_err(Error::io)?;
        Ok(Syncer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Hands `flight` over. If the thread is gone (it cannot be while this
    /// handle lives, short of a panic in `settle`), the flight comes back.
    pub fn send(&self, flight: Flight<T>) -> std::result::Result<(), Flight<T>> {
        match &self.sender {
            Some(sender) => sender.send(flight).map_err(|err| err.into_inner()),
            None => Err(flight),
        }
    }
}

impl<T> Drop for Syncer<T> {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            // A panic in `settle` has nobody to go to; the flights it did not
            // answer were dropped, and their callers see `Closed`.
            let _ = thread.join();
        }
    }
}
