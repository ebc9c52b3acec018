//! The semantic test suite every idemkv [`Backend`] passes.
//!
//! The promise of an idempotency store (one live claim per key, replays of
//! the stored response, mismatches, leases, takeovers and fencing,
//! retention, waits) does not depend on where records live. This crate
//! states it once, as cases written against the [`Backend`] trait, and
//! every backend runs all of them: the embedded store (`tests/embedded.rs`
//! here, in memory and on a file) and any backend over a shared database.
//!
//! A backend joins by implementing [`Harness`] (open a fresh, empty backend
//! with the given [`Setup`], on a clock the test moves) and invoking
//! [`suite!`] in a test file:
//!
//! ```ignore
//! struct MyHarness;
//! impl idemkv_conformance::Harness for MyHarness { /* … */ }
//! idemkv_conformance::suite!(MyHarness);
//! ```
//!
//! Each case becomes one `#[test]` with the case's name, run on its own
//! multi-threaded tokio runtime and bounded by [`CASE_TIMEOUT`].
//!
//! # Which rule each case checks
//!
//! Every case's documentation ends with a `Contract:` line naming the rules
//! of the [`Backend`] contract it checks:
//!
//! - *one live claim*: while a lease runs nobody else claims the key, and
//!   a revoked holder's writes fail with `LeaseLost` and change nothing;
//! - *tokens grow*: a later claim of a key has a larger token;
//! - *the backend's clock*: leases, `retry_after` and expiry are exact on
//!   the backend's clock, which the harness moves;
//! - *answers that need no write never write*: a refused or a read-only
//!   answer leaves the record as it was;
//! - *writes may be repeated*: a write that failed or whose answer was lost
//!   fails transiently with the claim back, and its repeat answers `Ok`;
//! - *error kinds*: each failure has the documented
//!   [`ErrorKind`](idemkv::ErrorKind) (`Refused`, `Fenced`, `Transient`);
//! - *the answers' semantics*: replays, mismatches, retention, waits,
//!   recovery points and `once` as `idemkv::Store` defines them.
//!
//! One rule is not checked here: *durable before it answers* needs a crash
//! of the process or of the server, which a case cannot arrange. The
//! embedded store's kill and power-loss tests (`tests/crash.rs`,
//! `tests/faults.rs`) check it for that store; idemkv-postgres answers only
//! after the server's commit returns, and its tests drop connections and
//! partition the network (`postgres/tests/dropped_connection.rs`,
//! `partition.rs`) but do not crash the server.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cases;
mod expect;

use std::future::Future;
use std::time::Duration;

use idemkv::Backend;

pub use expect::{claimed, in_progress, mismatch, replayed};

/// What a case returns: `Err` (or a panic) fails it.
pub type Outcome = Result<(), BoxError>;

/// Any error a case or a harness reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest a case may run before it fails as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// The lease every case's backend is opened with, unless a case asks for
/// its own.
pub const LEASE: Duration = Duration::from_secs(60);

/// The retention every case's backend is opened with.
pub const RETENTION: Duration = Duration::from_secs(3600);

/// How a case wants its backend configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// The backend's default lease.
    pub lease: Duration,
    /// The backend's default retention.
    pub retention: Duration,
    /// The largest response `complete` stores (body plus headers).
    pub max_response_bytes: usize,
    /// The largest recovery point `record_progress` stores (phase plus state).
    pub max_recovery_point_bytes: usize,
    /// The most records one sweep step deletes.
    pub sweep_batch: usize,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            lease: LEASE,
            retention: RETENTION,
            max_response_bytes: 1 << 20,
            max_recovery_point_bytes: 64 << 10,
            sweep_batch: 1000,
        }
    }
}

/// What a [`Harness`] returns instead of a backend it cannot open here (a
/// database server that is not running on a developer's machine): the case
/// prints the reason and passes. A harness must not skip where the backend
/// is required (CI): it fails instead.
#[derive(Debug)]
pub struct Skipped(pub String);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}

/// A failure a [`Subject`] arranges for its backend's next write, with the
/// backend's real mechanism: for the embedded store a commit that fails
/// (which poisons the store until it heals by reopening its file), for a
/// database a connection that drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The write never lands: it fails on its way to the store.
    BeforeLanding,
    /// The write lands durably, and its answer is lost on the way back:
    /// the caller sees a transient failure.
    AnswerLost,
}

/// Opens a fresh backend for each case.
pub trait Harness: Sync {
    /// What one case works with.
    type Subject: Subject;

    /// A fresh, empty backend configured as `setup` says, whose clock only
    /// [`Subject::advance`] moves, and with no background sweeper (cases
    /// count what [`Subject::sweep`] deletes). Cases never share a backend.
    fn open(&self, setup: Setup) -> impl Future<Output = Result<Self::Subject, BoxError>> + Send;
}

/// One case's backend and the test's hold on its clock and sweeper.
pub trait Subject: Send + Sync {
    /// The backend under test.
    type Backend: Backend;

    /// The backend under test.
    fn backend(&self) -> &Self::Backend;

    /// Moves the backend's clock forward by exactly `by`. Every time a case
    /// checks (leases, `retry_after`, expiry, record times) is on this
    /// clock, so answers are exact, not approximate.
    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send;

    /// Deletes every expired record now, in as many batches as it takes;
    /// returns how many were deleted.
    fn sweep(&self) -> impl Future<Output = idemkv::Result<u64>> + Send;

    /// Makes the backend's next write meet `fault` (and only that write).
    /// A subject that cannot (an in-memory store, which has no file to heal
    /// from) returns [`Skipped`] with the reason.
    fn inject(&self, fault: Fault) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Runs one case to the end on a fresh multi-threaded runtime; panics with
/// the case's error, or when it runs past [`CASE_TIMEOUT`].
pub fn run(case: impl Future<Output = Outcome> + Send) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("cannot start a tokio runtime for the case: {err}"),
    };
    match runtime.block_on(async { tokio::time::timeout(CASE_TIMEOUT, case).await }) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => match err.downcast_ref::<Skipped>() {
            // Written to the process's stderr directly: the test harness
            // captures eprintln! of passing tests, and a skip must be seen.
            Some(skipped) => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: {skipped}");
            }
            None => panic!("{err}"),
        },
        Err(_) => panic!("the case ran longer than {CASE_TIMEOUT:?}"),
    }
}

/// Expands to one `#[test]` per case, each opening its backend through
/// `$harness` (an expression whose type implements [`Harness`]).
#[macro_export]
macro_rules! suite {
    ($harness:expr) => {
        $crate::suite!(@cases $harness;
            basics::claim_in_progress_complete_replay_mismatch,
            basics::scopes_keep_equal_keys_apart,
            basics::get_reports_the_whole_record,
            basics::keys_and_responses_round_trip_at_their_limits,
            holders::release_lets_the_next_attempt_claim_with_a_larger_token,
            holders::expired_lease_is_taken_over_and_the_old_holder_is_fenced,
            holders::stale_release_after_takeover_is_lease_lost,
            holders::renew_extends_the_lease,
            holders::an_expired_holder_may_still_complete_if_nobody_took_over,
            holders::a_holder_whose_record_expired_cannot_complete,
            holders::a_release_after_expiry_deletes_the_record,
            holders::dropped_claim_blocks_until_its_lease_runs_out,
            holders::a_dropped_takeover_still_fences_the_old_holder,
            holders::remove_deletes_and_revokes,
            holders::a_claim_can_take_its_own_lease_and_retention,
            retention::completed_records_expire_exactly_at_retention,
            retention::an_expired_record_is_claimable_before_the_sweep,
            retention::abandoned_claims_expire_one_retention_after_their_lease,
            retention::sweep_deletes_every_expired_record,
            limits::oversized_responses_are_refused_and_hand_the_claim_back,
            limits::the_limit_is_inclusive_and_completes,
            waiting::a_wait_returns_the_holders_response,
            waiting::a_wait_claims_after_a_release,
            waiting::a_wait_times_out_as_in_progress,
            waiting::a_wait_on_a_free_key_claims_at_once,
            waiting::racing_attempts_have_one_winner_and_every_loser_its_response,
            once::once_runs_the_operation_once_and_replays_its_result,
            once::once_keeps_a_failed_key_in_flight_until_its_lease_ends,
            once::once_releases_a_failed_key_when_asked,
            once::once_stores_a_failure_as_the_outcome_when_asked,
            once::once_hands_the_operation_the_recovered_point,
            recovery::a_fresh_claim_starts_with_no_recovery_point,
            recovery::a_takeover_resumes_from_the_last_recovery_point,
            recovery::a_renewal_keeps_the_recovery_point,
            recovery::recording_progress_restarts_the_lease,
            recovery::a_stale_holder_cannot_record_progress,
            recovery::completion_and_release_end_the_recovery_point,
            recovery::bad_recovery_points_are_refused_and_change_nothing,
            recovery::the_recovery_point_limit_is_inclusive,
            faults::a_completion_that_failed_is_repeated_and_lands_once,
            faults::a_completion_whose_answer_was_lost_is_repeated_and_answers_ok,
            faults::a_release_that_failed_is_repeated_and_frees_the_key,
            faults::a_release_whose_answer_was_lost_is_repeated_and_answers_ok,
            faults::a_renewal_that_failed_is_repeated_and_restarts_the_lease,
            faults::a_renewal_whose_answer_was_lost_is_repeated_and_answers_ok,
        );
    };
    (@cases $harness:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run(async {
                    let harness = $harness;
                    $crate::cases::$module::$case(&harness).await
                });
            }
        )*
    };
}
