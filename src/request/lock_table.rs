//! The sharded in-memory lock table: which keys have a claim being committed
//! or held by a live [`Claim`](crate::Claim) of this process, and who waits
//! for them. Every state change of an entry is a method of this module; the
//! store asks, it never edits an entry itself.
//!
//! Invariants:
//! - An entry exists from the moment `begin` decides to claim a key
//!   ([`ShardGuard::start_claim`]) until the claim ends: its
//!   `complete`/`release` is durable or fails, the `Claim` is dropped, or the
//!   claim was not granted. While it exists, no other `begin` for the key
//!   reaches the disk; they are answered from the entry (once the holder's
//!   lease has run out, the record decides between takeover, mismatch and a
//!   fresh claim, read under the shard lock; and while a takeover is
//!   committed behind a completion that landed first, the entry is
//!   outdated and the record answers, see [`EntryState::Claiming`]).
//! - The table is an optimisation, never the authority: it answers `begin`
//!   from memory, but it never refuses a holder's `complete`, `release` or
//!   `renew`. Those are judged by the committer against the record.
//! - A `Held` entry's `busy` counts the holder operations in flight; it is
//!   only changed through a [`BusyGuard`], which gives back exactly what it
//!   took. No takeover starts from the table while `busy` is non-zero.
//! - A waiter is registered at most once per entry, and is deregistered when
//!   it is woken, when its entry goes away, or when its [`Waiter`] drops: the
//!   `waiters` gauge counts exactly the registered ones.
//! - Each shard also holds its keys' part of the replay cache
//!   ([`crate::request::cache`]), so `begin` decides in one critical section.
//! - The committer never takes a shard lock, so holding one while waiting for
//!   a commit cannot deadlock.
//!
//! Longer than most files here on purpose: every transition of a key's entry
//! sits here, with the tests that walk them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use futures_channel::oneshot;

use crate::metrics::{Count, Gauge, MetricLabel};
use crate::model::fingerprint::Fingerprint;
use crate::request::cache::{CachedCompletion, ShardCache};
use crate::request::decide::in_progress;
use crate::request::outcome::{Begin, ClaimOwner};
use crate::sync::{AtomicU64, Mutex, MutexGuard};

/// Number of shards; a power of two so the shard is picked with a mask.
/// Trades contention on a shard's mutex (callers of different keys in one
/// shard take turns) against memory and the replay cache's split into
/// smaller parts. Sized for tens of caller threads; not tuned by
/// measurement.
const SHARDS: usize = 64;

type Hash = [u8; 32];

/// One shard: the claims of its keys and the replay cache of its keys, both
/// guarded by the same lock so `begin` decides in one critical section.
#[derive(Debug)]
struct Shard {
    claims: HashMap<Hash, Entry>,
    cache: ShardCache,
}

/// A claim this process holds: its token and its lease as last made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub token: u64,
    pub lease_until_ms: u64,
}

#[derive(Debug)]
enum EntryState {
    /// A claim is being committed; `ticket` names the `begin` that owns it.
    /// `outdated`: the claim was decided on a record read before the key's
    /// holder in this process completed it (a takeover racing the
    /// completion). The committer answers that claim from the completion;
    /// until it does, lookups read the record rather than answer
    /// `InProgress` from the entry.
    Claiming { ticket: u64, outdated: bool },
    /// Durably claimed. `busy` counts holder operations in flight.
    Held { holder: Holder, busy: u32 },
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    state: EntryState,
    /// waiting `begin` callers to wake when the entry changes or goes away, by
    /// waiter id.
    waiters: HashMap<u64, oneshot::Sender<()>>,
}

/// What the table knows about a key, for `begin`.
pub(crate) enum Lookup {
    /// Answered from memory: a claim of this process, or the replay cache.
    /// Never `Claimed`: a claim needs the disk.
    Answered(Begin<Infallible>),
    /// Nothing in memory decides: read the record (without the shard's
    /// lock), then [`ShardGuard::recheck`] before acting on it.
    ReadDisk,
}

pub(crate) struct LockTable {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// Tickets of claims being committed and ids of waiters.
    next_id: AtomicU64,
    /// Registered waiters, over every entry.
    waiters: Gauge,
    /// Lookups the replay cache answered, and lookups that found neither a
    /// claim nor a cached completion (the record is read).
    pub cache_hits: Count,
    pub cache_misses: Count,
}

impl LockTable {
    /// A table whose shards share `cache_bytes` of replay cache equally,
    /// publishing its counters with `label`.
    pub fn new(cache_bytes: usize, label: &MetricLabel) -> LockTable {
        LockTable {
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(Mutex::new(Shard {
                        claims: HashMap::new(),
                        cache: ShardCache::new(cache_bytes / SHARDS),
                    }))
                })
                .collect(),
            next_id: AtomicU64::new(1),
            waiters: Gauge::named("idemkv_waiters", label),
            cache_hits: Count::named("idemkv_replay_cache_hits_total", label),
            cache_misses: Count::named("idemkv_replay_cache_misses_total", label),
        }
    }

    /// Locks the shard that owns `hash`. The table keys are blake3 output, so
    /// their first bytes spread evenly over the shards.
    pub fn lock(&self, hash: &Hash) -> ShardGuard<'_> {
        let index = usize::from(u16::from_le_bytes([hash[0], hash[1]])) & (SHARDS - 1);
        // No code panics while holding a shard lock, and the map stays
        // consistent even if one did: reading through poison is safe.
        let shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ShardGuard {
            table: self,
            shard,
            hash: *hash,
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Waiters registered right now, over every key.
    pub fn waiters(&self) -> u64 {
        self.waiters.get()
    }

    /// A new waiter for `hash`, registered on the key's entry by
    /// [`ShardGuard::lookup`] and deregistered when dropped.
    pub fn waiter(self: &Arc<Self>, hash: &Hash) -> Waiter {
        Waiter {
            id: self.next_id(),
            hash: *hash,
            woken: Mutex::new(None),
            table: Arc::clone(self),
        }
    }

    /// Marks the claim with `token` busy while one of its operations is in
    /// flight, if this table holds it (a claim whose entry went away is
    /// judged by the committer alone).
    pub fn mark_busy(&self, hash: &Hash, token: u64) -> BusyGuard<'_> {
        let mut guard = self.lock(hash);
        let active = match guard.shard.claims.get_mut(hash) {
            Some(Entry {
                state: EntryState::Held { holder, busy },
                ..
            }) if holder.token == token => {
                *busy += 1;
                true
            }
            _ => false,
        };
        BusyGuard {
            table: self,
            hash: *hash,
            token,
            active,
        }
    }

    /// A `Claim` was dropped without `complete`/`release`: forget it here. The
    /// durable record stays in flight until its lease runs out, so a retry is
    /// told `InProgress` rather than running the side effect again.
    pub fn abandon(&self, hash: &Hash, token: u64) {
        let mut guard = self.lock(hash);
        let idle_and_mine = matches!(
            guard.shard.claims.get(hash),
            Some(Entry { state: EntryState::Held { holder, busy: 0 }, .. }) if holder.token == token
        );
        if idle_and_mine {
            guard.remove_entry();
        }
    }

    /// `remove` deleted the key durably, or failed and may have (its frame
    /// replayed when the store heals): drop its cached completion and the
    /// entry of a claim this process held on it (whose holder gets
    /// `LeaseLost` from the committer if the delete landed). Dropping them
    /// is safe either way: `begin` then reads the record. A claim being
    /// committed keeps its entry; the committer's answer settles it.
    pub fn forget(&self, hash: &Hash) {
        let mut guard = self.lock(hash);
        guard.shard.cache.invalidate(hash);
        if matches!(
            guard.shard.claims.get(hash),
            Some(Entry {
                state: EntryState::Held { .. },
                ..
            })
        ) {
            guard.remove_entry();
        }
    }
}

impl ClaimOwner for LockTable {
    fn abandon(&self, hash: &Hash, token: u64) {
        LockTable::abandon(self, hash, token);
    }
}

impl std::fmt::Debug for LockTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockTable")
            .field("shards", &self.shards.len())
            .field("waiters", &self.waiters())
            .finish_non_exhaustive()
    }
}

/// One locked shard, for one key.
pub(crate) struct ShardGuard<'t> {
    table: &'t LockTable,
    shard: MutexGuard<'t, Shard>,
    hash: Hash,
}

impl ShardGuard<'_> {
    /// Answers `begin` from memory if this process knows enough: a live
    /// claim (in progress, or a mismatch), or a cached completion (replay or
    /// mismatch). An `InProgress` answer registers `waiter`, if given.
    /// `claiming_retry_after` is the answer's `retry_after` while a claim is
    /// still being committed (its lease has not started yet).
    pub fn lookup(
        &mut self,
        fingerprint: Fingerprint,
        now_ms: u64,
        claiming_retry_after: Duration,
        waiter: Option<&Waiter>,
    ) -> Lookup {
        self.look(fingerprint, now_ms, claiming_retry_after, waiter, true)
    }

    /// [`lookup`](Self::lookup) again, after a read of the record made
    /// without the shard's lock: a claim or completion of this process
    /// that arrived meanwhile answers now. Not counted as a second lookup
    /// of the replay cache.
    pub fn recheck(
        &mut self,
        fingerprint: Fingerprint,
        now_ms: u64,
        claiming_retry_after: Duration,
        waiter: Option<&Waiter>,
    ) -> Lookup {
        self.look(fingerprint, now_ms, claiming_retry_after, waiter, false)
    }

    fn look(
        &mut self,
        fingerprint: Fingerprint,
        now_ms: u64,
        claiming_retry_after: Duration,
        waiter: Option<&Waiter>,
        counted: bool,
    ) -> Lookup {
        let hash = self.hash;
        if let Some(entry) = self.shard.claims.get_mut(&hash) {
            let answer = match entry.state {
                // The key was completed under a takeover being committed:
                // the record has the answer.
                EntryState::Claiming { outdated: true, .. } => return Lookup::ReadDisk,
                // The holder's lease ran out and it has nothing in flight: the
                // record decides (takeover, mismatch, or claim afresh if it
                // expired altogether), as for a claim of a dead process.
                EntryState::Held { holder, busy: 0 } if holder.lease_until_ms <= now_ms => {
                    return Lookup::ReadDisk;
                }
                _ if entry.fingerprint != fingerprint => Begin::Mismatch,
                EntryState::Held { holder, .. } => in_progress(holder.lease_until_ms, now_ms),
                EntryState::Claiming { .. } => Begin::InProgress {
                    retry_after: claiming_retry_after,
                },
            };
            if let (Some(waiter), Begin::InProgress { .. }) = (waiter, &answer)
                && let std::collections::hash_map::Entry::Vacant(slot) =
                    entry.waiters.entry(waiter.id)
            {
                let (wake, woken) = oneshot::channel();
                slot.insert(wake);
                *waiter.woken.lock().unwrap_or_else(PoisonError::into_inner) = Some(woken);
                self.table.waiters.add(1);
            }
            return Lookup::Answered(answer);
        }
        // The common retry: a completed record in the replay cache.
        if let Some(cached) = self.shard.cache.get(&hash, now_ms) {
            if counted {
                self.table.cache_hits.bump();
            }
            return Lookup::Answered(if cached.fingerprint == fingerprint {
                Begin::Replay(cached.response.clone())
            } else {
                Begin::Mismatch
            });
        }
        if counted {
            self.table.cache_misses.bump();
        }
        Lookup::ReadDisk
    }

    /// Records that this `begin` is claiming the key (its claim is about to
    /// be committed). A holder whose lease ran out is replaced; its waiters
    /// stay and are woken. The returned ticket settles the entry.
    pub fn start_claim(mut self, locks: &Arc<LockTable>, fingerprint: Fingerprint) -> ClaimTicket {
        let ticket = self.table.next_id();
        let hash = self.hash;
        match self.shard.claims.get_mut(&hash) {
            Some(entry) => {
                entry.fingerprint = fingerprint;
                entry.state = EntryState::Claiming {
                    ticket,
                    outdated: false,
                };
                self.wake_all();
            }
            None => {
                self.shard.claims.insert(
                    hash,
                    Entry {
                        fingerprint,
                        state: EntryState::Claiming {
                            ticket,
                            outdated: false,
                        },
                        waiters: HashMap::new(),
                    },
                );
            }
        }
        ClaimTicket {
            table: Arc::clone(locks),
            hash,
            ticket,
            fingerprint,
            settled: false,
        }
    }

    /// Wakes every waiter of the key's entry (each re-examines the key) and
    /// deregisters them.
    fn wake_all(&mut self) {
        if let Some(entry) = self.shard.claims.get_mut(&self.hash) {
            let woken = entry.waiters.len() as u64;
            for (_, waiter) in entry.waiters.drain() {
                // A waiter that is gone has nobody to wake.
                let _ = waiter.send(());
            }
            self.table.waiters.sub(woken);
        }
    }

    /// Removes the key's entry, waking its waiters.
    fn remove_entry(&mut self) {
        self.wake_all();
        self.shard.claims.remove(&self.hash);
    }
}

/// A claim being committed. Settle it with [`grant`](Self::grant) once the
/// committer wrote it; dropped unsettled (the committer answered something
/// else, or failed) it removes the entry, and the disk decides the next
/// `begin`.
pub(crate) struct ClaimTicket {
    table: Arc<LockTable>,
    hash: Hash,
    ticket: u64,
    fingerprint: Fingerprint,
    settled: bool,
}

impl ClaimTicket {
    /// The claim is durable: the entry becomes `Held` by `holder`.
    pub fn grant(mut self, holder: Holder) {
        self.settled = true;
        let mut guard = self.table.lock(&self.hash);
        match guard.shard.claims.get_mut(&self.hash) {
            Some(entry) if matches!(entry.state, EntryState::Claiming { ticket, .. } if ticket == self.ticket) =>
            {
                entry.state = EntryState::Held { holder, busy: 0 };
                guard.wake_all();
            }
            // `remove` dropped the entry while the claim was queued behind
            // it; the disk says this claim holds the key.
            None => {
                guard.shard.claims.insert(
                    self.hash,
                    Entry {
                        fingerprint: self.fingerprint,
                        state: EntryState::Held { holder, busy: 0 },
                        waiters: HashMap::new(),
                    },
                );
            }
            Some(_) => {}
        }
    }
}

impl Drop for ClaimTicket {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut guard = self.table.lock(&self.hash);
        let mine = matches!(
            guard.shard.claims.get(&self.hash),
            Some(Entry { state: EntryState::Claiming { ticket, .. }, .. }) if *ticket == self.ticket
        );
        if mine {
            guard.remove_entry();
        }
    }
}

/// A holder operation in flight. Gives back the `busy` count it took exactly
/// once: through [`renewed`](Self::renewed), [`end_claim`](Self::end_claim)
/// or its drop.
pub(crate) struct BusyGuard<'t> {
    table: &'t LockTable,
    hash: Hash,
    token: u64,
    /// Whether this guard added to `busy` (the entry was held by `token`).
    active: bool,
}

impl BusyGuard<'_> {
    /// The renewal is durable: the entry's lease becomes `lease_until_ms`.
    pub fn renewed(mut self, lease_until_ms: u64) {
        let mut guard = self.table.lock(&self.hash);
        if let Some(Entry {
            state: EntryState::Held { holder, busy },
            ..
        }) = guard.shard.claims.get_mut(&self.hash)
            && holder.token == self.token
        {
            holder.lease_until_ms = lease_until_ms;
            if self.active {
                *busy -= 1;
            }
        }
        self.active = false;
    }

    /// The claim is over (completed, released, or found lost): if the entry
    /// is still this claim's, `on_held` runs on the shard's cache under the
    /// lock, then the entry goes and its waiters are woken. A `remove` that
    /// revoked the claim meanwhile took the entry, and `on_held` does not
    /// run, so a stale completion is never cached.
    pub fn end_claim(self, on_held: impl FnOnce(&mut ShardCacheHandle<'_>)) {
        self.end(on_held, false);
    }

    /// The claim was completed durably: as [`end_claim`](Self::end_claim),
    /// and if another `begin` of this process started to take the key over
    /// meanwhile (its claim, decided on the record as it was before this
    /// completion, is being committed), that entry is marked outdated and
    /// its waiters woken: lookups read the completion from the record
    /// until the committer answers the claim. The completion is not cached
    /// then: a `remove` may follow it before the claim settles, and the
    /// cache would outlive the record.
    pub fn end_completed_claim(self, on_held: impl FnOnce(&mut ShardCacheHandle<'_>)) {
        self.end(on_held, true);
    }

    fn end(mut self, on_held: impl FnOnce(&mut ShardCacheHandle<'_>), completed: bool) {
        let mut guard = self.table.lock(&self.hash);
        let state = guard.shard.claims.get_mut(&self.hash).map(|e| &mut e.state);
        match state {
            Some(EntryState::Held { holder, .. }) if holder.token == self.token => {
                on_held(&mut ShardCacheHandle {
                    cache: &mut guard.shard.cache,
                    hash: self.hash,
                });
                guard.remove_entry();
            }
            Some(EntryState::Claiming { outdated, .. }) if completed => {
                *outdated = true;
                guard.wake_all();
            }
            _ => {}
        }
        self.active = false;
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let mut guard = self.table.lock(&self.hash);
        if let Some(Entry {
            state: EntryState::Held { holder, busy },
            ..
        }) = guard.shard.claims.get_mut(&self.hash)
            && holder.token == self.token
        {
            *busy -= 1;
        }
    }
}

/// The replay cache of one key, reached under its shard lock.
pub(crate) struct ShardCacheHandle<'s> {
    cache: &'s mut ShardCache,
    hash: Hash,
}

impl ShardCacheHandle<'_> {
    /// Caches the key's completion (write-through, after it is durable).
    pub fn insert(&mut self, completion: CachedCompletion) {
        self.cache.insert(self.hash, completion);
    }
}

/// One waiting `begin`'s registration: woken when the key's entry
/// changes or goes away, deregistered when dropped. Each registration is a
/// oneshot, which a blocked thread and an awaiting task wait on alike.
pub(crate) struct Waiter {
    id: u64,
    hash: Hash,
    /// The wake-up of the current registration, while registered.
    woken: Mutex<Option<oneshot::Receiver<()>>>,
    table: Arc<LockTable>,
}

/// The longest single wait; a longer one is several (each re-checks the key).
const MAX_PARK: Duration = Duration::from_secs(24 * 3600);

impl Waiter {
    /// Waits until woken or `timeout` passes (without blocking a thread when
    /// awaited by a task).
    pub async fn wait(&self, timeout: Duration) {
        let mut woken = self
            .woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut delay = std::pin::pin!(crate::sync::time::sleep(timeout.min(MAX_PARK)));
        let was_woken = std::future::poll_fn(|cx| {
            if let Some(receiver) = woken.as_mut()
                && std::pin::Pin::new(receiver).poll(cx).is_ready()
            {
                return std::task::Poll::Ready(true);
            }
            delay.as_mut().poll(cx).map(|()| false)
        })
        .await;
        if !was_woken {
            // Still registered: keep the wake-up for the next wait.
            *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = woken;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut guard = self.table.lock(&self.hash);
        if let Some(entry) = guard.shard.claims.get_mut(&self.hash)
            && entry.waiters.remove(&self.id).is_some()
        {
            self.table.waiters.sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> Hash {
        [n; 32]
    }

    fn held(table: &Arc<LockTable>, h: &Hash, token: u64) {
        let guard = table.lock(h);
        guard
            .start_claim(table, Fingerprint::of(b"f"))
            .grant(Holder {
                token,
                lease_until_ms: 1_000,
            });
    }

    #[test]
    fn a_dropped_ticket_removes_its_entry_and_wakes_waiters() {
        let table = Arc::new(LockTable::new(0, &MetricLabel::default()));
        let h = hash(1);
        let ticket = table.lock(&h).start_claim(&table, Fingerprint::of(b"f"));
        let waiter = table.waiter(&h);
        let answer = table.lock(&h).lookup(
            Fingerprint::of(b"f"),
            0,
            Duration::from_secs(1),
            Some(&waiter),
        );
        assert!(matches!(answer, Lookup::Answered(Begin::InProgress { .. })));
        assert_eq!(table.waiters(), 1);
        drop(ticket);
        assert_eq!(table.waiters(), 0, "woken waiters are deregistered");
        let woken = waiter
            .woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|mut receiver| receiver.try_recv());
        assert!(matches!(woken, Some(Ok(Some(())))), "the waiter was woken");
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 0, Duration::ZERO, None),
            Lookup::ReadDisk
        ));
    }

    #[test]
    fn a_waiter_registers_once_and_deregisters_on_drop() {
        let table = Arc::new(LockTable::new(0, &MetricLabel::default()));
        let h = hash(2);
        held(&table, &h, 7);
        let waiter = table.waiter(&h);
        for _ in 0..5 {
            let _ = table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 0, Duration::ZERO, Some(&waiter));
        }
        assert_eq!(table.waiters(), 1);
        drop(waiter);
        assert_eq!(table.waiters(), 0);
    }

    #[test]
    fn busy_guards_give_back_exactly_what_they_took() {
        let table = Arc::new(LockTable::new(0, &MetricLabel::default()));
        let h = hash(3);
        held(&table, &h, 7);
        let busy = table.mark_busy(&h, 7);
        // While busy, an expired lease is still answered from memory.
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::Answered(Begin::InProgress { .. })
        ));
        let other = table.mark_busy(&h, 8);
        drop(other);
        drop(busy);
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::ReadDisk
        ));
        table.mark_busy(&h, 7).renewed(9_000);
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::Answered(Begin::InProgress { .. })
        ));
        table.mark_busy(&h, 7).end_claim(|_| {});
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::ReadDisk
        ));
    }

    /// A holder's completion that lands while another `begin` of this
    /// process is committing a takeover of the key (decided on the record
    /// read before the completion): until the committer answers that
    /// claim (from the completion), lookups read the record instead of
    /// answering `InProgress`, and waiters are woken to do so.
    #[test]
    fn a_completion_under_a_takeover_being_committed_sends_lookups_to_the_record() {
        let table = Arc::new(LockTable::new(0, &MetricLabel::default()));
        let h = hash(4);
        held(&table, &h, 7);
        // The holder's lease ran out: the record decides, and it says
        // take over.
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::ReadDisk
        ));
        let takeover = table.lock(&h).start_claim(&table, Fingerprint::of(b"f"));
        let waiter = table.waiter(&h);
        let waiting = table.lock(&h).lookup(
            Fingerprint::of(b"f"),
            5_000,
            Duration::from_secs(60),
            Some(&waiter),
        );
        assert!(matches!(
            waiting,
            Lookup::Answered(Begin::InProgress { .. })
        ));
        // The holder completes before the takeover is committed.
        table
            .mark_busy(&h, 7)
            .end_completed_claim(|_| panic!("not this holder's entry any more: nothing is cached"));
        assert_eq!(table.waiters(), 0, "the waiter was woken");
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::ReadDisk
        ));
        // The committer answers the takeover from the completion: the
        // entry goes.
        drop(takeover);
        assert!(table.lock(&h).shard.claims.is_empty());
        // A release or a failed holder write changes nothing for it.
        let takeover = table.lock(&h).start_claim(&table, Fingerprint::of(b"f"));
        table.mark_busy(&h, 7).end_claim(|_| {});
        assert!(matches!(
            table
                .lock(&h)
                .lookup(Fingerprint::of(b"f"), 5_000, Duration::ZERO, None),
            Lookup::Answered(Begin::InProgress { .. })
        ));
        drop(takeover);
    }
}
