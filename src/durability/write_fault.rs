//! A switch a test holds to make one of the store's commits fail as a disk
//! does: before the write lands (the write itself fails, say with ENOSPC),
//! or after it landed, with its answer lost (a sync that reports an error
//! although the data reached the disk). Either way the committer takes the
//! real path: the batch fails, the store is poisoned and heals by reopening
//! its file, and the callers get transient errors.
//!
//! Built only with the `fault-injection` feature (the crate's own tests and
//! the conformance suite turn it on); without it the switch is a zero-sized
//! type whose checks are empty inline functions.

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};

    const NONE: u8 = 0;
    const BEFORE_LANDING: u8 = 1;
    const ANSWER_LOST: u8 = 2;

    /// The switch: [`Config::write_faults`](crate::Config::write_faults)
    /// gives a store a clone, the test keeps one. Each fault applies to the
    /// next commit only.
    #[derive(Clone, Debug, Default)]
    pub struct WriteFaults(Arc<AtomicU8>);

    impl WriteFaults {
        /// The next commit fails before anything of it lands.
        pub fn fail_next_commit(&self) {
            self.0.store(BEFORE_LANDING, Ordering::SeqCst);
        }

        /// The next commit lands durably, and then fails as if its sync had
        /// reported an error: its callers hear of a failure.
        pub fn lose_next_answer(&self) {
            self.0.store(ANSWER_LOST, Ordering::SeqCst);
        }

        /// Called before a commit writes anything.
        pub(crate) fn before_commit(&self) -> io::Result<()> {
            self.trip(BEFORE_LANDING, "the write failed before it landed")
        }

        /// Called once a commit is durable, before anyone hears of it.
        pub(crate) fn after_commit(&self) -> io::Result<()> {
            self.trip(ANSWER_LOST, "the write landed, but its answer was lost")
        }

        fn trip(&self, fault: u8, what: &str) -> io::Result<()> {
            match self
                .0
                .compare_exchange(fault, NONE, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => Err(io::Error::other(format!("injected fault: {what}"))),
                Err(_) => Ok(()),
            }
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use enabled::WriteFaults;

/// Without the `fault-injection` feature: nothing to switch, nothing to
/// check.
#[cfg(not(feature = "fault-injection"))]
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteFaults;

#[cfg(not(feature = "fault-injection"))]
impl WriteFaults {
    #[inline(always)]
    pub(crate) fn before_commit(&self) -> std::io::Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn after_commit(&self) -> std::io::Result<()> {
        Ok(())
    }
}
