//! The JSON form of one record: a line of `export`/`import`, and what
//! `get`, `list` and `stuck` print with `--json`.
//!
//! Times are milliseconds since the Unix epoch; the fingerprint is 64 hex
//! digits; header values and the body are base64 (they are bytes, not
//! text). Every field of a record is here, so an export read back by
//! `import` gives the same records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use idemkv::{Fingerprint, Key, Record, RecordParts, RecordState, RecoveryPoint, StoredResponse};
use serde::{Deserialize, Serialize};

/// One record.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The key's scope.
    pub scope: String,
    /// The idempotency key.
    pub key: String,
    /// The fingerprint, 64 hex digits.
    pub fingerprint: String,
    /// The fencing token of the claim that last wrote the record.
    pub token: u64,
    /// When the key was first claimed.
    pub created_at_ms: u64,
    /// When the record was last written.
    pub updated_at_ms: u64,
    /// When the record starts reading as absent.
    pub expires_at_ms: u64,
    /// In flight or completed, with what each carries.
    #[serde(flatten)]
    pub state: LineState,
}

/// A record's state.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LineState {
    /// Claimed; the lease ends at `lease_until_ms`.
    InFlight {
        /// When the holder's lease ends.
        lease_until_ms: u64,
        /// The holder's last recovery point, if it recorded one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovery: Option<LineRecovery>,
    },
    /// Completed with `response`.
    Completed {
        /// The stored response.
        response: LineResponse,
    },
}

/// A recovery point: the phase name and its state, base64.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRecovery {
    /// The last step that finished.
    pub phase: String,
    /// The state recorded with it, base64.
    pub state: String,
}

/// A stored response.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineResponse {
    /// The status code.
    pub status: u16,
    /// Header names and base64 values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    pub body: String,
}

impl Line {
    /// The JSON form of `record`; an error for a state this build does not
    /// know (a newer library's).
    pub fn of(record: &Record) -> Result<Line, String> {
        let state = match record.state() {
            RecordState::InFlight {
                lease_until,
                recovery,
            } => LineState::InFlight {
                lease_until_ms: millis(*lease_until),
                recovery: recovery.as_ref().map(|point| LineRecovery {
                    phase: point.phase().to_string(),
                    state: BASE64.encode(point.state()),
                }),
            },
            RecordState::Completed { response } => LineState::Completed {
                response: LineResponse {
                    status: response.status(),
                    headers: response
                        .headers()
                        .iter()
                        .map(|(name, value)| (name.clone(), BASE64.encode(value)))
                        .collect(),
                    body: BASE64.encode(response.body()),
                },
            },
            other => {
                return Err(format!(
                    "{} is in a state this idemkv build cannot write out ({other:?}); \
                     use the idemkv command of the same version as the library",
                    record.key()
                ));
            }
        };
        Ok(Line {
            scope: record.key().scope().to_string(),
            key: record.key().idempotency_key().to_string(),
            fingerprint: hex(record.fingerprint().as_bytes()),
            token: record.token(),
            created_at_ms: millis(record.created_at()),
            updated_at_ms: millis(record.updated_at()),
            expires_at_ms: millis(record.expires_at()),
            state,
        })
    }

    /// The record this line describes; the error says which field is wrong.
    pub fn into_record(self) -> Result<Record, String> {
        let key = Key::new(&self.scope, &self.key).map_err(|err| err.to_string())?;
        let state = match self.state {
            LineState::InFlight {
                lease_until_ms,
                recovery,
            } => RecordState::InFlight {
                lease_until: time(lease_until_ms),
                recovery: recovery
                    .map(|point| {
                        let state = BASE64
                            .decode(&point.state)
                            .map_err(|err| format!("recovery state is not base64: {err}"))?;
                        RecoveryPoint::new(&point.phase, state).map_err(|err| err.to_string())
                    })
                    .transpose()?,
            },
            LineState::Completed { response } => {
                let body = BASE64
                    .decode(&response.body)
                    .map_err(|err| format!("response body is not base64: {err}"))?;
                let mut stored = StoredResponse::new(response.status, body);
                for (name, value) in response.headers {
                    let value = BASE64
                        .decode(&value)
                        .map_err(|err| format!("header {name:?} is not base64: {err}"))?;
                    stored = stored.with_header(name, value);
                }
                RecordState::Completed { response: stored }
            }
        };
        Ok(Record::from_parts(RecordParts {
            key,
            state,
            fingerprint: Fingerprint::from_bytes(unhex(&self.fingerprint)?),
            token: self.token,
            created_at: time(self.created_at_ms),
            updated_at: time(self.updated_at_ms),
            expires_at: time(self.expires_at_ms),
        }))
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<[u8; 32], String> {
    let invalid = || format!("fingerprint {text:?} is not 64 hex digits");
    if text.len() != 64 || !text.is_ascii() {
        return Err(invalid());
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_bad_digits() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&bytes)), Ok(bytes));
        assert!(unhex("zz").is_err());
        assert!(unhex(&"g".repeat(64)).is_err());
        assert!(unhex(&"é".repeat(32)).is_err());
    }
}
