//! The one error type of the crate.

use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, idemkv::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in idemkv.
///
/// Every variant is something a caller can act on; the `Display` text says
/// what to do. No error path changes stored state, except where a variant says
/// otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scope or idempotency key breaks the key rules.
    #[error(
        "invalid idempotency key: {reason}; the key must be 1..=255 bytes of visible ASCII \
         (0x21..=0x7E) and the scope at most 512 bytes of UTF-8"
    )]
    InvalidKey {
        /// Which rule failed.
        reason: String,
    },

    /// The response is larger than `Config::max_response_bytes`.
    #[error(
        "response of {size} bytes exceeds the store's limit of {limit} bytes; \
         raise Config::max_response_bytes or do not store this response (release the claim instead)"
    )]
    ResponseTooLarge {
        /// Stored size of the response (body plus header names and values).
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A recovery point's phase name breaks the phase rules.
    #[error(
        "invalid recovery phase: {reason}; a phase is 1..=64 bytes of UTF-8 without control \
         characters, naming the last step that finished (e.g. \"charge_created\")"
    )]
    InvalidPhase {
        /// Which rule failed.
        reason: String,
    },

    /// A recovery point's state is larger than `Config::max_recovery_point_bytes`.
    #[error(
        "recovery state of {size} bytes exceeds the store's limit of {limit} bytes; \
         record only what the next steps need (the external ids), or raise \
         Config::max_recovery_point_bytes"
    )]
    RecoveryPointTooLarge {
        /// Size of the state (phase name included).
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// The claim's lease ran out and another attempt took the key over, or the
    /// record was removed. Nothing was changed.
    #[error(
        "lease lost: another attempt has taken over this key (or it was removed); \
         do not store this result, the newer attempt owns the key"
    )]
    LeaseLost,

    /// A `Claim` was passed to a store other than the one that issued it.
    #[error("this claim was issued by a different store; pass it to the store that returned it")]
    WrongStore,

    /// A stored record or the file failed its integrity checks.
    #[error(
        "corrupted data: {detail}; the affected record cannot be trusted, \
         remove it with Store::remove or restore the file from a backup"
    )]
    Corrupted {
        /// What check failed.
        detail: String,
    },

    /// The file was written by a newer idemkv format than this build reads.
    #[error(
        "the store file has format version {found}, this build reads up to version {supported}; \
         upgrade idemkv to open it"
    )]
    UnsupportedVersion {
        /// Version found in the file.
        found: u64,
        /// Highest version this build understands.
        supported: u64,
    },

    /// The file is not an idemkv store: not a redb database at all, or a redb
    /// database holding tables idemkv did not create. It is left untouched.
    #[error(
        "{path} is not an idemkv store (not a redb file, or one with tables idemkv did not create); \
         pass the path of an idemkv file or of a new file"
    )]
    NotAStore {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The store file could not be opened or created at all: the path is a
    /// directory, its directory does not exist, or permissions forbid it.
    #[error(
        "cannot open {path}: {source}; pass the path of a file (existing or new) in a directory \
         this process can write to"
    )]
    CannotOpen {
        /// The path that was opened.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The store's file is no longer at its path (moved, deleted or
    /// replaced) when the store tries to reopen it after a failed commit.
    /// The store refuses writes rather than create an empty file in its
    /// place, which would forget every stored answer.
    #[error(
        "the store's file {path} is not the file the store opened ({detail}): it was moved, \
         deleted or replaced; the store refuses writes rather than start an empty file. Put \
         the file back (the store then heals by itself) or close the store and open the file \
         where it is now"
    )]
    FileReplaced {
        /// The path the store opened.
        path: PathBuf,
        /// What is at the path now.
        detail: String,
    },

    /// Another `Store` (in this or another process) has the file open.
    #[error(
        "{path} is already open by another Store or process; \
         share one Store handle (it is Clone) instead of opening the file twice, \
         or stop the process that has it open"
    )]
    AlreadyOpen {
        /// The path that was opened.
        path: PathBuf,
    },

    /// `Store::close` was called while other handles (clones) of the store
    /// are alive.
    #[error(
        "the store cannot close while {handles} other handle(s) of it are alive; \
         drop the clones first (the last handle closes the store)"
    )]
    InUse {
        /// Other handles alive.
        handles: usize,
    },

    /// An import met a key that already holds a live record in the store
    /// (or appears twice in the import). Nothing was imported.
    #[error(
        "{key} already holds a live record (or appears twice in the import); nothing was \
         imported: import into a store without these keys, or remove the key first"
    )]
    ImportConflict {
        /// The key, as `"scope"/key`.
        key: String,
    },

    /// A backend over a database could not complete the call: the server is
    /// unreachable, a connection broke, or a statement failed. As with a
    /// failed commit, a write may or may not have been applied: retrying the
    /// same call is safe (a claim retried answers `InProgress` if the first
    /// landed, never a second claim).
    #[error("the database behind the store failed: {0}; check that it is reachable, then retry")]
    Unavailable(#[source] StorageError),

    /// A `Config` value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The storage engine or the disk failed.
    #[error("storage error: {0}; check the disk and the file's permissions, then reopen the store")]
    Storage(#[source] StorageError),

    /// A commit failed, so the store refuses writes while it reopens its
    /// file to heal (see [`Store::health`](crate::Store::health)). Reads keep
    /// working; acknowledged data is intact on disk.
    #[error(
        "the store refuses writes after a failed commit ({cause}) while it reopens its file; \
         retry shortly (Store::health says when writes are back), and check the disk \
         (free space, I/O errors)"
    )]
    Poisoned {
        /// The error that poisoned the store.
        cause: String,
    },

    /// The store's background committer is gone (it stopped after a panic).
    #[error("the store is closed; open it again")]
    Closed,
}

/// A failure of the storage engine or of the disk under it, as carried by
/// [`Error::Storage`]. Its [`source`](std::error::Error::source) is the
/// engine's own error, so no engine type is part of idemkv's API.
pub struct StorageError {
    /// The engine's error, or an I/O error of idemkv's own.
    cause: Box<dyn std::error::Error + Send + Sync + 'static>,
    io_kind: Option<std::io::ErrorKind>,
}

impl StorageError {
    /// The kind of the operating system error underneath, when there is one
    /// (`StorageFull` for a full disk, for example).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        self.io_kind
    }
}

impl StorageError {
    /// A storage failure of a backend of another crate (a database
    /// client's error), as `Error::Storage(StorageError::new(err))`.
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        let cause = cause.into();
        let io_kind = cause.downcast_ref::<std::io::Error>().map(|io| io.kind());
        StorageError { cause, io_kind }
    }
}

impl std::fmt::Debug for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.cause, f)
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.cause, f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// What a caller can do about an [`Error`]: the taxonomy every backend
/// maps its failures to (the `Backend` contract, docs/design.md "The
/// contract a backend keeps"). Absence is not an error: `get` answers
/// `None` and `remove` `false` for a key with no record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call broke a rule of the API: a bad key, phase or
    /// configuration, a response or recovery point over its limit, a claim
    /// of another store, an import over live keys. Nothing changed, and
    /// the same call answers the same: change the call.
    Refused,
    /// The caller no longer holds the key ([`Error::LeaseLost`]): another
    /// attempt took it over, or it was removed or completed. Nothing
    /// changed: do not store this attempt's result.
    Fenced,
    /// The failure may pass by itself (a disk or database error, a store
    /// healing after a failed commit): repeat the same call with backoff. A
    /// write that failed this way may still have landed: repeat it with the
    /// claim the error handed back, rather than start the side effect
    /// again.
    Transient,
    /// Stored data failed its checks, or is not data this build reads (a
    /// damaged record or file, a newer format, a file that is not a store).
    /// Repeating does not help: remove the record, restore a backup or
    /// upgrade.
    Damaged,
    /// The store cannot serve calls as it is opened or used: it is closed,
    /// its file cannot be opened, is held by another store or was
    /// replaced, or it cannot close while clones are alive. Change how the
    /// store is opened or used.
    Unusable,
}

impl Error {
    /// Which [`ErrorKind`] this error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey { .. }
            | Error::ResponseTooLarge { .. }
            | Error::InvalidPhase { .. }
            | Error::RecoveryPointTooLarge { .. }
            | Error::WrongStore
            | Error::ImportConflict { .. }
            | Error::InvalidConfig(_) => ErrorKind::Refused,
            Error::LeaseLost => ErrorKind::Fenced,
            Error::Storage(_) | Error::Poisoned { .. } | Error::Unavailable(_) => {
                ErrorKind::Transient
            }
            Error::Corrupted { .. }
            | Error::UnsupportedVersion { .. }
            | Error::NotAStore { .. } => ErrorKind::Damaged,
            Error::CannotOpen { .. }
            | Error::FileReplaced { .. }
            | Error::AlreadyOpen { .. }
            | Error::InUse { .. }
            | Error::Closed => ErrorKind::Unusable,
        }
    }

    /// Whether the failure may pass by itself, so that the same call may
    /// succeed if repeated (with backoff): [`ErrorKind::Transient`], a
    /// storage or database error, a store refusing writes while it heals. A
    /// write that failed this way may still have landed: repeat it with the
    /// claim the error handed back (holder writes are idempotent by token),
    /// rather than start the side effect again. Everything else (a lost
    /// lease, bad input, damaged data, a closed store) answers the same
    /// however often it is repeated.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// An I/O failure of idemkv's own (spawning a thread, reading a file's
    /// size), reported like a storage failure.
    pub(crate) fn io(err: std::io::Error) -> Self {
        Error::Storage(StorageError {
            io_kind: Some(err.kind()),
            cause: Box::new(err),
        })
    }

    pub(crate) fn invalid_key(reason: impl Into<String>) -> Self {
        Error::InvalidKey {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupted(detail: impl Into<String>) -> Self {
        Error::Corrupted {
            detail: detail.into(),
        }
    }
}

/// Every redb error funnels through `redb::Error`, which has `From` impls for
/// all of redb's specific error types.
macro_rules! from_redb {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(err: $ty) -> Self {
                storage(redb::Error::from(err))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::CompactionError,
);

fn storage(err: redb::Error) -> Error {
    match err {
        redb::Error::DatabaseAlreadyOpen => Error::AlreadyOpen {
            path: PathBuf::from("<unknown path>"),
        },
        redb::Error::Corrupted(detail) => Error::Corrupted { detail },
        other => {
            let io_kind = match &other {
                redb::Error::Io(io) => Some(io.kind()),
                _ => None,
            };
            Error::Storage(StorageError {
                cause: Box::new(other),
                io_kind,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_pass_if_repeated_is_transient() {
        let io = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(Error::io(io()).is_transient());
        assert!(Error::Unavailable(StorageError::new(io())).is_transient());
        assert!(
            Error::Poisoned {
                cause: "disk full".into()
            }
            .is_transient()
        );
        for permanent in [
            Error::LeaseLost,
            Error::Closed,
            Error::WrongStore,
            Error::corrupted("bad crc"),
            Error::invalid_key("empty"),
            Error::ResponseTooLarge { size: 2, limit: 1 },
        ] {
            assert!(!permanent.is_transient(), "{permanent:?}");
        }
    }

    /// Every variant has the kind its documentation promises: one sample of
    /// each, so that a new variant must be placed (the match in `kind` has
    /// no wildcard) and a moved one is caught here.
    #[test]
    fn every_variant_maps_to_its_kind() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let path = || PathBuf::from("/x");
        let cases = [
            (Error::invalid_key("empty"), ErrorKind::Refused),
            (
                Error::ResponseTooLarge { size: 2, limit: 1 },
                ErrorKind::Refused,
            ),
            (
                Error::InvalidPhase {
                    reason: "empty".into(),
                },
                ErrorKind::Refused,
            ),
            (
                Error::RecoveryPointTooLarge { size: 2, limit: 1 },
                ErrorKind::Refused,
            ),
            (Error::WrongStore, ErrorKind::Refused),
            (
                Error::ImportConflict { key: "k".into() },
                ErrorKind::Refused,
            ),
            (Error::InvalidConfig("lease".into()), ErrorKind::Refused),
            (Error::LeaseLost, ErrorKind::Fenced),
            (Error::io(io()), ErrorKind::Transient),
            (
                Error::Poisoned {
                    cause: "full".into(),
                },
                ErrorKind::Transient,
            ),
            (
                Error::Unavailable(StorageError::new(io())),
                ErrorKind::Transient,
            ),
            (Error::corrupted("bad crc"), ErrorKind::Damaged),
            (
                Error::UnsupportedVersion {
                    found: 9,
                    supported: 4,
                },
                ErrorKind::Damaged,
            ),
            (Error::NotAStore { path: path() }, ErrorKind::Damaged),
            (
                Error::CannotOpen {
                    path: path(),
                    source: io(),
                },
                ErrorKind::Unusable,
            ),
            (
                Error::FileReplaced {
                    path: path(),
                    detail: "gone".into(),
                },
                ErrorKind::Unusable,
            ),
            (Error::AlreadyOpen { path: path() }, ErrorKind::Unusable),
            (Error::InUse { handles: 1 }, ErrorKind::Unusable),
            (Error::Closed, ErrorKind::Unusable),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_transient(), kind == ErrorKind::Transient);
        }
    }
}
