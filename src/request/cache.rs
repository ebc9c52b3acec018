//! The replay cache: completed records kept in memory so the common retry is
//! answered without a read transaction.
//!
//! One [`ShardCache`] lives inside each lock-table shard and is only touched
//! under that shard's lock, in the same critical section that decides
//! `begin`. Coherence rests on the process owning the file and on three
//! rules:
//! - an entry is inserted only by `complete`, after the completion it holds is
//!   durable and while the claim still holds the key (write-through);
//! - `remove` invalidates the entry after its delete is durable, under the
//!   shard lock;
//! - every entry carries its record's expiry time and is dropped, never
//!   returned, once that time has come (which also covers sweeps, since they
//!   delete only expired records).
//!
//! A completed record cannot change in any other way, so an entry is never
//! stale. Eviction is CLOCK (second chance) within a byte budget.
//!
//! Records read from disk are not inserted. Retries cluster right after a
//! completion, which is exactly what write-through holds; inserting on reads
//! would let a scan of old keys (uniformly random lookups over a large store)
//! flush those entries, and measured slower than no cache at all for that
//! pattern (an insert and an eviction per miss).

use std::collections::{HashMap, VecDeque};

use crate::model::fingerprint::Fingerprint;
use crate::model::response::StoredResponse;

/// Bookkeeping bytes charged per entry on top of the response itself.
const ENTRY_OVERHEAD: usize = 128;

/// A completed record, as the cache keeps it.
#[derive(Debug)]
pub(crate) struct CachedCompletion {
    pub fingerprint: Fingerprint,
    pub expires_at_ms: u64,
    pub response: StoredResponse,
}

impl CachedCompletion {
    fn charge(&self) -> usize {
        self.response.stored_len() + self.response.headers().len() * 48 + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct CacheEntry {
    completion: CachedCompletion,
    charge: usize,
    referenced: bool,
}

#[derive(Debug)]
pub(crate) struct ShardCache {
    entries: HashMap<[u8; 32], CacheEntry>,
    /// Insertion order for the CLOCK hand; may hold keys already removed
    /// from `entries`, which the hand skips.
    ring: VecDeque<[u8; 32]>,
    bytes: usize,
    budget: usize,
}

impl ShardCache {
    pub fn new(budget: usize) -> ShardCache {
        ShardCache {
            entries: HashMap::new(),
            ring: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// The live completion for `hash`; an expired one is dropped instead.
    pub fn get(&mut self, hash: &[u8; 32], now_ms: u64) -> Option<&CachedCompletion> {
        let expired = self.entries.get(hash)?.completion.expires_at_ms <= now_ms;
        if expired {
            self.invalidate(hash);
            return None;
        }
        let entry = self.entries.get_mut(hash)?;
        entry.referenced = true;
        Some(&entry.completion)
    }

    pub fn insert(&mut self, hash: [u8; 32], completion: CachedCompletion) {
        let charge = completion.charge();
        if charge > self.budget {
            self.invalidate(&hash);
            return;
        }
        self.invalidate(&hash);
        while self.bytes + charge > self.budget && self.evict_one() {}
        self.bytes += charge;
        self.entries.insert(
            hash,
            CacheEntry {
                completion,
                charge,
                referenced: false,
            },
        );
        self.ring.push_back(hash);
        if self.ring.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.ring.retain(|h| entries.contains_key(h));
        }
    }

    pub fn invalidate(&mut self, hash: &[u8; 32]) {
        if let Some(entry) = self.entries.remove(hash) {
            self.bytes -= entry.charge;
        }
    }

    /// Advances the CLOCK hand until one entry is evicted; false when empty.
    fn evict_one(&mut self) -> bool {
        while let Some(hash) = self.ring.pop_front() {
            match self.entries.get_mut(&hash) {
                Some(entry) if entry.referenced => {
                    entry.referenced = false;
                    self.ring.push_back(hash);
                }
                Some(_) => {
                    self.invalidate(&hash);
                    return true;
                }
                None => {}
            }
        }
        false
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(body: usize, expires_at_ms: u64) -> CachedCompletion {
        CachedCompletion {
            fingerprint: Fingerprint::of(b"f"),
            expires_at_ms,
            response: StoredResponse::new(200, vec![0u8; body]),
        }
    }

    fn hash(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn never_returns_an_expired_entry() {
        let mut cache = ShardCache::new(10_000);
        cache.insert(hash(1), completion(10, 100));
        assert!(cache.get(&hash(1), 99).is_some());
        assert!(cache.get(&hash(1), 100).is_none());
        assert_eq!(cache.bytes(), 0, "the expired entry was dropped");
    }

    #[test]
    fn stays_within_its_budget_and_prefers_referenced_entries() {
        let one = completion(100, u64::MAX).charge();
        let mut cache = ShardCache::new(3 * one);
        for n in 0..3 {
            cache.insert(hash(n), completion(100, u64::MAX));
        }
        assert!(cache.get(&hash(0), 0).is_some());
        cache.insert(hash(3), completion(100, u64::MAX));
        assert!(cache.bytes() <= 3 * one);
        assert!(
            cache.get(&hash(0), 0).is_some(),
            "referenced entry survived"
        );
        assert!(cache.get(&hash(1), 0).is_none(), "oldest unreferenced went");
        for n in 10..200 {
            cache.insert(hash(n), completion(100, u64::MAX));
            assert!(cache.bytes() <= 3 * one);
        }
    }

    #[test]
    fn oversized_and_zero_budget_entries_are_not_kept() {
        let mut cache = ShardCache::new(0);
        cache.insert(hash(1), completion(1, u64::MAX));
        assert!(cache.get(&hash(1), 0).is_none());
        let mut cache = ShardCache::new(200);
        cache.insert(hash(2), completion(1000, u64::MAX));
        assert!(cache.get(&hash(2), 0).is_none());
    }

    #[test]
    fn invalidate_and_reinsert_keep_the_byte_count_exact() {
        let mut cache = ShardCache::new(100_000);
        cache.insert(hash(1), completion(10, u64::MAX));
        cache.insert(hash(1), completion(20, u64::MAX));
        assert_eq!(cache.bytes(), completion(20, 0).charge());
        cache.invalidate(&hash(1));
        assert_eq!(cache.bytes(), 0);
    }
}
