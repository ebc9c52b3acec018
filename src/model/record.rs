//! Records: what one key's entry holds, and the rule that turns a stored
//! record plus a new attempt into an answer.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::{from_millis, to_millis};
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::recovery::RecoveryPoint;
use crate::model::response::StoredResponse;

/// The stored form of one key's record (encoded by [`crate::model::codec`]).
///
/// Invariants: `expires_at_ms` is the time the record starts reading as
/// absent; the `expiry` table holds exactly one `(sweep_at_ms, key hash)`
/// entry for it; and `sweep_at_ms >= expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub scope: String,
    pub idempotency_key: String,
    pub fingerprint: [u8; 32],
    /// Fencing token of the claim that wrote this record.
    pub token: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub expires_at_ms: u64,
    /// When the sweep deletes the record: the time of its `expiry` entry.
    /// Set by `WriteTables::put` (src/durability/storage.rs): a completion keeps its
    /// claim's entry, which comes no earlier (the lease's end plus the
    /// retention), when that is at most a share of the retention later, so
    /// that completing writes nothing to the `expiry` table.
    pub sweep_at_ms: u64,
    pub state: StoredState,
}

/// A record's state (record encoding 2: an in-flight record carries its
/// holder's last recovery point).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredState {
    InFlight {
        lease_until_ms: u64,
        recovery: Option<RecoveryPoint>,
    },
    Completed {
        response: StoredResponse,
    },
}

/// A record as record encoding 2 wrote it (before `sweep_at_ms`: its expiry
/// entry was at `expires_at_ms`); read, never written.
#[derive(Deserialize)]
pub(crate) struct StoredRecordV2 {
    scope: String,
    idempotency_key: String,
    fingerprint: [u8; 32],
    token: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    expires_at_ms: u64,
    state: StoredState,
}

impl From<StoredRecordV2> for StoredRecord {
    fn from(v2: StoredRecordV2) -> StoredRecord {
        StoredRecord {
            scope: v2.scope,
            idempotency_key: v2.idempotency_key,
            fingerprint: v2.fingerprint,
            token: v2.token,
            created_at_ms: v2.created_at_ms,
            updated_at_ms: v2.updated_at_ms,
            expires_at_ms: v2.expires_at_ms,
            sweep_at_ms: v2.expires_at_ms,
            state: v2.state,
        }
    }
}

/// A record as record encoding 1 wrote it (before recovery points); read,
/// never written.
#[derive(Deserialize)]
pub(crate) struct StoredRecordV1 {
    scope: String,
    idempotency_key: String,
    fingerprint: [u8; 32],
    token: u64,
    created_at_ms: u64,
    updated_at_ms: u64,
    expires_at_ms: u64,
    state: StoredStateV1,
}

#[derive(Deserialize)]
enum StoredStateV1 {
    InFlight { lease_until_ms: u64 },
    Completed { response: StoredResponse },
}

impl From<StoredRecordV1> for StoredRecord {
    fn from(v1: StoredRecordV1) -> StoredRecord {
        StoredRecord {
            scope: v1.scope,
            idempotency_key: v1.idempotency_key,
            fingerprint: v1.fingerprint,
            token: v1.token,
            created_at_ms: v1.created_at_ms,
            updated_at_ms: v1.updated_at_ms,
            expires_at_ms: v1.expires_at_ms,
            sweep_at_ms: v1.expires_at_ms,
            state: match v1.state {
                StoredStateV1::InFlight { lease_until_ms } => StoredState::InFlight {
                    lease_until_ms,
                    recovery: None,
                },
                StoredStateV1::Completed { response } => StoredState::Completed { response },
            },
        }
    }
}

impl StoredRecord {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    pub fn belongs_to(&self, key: &Key) -> bool {
        self.scope == key.scope() && self.idempotency_key == key.idempotency_key()
    }

    pub fn into_public(self, key: &Key) -> Record {
        let state = match self.state {
            StoredState::InFlight {
                lease_until_ms,
                recovery,
            } => RecordState::InFlight {
                lease_until: from_millis(lease_until_ms),
                recovery,
            },
            StoredState::Completed { response } => RecordState::Completed { response },
        };
        Record {
            key: key.clone(),
            state,
            fingerprint: Fingerprint::from_bytes(self.fingerprint),
            token: self.token,
            created_at: from_millis(self.created_at_ms),
            updated_at: from_millis(self.updated_at_ms),
            expires_at: from_millis(self.expires_at_ms),
        }
    }
}

/// The state of a record, as [`Store::get`](crate::Store::get) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordState {
    /// Claimed; the side effect may be running.
    InFlight {
        /// When the holder's lease runs out.
        lease_until: SystemTime,
        /// The holder's last recovery point, if it recorded one.
        recovery: Option<RecoveryPoint>,
    },
    /// Completed; retries replay `response`.
    Completed {
        /// The stored response.
        response: StoredResponse,
    },
}

/// A snapshot of one stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    key: Key,
    state: RecordState,
    fingerprint: Fingerprint,
    token: u64,
    created_at: SystemTime,
    updated_at: SystemTime,
    expires_at: SystemTime,
}

/// Every field of a [`Record`], to take one apart
/// ([`Record::into_parts`]) and to build one (an export read back for
/// [`Store::import`](crate::Store::import), or another backend's record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordParts {
    /// The record's key.
    pub key: Key,
    /// In flight (with its lease end) or completed (with its response).
    pub state: RecordState,
    /// The fingerprint of the attempt that claimed the key.
    pub fingerprint: Fingerprint,
    /// The fencing token of the claim that last wrote the record.
    pub token: u64,
    /// When the key was first claimed.
    pub created_at: SystemTime,
    /// When the record was last written.
    pub updated_at: SystemTime,
    /// When the record starts reading as absent.
    pub expires_at: SystemTime,
}

impl Record {
    /// A record from its parts.
    pub fn from_parts(parts: RecordParts) -> Record {
        Record {
            key: parts.key,
            state: parts.state,
            fingerprint: parts.fingerprint,
            token: parts.token,
            created_at: parts.created_at,
            updated_at: parts.updated_at,
            expires_at: parts.expires_at,
        }
    }

    /// The record's parts.
    pub fn into_parts(self) -> RecordParts {
        RecordParts {
            key: self.key,
            state: self.state,
            fingerprint: self.fingerprint,
            token: self.token,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        }
    }

    /// The stored form, as an import writes it.
    pub(crate) fn to_stored(&self) -> StoredRecord {
        let state = match &self.state {
            RecordState::InFlight {
                lease_until,
                recovery,
            } => StoredState::InFlight {
                lease_until_ms: to_millis(*lease_until),
                recovery: recovery.clone(),
            },
            RecordState::Completed { response } => StoredState::Completed {
                response: response.clone(),
            },
        };
        StoredRecord {
            scope: self.key.scope().to_string(),
            idempotency_key: self.key.idempotency_key().to_string(),
            fingerprint: *self.fingerprint.as_bytes(),
            token: self.token,
            created_at_ms: to_millis(self.created_at),
            updated_at_ms: to_millis(self.updated_at),
            expires_at_ms: to_millis(self.expires_at),
            // Decided where the record is written.
            sweep_at_ms: to_millis(self.expires_at),
            state,
        }
    }

    /// The record's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// In flight or completed.
    pub fn state(&self) -> &RecordState {
        &self.state
    }

    /// The fingerprint of the attempt that claimed the key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The fencing token of the claim that last wrote the record.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// When the key was first claimed (a takeover keeps the original time).
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// When the record was last written.
    pub fn updated_at(&self) -> SystemTime {
        self.updated_at
    }

    /// When the record starts reading as absent.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The stored response, once completed.
    pub fn response(&self) -> Option<&StoredResponse> {
        match &self.state {
            RecordState::Completed { response } => Some(response),
            RecordState::InFlight { .. } => None,
        }
    }

    /// The lease end, while in flight.
    pub fn lease_until(&self) -> Option<SystemTime> {
        match self.state {
            RecordState::InFlight { lease_until, .. } => Some(lease_until),
            RecordState::Completed { .. } => None,
        }
    }

    /// The holder's last recovery point, while in flight and if it recorded
    /// one.
    pub fn recovery_point(&self) -> Option<&RecoveryPoint> {
        match &self.state {
            RecordState::InFlight { recovery, .. } => recovery.as_ref(),
            RecordState::Completed { .. } => None,
        }
    }

    /// Time left before the record expires, measured from `now`.
    pub fn time_to_expiry(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}
