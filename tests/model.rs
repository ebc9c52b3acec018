//! Random operation sequences against a small reference model of the rules
//! (`tests/support/model.rs`).
//!
//! The model is a map from key to record with the states of the design:
//! in flight (token, lease end) or completed (response), each with an expiry
//! time. Every answer of the store is checked against it, including exact
//! `retry_after` values and replayed bytes, across time passing, wall-clock
//! steps forward and back (which an open store ignores and a reopened one
//! takes up), sweeps and reopening the file.

#[path = "support/model.rs"]
mod harness;

use harness::{Harness, KEYS, Step};
use proptest::prelude::*;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..KEYS, 0..2usize).prop_map(|(key, payload)| Step::Begin { key, payload }),
        3 => (0..4usize).prop_map(|claim| Step::Complete { claim }),
        1 => (0..4usize).prop_map(|claim| Step::Release { claim }),
        1 => (0..4usize).prop_map(|claim| Step::Renew { claim }),
        2 => (0..4usize).prop_map(|claim| Step::RecordProgress { claim }),
        1 => (0..4usize).prop_map(|claim| Step::DropClaim { claim }),
        3 => prop::sample::select(vec![1u64, 10, 400, 999, 1_000, 3_000, 4_999, 6_000])
            .prop_map(|ms| Step::Advance { ms }),
        1 => (0..KEYS).prop_map(|key| Step::Get { key }),
        1 => (0..KEYS).prop_map(|key| Step::Remove { key }),
        1 => Just(Step::Sweep),
        1 => Just(Step::Reopen),
        1 => (any::<bool>(), prop::sample::select(harness::CLOCK_STEPS_MS.to_vec()))
            .prop_map(|(back, ms)| Step::WallClockJump { back, ms }),
    ]
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a deeper run. A failure is
    // reported with its shrunk steps and not written to a file: runs never
    // modify the tree. Past failures are the `regression_*` tests below.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(
        steps in prop::collection::vec(step(), 1..60),
        // Off, about one entry per shard (constant eviction), and the default.
        cache_bytes in prop::sample::select(vec![0usize, 64 * 200, 64 << 20]),
        journal in any::<bool>(),
    ) {
        let mut harness = Harness::new(cache_bytes, false, journal);
        for step in &steps {
            harness.run(step);
        }
        // Whatever happened, the final state is readable and consistent.
        for k in 0..KEYS {
            harness.run(&Step::Get { key: k });
        }
    }
}

/// Runs `steps` on every cache size and with and without the journal, as
/// the property does.
fn replay_steps(steps: &[Step]) {
    for cache_bytes in [0usize, 64 * 200, 64 << 20] {
        for journal in [false, true] {
            let mut harness = Harness::new(cache_bytes, false, journal);
            for step in steps {
                harness.run(step);
            }
            for k in 0..KEYS {
                harness.run(&Step::Get { key: k });
            }
        }
    }
}

/// Shrunk failures the property found in the past.
#[test]
fn regression_a_lease_that_ran_out_is_taken_over() {
    replay_steps(&[
        Step::Begin { key: 0, payload: 0 },
        Step::Advance { ms: 6000 },
        Step::Begin { key: 0, payload: 0 },
    ]);
}

#[test]
fn regression_a_second_key_one_second_later() {
    replay_steps(&[
        Step::Begin { key: 0, payload: 0 },
        Step::Begin { key: 0, payload: 0 },
        Step::Begin { key: 2, payload: 1 },
        Step::Advance { ms: 1 },
        Step::Advance { ms: 999 },
        Step::Begin { key: 2, payload: 1 },
    ]);
}

#[test]
fn regression_a_sweep_after_a_completion_expired() {
    replay_steps(&[
        Step::Begin { key: 0, payload: 0 },
        Step::Complete { claim: 0 },
        Step::Advance { ms: 1 },
        Step::Advance { ms: 4999 },
        Step::Sweep,
    ]);
}

/// A release after its claim's record expired deletes the record, so the
/// sweep finds nothing left (the model once expected the record to stay).
#[test]
fn regression_a_release_after_expiry_leaves_nothing_to_sweep() {
    replay_steps(&[
        Step::Begin { key: 0, payload: 0 },
        Step::Advance { ms: 3000 },
        Step::Advance { ms: 3000 },
        Step::Release { claim: 0 },
        Step::Sweep,
    ]);
}
