//! `stats`, `get`, `list` and `stuck`: reading the file.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::SystemTime;

use idemkv::{Record, RecordState, RecordStateFilter, ScanFilter, Stats, Store};
use serde::Serialize;

use super::key_of;
use crate::args::{GetArgs, ListArgs, StateArg, StuckArgs};
use crate::lines::{Line, hex, millis};
use crate::open::{self, Failure};
use crate::{output, progress};

/// `stats --json`.
#[derive(Serialize)]
struct StatsJson {
    in_flight: u64,
    past_lease: u64,
    completed: u64,
    expired: u64,
    damaged: u64,
    top_scopes: Vec<(String, u64)>,
    oldest_in_flight: Option<OldestJson>,
    expiring_within_hour: u64,
    file_bytes: Option<u64>,
    allocated_bytes: u64,
    reclaimable_bytes: Option<u64>,
    format_version: u64,
    last_sweep_ms: Option<u64>,
}

#[derive(Serialize)]
struct OldestJson {
    scope: String,
    key: String,
    created_at_ms: u64,
}

/// `idemkv stats FILE`.
pub fn stats(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    let store = open::existing(file)?;
    let bar = progress::records(store.metrics().live_records, "reading");
    let stats = store.stats_with_progress(|read| bar.set_position(read))?;
    bar.finish_and_clear();
    open::close(store)?;
    if json {
        output::json(&stats_json(&stats))?;
    } else {
        print_stats(&stats, SystemTime::now())?;
    }
    Ok(())
}

fn stats_json(stats: &Stats) -> StatsJson {
    StatsJson {
        in_flight: stats.in_flight,
        past_lease: stats.past_lease,
        completed: stats.completed,
        expired: stats.expired,
        damaged: stats.damaged,
        top_scopes: stats.top_scopes.clone(),
        oldest_in_flight: stats.oldest_in_flight.as_ref().map(|(key, at)| OldestJson {
            scope: key.scope().to_string(),
            key: key.idempotency_key().to_string(),
            created_at_ms: millis(*at),
        }),
        expiring_within_hour: stats.expiring_within_hour,
        file_bytes: stats.file_bytes,
        allocated_bytes: stats.allocated_bytes,
        reclaimable_bytes: stats.reclaimable_bytes(),
        format_version: stats.format_version,
        last_sweep_ms: stats.last_sweep.map(millis),
    }
}

fn print_stats(stats: &Stats, now: SystemTime) -> std::io::Result<()> {
    let file = match (stats.file_bytes, stats.reclaimable_bytes()) {
        (Some(file), Some(free)) => format!(
            "{} ({} in use, {} reclaimable by compact)",
            output::bytes(file),
            output::bytes(stats.allocated_bytes),
            output::bytes(free)
        ),
        _ => format!(
            "in memory ({} in use)",
            output::bytes(stats.allocated_bytes)
        ),
    };
    let oldest = match &stats.oldest_in_flight {
        Some((key, at)) => format!("{key} since {}", output::time_from_now(*at, now)),
        None => "none".into(),
    };
    output::fields(&[
        (
            "records",
            format!(
                "{} ({} in flight, {} of them past their lease; {} completed)",
                stats.in_flight + stats.completed,
                stats.in_flight,
                stats.past_lease,
                stats.completed
            ),
        ),
        (
            "expired",
            format!(
                "{} (read as absent; the next sweep deletes them)",
                stats.expired
            ),
        ),
        ("damaged", stats.damaged.to_string()),
        ("oldest claim", oldest),
        ("expiring <1h", stats.expiring_within_hour.to_string()),
        ("file", file),
        ("format", stats.format_version.to_string()),
        (
            "last sweep",
            stats
                .last_sweep
                .map_or("never".into(), |at| output::time_from_now(at, now)),
        ),
    ])?;
    if !stats.top_scopes.is_empty() {
        println!("\ntop scopes");
        let rows: Vec<Vec<String>> = stats
            .top_scopes
            .iter()
            .map(|(scope, count)| vec![count.to_string(), scope.clone()])
            .collect();
        output::table(&["RECORDS", "SCOPE"], &rows)?;
    }
    Ok(())
}

/// `idemkv get FILE SCOPE KEY`.
pub fn get(args: &GetArgs, json: bool) -> Result<(), Failure> {
    let key = key_of(&args.key)?;
    let store = open::existing(&args.key.file)?;
    let record = store.get(&key)?;
    open::close(store)?;
    let Some(record) = record else {
        return Err(Failure::new(format!("{key} has no live record")));
    };
    if let Some(path) = &args.body {
        let Some(response) = record.response() else {
            return Err(Failure::new(format!("{key} is in flight: no body yet")));
        };
        if path.as_os_str() == "-" {
            std::io::stdout().lock().write_all(response.body())?;
        } else {
            std::fs::write(path, response.body())?;
        }
        return Ok(());
    }
    if json {
        output::json(&Line::of(&record).map_err(Failure::new)?)?;
        return Ok(());
    }
    let now = SystemTime::now();
    let mut pairs = vec![
        ("key", record.key().to_string()),
        ("state", state_name(&record).into()),
        ("token", record.token().to_string()),
        ("fingerprint", hex(record.fingerprint().as_bytes())),
        ("created", output::time_from_now(record.created_at(), now)),
        ("updated", output::time_from_now(record.updated_at(), now)),
        ("expires", output::time_from_now(record.expires_at(), now)),
    ];
    if let Some(lease_until) = record.lease_until() {
        pairs.push(("lease ends", output::time_from_now(lease_until, now)));
    }
    if let Some(point) = record.recovery_point() {
        pairs.push((
            "recovery point",
            format!(
                "{} ({} bytes of state: {})",
                point.phase(),
                point.state().len(),
                output::preview(point.state(), 200)
            ),
        ));
    }
    if let Some(response) = record.response() {
        pairs.push(("status", response.status().to_string()));
        for (name, value) in response.headers() {
            pairs.push(("header", format!("{name}: {}", output::preview(value, 200))));
        }
        pairs.push((
            "body",
            format!(
                "{} bytes: {}",
                response.body().len(),
                output::preview(response.body(), 200)
            ),
        ));
    }
    output::fields(&pairs)?;
    Ok(())
}

/// `idemkv list FILE ...`.
pub fn list(args: &ListArgs, json: bool) -> Result<(), Failure> {
    let mut filter = ScanFilter::default().limit(args.limit);
    if let Some(prefix) = &args.scope {
        filter = filter.scope_prefix(prefix.clone());
    }
    if let Some(state) = args.state {
        filter = filter.state(match state {
            StateArg::InFlight => RecordStateFilter::InFlight,
            StateArg::Completed => RecordStateFilter::Completed,
        });
    }
    if let Some(age) = args.older_than {
        filter = filter.created_before(ago(age)?);
    }
    print_records(&args.file, &filter, json, "no record matches")
}

/// `idemkv stuck FILE ...`.
pub fn stuck(args: &StuckArgs, json: bool) -> Result<(), Failure> {
    let ended_by = ago(args.older_than.unwrap_or_default())?;
    let filter = ScanFilter::default()
        .state(RecordStateFilter::InFlight)
        .lease_ended_by(ended_by)
        .limit(args.limit);
    print_records(&args.file, &filter, json, "no claim is past its lease")
}

/// `now - age`.
fn ago(age: std::time::Duration) -> Result<SystemTime, Failure> {
    SystemTime::now()
        .checked_sub(age)
        .ok_or_else(|| Failure::new(format!("{age:?} reaches back before 1970")))
}

/// Scans with `filter` and prints what it found: a table, or one JSON line
/// per record. Damaged records are counted and reported, not printed.
///
/// With no record to show, the table form prints `nothing_found` instead
/// of a bare header (the JSON form prints nothing, as for any empty list).
fn print_records(
    file: &std::path::Path,
    filter: &ScanFilter,
    json: bool,
    nothing_found: &str,
) -> Result<(), Failure> {
    let store = open::existing(file)?;
    let (records, damaged) = collect(&store, filter)?;
    open::close(store)?;
    if json {
        for record in &records {
            output::json(&Line::of(record).map_err(Failure::new)?)?;
        }
    } else if records.is_empty() {
        writeln!(std::io::stdout(), "{nothing_found}")?;
    } else {
        let now = SystemTime::now();
        let rows: Vec<Vec<String>> = records.iter().map(|r| row(r, now)).collect();
        output::table(
            &["KEY", "STATE", "TOKEN", "CREATED", "DETAIL", "SCOPE"],
            &rows,
        )?;
    }
    if damaged > 0 {
        return Err(Failure::new(format!(
            "{damaged} damaged record(s) could not be shown; run `idemkv verify`"
        )));
    }
    Ok(())
}

/// The records a scan visits, and how many failed verification.
fn collect(store: &Store, filter: &ScanFilter) -> Result<(Vec<Record>, u64), Failure> {
    let spinner = progress::counter("scanning", "records");
    let mut records = Vec::new();
    let mut damaged = 0;
    store.scan(filter, |record| {
        match record {
            Ok(record) => records.push(record),
            Err(_) => damaged += 1,
        }
        spinner.inc(1);
        ControlFlow::Continue(())
    })?;
    spinner.finish_and_clear();
    Ok((records, damaged))
}

fn state_name(record: &Record) -> &'static str {
    match record.state() {
        RecordState::InFlight { .. } => "in-flight",
        RecordState::Completed { .. } => "completed",
        _ => "unknown",
    }
}

fn row(record: &Record, now: SystemTime) -> Vec<String> {
    let detail = match (record.lease_until(), record.response()) {
        (Some(lease_until), _) if lease_until <= now => {
            format!("lease ended {}", output::time_from_now(lease_until, now))
        }
        (Some(lease_until), _) => format!("lease ends {}", output::time_from_now(lease_until, now)),
        (None, Some(response)) => format!(
            "status {}, {} body bytes",
            response.status(),
            response.body().len()
        ),
        (None, None) => String::new(),
    };
    vec![
        record.key().idempotency_key().to_string(),
        state_name(record).into(),
        record.token().to_string(),
        output::time(record.created_at()),
        detail,
        record.key().scope().to_string(),
    ]
}
