//! `idemkv`: the operator's command line for idemkv store files.
//!
//! See docs/operations.md for the runbook. Exit status: 0 on success, 1 on
//! an error (printed as one line on standard error), 2 for a command line
//! clap refuses, 3 when `verify` finds damage.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod commands;
mod confirm;
mod lines;
mod open;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use commands::{admin, inspect, transfer};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let outcome = match &cli.command {
        Command::Stats(a) => inspect::stats(&a.file, json),
        Command::Get(a) => inspect::get(a, json),
        Command::List(a) => inspect::list(a, json),
        Command::Stuck(a) => inspect::stuck(a, json),
        Command::Release(a) => admin::release(a, json),
        Command::Remove(a) => admin::remove(a, json),
        Command::Sweep(a) => admin::sweep(&a.file, json),
        Command::Verify(a) => admin::verify(&a.file, json),
        Command::Compact(a) => admin::compact(&a.file, json),
        Command::Backup(a) => admin::backup(a, json),
        Command::Export(a) => transfer::export(&a.file),
        Command::Import(a) => transfer::import(&a.file, json),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("idemkv: {failure}");
            ExitCode::from(failure.status)
        }
    }
}
