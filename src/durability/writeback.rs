//! Writeback: puts the store file's written pages on disk between
//! checkpoints, so that a checkpoint does not have to.
//!
//! With the journal, commits do not sync the store's file. The storage
//! engine keeps the pages of those commits in its write buffer (at most half
//! of [`Config::storage_cache_bytes`](crate::Config::storage_cache_bytes))
//! and writes the pages that do not fit to the file, where they wait in the
//! operating system's page cache. The next checkpoint's durable commit
//! writes the buffer out and syncs the file: it waits for every one of those
//! pages to reach the disk, and so does every caller queued behind it. While
//! commits happen, the writeback thread syncs the file every
//! [`WRITEBACK_INTERVAL`] from a handle of its own, so a checkpoint finds
//! the pages written earlier already on disk and waits only for the write
//! buffer's: its stall is bounded by half the storage cache, not by a
//! second's worth of pages (docs/benchmarks.md, "Checkpoint stalls").
//!
//! Invariants:
//! - Syncing early changes nothing a crash can leave behind: the engine
//!   writes the pages of unsynced commits only where the last durable
//!   commit does not look, and the operating system may write them out at
//!   any time anyway. Durability still comes from the journal and the
//!   checkpoints alone.
//! - A failed sync here is not reported: on Linux every open handle of a
//!   file sees a writeback error once, so the checkpoint's own sync fails
//!   and the committer handles it as any failed commit.
//! - The thread syncs only when a commit happened since its last sync (an
//!   idle store issues no syncs), and it has stopped when [`Writeback`] is
//!   dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::log::event;
use crate::sync::AtomicU64;
use crate::sync::channel::{self, RecvTimeoutError, Sender};
use crate::sync::thread::{Builder, JoinHandle};

/// How often the thread syncs the file while commits happen, by default
/// ([`Config::writeback_interval`](crate::Config::writeback_interval)).
/// Trades syncs of an idle-looking file against how much a checkpoint
/// finds unsynced; measured with the checkpoint stalls in
/// docs/benchmarks.md, where it is what lets a smaller storage cache
/// shorten the stall.
pub(crate) const WRITEBACK_INTERVAL: Duration = Duration::from_millis(25);

/// A running writeback thread; dropping it stops the thread and waits for
/// it.
pub(crate) struct Writeback {
    /// Commits so far; the thread syncs when this moved since its last sync.
    commits: Arc<AtomicU64>,
    /// Dropped to stop the thread.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// Starts a thread that calls `sync` every `interval` after a commit
    /// was [recorded](Self::committed).
    pub fn start(
        interval: Duration,
        mut sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Writeback> {
        let commits = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = channel::bounded::<()>(0);
        let thread = {
            let commits = Arc::clone(&commits);
            Builder::new()
                .name("idemkv-writeback".into())
                .spawn(move || {
                    let mut synced_at = 0;
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                        let now = commits.load(Ordering::Relaxed);
                        if now == synced_at {
                            continue;
                        }
                        synced_at = now;
                        if let Err(_err) = sync() {
                            event!(
                                debug,
                                error = %_err,
                                "syncing the store's file between checkpoints failed; the next checkpoint reports it"
                            );
                        }
                    }
                })?
        };
        Ok(Writeback {
            commits,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Starts a thread that syncs the file at `path` (opened read-only).
    pub fn for_file(path: &std::path::Path, interval: Duration) -> std::io::Result<Writeback> {
        let file = std::fs::File::open(path)?;
        Writeback::start(interval, move || file.sync_data())
    }

    /// Records a commit that did not sync the file.
    pub fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only syncs; a panic there has nothing to report.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    fn counting() -> (Arc<AtomicUsize>, Writeback) {
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&syncs);
        let writeback = Writeback::start(Duration::from_millis(1), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        (syncs, writeback)
    }

    /// Waits (up to a minute) until `syncs` reaches `n`.
    fn wait_for(syncs: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while syncs.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "no sync after a commit");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn syncs_follow_commits_and_never_outnumber_them() {
        let (syncs, writeback) = counting();
        // Without a commit the thread never syncs, however long it runs.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(syncs.load(Ordering::SeqCst), 0, "synced without a commit");
        for commits in 1..=3 {
            writeback.committed();
            writeback.committed();
            wait_for(&syncs, commits);
            // A sync needs a commit since the one before: two commits
            // give one or two syncs.
            let seen = syncs.load(Ordering::SeqCst);
            assert!(
                seen <= 2 * commits,
                "{seen} syncs for {} commits",
                2 * commits
            );
        }
    }

    #[test]
    fn dropping_stops_the_thread() {
        let (syncs, writeback) = counting();
        let commits = Arc::clone(&writeback.commits);
        drop(writeback);
        // The thread is joined: a commit recorded now is never synced.
        commits.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(syncs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_failed_sync_does_not_stop_the_thread() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&syncs);
        let writeback = Writeback::start(Duration::from_millis(1), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Err(std::io::Error::other("injected"))
        })
        .unwrap();
        writeback.committed();
        wait_for(&syncs, 1);
        writeback.committed();
        wait_for(&syncs, 2);
    }
}
