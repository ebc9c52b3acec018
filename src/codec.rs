//! On-disk encoding of one record:
//!
//! ```text
//! [version: u8 = 1][postcard(StoredRecord)][crc32(version ‖ payload): u32 LE]
//! ```
//!
//! Decoding trusts nothing: it checks the length, the crc, the version, that
//! postcard consumed the payload exactly, and (in [`decode_for`]) that the
//! stored scope and key are the ones looked up.

use crate::error::{Error, Result};
use crate::key::Key;
use crate::record::StoredRecord;

/// The record encoding this build writes and reads.
pub(crate) const RECORD_VERSION: u8 = 1;
const CRC_LEN: usize = 4;

pub(crate) fn encode(record: &StoredRecord) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    out = postcard::to_extend(record, out)
        .map_err(|e| Error::corrupted(format!("record could not be encoded: {e}")))?;
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
    if body[0] != RECORD_VERSION {
        return Err(Error::corrupted(format!(
            "record version {} is unknown (this build reads {RECORD_VERSION})",
            body[0]
        )));
    }
    let (record, rest) = postcard::take_from_bytes::<StoredRecord>(&body[1..])
        .map_err(|e| Error::corrupted(format!("record payload does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupted("record has trailing bytes"));
    }
    Ok(record)
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
    use crate::record::StoredState;
    use crate::response::StoredResponse;

    fn sample() -> StoredRecord {
        StoredRecord {
            scope: "tenant".into(),
            idempotency_key: "key-1".into(),
            fingerprint: [7; 32],
            token: 42,
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: 3,
            state: StoredState::Completed {
                response: StoredResponse::new(201, "body").with_header("a", "b"),
            },
        }
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

    #[test]
    fn unknown_version_with_valid_crc_is_rejected() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = 9;
        let n = bytes.len() - CRC_LEN;
        let crc = crc32fast::hash(&bytes[..n]).to_le_bytes();
        bytes[n..].copy_from_slice(&crc);
        let err = decode_record(&bytes).unwrap_err();
        assert!(err.to_string().contains("version 9"));
    }
}
