//! What `begin` answers, and the claim a caller holds while it runs the side
//! effect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::fingerprint::Fingerprint;
use crate::key::Key;
use crate::lock_table::LockTable;
use crate::response::StoredResponse;

/// The answer of [`Store::begin`](crate::Store::begin): exactly one of four.
///
/// The enum is deliberately exhaustive: every caller must handle every answer.
#[derive(Debug)]
#[must_use = "a Begin says whether to run the side effect; ignoring it risks a duplicate"]
pub enum Begin {
    /// This caller owns the key: run the side effect, then
    /// [`complete`](crate::Store::complete) or
    /// [`release`](crate::Store::release). The claim is durable on disk.
    Claimed(Claim),
    /// An earlier attempt with the same fingerprint completed: answer with
    /// this stored response and do not run the side effect.
    Replay(StoredResponse),
    /// Another attempt holds a live lease on the key; retry after
    /// `retry_after` (the time left on its lease, at least 1 ms) or use
    /// [`begin_wait`](crate::Store::begin_wait).
    InProgress {
        /// Time left on the holder's lease.
        retry_after: Duration,
    },
    /// The key was used with a different fingerprint: the client reused a key
    /// for a different request (HTTP answers 422).
    Mismatch,
}

/// Ownership of one key, from a `Claimed` answer until
/// [`complete`](crate::Store::complete) or
/// [`release`](crate::Store::release).
///
/// Dropping a claim without either leaves the record in flight until its lease
/// runs out: retries meanwhile are told `InProgress`, and the first retry after
/// the lease takes over. A dropped claim never lets a retry run the side effect
/// while the first attempt may still be running.
#[must_use = "a claim must be completed or released; dropping it blocks the key until its lease runs out"]
pub struct Claim {
    pub(crate) key: Key,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) token: u64,
    pub(crate) takeover: bool,
    pub(crate) locks: Arc<LockTable>,
}

impl Claim {
    /// The claimed key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The fingerprint the key was claimed with.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The fencing token: larger than every earlier claim's token for this key.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// True when this claim took over from an attempt whose lease ran out. That
    /// attempt may have run part of the side effect: check before repeating it.
    pub fn is_takeover(&self) -> bool {
        self.takeover
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.locks.abandon(self.key.hash(), self.token);
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.key)
            .field("token", &self.token)
            .field("takeover", &self.takeover)
            .finish()
    }
}
