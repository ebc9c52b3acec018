//! `release`, `remove`, `sweep`, `verify`, `compact` and `backup`: changing
//! (or copying) the file on an operator's word.

use idemkv::{Error, Store};
use serde::Serialize;

use super::key_of;
use crate::args::{AdminArgs, BackupArgs};
use crate::confirm::confirm;
use crate::open::{self, DAMAGED, Failure};
use crate::{output, progress};

/// What an admin action did, for `--json`.
#[derive(Serialize)]
struct Done {
    action: &'static str,
    scope: String,
    key: String,
    changed: bool,
}

/// `idemkv release FILE SCOPE KEY`: frees an in-flight key. A completed key
/// is refused (`remove` deletes those), so that release never throws a
/// stored response away by mistake.
pub fn release(args: &AdminArgs, json: bool) -> Result<(), Failure> {
    let key = key_of(&args.key)?;
    let store = open::existing(&args.key.file)?;
    let record = store
        .get(&key)?
        .ok_or_else(|| Failure::new(format!("{key} has no live record: nothing to release")))?;
    let Some(lease_until) = record.lease_until() else {
        return Err(Failure::new(format!(
            "{key} is completed, not in flight; `idemkv remove` deletes completed records"
        )));
    };
    let lost = match record.recovery_point() {
        Some(point) => format!(
            " Its recovery point ({:?}) is dropped too: the next attempt starts from the first \
             step, not after that one.",
            point.phase()
        ),
        None => String::new(),
    };
    confirm(
        &format!(
            "Release {key} (token {}, lease ends {})? The next attempt with this key runs the \
             operation again.{lost}",
            record.token(),
            output::time(lease_until)
        ),
        args.yes,
    )?;
    // The command line holds the file exclusively: nothing can complete the
    // claim between the read above and this delete.
    let changed = store.remove(&key)?;
    open::close(store)?;
    report("released", &key, changed, json)
}

/// `idemkv remove FILE SCOPE KEY`: deletes a record in any state, a
/// damaged one included.
pub fn remove(args: &AdminArgs, json: bool) -> Result<(), Failure> {
    let key = key_of(&args.key)?;
    let store = open::existing(&args.key.file)?;
    let what = match store.get(&key) {
        Ok(Some(record)) if record.lease_until().is_some() => format!(
            "the in-flight claim on {key} (token {}); a retry runs the operation again",
            record.token()
        ),
        Ok(Some(_)) => format!("the completed record of {key}; a retry runs the operation again"),
        Ok(None) => {
            return Err(Failure::new(format!(
                "{key} has no live record: nothing to remove"
            )));
        }
        Err(Error::Corrupted { .. }) => format!("the damaged record of {key}"),
        Err(err) => return Err(err.into()),
    };
    confirm(&format!("Remove {what}?"), args.yes)?;
    let changed = store.remove(&key)?;
    open::close(store)?;
    report("removed", &key, changed, json)
}

fn report(
    action: &'static str,
    key: &idemkv::Key,
    changed: bool,
    json: bool,
) -> Result<(), Failure> {
    if json {
        output::json(&Done {
            action,
            scope: key.scope().to_string(),
            key: key.idempotency_key().to_string(),
            changed,
        })?;
    } else {
        println!("{action} {key}");
    }
    Ok(())
}

/// `idemkv sweep FILE`.
pub fn sweep(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    let store = open::existing(file)?;
    let spinner = progress::spinner("sweeping");
    let deleted = store.sweep_expired()?;
    spinner.finish_and_clear();
    open::close(store)?;
    if json {
        output::json(&serde_json::json!({ "deleted": deleted }))?;
    } else {
        println!("deleted {deleted} expired record(s)");
    }
    Ok(())
}

/// `idemkv verify FILE`: exit status 3 when anything is damaged, including
/// a file too damaged to open.
pub fn verify(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    open::must_exist(file)?;
    let store = Store::open(file, open::config()).map_err(damage_is_damage)?;
    let spinner = progress::spinner("verifying");
    let report = store.verify().map_err(damage_is_damage)?;
    spinner.finish_and_clear();
    store.close().map_err(damage_is_damage)?;
    if json {
        output::json(&serde_json::json!({
            "ok": report.is_ok(),
            "engine": format!("{:?}", report.engine),
            "records": report.records,
            "in_flight": report.in_flight,
            "index_entries": report.index_entries,
            "problems": report.problems,
            "details": report.details,
        }))?;
    } else {
        output::fields(&[
            ("engine check", format!("{:?}", report.engine)),
            (
                "records",
                format!("{} ({} in flight)", report.records, report.in_flight),
            ),
            ("index entries", report.index_entries.to_string()),
            ("problems", report.problems.to_string()),
        ])?;
        for detail in &report.details {
            println!("  {detail}");
        }
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(Failure {
            message: format!(
                "{} problem(s) found; see docs/operations.md, \"A damaged file\"",
                report.problems
            ),
            status: DAMAGED,
        })
    }
}

/// A `Corrupted` error met while verifying is a finding (exit status 3),
/// not a failure of the command.
fn damage_is_damage(err: Error) -> Failure {
    match err {
        Error::Corrupted { .. } => Failure {
            message: format!("the file is damaged: {err}"),
            status: DAMAGED,
        },
        other => other.into(),
    }
}

/// `idemkv compact FILE`.
pub fn compact(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    open::must_exist(file)?;
    let spinner = progress::spinner("compacting");
    let compaction = Store::compact(file)?;
    spinner.finish_and_clear();
    if json {
        output::json(&serde_json::json!({
            "bytes_before": compaction.bytes_before,
            "bytes_after": compaction.bytes_after,
        }))?;
    } else {
        println!(
            "{} -> {}",
            output::bytes(compaction.bytes_before),
            output::bytes(compaction.bytes_after)
        );
    }
    Ok(())
}

/// `idemkv backup FILE DEST`: a consistent copy of the store (its journal
/// replayed) in a new file that opens on its own.
pub fn backup(args: &BackupArgs, json: bool) -> Result<(), Failure> {
    let store = open::existing(&args.file)?;
    let spinner = progress::spinner("backing up");
    let backup = store.backup_to(&args.dest)?;
    spinner.finish_and_clear();
    open::close(store)?;
    if json {
        output::json(&serde_json::json!({
            "backup": args.dest.display().to_string(),
            "records": backup.records,
            "bytes": backup.bytes,
        }))?;
    } else {
        println!(
            "{} records ({}) -> {}",
            backup.records,
            output::bytes(backup.bytes),
            args.dest.display()
        );
    }
    Ok(())
}
