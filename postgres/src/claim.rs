//! [`PgClaim`]: ownership of a key in the shared table.

use std::time::Duration;

use idemkv::{ClaimInfo, Fingerprint, Key, RecoveryPoint};

/// Ownership of one key, from a `Claimed` answer until `complete` or
/// `release`: the key, the fencing token the table holds for it, and the
/// terms it was claimed with.
///
/// Dropping it changes nothing in the table: the record stays in flight
/// until its lease runs out, and then the next attempt (on any replica)
/// takes over with a larger token.
#[derive(Debug)]
#[must_use = "a claim must be completed or released; dropping it blocks the key until its lease runs out"]
pub struct PgClaim {
    pub(crate) key: Key,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) token: i64,
    pub(crate) takeover: bool,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    /// The recovery point inherited on a takeover.
    pub(crate) recovered: Option<RecoveryPoint>,
}

impl PgClaim {
    /// The claimed key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The fingerprint the key was claimed with.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The fencing token: larger than every earlier claim's token for this
    /// key (it comes from one database sequence).
    pub fn token(&self) -> u64 {
        self.token as u64
    }

    /// True when this claim took over from an attempt whose lease ran out.
    pub fn is_takeover(&self) -> bool {
        self.takeover
    }

    /// The recovery point of the attempt this claim took over from
    /// (`idemkv::Claim::recovered`).
    pub fn recovered(&self) -> Option<&RecoveryPoint> {
        self.recovered.as_ref()
    }

    /// The key, token, takeover flag and inherited recovery point, apart
    /// from the claim.
    pub fn info(&self) -> ClaimInfo {
        ClaimInfo::new(self.key.clone(), self.token(), self.takeover)
            .with_recovered(self.recovered.clone())
    }
}
