//! Poison and heal: after a failed commit the committer refuses writes
//! (`Error::Poisoned`) and reopens the database from its file, with backoff,
//! until writes can resume.

use std::time::Duration;

use super::writer::Worker;
use crate::error::Error;
use crate::health::Health;
use crate::log::event;
use crate::sync::time::Instant;

/// The longest wait between reopen attempts after a failed commit (unless
/// `Config::reopen_backoff` is longer); each failed attempt doubles the wait.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A failed commit the committer is recovering from.
pub(super) struct Poison {
    pub(super) cause: String,
    pub(super) next_attempt: Instant,
    pub(super) backoff: Duration,
    pub(super) attempts: u64,
}

impl Worker {
    /// When the next reopen is due, while poisoned and able to reopen.
    pub(super) fn next_attempt(&self) -> Option<Instant> {
        let poison = self.poisoned.as_ref()?;
        self.engine.can_reopen().then_some(poison.next_attempt)
    }

    /// Marks the store poisoned by `cause` and schedules the first reopen.
    pub(super) fn poison(&mut self, cause: String) {
        self.counters.failed_commits.bump();
        // The failed commit's sync may have given pages up: until a heal
        // rewrites the file, an open of it in this process must first.
        self.engine.doubt();
        event!(
            error,
            cause = %cause,
            "a commit failed: writes are refused (Error::Poisoned) until the store reopens its file"
        );
        let health = if self.engine.can_reopen() {
            Health::Recovering {
                cause: cause.clone(),
                attempts: 0,
            }
        } else {
            Health::Failed {
                cause: cause.clone(),
            }
        };
        self.health.set(health, &self.counters);
        let first = self.config.settings.reopen_backoff;
        self.poisoned = Some(Poison {
            cause,
            next_attempt: Instant::now().checked_add(first).unwrap_or_else(far_future),
            backoff: first,
            attempts: 0,
        });
    }

    /// Heals now if the engine cannot write until it is reopened
    /// (`Store::verify` failed inside it and called `Engine::must_reopen`),
    /// so that the next commit does not fail for it.
    pub(super) fn reopen_if_asked(&mut self) {
        if let Some(cause) = self.engine.take_reopen_cause() {
            self.poison(cause);
            self.heal();
        }
    }

    /// Reopens the database; on success writes resume, on failure the next
    /// attempt waits twice as long.
    pub(super) fn heal(&mut self) {
        let Some(poison) = self.poisoned.as_mut() else {
            return;
        };
        poison.attempts += 1;
        match self.engine.reopen() {
            Ok((opened, journal)) => {
                self.journal = journal;
                // Tokens issued before the failure may have landed: never
                // reissue one. The file's ceiling covers every durable token.
                self.token_seq = self.token_seq.max(opened.token_ceiling);
                self.token_ceiling = opened.token_ceiling;
                self.live_records = opened.live_records;
                self.counters.set_live_records(opened.live_records);
                self.in_flight = opened.in_flight;
                self.counters.in_flight.set(opened.in_flight);
                self.unsynced = false;
                event!(
                    info,
                    attempts = poison.attempts,
                    records = opened.live_records,
                    "the store reopened its file after a failed commit: writes resume"
                );
                self.poisoned = None;
                self.counters.recoveries.bump();
                self.health.set(Health::Ok, &self.counters);
            }
            Err(err) => {
                let longest = MAX_BACKOFF.max(self.config.settings.reopen_backoff);
                poison.backoff = poison.backoff.saturating_mul(2).min(longest);
                poison.next_attempt = Instant::now()
                    .checked_add(poison.backoff)
                    .unwrap_or_else(far_future);
                event!(
                    warn,
                    attempts = poison.attempts,
                    error = %err,
                    retry_in_ms = poison.backoff.as_millis() as u64,
                    "reopening the store after a failed commit failed; trying again"
                );
                let cause = format!("{}; reopening failed: {err}", poison.cause);
                // A file that is gone needs an operator; a full disk or an
                // I/O error may pass by itself.
                let health = if matches!(err, Error::FileReplaced { .. }) {
                    Health::Failed { cause }
                } else {
                    Health::Recovering {
                        cause,
                        attempts: poison.attempts,
                    }
                };
                self.health.set(health, &self.counters);
            }
        }
    }
}

/// An instant no reopen waits for: a backoff too long to add to now.
pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
