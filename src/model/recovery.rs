//! Recovery points: how far an attempt got, recorded durably so that a
//! takeover resumes after the last finished step instead of starting over
//! (brandur's "atomic phases", docs/design.md "Recovery points").

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest phase name, in bytes.
pub const MAX_PHASE_LEN: usize = 64;

/// A holder's last recorded progress on its key: a phase name (the last step
/// that finished, say `"charge_created"`) and the state the next steps need
/// (say the charge's id at the card network).
///
/// Written by [`Store::record_progress`](crate::Store::record_progress), kept in the
/// in-flight record, and handed to the claim that takes the key over
/// ([`Claim::recovered`](crate::Claim::recovered)). A completion or a
/// release ends the record's in-flight life, and the point with it.
///
/// ```
/// let point = idemkv::RecoveryPoint::new("charge_created", &b"ch_3MmlLr"[..])?;
/// assert_eq!(point.phase(), "charge_created");
/// assert_eq!(point.state(), b"ch_3MmlLr");
/// assert!(idemkv::RecoveryPoint::new("", &b""[..]).is_err());
/// # Ok::<(), idemkv::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedPoint")]
pub struct RecoveryPoint {
    phase: String,
    state: Bytes,
}

/// A point as read from bytes, before its phase is checked: a decoded
/// point obeys the same rules as a new one.
#[derive(Deserialize)]
struct UncheckedPoint {
    phase: String,
    state: Bytes,
}

impl TryFrom<UncheckedPoint> for RecoveryPoint {
    type Error = Error;

    fn try_from(point: UncheckedPoint) -> Result<RecoveryPoint> {
        check_phase(&point.phase)?;
        Ok(RecoveryPoint {
            phase: point.phase,
            state: point.state,
        })
    }
}

impl RecoveryPoint {
    /// A recovery point, if `phase` is a valid phase name: 1 to
    /// [`MAX_PHASE_LEN`] bytes of UTF-8 without control characters. The
    /// state's size is checked against the store's limit when it is written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPhase`] for an empty, oversized or unprintable name.
    pub fn new(phase: &str, state: impl Into<Bytes>) -> Result<RecoveryPoint> {
        check_phase(phase)?;
        Ok(RecoveryPoint {
            phase: phase.to_string(),
            state: state.into(),
        })
    }

    /// A recovery point a store with a size limit of `limit` bytes (phase
    /// plus state) accepts: what every backend's `record_progress` checks before
    /// writing anything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPhase`] as [`new`](Self::new), and
    /// [`Error::RecoveryPointTooLarge`] above `limit`.
    pub fn within(phase: &str, state: impl Into<Bytes>, limit: usize) -> Result<RecoveryPoint> {
        let point = RecoveryPoint::new(phase, state)?;
        let size = point.stored_len();
        if size > limit {
            return Err(Error::RecoveryPointTooLarge { size, limit });
        }
        Ok(point)
    }

    /// The phase: the last step the attempt finished.
    pub fn phase(&self) -> &str {
        &self.phase
    }

    /// The state recorded with the phase.
    pub fn state(&self) -> &[u8] {
        &self.state
    }

    /// The state as a shared buffer (cloning it copies nothing).
    pub fn state_bytes(&self) -> &Bytes {
        &self.state
    }

    /// Bytes the point takes in a record: the phase name plus the state.
    pub fn stored_len(&self) -> usize {
        self.phase.len() + self.state.len()
    }
}

/// The phase rules of [`RecoveryPoint::new`].
fn check_phase(phase: &str) -> Result<()> {
    let reason = if phase.is_empty() {
        "it is empty".to_string()
    } else if phase.len() > MAX_PHASE_LEN {
        format!("it is {} bytes, over {MAX_PHASE_LEN}", phase.len())
    } else if phase.chars().any(char::is_control) {
        "it holds a control character".to_string()
    } else {
        return Ok(());
    };
    Err(Error::InvalidPhase { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_rules() {
        assert!(RecoveryPoint::new("charge_created", Bytes::new()).is_ok());
        assert!(RecoveryPoint::new("é", Bytes::new()).is_ok());
        assert!(RecoveryPoint::new(&"p".repeat(MAX_PHASE_LEN), Bytes::new()).is_ok());
        for bad in ["", "a\nb", "\u{7f}"] {
            let err = RecoveryPoint::new(bad, Bytes::new()).unwrap_err();
            assert!(matches!(err, Error::InvalidPhase { .. }), "{bad:?}: {err}");
        }
        let err = RecoveryPoint::new(&"p".repeat(MAX_PHASE_LEN + 1), Bytes::new()).unwrap_err();
        assert!(err.to_string().contains("65 bytes"), "{err}");
    }
}
