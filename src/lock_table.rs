//! The sharded in-memory lock table: which keys have a claim being committed
//! or held by a live [`Claim`](crate::Claim) of this process, and who waits
//! for them.
//!
//! Invariants:
//! - An entry exists from the moment `begin` decides to claim a key until the
//!   claim ends: its `complete`/`release` is durable, or it fails, or the
//!   `Claim` is dropped. While it exists, no other `begin` for the key reaches
//!   the disk; they are answered from the entry (once the holder's lease has
//!   run out, the record decides between takeover, mismatch and a fresh
//!   claim, read under the shard lock).
//! - Each shard also holds its keys' part of the replay cache
//!   ([`crate::cache`]), so `begin` decides in one critical section.
//! - A `Held` entry with `busy == 0` has the same token and lease as the
//!   durable record, so a takeover decided from it is the one the committer
//!   will confirm.
//! - The committer never takes a shard lock, so holding one while waiting for
//!   a commit cannot deadlock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam_channel::Sender;
use crossbeam_utils::CachePadded;

use crate::cache::ShardCache;
use crate::fingerprint::Fingerprint;

/// Number of shards; a power of two so the shard is picked with a mask.
const SHARDS: usize = 64;

/// One shard: the claims of its keys and the replay cache of its keys, both
/// guarded by the same lock so `begin` decides in one critical section.
#[derive(Debug)]
pub(crate) struct Shard {
    pub claims: HashMap<[u8; 32], Entry>,
    pub cache: ShardCache,
}

/// A claim this process holds: its token and its lease as last made durable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holder {
    pub token: u64,
    pub lease_until_ms: u64,
}

#[derive(Debug)]
pub(crate) enum EntryState {
    /// A claim is being committed; `ticket` names the `begin` that owns it.
    /// `previous` is the holder being taken over, restored if the claim does
    /// not go through.
    Claiming {
        ticket: u64,
        previous: Option<(Holder, Fingerprint)>,
    },
    /// Durably claimed. `busy` counts holder operations (complete, release,
    /// renew) in flight; no takeover starts while it is non-zero.
    Held { holder: Holder, busy: u32 },
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub fingerprint: Fingerprint,
    pub state: EntryState,
    /// `begin_wait` callers to wake when the entry changes or goes away.
    waiters: Vec<Sender<()>>,
}

impl Entry {
    pub fn claiming(
        fingerprint: Fingerprint,
        ticket: u64,
        previous: Option<(Holder, Fingerprint)>,
    ) -> Entry {
        Entry {
            fingerprint,
            state: EntryState::Claiming { ticket, previous },
            waiters: Vec::new(),
        }
    }

    pub fn held(fingerprint: Fingerprint, holder: Holder) -> Entry {
        Entry {
            fingerprint,
            state: EntryState::Held { holder, busy: 0 },
            waiters: Vec::new(),
        }
    }

    /// Turns this entry into `claiming`, keeping the waiters.
    pub fn become_claiming(&mut self, claiming: Entry) {
        self.fingerprint = claiming.fingerprint;
        self.state = claiming.state;
        self.wake_all();
    }

    pub fn add_waiter(&mut self, waiter: &Sender<()>) {
        self.waiters.push(waiter.clone());
    }

    /// Wakes every waiter; each re-examines the key.
    pub fn wake_all(&mut self) {
        for waiter in self.waiters.drain(..) {
            // A full channel already holds a wake-up; a closed one has no reader.
            let _ = waiter.try_send(());
        }
    }

    pub fn is_claimed_by(&self, ticket: u64) -> bool {
        matches!(self.state, EntryState::Claiming { ticket: t, .. } if t == ticket)
    }

    pub fn is_held_by(&self, token: u64) -> bool {
        matches!(self.state, EntryState::Held { holder, .. } if holder.token == token)
    }
}

pub(crate) struct LockTable {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    next_ticket: AtomicU64,
}

impl LockTable {
    /// A table whose shards share `cache_bytes` of replay cache equally.
    pub fn new(cache_bytes: usize) -> LockTable {
        LockTable {
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(Mutex::new(Shard {
                        claims: HashMap::new(),
                        cache: ShardCache::new(cache_bytes / SHARDS),
                    }))
                })
                .collect(),
            next_ticket: AtomicU64::new(1),
        }
    }

    /// Locks the shard that owns `hash`. The table keys are blake3 output, so
    /// their first bytes spread evenly over the shards.
    pub fn shard(&self, hash: &[u8; 32]) -> MutexGuard<'_, Shard> {
        let index = usize::from(u16::from_le_bytes([hash[0], hash[1]])) & (SHARDS - 1);
        // No code panics while holding a shard lock, and the map stays
        // consistent even if one did: reading through poison is safe.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// A `Claim` was dropped without `complete`/`release`: forget it here. The
    /// durable record stays in flight until its lease runs out, so a retry is
    /// told `InProgress` rather than running the side effect again.
    pub fn abandon(&self, hash: &[u8; 32], token: u64) {
        let mut shard = self.shard(hash);
        let idle_and_mine = matches!(
            shard.claims.get(hash),
            Some(Entry { state: EntryState::Held { holder, busy: 0 }, .. }) if holder.token == token
        );
        if idle_and_mine {
            LockTable::remove_and_wake(&mut shard, hash);
        }
    }

    /// A claim that did not go through: give the key back to the holder it was
    /// taking over from, if any, else forget it. Wakes the waiters either way.
    pub fn restore_or_remove(shard: &mut Shard, hash: &[u8; 32]) {
        let Some(entry) = shard.claims.get_mut(hash) else {
            return;
        };
        match entry.state {
            EntryState::Claiming {
                previous: Some((holder, fingerprint)),
                ..
            } => {
                entry.fingerprint = fingerprint;
                entry.state = EntryState::Held { holder, busy: 0 };
                entry.wake_all();
            }
            _ => LockTable::remove_and_wake(shard, hash),
        }
    }

    /// Removes the entry (whatever its state) and wakes its waiters.
    pub fn remove_and_wake(shard: &mut Shard, hash: &[u8; 32]) {
        if let Some(mut entry) = shard.claims.remove(hash) {
            entry.wake_all();
        }
    }
}

impl std::fmt::Debug for LockTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockTable")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}
