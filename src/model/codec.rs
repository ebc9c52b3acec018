//! On-disk encoding of one record:
//!
//! ```text
//! [version: u8 = 3][postcard(StoredRecord)][crc32(version ‖ payload): u32 LE]
//! ```
//!
//! Version 2 added the recovery point to an in-flight record's state;
//! version 3 added `sweep_at_ms`, the time of the record's expiry entry.
//! Records of versions 1 and 2 (files written before) are still read: a
//! version 1 in-flight record has no recovery point, and an older record's
//! expiry entry is at its `expires_at_ms`. Every write uses version 3.
//!
//! Decoding trusts nothing: it checks the length, the crc, the version, that
//! postcard consumed the payload exactly, and (in [`decode_for`]) that the
//! stored scope and key are the ones looked up.

use crate::error::{Error, Result};
use crate::model::key::Key;
use crate::model::record::{StoredRecord, StoredRecordV1, StoredRecordV2};

/// The record encoding this build writes.
pub(crate) const RECORD_VERSION: u8 = 3;
/// The encoding before `sweep_at_ms`, still read.
const RECORD_VERSION_2: u8 = 2;
/// The encoding before recovery points, still read.
const RECORD_VERSION_1: u8 = 1;
const CRC_LEN: usize = 4;

pub(crate) fn encode(record: &StoredRecord) -> Result<Vec<u8>> {
    let failed = |e: postcard::Error| Error::corrupted(format!("record could not be encoded: {e}"));
    // Sized first (a pass that writes nothing), so the encoding is written
    // into one allocation instead of a vector grown from one byte.
    let payload_len = postcard::experimental::serialized_size(record).map_err(failed)?;
    let mut out = Vec::with_capacity(1 + payload_len + CRC_LEN);
    out.push(RECORD_VERSION);
    out = postcard::to_extend(record, out).map_err(failed)?;
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes bytes read from the `records` table. Never panics, whatever the
/// input.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<StoredRecord> {
    if bytes.len() < 1 + CRC_LEN {
        return Err(Error::corrupted(format!(
            "record is {} bytes, shorter than its header",
            bytes.len()
        )));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - CRC_LEN);
    let mut crc = [0u8; CRC_LEN];
    crc.copy_from_slice(crc_bytes);
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return Err(Error::corrupted("record checksum mismatch"));
    }
    match body[0] {
        RECORD_VERSION => payload::<StoredRecord>(&body[1..]),
        RECORD_VERSION_2 => payload::<StoredRecordV2>(&body[1..]).map(StoredRecord::from),
        RECORD_VERSION_1 => payload::<StoredRecordV1>(&body[1..]).map(StoredRecord::from),
        unknown => Err(Error::corrupted(format!(
            "record version {unknown} is unknown (this build reads {RECORD_VERSION_1} to {RECORD_VERSION})"
        ))),
    }
}

/// Decodes a whole payload: postcard must consume every byte.
fn payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| Error::corrupted(format!("record payload does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupted("record has trailing bytes"));
    }
    Ok(value)
}

/// Decodes a record read under `key` and checks it really is that key's.
pub(crate) fn decode_for(key: &Key, bytes: &[u8]) -> Result<StoredRecord> {
    let record = decode_record(bytes)?;
    if !record.belongs_to(key) {
        return Err(Error::corrupted(format!(
            "the record stored under {key} names a different key"
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::StoredState;
    use crate::model::response::StoredResponse;

    fn sample() -> StoredRecord {
        StoredRecord {
            scope: "tenant".into(),
            idempotency_key: "key-1".into(),
            fingerprint: [7; 32],
            token: 42,
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: 3,
            sweep_at_ms: 3,
            state: StoredState::Completed {
                response: StoredResponse::new(201, "body").with_header("a", "b"),
            },
        }
    }

    /// `bytes` with its version byte set to `version` and the crc made
    /// valid again.
    fn with_version(mut bytes: Vec<u8>, version: u8) -> Vec<u8> {
        bytes[0] = version;
        let n = bytes.len() - CRC_LEN;
        let crc = crc32fast::hash(&bytes[..n]).to_le_bytes();
        bytes[n..].copy_from_slice(&crc);
        bytes
    }

    #[test]
    fn round_trips() {
        let record = sample();
        let bytes = encode(&record).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode_record(&bytes).unwrap(), record);
        let key = Key::new("tenant", "key-1").unwrap();
        assert_eq!(decode_for(&key, &bytes).unwrap(), record);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode(&sample()).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    matches!(decode_record(&damaged), Err(Error::Corrupted { .. })),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncation_and_foreign_keys_are_rejected() {
        let bytes = encode(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode_record(&bytes[..len]).is_err());
        }
        let other = Key::new("tenant", "key-2").unwrap();
        assert!(matches!(
            decode_for(&other, &bytes),
            Err(Error::Corrupted { .. })
        ));
    }

    /// A version 1 record, encoded as the build before recovery points did
    /// (its in-flight state had the lease end only), reads as in flight with
    /// no recovery point.
    #[test]
    fn version_1_records_still_decode() {
        #[derive(serde::Serialize)]
        enum StateV1 {
            InFlight { lease_until_ms: u64 },
        }
        #[derive(serde::Serialize)]
        struct RecordV1 {
            scope: String,
            idempotency_key: String,
            fingerprint: [u8; 32],
            token: u64,
            created_at_ms: u64,
            updated_at_ms: u64,
            expires_at_ms: u64,
            state: StateV1,
        }
        let v1 = RecordV1 {
            scope: "tenant".into(),
            idempotency_key: "key-1".into(),
            fingerprint: [7; 32],
            token: 42,
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: 3,
            state: StateV1::InFlight { lease_until_ms: 9 },
        };
        let mut bytes = vec![RECORD_VERSION_1];
        bytes = postcard::to_extend(&v1, bytes).unwrap();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let record = decode_record(&bytes).unwrap();
        assert_eq!(
            record.state,
            StoredState::InFlight {
                lease_until_ms: 9,
                recovery: None
            }
        );
        assert_eq!(record.token, 42);
        // Completed records: the state's variant index is the same in both
        // versions, so a version 1 completion reads as the same completion.
        let done = with_version(encode_v2(&sample()), RECORD_VERSION_1);
        assert_eq!(decode_record(&done).unwrap(), sample());
    }

    /// `record` as record encoding 2 wrote it: no `sweep_at_ms`.
    fn encode_v2(record: &StoredRecord) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct RecordV2<'a> {
            scope: &'a str,
            idempotency_key: &'a str,
            fingerprint: [u8; 32],
            token: u64,
            created_at_ms: u64,
            updated_at_ms: u64,
            expires_at_ms: u64,
            state: &'a StoredState,
        }
        let v2 = RecordV2 {
            scope: &record.scope,
            idempotency_key: &record.idempotency_key,
            fingerprint: record.fingerprint,
            token: record.token,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            expires_at_ms: record.expires_at_ms,
            state: &record.state,
        };
        let mut bytes = vec![RECORD_VERSION_2];
        bytes = postcard::to_extend(&v2, bytes).unwrap();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A version 2 record reads as one whose expiry entry is at its expiry
    /// time, as version 2 kept it, with its recovery point.
    #[test]
    fn version_2_records_still_decode() {
        let mut record = sample();
        record.state = StoredState::InFlight {
            lease_until_ms: 5,
            recovery: Some(
                crate::model::recovery::RecoveryPoint::new("charge_created", &b"ch_1"[..]).unwrap(),
            ),
        };
        record.sweep_at_ms = 1_000;
        let decoded = decode_record(&encode_v2(&record)).unwrap();
        assert_eq!(decoded.sweep_at_ms, record.expires_at_ms);
        record.sweep_at_ms = record.expires_at_ms;
        assert_eq!(decoded, record);
        let done = decode_record(&encode_v2(&sample())).unwrap();
        assert_eq!(done, sample());
    }

    #[test]
    fn the_sweep_time_round_trips() {
        let mut record = sample();
        record.sweep_at_ms = 60_003;
        assert_eq!(decode_record(&encode(&record).unwrap()).unwrap(), record);
    }

    #[test]
    fn in_flight_records_keep_their_recovery_point() {
        let mut record = sample();
        record.state = StoredState::InFlight {
            lease_until_ms: 5,
            recovery: Some(
                crate::model::recovery::RecoveryPoint::new("charge_created", &b"ch_1"[..]).unwrap(),
            ),
        };
        assert_eq!(decode_record(&encode(&record).unwrap()).unwrap(), record);
    }

    #[test]
    fn unknown_version_with_valid_crc_is_rejected() {
        let bytes = with_version(encode(&sample()).unwrap(), 9);
        let err = decode_record(&bytes).unwrap_err();
        assert!(err.to_string().contains("version 9"));
    }
}
