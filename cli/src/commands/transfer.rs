//! `export` and `import`: every record out as JSON lines, and back in.

use std::io::{BufRead, BufWriter, Write};
use std::ops::ControlFlow;

use idemkv::ScanFilter;

use crate::lines::Line;
use crate::open::{self, Failure};
use crate::{output, progress};

/// `idemkv export FILE > records.jsonl`: streams every live record (in
/// flight and completed) to standard output. Damaged records are left out,
/// counted, and make the exit status 1 once the rest is written.
pub fn export(file: &std::path::Path) -> Result<(), Failure> {
    let store = open::existing(file)?;
    let bar = progress::records(store.metrics().live_records, "exporting");
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut failure: Option<Failure> = None;
    let mut damaged = 0u64;
    store.scan(&ScanFilter::default(), |record| {
        bar.inc(1);
        let written = match record {
            Ok(record) => Line::of(&record).map_err(Failure::new).and_then(|line| {
                serde_json::to_writer(&mut out, &line)
                    .map_err(|err| Failure::new(err.to_string()))?;
                Ok(writeln!(out)?)
            }),
            Err(_) => {
                damaged += 1;
                Ok(())
            }
        };
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                failure = Some(err);
                ControlFlow::Break(())
            }
        }
    })?;
    bar.finish_and_clear();
    out.flush()?;
    open::close(store)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if damaged > 0 {
        return Err(Failure::new(format!(
            "{damaged} damaged record(s) were left out of the export; run `idemkv verify`"
        )));
    }
    Ok(())
}

/// `idemkv import FILE < records.jsonl`: reads every line first (a bad line
/// stops the import, naming its number, before anything is written), then
/// writes all records in one transaction. The file is created if missing.
pub fn import(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    let spinner = progress::counter("reading", "records");
    let mut records = Vec::new();
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str::<Line>(&line)
            .map_err(|err| err.to_string())
            .and_then(Line::into_record)
            .map_err(|why| Failure::new(format!("line {number}: {why}; nothing was imported")))?;
        records.push(record);
        spinner.inc(1);
    }
    spinner.finish_and_clear();
    let store = open::or_create(file)?;
    let imported = store.import(records)?;
    open::close(store)?;
    if json {
        output::json(&serde_json::json!({
            "imported": imported.imported,
            "skipped_expired": imported.skipped_expired,
        }))?;
    } else {
        println!(
            "imported {} record(s); {} had expired and were skipped",
            imported.imported, imported.skipped_expired
        );
    }
    Ok(())
}
