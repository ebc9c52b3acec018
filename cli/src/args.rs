//! The command line, as clap reads it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Look inside an idemkv store file, unstick keys, check, sweep, compact,
/// back up and restore it.
///
/// The file must not be open in a running service (the store holds an
/// exclusive lock on it): stop the service first, or use the admin routes it
/// mounts.
#[derive(Debug, Parser)]
#[command(name = "idemkv", version, about)]
pub struct Cli {
    /// Print JSON instead of tables (one object, or one per line for lists).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Counts by state, claims past their lease, top scopes, the oldest
    /// claim, what expires within the hour, file size and free space,
    /// format version and last sweep.
    Stats(FileArg),
    /// One record: state, token, times, fingerprint, status, headers and a
    /// body preview.
    Get(GetArgs),
    /// Records, filtered.
    List(ListArgs),
    /// In-flight claims past their lease: their holder stopped renewing.
    Stuck(StuckArgs),
    /// Frees an in-flight key so that the next attempt claims it afresh.
    Release(AdminArgs),
    /// Deletes a key's record, in flight or completed.
    Remove(AdminArgs),
    /// Deletes every expired record now.
    Sweep(FileArg),
    /// Checks the file: the storage engine's checksums and every record;
    /// exits with status 3 when something is damaged.
    Verify(FileArg),
    /// Returns free space inside the file to the file system.
    Compact(FileArg),
    /// Writes a consistent copy of the store (its file and journal) to a
    /// new file that opens on its own. For a store a running service holds,
    /// call `Store::backup_to` in the service instead.
    Backup(BackupArgs),
    /// Writes every live record to standard output, one JSON object a line.
    Export(FileArg),
    /// Reads records written by `export` from standard input into the file
    /// (created if missing), all or none.
    Import(FileArg),
}

/// A store file.
#[derive(Debug, Args)]
pub struct FileArg {
    /// The store file.
    pub file: PathBuf,
}

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The store file.
    pub file: PathBuf,
    /// Where the copy goes: a new path (an existing file is never replaced).
    pub dest: PathBuf,
}

/// A store file and one key in it.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The store file.
    pub file: PathBuf,
    /// The key's scope (for the HTTP layer: `idemkv_http::scope_for`, the
    /// caller, the method and the path, as in "acct_42 POST /v1/charges").
    pub scope: String,
    /// The idempotency key.
    pub key: String,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The record.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Write the stored body's raw bytes to this file (`-` for standard
    /// output) instead of a preview.
    #[arg(long, value_name = "PATH")]
    pub body: Option<PathBuf>,
}

/// The states `list` filters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Claimed, not completed.
    InFlight,
    /// Completed.
    Completed,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The store file.
    pub file: PathBuf,
    /// Only scopes starting with this.
    #[arg(long, value_name = "PREFIX")]
    pub scope: Option<String>,
    /// Only records in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Only records first claimed longer ago than this (`90s`, `15m`, `2h`,
    /// `3days`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// At most this many records.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

/// `stuck`.
#[derive(Debug, Args)]
pub struct StuckArgs {
    /// The store file.
    pub file: PathBuf,
    /// Only claims whose lease ended longer ago than this (default: any
    /// ended lease).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// At most this many records.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

/// `release` and `remove`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The record.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}
