//! Opening a store file for a command, and the errors a command ends with.

use std::fmt;
use std::path::Path;

use idemkv::{Config, Error, Store};

/// Why a command failed: one line for the operator, and the exit status.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong and what to do.
    pub message: String,
    /// The process's exit status.
    pub status: u8,
}

/// Exit status for errors (a missing file, a held file, bad input, ...).
pub const ERROR: u8 = 1;
/// Exit status of `verify` when it found damage.
pub const DAMAGED: u8 = 3;

impl Failure {
    /// A failure with exit status 1.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: ERROR,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        let message = match &err {
            Error::AlreadyOpen { path } => format!(
                "{} is open in a running process (a store holds its file exclusively); \
                 stop that service first, or inspect it through the admin routes it mounts",
                path.display()
            ),
            _ => err.to_string(),
        };
        Failure::new(message)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::new(err.to_string())
    }
}

/// How the command line opens a store: no background sweeper (only `sweep`
/// deletes), and claims left in flight keep their leases.
pub fn config() -> Config {
    Config::default().sweep_interval(None)
}

/// Opens an existing store file; a missing one is an error, never created.
pub fn existing(path: &Path) -> Result<Store, Failure> {
    must_exist(path)?;
    Ok(Store::open(path, config())?)
}

/// A missing file is an error: the commands that read never create one.
pub fn must_exist(path: &Path) -> Result<(), Failure> {
    if path.exists() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "{} does not exist; pass the path of an idemkv store file",
            path.display()
        )))
    }
}

/// Opens a store file, creating it if missing (for `import`).
pub fn or_create(path: &Path) -> Result<Store, Failure> {
    Ok(Store::open(path, config())?)
}

/// Closes a store, reporting the final commit's outcome.
pub fn close(store: Store) -> Result<(), Failure> {
    Ok(store.close()?)
}
