//! Deleting expired records: the sweep itself (shared by the background
//! thread and `Store::sweep_expired`) and the `idemkv-sweeper` thread.
//!
//! A sweep is a series of committer operations of at most `batch` records
//! each, so claims queue behind at most one batch, never behind a whole sweep.
//! Each batch re-reads every record before deleting it (see
//! `WriteTables::sweep`), so a sweep never deletes a record that was rewritten
//! after its expiry entry was read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::StoreTime;
use crate::committer::{Submitter, Swept};
use crate::config::Config;
use crate::counters::Counters;
use crate::durability::engine::Engine;
use crate::durability::storage;
use crate::error::Result;
use crate::log::{event, span};
use crate::sync::channel::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use crate::sync::thread::{Builder, JoinHandle};

/// Deletes every record expired by the store's clock, `batch` records per
/// write transaction; stops early (between batches) once `stop` says so.
/// Returns how many records were deleted.
///
/// A sweep first reads the oldest entry of the expiry index; when nothing is
/// due it submits nothing, so an idle store makes no write (no commit, no
/// fsync) however often the sweeper wakes.
pub(crate) fn sweep(
    submitter: &Submitter,
    engine: &Engine,
    config: &Config,
    time: &StoreTime,
    counters: &Counters,
    stop: impl Fn() -> bool,
) -> Result<u64> {
    let _sweep = span!(debug_span, "idemkv.sweep");
    let started = Instant::now();
    let mut total = 0;
    let result = loop {
        match engine.read(|db| storage::anything_due(db, time.now_ms())) {
            Ok(true) => {}
            Ok(false) => break Ok(total),
            Err(err) => break Err(err),
        }
        match submitter.sweep(config.settings.sweep_batch).wait() {
            Ok(Swept { deleted, more }) => {
                counters.outcomes.expired.add(deleted);
                total += deleted;
                if !more || stop() {
                    break Ok(total);
                }
            }
            Err(err) => break Err(err),
        }
    };
    counters.outcomes.sweeps.bump();
    counters.timings.sweep(started.elapsed());
    match &result {
        Ok(0) => {}
        Ok(_deleted) => event!(
            info,
            deleted = *_deleted,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "swept {_deleted} expired record(s)"
        ),
        Err(_err) => {
            counters.outcomes.sweep_errors.bump();
            event!(
                warn,
                error = %_err,
                deleted = total,
                "a sweep failed; the next one retries"
            );
        }
    }
    counters.last_sweep_micros.store(
        duration_micros(started.elapsed()),
        std::sync::atomic::Ordering::Relaxed,
    );
    counters
        .last_sweep_unix_ms
        .store(time.now_ms(), std::sync::atomic::Ordering::Relaxed);
    result
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The background sweeper thread. Dropping it stops the thread (at the next
/// batch boundary if a sweep is running) and joins it.
pub(crate) struct Sweeper {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts the thread, or nothing if `config` turns it off.
    pub fn start(
        submitter: Submitter,
        engine: Arc<Engine>,
        config: Config,
        time: Arc<StoreTime>,
        counters: Arc<Counters>,
    ) -> std::io::Result<Sweeper> {
        let Some(interval) = config.settings.sweep_interval else {
            return Ok(Sweeper {
                stop: None,
                thread: None,
            });
        };
        let (stop, stopped) = channel::bounded::<()>(0);
        let thread = Builder::new()
            .name("idemkv-sweeper".into())
            .spawn(move || {
                run(
                    &submitter, &engine, &config, &time, &counters, interval, stopped,
                )
            })?;
        Ok(Sweeper {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn run(
    submitter: &Submitter,
    engine: &Engine,
    config: &Config,
    time: &StoreTime,
    counters: &Counters,
    interval: Duration,
    stopped: Receiver<()>,
) {
    let should_stop = || matches!(stopped.try_recv(), Err(TryRecvError::Disconnected));
    loop {
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            // The sender is only ever dropped, never used: that is the signal.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // A failed sweep (the store is recovering from a failed commit, or
        // closing) is counted in `sweep_errors` and retried at the next
        // tick; a failed commit also shows in the store's health.
        let _ = sweep(submitter, engine, config, time, counters, should_stop);
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
