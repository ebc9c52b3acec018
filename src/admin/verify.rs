//! The integrity check an operator can run: [`Store::verify`] and
//! `Config::verify_on_open`.
//!
//! Beyond the storage engine's own page checksums, it checks what only
//! idemkv knows: every record decodes, names the key it is stored under,
//! lives in the table of its state, and has exactly its entry in the expiry
//! index; every expiry entry points at such a record. A record that the
//! engine's index lost leaves its expiry entry behind, so a lost key, which
//! a lookup would answer as new, shows up here.
//!
//! [`Store::verify`]: crate::Store::verify

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::durability::storage::{EXPIRY, INFLIGHT, RECORDS};
use crate::error::Result;
use crate::model::codec;
use crate::model::key::Key;
use crate::model::record::StoredState;

/// Problems listed in a report at most; all are counted.
const MAX_DETAILS: usize = 100;

/// The outcome of the storage engine's own check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineCheck {
    /// Not run (the check at open runs it while opening).
    #[default]
    Skipped,
    /// Every page's checksum matched.
    Passed,
    /// The engine found damage and repaired its own structures (its
    /// allocator state); the records were then checked as usual.
    Repaired,
    /// The engine found damage it could not repair; the records were not
    /// walked.
    Failed(String),
}

/// What [`Store::verify`](crate::Store::verify) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The storage engine's own check.
    pub engine: EngineCheck,
    /// Records read, in flight and completed.
    pub records: u64,
    /// In-flight records among them.
    pub in_flight: u64,
    /// Expiry index entries read.
    pub index_entries: u64,
    /// Problems found (the engine's failure counts as one).
    pub problems: u64,
    /// The first problems, described.
    pub details: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems == 0
    }

    fn problem(&mut self, detail: String) {
        self.problems += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(detail);
        }
    }

    pub(crate) fn note_engine(&mut self, engine: EngineCheck) {
        if let EngineCheck::Failed(detail) = &engine {
            self.problem(format!("the storage engine's check failed: {detail}"));
        }
        self.engine = engine;
    }
}

/// Walks every table in one read transaction (behind the caller's shield).
pub(crate) fn verify_tables(db: &Database) -> Result<VerifyReport> {
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORDS)?;
    let inflight = txn.open_table(INFLIGHT)?;
    let expiry = txn.open_table(EXPIRY)?;
    let mut report = VerifyReport::default();
    for (table, in_flight_table) in [(&records, false), (&inflight, true)] {
        for entry in table.iter()? {
            let (hash, bytes) = entry?;
            let hash = *hash.value();
            report.records += 1;
            report.in_flight += u64::from(in_flight_table);
            let at = format!("record {}", hex(&hash));
            let record = match codec::decode_record(bytes.value()) {
                Ok(record) => record,
                Err(err) => {
                    report.problem(format!("{at}: {err}"));
                    continue;
                }
            };
            match Key::new(&record.scope, &record.idempotency_key) {
                Ok(key) if *key.hash() == hash => {}
                Ok(key) => report.problem(format!("{at}: holds {key}, stored under another key")),
                Err(err) => report.problem(format!("{at}: {err}")),
            }
            let is_in_flight = matches!(record.state, StoredState::InFlight { .. });
            if is_in_flight != in_flight_table {
                report.problem(format!("{at}: its state does not match its table"));
            }
            if in_flight_table && records.get(&hash)?.is_some() {
                report.problem(format!("{at}: stored both in flight and completed"));
            }
            if expiry.get((record.sweep_at_ms, &hash))?.is_none() {
                report.problem(format!("{at}: no expiry index entry"));
            }
            if record.sweep_at_ms < record.expires_at_ms {
                report.problem(format!(
                    "{at}: its expiry entry ({}) comes before its expiry ({})",
                    record.sweep_at_ms, record.expires_at_ms
                ));
            }
        }
    }
    for entry in expiry.iter()? {
        let (index, _) = entry?;
        let (sweep_at_ms, hash) = index.value();
        report.index_entries += 1;
        let stored = match records.get(hash)? {
            Some(bytes) => Some(bytes.value().to_vec()),
            None => inflight.get(hash)?.map(|bytes| bytes.value().to_vec()),
        };
        let matches = stored
            .and_then(|bytes| codec::decode_record(&bytes).ok())
            .is_some_and(|record| record.sweep_at_ms == sweep_at_ms);
        if !matches {
            report.problem(format!(
                "expiry entry {sweep_at_ms} for {}: no record with that expiry (a record may be lost)",
                hex(hash)
            ));
        }
    }
    if report.index_entries != report.records {
        report.problem(format!(
            "{} expiry entries for {} records",
            report.index_entries, report.records
        ));
    }
    // Tables whose length disagrees with their walk are damaged too.
    let counted = records.len()? + inflight.len()?;
    if counted != report.records {
        report.problem(format!(
            "the tables say {counted} records, the walk found {}",
            report.records
        ));
    }
    Ok(report)
}

fn hex(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}
