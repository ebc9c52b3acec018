//! What travels through the write queue: each operation as a [`Request`]
//! with its [`Reply`], the answers the committer gives, and the [`Relay`]
//! that passes a batch's answers on through its blocked callers.

use futures_channel::oneshot;

use crate::config::ClaimTerms;
use crate::error::{Error, Result};
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::record::StoredRecord;
use crate::model::recovery::RecoveryPoint;
use crate::model::response::StoredResponse;
use crate::request::outcome::Begin;

/// A claim the committer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Granted {
    pub token: u64,
    pub lease_until_ms: u64,
    pub takeover: bool,
    /// The recovery point a takeover inherits from the attempt before.
    pub recovered: Option<RecoveryPoint>,
}

/// A completion the committer wrote; the record expires at `expires_at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completed {
    pub expires_at_ms: u64,
}

/// A renewal the committer wrote: the new lease end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Renewed {
    pub lease_until_ms: u64,
}

/// One sweep batch: records deleted, and whether more may be due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Swept {
    pub deleted: u64,
    pub more: bool,
}

/// What [`Store::import`](crate::Store::import) wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Imported {
    /// Records written.
    pub imported: u64,
    /// Records left out because they had already expired.
    pub skipped_expired: u64,
}

/// What a caller receives: its answer, and other callers' answers to pass
/// on ([`Relay`]).
pub(super) type Delivery<T> = (Result<T>, Relay);

/// Where one operation's answer goes once the commit that covers it returned.
pub(super) struct Reply<T> {
    pub(super) sender: oneshot::Sender<Delivery<T>>,
    /// Set while the batch is applied; sent after the commit.
    pub(super) answer: Option<Result<T>>,
    /// Whether the caller is a blocked thread ([`crate::blocking`]), which
    /// runs the moment it is woken and so may pass answers on.
    pub(super) relays: bool,
}

impl<T> Reply<T> {
    pub(super) fn new(sender: oneshot::Sender<Delivery<T>>) -> Reply<T> {
        Reply {
            sender,
            answer: None,
            relays: crate::blocking::in_block_on(),
        }
    }

    pub(super) fn send(self, relay: Relay) {
        // A caller that gave up waiting (a dropped future) has dropped its
        // receiver; what was committed stays committed, and the answers it
        // was to pass on are passed on here, as `relay` drops.
        let answer = self.answer.unwrap_or(Err(Error::Closed));
        let _ = self.sender.send((answer, relay));
    }

    pub(super) fn fail(self, err: Error) {
        let _ = self.sender.send((Err(err), Relay::default()));
    }
}

/// Answers a committed batch's blocked callers spread over a binary tree:
/// the committer wakes two of them, each woken caller wakes two more, and
/// so on, so the batch's wake-ups (a system call each, and on a virtual
/// machine an interrupt to another core) fall on the callers' threads, in
/// parallel, instead of all on the one writer. A relay answers what it
/// holds when it is dropped, wherever that happens: in the woken caller's
/// poll, in the committer when the caller's receiver is gone, or with a
/// receiver dropped holding it; so every request in it is answered exactly
/// once. Only blocked threads relay: an async task runs when its runtime
/// gets to it, which must not delay anyone else's answer.
///
/// Kept because it was measured: answering every caller from the committer
/// cost 16-17% of the 64-client rate on 2 cores (docs/benchmarks.md,
/// "Three write-path choices, measured").
#[derive(Default)]
pub(super) struct Relay(Vec<Request>);

impl Relay {
    /// Answers every request of a committed batch: async callers at once,
    /// blocked threads through the tree.
    pub(super) fn answer(mut batch: Vec<Request>) {
        // Nothing is allocated when every caller relays (a lone caller's
        // batch of one included).
        for request in batch.extract_if(.., |request| !request.relays()) {
            request.send(Relay::default());
        }
        drop(Relay(batch));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let mut first = std::mem::take(&mut self.0);
        if first.is_empty() {
            return;
        }
        // The larger half first, so that a relay of one splits off nothing.
        let second = first.split_off(first.len().div_ceil(2));
        for mut half in [first, second] {
            if let Some(head) = half.pop() {
                head.send(Relay(half));
            }
        }
    }
}

/// One write, as a caller asks for it, with its reply.
pub(super) enum Request {
    /// Claim `key` if the decision rule still says so inside the transaction.
    Claim {
        key: Key,
        fingerprint: Fingerprint,
        terms: ClaimTerms,
        reply: Reply<Begin<Granted>>,
    },
    /// Store the response of the claim with `token`.
    Complete {
        key: Key,
        token: u64,
        response: StoredResponse,
        retention_ms: u64,
        reply: Reply<Completed>,
    },
    /// Delete the in-flight record of the claim with `token`.
    Release {
        key: Key,
        token: u64,
        reply: Reply<()>,
    },
    /// Extend the lease of the claim with `token`, and with a `point`,
    /// record it as the claim's recovery point (`record_progress`).
    Renew {
        key: Key,
        token: u64,
        terms: ClaimTerms,
        point: Option<RecoveryPoint>,
        reply: Reply<Renewed>,
    },
    /// Delete whatever is stored for `key`; answers whether a live record
    /// was deleted.
    Remove { key: Key, reply: Reply<bool> },
    /// Delete up to `limit` expired records.
    Sweep { limit: usize, reply: Reply<Swept> },
    /// Write `records` as given, in this one transaction (an import).
    Import {
        records: Vec<StoredRecord>,
        reply: Reply<Imported>,
    },
    /// Write nothing: a batch that lets the committer reopen the database
    /// now, when a read asked for it (`Engine::must_reopen`), rather than
    /// before the next write.
    Heal { reply: Reply<()> },
}

/// Runs `$body` with `$reply` bound to the request's reply, whatever its
/// variant.
macro_rules! with_reply {
    ($request:expr, $reply:ident => $body:expr) => {
        match $request {
            Request::Claim { $reply, .. } => $body,
            Request::Complete { $reply, .. } => $body,
            Request::Release { $reply, .. } => $body,
            Request::Renew { $reply, .. } => $body,
            Request::Remove { $reply, .. } => $body,
            Request::Sweep { $reply, .. } => $body,
            Request::Import { $reply, .. } => $body,
            Request::Heal { $reply } => $body,
        }
    };
}

impl Request {
    /// Sends the answer, with `relay` for the caller to pass on.
    pub(super) fn send(self, relay: Relay) {
        with_reply!(self, reply => reply.send(relay))
    }

    /// Whether the caller may pass answers on ([`Relay`]).
    pub(super) fn relays(&self) -> bool {
        with_reply!(self, reply => reply.relays)
    }

    /// The operation's name, for messages.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Request::Claim { .. } => "claim",
            Request::Complete { .. } => "complete",
            Request::Release { .. } => "release",
            Request::Renew { .. } => "renew",
            Request::Remove { .. } => "remove",
            Request::Sweep { .. } => "sweep",
            Request::Import { .. } => "import",
            Request::Heal { .. } => "heal",
        }
    }

    /// Whether the operation's answer is an error of its own (which
    /// leaves the batch's other operations to commit).
    pub(super) fn refused(&self) -> bool {
        with_reply!(self, reply => matches!(reply.answer, Some(Err(_))))
    }

    pub(super) fn fail(self, err: Error) {
        with_reply!(self, reply => reply.fail(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `n` sweep requests from blocked callers, each answered
    /// with its own index, and their receivers.
    fn batch(n: u64) -> (Vec<Request>, Vec<oneshot::Receiver<Delivery<Swept>>>) {
        (0..n)
            .map(|i| {
                let (sender, receiver) = oneshot::channel();
                let mut reply = Reply::new(sender);
                reply.relays = i % 5 != 4;
                reply.answer = Some(Ok(Swept {
                    deleted: i,
                    more: false,
                }));
                (Request::Sweep { limit: 1, reply }, receiver)
            })
            .unzip()
    }

    /// Takes what `receiver` holds, passing its relay on as a woken caller
    /// does.
    fn receive(receiver: &mut oneshot::Receiver<Delivery<Swept>>) -> Option<u64> {
        let (answer, relay) = receiver.try_recv().ok().flatten()?;
        drop(relay);
        answer.ok().map(|swept| swept.deleted)
    }

    #[test]
    fn a_relay_answers_every_caller_once_through_the_callers() {
        for n in [0, 1, 2, 3, 7, 38, 64, 1_024] {
            let (requests, mut receivers) = batch(n);
            Relay::answer(requests);
            // The committer itself answered every async caller and at most
            // two blocked ones; the blocked ones pass the rest on.
            let first: Vec<(usize, Delivery<Swept>)> = receivers
                .iter_mut()
                .enumerate()
                .filter_map(|(i, receiver)| Some((i, receiver.try_recv().ok().flatten()?)))
                .collect();
            let blocked = first.iter().filter(|(i, _)| i % 5 != 4).count();
            let asynchronous = (0..n).filter(|i| i % 5 == 4).count();
            assert_eq!(first.len() - blocked, asynchronous, "batch of {n}");
            assert!(
                blocked <= 2,
                "batch of {n}: {blocked} woken by the committer"
            );
            let mut answered = vec![None; receivers.len()];
            for (i, (answer, relay)) in first {
                drop(relay);
                answered[i] = answer.ok().map(|swept| swept.deleted);
            }
            // Callers woken in index order; those not answered yet wait
            // for a caller further on, so the loop goes round until none
            // is left.
            for _round in 0..=receivers.len() {
                for (i, receiver) in receivers.iter_mut().enumerate() {
                    if answered[i].is_none() {
                        answered[i] = receive(receiver);
                    }
                }
            }
            let expected: Vec<Option<u64>> = (0..n).map(Some).collect();
            assert_eq!(answered, expected, "batch of {n}");
        }
    }

    #[test]
    fn a_relay_is_passed_on_past_callers_that_gave_up() {
        let (requests, receivers) = batch(100);
        // Every third caller stopped waiting before the answers came.
        let mut kept: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .filter_map(|(i, receiver)| (i % 3 != 0).then_some((i as u64, receiver)))
            .collect();
        Relay::answer(requests);
        let mut answered = vec![None; kept.len()];
        for _round in 0..=kept.len() {
            for (slot, (_, receiver)) in answered.iter_mut().zip(kept.iter_mut()) {
                if slot.is_none() {
                    *slot = receive(receiver);
                }
            }
        }
        let expected: Vec<Option<u64>> = kept.iter().map(|(i, _)| Some(*i)).collect();
        assert_eq!(answered, expected);
    }
}
