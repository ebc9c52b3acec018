//! The callers' side of the write queue: [`Submitter`] queues an operation
//! and hands back its [`Pending`] answer; a full queue holds a caller back
//! without blocking its thread, and a dead committer answers `Closed`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_channel::oneshot;

use super::reply::{Completed, Delivery, Granted, Imported, Renewed, Reply, Request, Swept};
use crate::config::ClaimTerms;
use crate::error::{Error, Result};
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::record::StoredRecord;
use crate::model::recovery::RecoveryPoint;
use crate::model::response::StoredResponse;
use crate::request::outcome::Begin;
use crate::sync::channel::{Receiver, Sender, TrySendError};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, fence};

/// A cloneable way to submit operations, for other threads (the sweeper).
/// Every method sends its operation at once and returns the reply to wait
/// for: it resolves once the commit that covers the operation returned.
#[derive(Clone)]
pub(crate) struct Submitter {
    pub(super) sender: Sender<Request>,
    pub(super) shared: Arc<Shared>,
}

/// The answer to one submitted operation.
pub(crate) struct Pending<T> {
    /// Where the answer comes from (the committer, or a relaying caller),
    /// or why none will.
    answer: Result<oneshot::Receiver<Delivery<T>>>,
    /// A request the full queue has not taken yet, with the way to queue
    /// it: it waits for room in this future, without blocking the thread
    /// that polls it.
    unsent: Option<(Request, Submitter)>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        if let Some((request, submitter)) = this.unsent.take() {
            match submitter.queue_or_wait(request, cx.waker()) {
                Ok(None) => {}
                Ok(Some(back)) => {
                    this.unsent = Some((back, submitter));
                    return Poll::Pending;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        match &mut this.answer {
            Ok(receiver) => Pin::new(receiver).poll(cx).map(|delivery| match delivery {
                Ok((answer, relay)) => {
                    // Other callers' answers first: they wait on this one.
                    drop(relay);
                    answer
                }
                // The committer stopped without answering: the store is
                // closing.
                Err(oneshot::Canceled) => Err(Error::Closed),
            }),
            Err(err) => Poll::Ready(Err(std::mem::replace(err, Error::Closed))),
        }
    }
}

impl<T> Pending<T> {
    /// Blocks the thread until the answer is there.
    pub fn wait(self) -> Result<T> {
        crate::blocking::block_on(self)
    }
}

impl Submitter {
    pub(super) fn submit<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Pending<T> {
        let (sender, answer) = oneshot::channel();
        let request = request(Reply::new(sender));
        // The queue holds QUEUE_ROOM operations. A sender beyond that waits for
        // room (backpressure) without blocking: its future is woken when
        // the committer takes a batch out, so an async caller never holds
        // a runtime worker, and a blocking one parks in `wait`.
        match self.try_queue(request) {
            Ok(unsent) => Pending {
                answer: Ok(answer),
                unsent: unsent.map(|back| (back, self.clone())),
            },
            Err(err) => Pending {
                answer: Err(err),
                unsent: None,
            },
        }
    }

    /// Queues `request`, or hands it back if the queue is full.
    pub(super) fn try_queue(&self, request: Request) -> Result<Option<Request>> {
        if self.shared.dead.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let sent = match self.sender.try_send(request) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(back)) => Ok(Some(back)),
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        };
        // The committer died after the check above: nobody else may drain
        // what was just queued, so this caller does (every request is
        // answered once, by whoever receives it).
        if self.shared.dead.load(Ordering::SeqCst) {
            self.shared.fail_queued();
        }
        sent
    }

    /// Queues `request`, or registers `waker` for room and hands the
    /// request back. The second try after registering closes the window in
    /// which the committer made room before the waker was there.
    pub(super) fn queue_or_wait(&self, request: Request, waker: &Waker) -> Result<Option<Request>> {
        let Some(back) = self.try_queue(request)? else {
            return Ok(None);
        };
        self.shared.wait_for_room(waker);
        self.try_queue(back)
    }

    pub fn claim(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
    ) -> Pending<Begin<Granted>> {
        self.submit(|reply| Request::Claim {
            key: key.clone(),
            fingerprint,
            terms,
            reply,
        })
    }

    pub fn complete(
        &self,
        key: &Key,
        token: u64,
        response: StoredResponse,
        retention_ms: u64,
    ) -> Pending<Completed> {
        self.submit(|reply| Request::Complete {
            key: key.clone(),
            token,
            response,
            retention_ms,
            reply,
        })
    }

    pub fn release(&self, key: &Key, token: u64) -> Pending<()> {
        self.submit(|reply| Request::Release {
            key: key.clone(),
            token,
            reply,
        })
    }

    /// Extends the claim's lease; with a `point`, records it too (the
    /// recovery point a takeover would inherit).
    pub fn renew(
        &self,
        key: &Key,
        token: u64,
        terms: ClaimTerms,
        point: Option<RecoveryPoint>,
    ) -> Pending<Renewed> {
        self.submit(|reply| Request::Renew {
            key: key.clone(),
            token,
            terms,
            point,
            reply,
        })
    }

    pub fn remove(&self, key: &Key) -> Pending<bool> {
        self.submit(|reply| Request::Remove {
            key: key.clone(),
            reply,
        })
    }

    pub fn sweep(&self, limit: usize) -> Pending<Swept> {
        self.submit(|reply| Request::Sweep { limit, reply })
    }

    /// Has the committer take a batch now, which writes nothing: a reopen
    /// that a failed read asked for (`Engine::must_reopen`) then happens at
    /// once instead of before the next write. Answered once the batch ran
    /// (`Error::Poisoned` if the reopen failed); nobody needs to wait.
    pub fn heal(&self) -> Pending<()> {
        self.submit(|reply| Request::Heal { reply })
    }

    /// Writes `records` as they are, all or none: refused with
    /// `ImportConflict` if any key holds a live record. Expired records are
    /// skipped.
    pub fn import(&self, records: Vec<StoredRecord>) -> Pending<Imported> {
        self.submit(|reply| Request::Import { records, reply })
    }
}

/// What the committer thread and the callers share.
pub(super) struct Shared {
    /// The queue the committer thread serves (and, once it died, whoever
    /// finds it dead drains).
    pub(super) receiver: Receiver<Request>,
    /// Set once the committer thread has died (a panic, which is a bug):
    /// from then on every request queued or submitted is answered `Closed`.
    pub(super) dead: AtomicBool,
    /// Callers whose request found the queue full, woken when the
    /// committer takes a batch out (or dies).
    pub(super) room_waiters: Mutex<Vec<Waker>>,
    /// How many wakers `room_waiters` holds, read without its lock on every
    /// batch.
    pub(super) room_waiting: AtomicUsize,
    /// Makes the committer thread panic at its next batch, once it has
    /// said so on the first channel and heard back on the second (tests of
    /// the dead-committer path).
    #[cfg(test)]
    pub(super) panic_gate: Mutex<
        Option<(
            crossbeam_channel::Sender<()>,
            crossbeam_channel::Receiver<()>,
        )>,
    >,
}

impl Shared {
    /// Answers `Closed` to every request in the queue (once the committer
    /// is dead).
    pub(super) fn fail_queued(&self) {
        while let Ok(request) = self.receiver.try_recv() {
            request.fail(Error::Closed);
        }
    }

    /// Registers `waker` to be woken when the queue has room.
    pub(super) fn wait_for_room(&self, waker: &Waker) {
        let mut waiters = self
            .room_waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A future is polled again only after a wake-up, which emptied the
        // list, so a waker is rarely there twice; a duplicate only wakes
        // its task once more.
        waiters.push(waker.clone());
        self.room_waiting.fetch_add(1, Ordering::SeqCst);
        drop(waiters);
        fence(Ordering::SeqCst);
    }

    /// Wakes every caller waiting for room in the queue, after a batch was
    /// taken out of it. Costs one atomic load when nobody waits.
    pub(super) fn made_room(&self) {
        // Orders the batch's removal from the queue before the read of the
        // count, as `wait_for_room` orders its count before its retry: one
        // of the two sees the other (the waker is woken, or its retry
        // finds room).
        fence(Ordering::SeqCst);
        if self.room_waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiters = std::mem::take(
            &mut *self
                .room_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.room_waiting.fetch_sub(waiters.len(), Ordering::SeqCst);
        for waker in waiters {
            waker.wake();
        }
    }
}
