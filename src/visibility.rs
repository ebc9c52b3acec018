//! What readers may see while a journal sync is under way.
//!
//! The committer thread overlaps a batch's journal sync with the next
//! batch's work (see [`crate::syncer`]): it writes batch `b`'s frame,
//! commits `b`'s transaction without a sync, hands the frame's sync and the
//! answers to the syncer thread and goes on with batch `b + 1`. From that
//! commit until the sync returns, `b` is in the engine's read snapshots but
//! not on disk. This module keeps readers from answering with it:
//!
//! - Batches that go through the syncer are numbered from 1. Before it
//!   commits batch `b`, the committer raises the mark of every key the batch
//!   writes to `b` (in one of [`BUCKETS`] buckets by key hash), then
//!   publishes `b` as the last batch applied.
//! - The syncer publishes `b` as durable once its frame is synced.
//! - A reader reads first, then loads what its read may have seen (for one
//!   key, the key's bucket mark, [`Visibility::seen_key`]; for a scan, the
//!   last batch applied, [`Visibility::seen_all`]) while it still holds the
//!   engine, and waits until that batch is durable
//!   ([`Visibility::wait_for`]). A read snapshot that holds batch `b` was
//!   taken after `b` committed, so after the marks were raised: the mark
//!   the reader loads afterwards covers what it read. A key that no batch in
//!   flight wrote (the common case: a fresh key) does not wait; one that
//!   shares a bucket with such a key waits for one sync at most.
//! - If a sync fails, waiting readers get [`Error::Poisoned`]; after the
//!   store reopens ([`Visibility::reopened`]), readers of the batches that
//!   were lost get it too, however late they ask.
//!
//! Batches committed durably by the engine itself, or synced before their
//! transaction commits (a lone caller's, a checkpoint), take no number and
//! raise no mark.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};

/// Buckets of key marks: with about 50 keys in a batch in flight, a fresh
/// key shares a bucket with one of them about once in 80 reads.
pub(crate) const BUCKETS: usize = 4096;

/// The committer's, the syncer's and the readers' shared view of which
/// batches are durable.
pub(crate) struct Visibility {
    /// Per bucket of key hashes: the latest numbered batch that wrote a key
    /// of the bucket (0: none).
    marks: Box<[AtomicU64]>,
    /// The latest numbered batch committed to the engine.
    applied: AtomicU64,
    /// `State::durable`, readable without the lock.
    durable: AtomicU64,
    /// The highest batch lost to a failed sync (0: none), readable without
    /// the lock.
    lost_to: AtomicU64,
    state: Mutex<State>,
    /// Signalled when `state` changes.
    changed: Condvar,
}

struct State {
    /// Every numbered batch up to this one is on disk.
    durable: u64,
    /// Set by a failed sync until the store reopens.
    failed: Option<String>,
    /// Batches lost to the last failed sync, `from..=to` (empty: `from > to`).
    lost: (u64, u64),
    /// Why they were lost.
    lost_cause: String,
}

impl Visibility {
    pub fn new() -> Visibility {
        Visibility {
            marks: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            applied: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            lost_to: AtomicU64::new(0),
            state: Mutex::new(State {
                durable: 0,
                failed: None,
                lost: (1, 0),
                lost_cause: String::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; the state is plain numbers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark_of(&self, hash: &[u8; 32]) -> &AtomicU64 {
        let bucket = u64::from_le_bytes([
            hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
        ]) as usize
            % BUCKETS;
        &self.marks[bucket]
    }

    /// The number the committer's next numbered batch gets. Only the writer
    /// calls this and [`applied`](Self::applied).
    pub fn next_batch(&self) -> u64 {
        self.applied.load(Ordering::SeqCst) + 1
    }

    /// Records that numbered batch `batch` writes the key with `hash`; called
    /// before the batch commits.
    pub fn mark(&self, hash: &[u8; 32], batch: u64) {
        self.mark_of(hash).fetch_max(batch, Ordering::SeqCst);
    }

    /// Publishes `batch` as applied; called after its marks and before its
    /// transaction commits.
    pub fn applied(&self, batch: u64) {
        self.applied.store(batch, Ordering::SeqCst);
    }

    /// Whether a numbered batch is applied but neither durable nor lost yet.
    pub fn in_flight(&self) -> bool {
        self.applied.load(Ordering::SeqCst) > self.durable.load(Ordering::SeqCst)
    }

    /// Publishes every batch up to `batch` as durable.
    pub fn synced(&self, batch: u64) {
        let mut state = self.state();
        state.durable = state.durable.max(batch);
        self.durable.store(state.durable, Ordering::SeqCst);
        drop(state);
        self.changed.notify_all();
    }

    /// Records a failed sync: nothing after the last durable batch will be.
    pub fn failed(&self, cause: String) {
        let mut state = self.state();
        if state.failed.is_none() {
            state.failed = Some(cause);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Why a sync failed, until the store reopens.
    pub fn failure(&self) -> Option<String> {
        self.state().failed.clone()
    }

    /// The store reopened its file after a failed sync: what is readable now
    /// came from the disk, so it is all durable, and the marks start over;
    /// the batches that were in flight are lost, and a reader that saw one
    /// of them before the reopen gets an error. (Readers load their mark
    /// while holding the engine, which a reopen takes exclusively, so one
    /// that read the old file loaded its mark before this clears it.)
    pub fn reopened(&self) {
        for mark in &self.marks {
            mark.store(0, Ordering::SeqCst);
        }
        let applied = self.applied.load(Ordering::SeqCst);
        let mut state = self.state();
        if let Some(cause) = state.failed.take()
            && applied > state.durable
        {
            state.lost = (state.durable + 1, applied);
            state.lost_cause = cause;
            self.lost_to.store(applied, Ordering::SeqCst);
        }
        state.durable = applied;
        self.durable.store(applied, Ordering::SeqCst);
        drop(state);
        self.changed.notify_all();
    }

    /// The batch a read of the key with `hash`, made just before, may have
    /// seen: to [`wait_for`](Self::wait_for) once the read is done.
    pub fn seen_key(&self, hash: &[u8; 32]) -> u64 {
        self.mark_of(hash).load(Ordering::SeqCst)
    }

    /// The batch a read of any key, made just before, may have seen.
    pub fn seen_all(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Waits until numbered batch `batch` (0: none) is durable.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if it was lost to a failed sync (a failed sync
    /// loses every batch after the last durable one).
    pub fn wait_for(&self, batch: u64) -> Result<()> {
        if batch <= self.durable.load(Ordering::SeqCst)
            && batch > self.lost_to.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        let mut state = self.state();
        loop {
            if (state.lost.0..=state.lost.1).contains(&batch) {
                return Err(Error::Poisoned {
                    cause: state.lost_cause.clone(),
                });
            }
            if batch <= state.durable {
                return Ok(());
            }
            if let Some(cause) = &state.failed {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::thread;
    use std::time::Duration;

    use super::*;

    fn hash(first: u8) -> [u8; 32] {
        let mut hash = [0u8; 32];
        hash[0] = first;
        hash
    }

    #[test]
    fn a_key_no_batch_in_flight_wrote_reads_at_once() {
        let visibility = Visibility::new();
        let batch = visibility.next_batch();
        visibility.mark(&hash(1), batch);
        visibility.applied(batch);
        assert!(visibility.in_flight());
        visibility.wait_for(visibility.seen_key(&hash(2))).unwrap();
        visibility.synced(batch);
        assert!(!visibility.in_flight());
        visibility.wait_for(visibility.seen_key(&hash(1))).unwrap();
        visibility.wait_for(visibility.seen_all()).unwrap();
    }

    #[test]
    fn a_read_of_a_key_in_flight_waits_for_its_sync() {
        let visibility = Arc::new(Visibility::new());
        let batch = visibility.next_batch();
        visibility.mark(&hash(1), batch);
        visibility.applied(batch);
        let returned = Arc::new(AtomicBool::new(false));
        let reader = {
            let (visibility, returned) = (Arc::clone(&visibility), Arc::clone(&returned));
            thread::spawn(move || {
                let result = visibility.wait_for(visibility.seen_key(&hash(1)));
                returned.store(true, Ordering::SeqCst);
                result
            })
        };
        // However the threads are scheduled, the reader cannot have returned:
        // nothing made the batch durable yet.
        thread::sleep(Duration::from_millis(20));
        assert!(!returned.load(Ordering::SeqCst));
        visibility.synced(batch);
        reader.join().unwrap().unwrap();
    }

    #[test]
    fn a_failed_sync_fails_its_readers_before_and_after_the_reopen() {
        let visibility = Arc::new(Visibility::new());
        let first = visibility.next_batch();
        visibility.mark(&hash(1), first);
        visibility.applied(first);
        visibility.synced(first);
        let lost = visibility.next_batch();
        visibility.mark(&hash(2), lost);
        visibility.applied(lost);
        let reader = {
            let visibility = Arc::clone(&visibility);
            thread::spawn(move || visibility.wait_for(visibility.seen_key(&hash(2))))
        };
        visibility.failed("disk on fire".into());
        assert!(matches!(
            reader.join().unwrap(),
            Err(Error::Poisoned { .. })
        ));
        assert_eq!(visibility.failure().as_deref(), Some("disk on fire"));
        visibility.reopened();
        assert_eq!(visibility.failure(), None);
        assert!(!visibility.in_flight());
        // A reader that saw the lost batch before the reopen still fails;
        // one of the durable batch does not.
        assert!(matches!(
            visibility.wait_for(lost),
            Err(Error::Poisoned { cause }) if cause == "disk on fire"
        ));
        visibility.wait_for(first).unwrap();
        // The marks started over: the key reads at once.
        assert_eq!(visibility.seen_key(&hash(2)), 0);
        // Batches after the reopen are numbered on.
        let next = visibility.next_batch();
        assert_eq!(next, lost + 1);
        visibility.mark(&hash(2), next);
        visibility.applied(next);
        visibility.synced(next);
        visibility.wait_for(visibility.seen_key(&hash(2))).unwrap();
    }
}
