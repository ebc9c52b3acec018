//! Administration: verify, inspect (scan, stats), and backup.

pub(crate) mod backup;
pub(crate) mod inspect;
pub(crate) mod verify;
