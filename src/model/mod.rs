//! The data model: keys and fingerprints, records and responses, recovery
//! points, and the codec that writes a record to disk.

pub(crate) mod codec;
pub(crate) mod fingerprint;
pub(crate) mod key;
pub(crate) mod record;
pub(crate) mod recovery;
pub(crate) mod response;
