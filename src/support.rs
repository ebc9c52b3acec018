//! What every backend shares besides the rules: the outcome counters
//! behind [`Metrics`] and how a `begin`'s answer is counted.
//!
//! The embedded store and idemkv-postgres both keep an
//! [`OutcomeCounters`], so that an answer is counted the same way
//! whatever stores it, and both fill [`Metrics`] from it. The input
//! checks a backend shares are on the types they check:
//! [`Key::new`](crate::Key::new),
//! [`StoredResponse::check_size`](crate::StoredResponse::check_size),
//! [`RecoveryPoint::within`](crate::RecoveryPoint::within) and
//! [`Terms::resolve`](crate::Terms::resolve).

pub use crate::metrics::Count;

use crate::metrics::MetricLabel;
use crate::{Begin, Metrics};

/// Counts the answers and writes of one backend, as the counters of
/// [`Metrics`] name them.
///
/// [`OutcomeCounters::published`] also publishes each counter through the
/// `metrics` facade as it changes (with idemkv's `metrics` feature; the
/// recorder must be installed before the counters are made).
/// `OutcomeCounters::default()` only counts: a backend that publishes on
/// demand reads [`values`](Self::values) instead.
#[derive(Debug, Default)]
pub struct OutcomeCounters {
    /// `begin` answers `Claimed`.
    pub claims: Count,
    /// `begin` answers `Replay`.
    pub replays: Count,
    /// `begin` answers `Mismatch`.
    pub mismatches: Count,
    /// `begin` answers `InProgress`.
    pub in_progress: Count,
    /// Waiting begins that had to park at least once.
    pub waits: Count,
    /// Claims that took over an attempt whose lease ran out.
    pub takeovers: Count,
    /// Stored responses.
    pub completions: Count,
    /// Released claims.
    pub releases: Count,
    /// Renewed leases.
    pub renewals: Count,
    /// Recorded recovery points.
    pub recovery_points: Count,
    /// Takeovers that found a recovery point.
    pub resumed: Count,
    /// Holder calls refused with `LeaseLost`.
    pub leases_lost: Count,
    /// Records deleted by sweeps.
    pub expired: Count,
    /// Records deleted by `remove`.
    pub removed: Count,
    /// Finished sweeps.
    pub sweeps: Count,
    /// Sweeps that stopped on an error.
    pub sweep_errors: Count,
}

/// What a `begin` that claimed did, for [`OutcomeCounters::count_begin`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimFacts {
    /// The claim took over an attempt whose lease ran out.
    pub takeover: bool,
    /// The claim inherited a recovery point.
    pub resumed: bool,
}

impl OutcomeCounters {
    /// Counters published through the `metrics` facade under the names of
    /// [`PUBLISHED_METRICS`](crate::PUBLISHED_METRICS), with a
    /// `store="<label>"` label when `label` is given.
    pub fn published(label: Option<&str>) -> OutcomeCounters {
        OutcomeCounters::with_label(&MetricLabel::new(label.map(Into::into)))
    }

    pub(crate) fn with_label(label: &MetricLabel) -> OutcomeCounters {
        #[cfg(feature = "metrics")]
        crate::metrics::describe();
        OutcomeCounters {
            claims: Count::named("idemkv_claims_total", label),
            replays: Count::named("idemkv_replays_total", label),
            mismatches: Count::named("idemkv_mismatches_total", label),
            in_progress: Count::named("idemkv_in_progress_total", label),
            waits: Count::named("idemkv_waits_total", label),
            takeovers: Count::named("idemkv_takeovers_total", label),
            completions: Count::named("idemkv_completions_total", label),
            releases: Count::named("idemkv_releases_total", label),
            renewals: Count::named("idemkv_renewals_total", label),
            recovery_points: Count::named("idemkv_recovery_points_total", label),
            resumed: Count::named("idemkv_resumed_total", label),
            leases_lost: Count::named("idemkv_leases_lost_total", label),
            expired: Count::named("idemkv_expired_total", label),
            removed: Count::named("idemkv_removed_total", label),
            sweeps: Count::named("idemkv_sweeps_total", label),
            sweep_errors: Count::named("idemkv_sweep_errors_total", label),
        }
    }

    /// Counts a `begin`'s final answer (a waiting `begin` counts only the
    /// answer it returns): one of claims, replays, in progress and
    /// mismatches, and for a claim its takeover and resumption, which
    /// `facts` reads from the backend's claim.
    pub fn count_begin<C>(&self, answer: &Begin<C>, facts: impl FnOnce(&C) -> ClaimFacts) {
        match answer {
            Begin::Claimed(claim) => {
                self.claims.bump();
                let facts = facts(claim);
                if facts.takeover {
                    self.takeovers.bump();
                }
                if facts.resumed {
                    self.resumed.bump();
                }
            }
            Begin::Replay(_) => self.replays.bump(),
            Begin::InProgress { .. } => self.in_progress.bump(),
            Begin::Mismatch => self.mismatches.bump(),
        }
    }

    /// Writes these counters into their fields of `metrics`; the fields
    /// only a backend knows (commits, gauges) are left as they are.
    pub fn fill(&self, metrics: &mut Metrics) {
        metrics.claims = self.claims.get();
        metrics.replays = self.replays.get();
        metrics.mismatches = self.mismatches.get();
        metrics.in_progress = self.in_progress.get();
        metrics.waits = self.waits.get();
        metrics.takeovers = self.takeovers.get();
        metrics.completions = self.completions.get();
        metrics.releases = self.releases.get();
        metrics.renewals = self.renewals.get();
        metrics.recovery_points = self.recovery_points.get();
        metrics.resumed = self.resumed.get();
        metrics.leases_lost = self.leases_lost.get();
        metrics.expired = self.expired.get();
        metrics.removed = self.removed.get();
        metrics.sweeps = self.sweeps.get();
        metrics.sweep_errors = self.sweep_errors.get();
    }

    /// Each counter's published name and value, for a backend that
    /// publishes on demand.
    pub fn values(&self) -> [(&'static str, u64); 16] {
        [
            ("idemkv_claims_total", self.claims.get()),
            ("idemkv_replays_total", self.replays.get()),
            ("idemkv_mismatches_total", self.mismatches.get()),
            ("idemkv_in_progress_total", self.in_progress.get()),
            ("idemkv_waits_total", self.waits.get()),
            ("idemkv_takeovers_total", self.takeovers.get()),
            ("idemkv_completions_total", self.completions.get()),
            ("idemkv_releases_total", self.releases.get()),
            ("idemkv_renewals_total", self.renewals.get()),
            ("idemkv_recovery_points_total", self.recovery_points.get()),
            ("idemkv_resumed_total", self.resumed.get()),
            ("idemkv_leases_lost_total", self.leases_lost.get()),
            ("idemkv_expired_total", self.expired.get()),
            ("idemkv_removed_total", self.removed.get()),
            ("idemkv_sweeps_total", self.sweeps.get()),
            ("idemkv_sweep_errors_total", self.sweep_errors.get()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PUBLISHED_METRICS, StoredResponse};

    /// Each answer moves its own counter, and `fill` and `values` report
    /// every counter under its own field and name.
    #[test]
    fn answers_are_counted_and_reported_under_their_own_names() {
        let counters = OutcomeCounters::default();
        let facts = |takeover, resumed| move |_: &()| ClaimFacts { takeover, resumed };
        counters.count_begin(&Begin::Claimed(()), facts(false, false));
        counters.count_begin(&Begin::Claimed(()), facts(true, true));
        counters.count_begin(&Begin::Claimed(()), facts(true, false));
        counters.count_begin::<()>(
            &Begin::Replay(StoredResponse::new(200, "")),
            facts(true, true),
        );
        counters.count_begin::<()>(&Begin::Mismatch, facts(true, true));
        counters.count_begin::<()>(&Begin::Mismatch, facts(true, true));
        counters.count_begin::<()>(
            &Begin::InProgress {
                retry_after: std::time::Duration::from_millis(1),
            },
            facts(true, true),
        );
        let mut m = Metrics::default();
        counters.fill(&mut m);
        assert_eq!(
            (
                m.claims,
                m.takeovers,
                m.resumed,
                m.replays,
                m.mismatches,
                m.in_progress
            ),
            (3, 2, 1, 1, 2, 1)
        );
        // Each counter reports under its own name, and every name is published.
        for (i, (name, _)) in counters.values().iter().enumerate() {
            assert!(PUBLISHED_METRICS.iter().any(|p| p.name == *name), "{name}");
            assert!(
                !counters.values()[..i].iter().any(|(n, _)| n == name),
                "{name} twice"
            );
        }
        let values: std::collections::HashMap<_, _> = counters.values().into_iter().collect();
        assert_eq!(values["idemkv_claims_total"], 3);
        assert_eq!(values["idemkv_takeovers_total"], 2);
        assert_eq!(values["idemkv_mismatches_total"], 2);
        counters.sweep_errors.bump();
        counters.fill(&mut m);
        assert_eq!(m.sweep_errors, 1);
        let values: std::collections::HashMap<_, _> = counters.values().into_iter().collect();
        assert_eq!(values["idemkv_sweep_errors_total"], 1);
    }
}
