//! How the store is doing: what [`Store::health`](crate::Store::health)
//! reports and the `health` gauge of [`Metrics`](crate::Metrics) mirrors.

use std::sync::PoisonError;

use crate::sync::Mutex;

use crate::counters::Counters;

/// The state of a store's write path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Reads and writes work.
    Ok,
    /// A commit failed (a full disk, an I/O error), or a read failed in the
    /// storage engine, which then refuses every read and write until its
    /// file is opened again. Writes are refused with `Error::Poisoned`
    /// while the store reopens its file by itself, at once after a failed
    /// read and with backoff after that; once a reopen succeeds, writes
    /// resume on the same handles. After a failed commit reads keep
    /// working, except while a reopen attempt has failed.
    Recovering {
        /// The failure that started the recovery, or the last reopen error.
        cause: String,
        /// Reopen attempts so far.
        attempts: u64,
    },
    /// A commit failed and the store cannot reopen its storage (an
    /// in-memory store): writes are refused until it is dropped.
    Failed {
        /// The failure.
        cause: String,
    },
}

impl Health {
    /// The gauge value of this state: 0 ok, 1 recovering, 2 failed.
    pub fn code(&self) -> u64 {
        match self {
            Health::Ok => 0,
            Health::Recovering { .. } => 1,
            Health::Failed { .. } => 2,
        }
    }
}

/// The current health, shared by the committer (which changes it) and the
/// store (which reports it).
#[derive(Debug)]
pub(crate) struct HealthCell(Mutex<Health>);

impl HealthCell {
    pub fn new() -> HealthCell {
        HealthCell(Mutex::new(Health::Ok))
    }

    pub fn get(&self) -> Health {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, health: Health, counters: &Counters) {
        counters.health.set(health.code());
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = health;
    }

    /// A read failed and asked for a reopen: `Recovering` until the
    /// committer has reopened the file (which sets `Ok` again), unless the
    /// store is already recovering or failed. Set before the committer can
    /// see the request, so that its `Ok` comes after.
    pub fn reopen_asked(&self, cause: &str, counters: &Counters) {
        let mut health = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *health == Health::Ok {
            *health = Health::Recovering {
                cause: cause.to_string(),
                attempts: 0,
            };
            counters.health.set(health.code());
        }
    }
}
