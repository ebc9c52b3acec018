//! What each operation does inside the batch's write transaction: the
//! decision rule for a claim, the fencing check for a holder's write, and
//! the records each writes. The heart of the product's semantics.

use bytes::Bytes;

use super::TOKEN_BLOCK;
use super::reply::{Completed, Granted, Imported, Renewed, Request, Swept};
use super::writer::Worker;
use crate::config::ClaimTerms;
use crate::durability::storage::{KEEP_ENTRY_SHARE, WriteTables};
use crate::error::{Error, Result};
use crate::model::fingerprint::Fingerprint;
use crate::model::key::Key;
use crate::model::record::{StoredRecord, StoredState};
use crate::model::recovery::RecoveryPoint;
use crate::model::response::StoredResponse;
use crate::request::decide::decide;
use crate::request::outcome::Begin;

impl Worker {
    pub(super) fn apply(
        &mut self,
        tables: &mut WriteTables<'_>,
        request: &mut Request,
        now_ms: u64,
    ) -> Result<()> {
        match request {
            Request::Claim {
                key,
                fingerprint,
                terms,
                reply,
            } => reply.answer = Some(self.claim(tables, key, fingerprint, *terms, now_ms)?),
            Request::Complete {
                key,
                token,
                response,
                retention_ms,
                reply,
            } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    // The same completion by the same holder landed before
                    // (a retry after an answer that was lost): done.
                    None => match landed_completion(tables, key, *token, response, now_ms)? {
                        Some(expires_at_ms) => Ok(Completed { expires_at_ms }),
                        None => Err(Error::LeaseLost),
                    },
                    Some(mut record) => {
                        let old = record.place();
                        // Applied once: the request's response moves into
                        // the record instead of being copied.
                        let response = std::mem::replace(
                            response,
                            StoredResponse::from_bytes(0, Bytes::new()),
                        );
                        record.state = StoredState::Completed { response };
                        record.updated_at_ms = now_ms;
                        record.expires_at_ms = now_ms.saturating_add(*retention_ms);
                        let keep_within_ms = *retention_ms / KEEP_ENTRY_SHARE;
                        tables.put(key, Some(old), &mut record, keep_within_ms)?;
                        Ok(Completed {
                            expires_at_ms: record.expires_at_ms,
                        })
                    }
                });
            }
            Request::Release { key, token, reply } => {
                // The claim's own record goes even once it expired: an
                // expired record reads as absent only while the clock stays
                // past its expiry, and a restart after the wall clock
                // stepped back would bring the released claim back.
                reply.answer = Some(match claim_record(tables, key, *token)? {
                    // Nothing left to release (this release landed before
                    // and its answer was lost, or the record was removed):
                    // the key is free, as asked.
                    None if !has_live_record(tables, key, now_ms)? => Ok(()),
                    None => Err(Error::LeaseLost),
                    // A storage error fails the batch (`?`): the delete
                    // may have written part of its changes already.
                    Some(record) => {
                        tables.delete(key, Some(record.place()))?;
                        Ok(())
                    }
                });
            }
            Request::Renew {
                key,
                token,
                terms,
                point,
                reply,
            } => {
                reply.answer = Some(match held_record(tables, key, *token, now_ms)? {
                    None => Err(Error::LeaseLost),
                    Some(mut record) => {
                        let old = record.place();
                        let recovery = match (point.take(), &mut record.state) {
                            (Some(point), _) => Some(point),
                            (None, StoredState::InFlight { recovery, .. }) => recovery.take(),
                            (None, StoredState::Completed { .. }) => None,
                        };
                        let lease_until_ms = lease_from(&mut record, now_ms, *terms, recovery);
                        tables.put(key, Some(old), &mut record, 0)?;
                        Ok(Renewed { lease_until_ms })
                    }
                });
            }
            Request::Remove { key, reply } => {
                reply.answer = Some(Ok(match tables.read(key)? {
                    None => false,
                    Some(existing) => {
                        // A record that fails verification is removed too
                        // (that is how a damaged record is cleared); its
                        // expiry entry, if it cannot be found, is dropped by
                        // the next sweep.
                        let (old, live) = match existing {
                            Ok(record) => (Some(record.place()), !record.is_expired(now_ms)),
                            Err(_) => (None, true),
                        };
                        tables.delete(key, old)?;
                        live
                    }
                }));
            }
            Request::Sweep { limit, reply } => {
                let (deleted, more) = tables.sweep(*limit, now_ms)?;
                if deleted > 0 {
                    self.swept_at_ms = Some(now_ms);
                }
                reply.answer = Some(Ok(Swept { deleted, more }));
            }
            Request::Import { records, reply } => {
                reply.answer = Some(self.import(tables, records, now_ms)?);
            }
            // `Worker::run_batch` answers heals before a batch is applied,
            // so none reaches here; were one to, it writes nothing.
            Request::Heal { reply } => reply.answer = Some(Ok(())),
        }
        Ok(())
    }

    /// Claims `key` if the decision rule says so against the record as it is
    /// inside this transaction. The outer error fails the batch; the inner
    /// one (a damaged record) fails this claim only.
    pub(super) fn claim(
        &mut self,
        tables: &mut WriteTables<'_>,
        key: &Key,
        fingerprint: &Fingerprint,
        terms: ClaimTerms,
        now_ms: u64,
    ) -> Result<Result<Begin<Granted>>> {
        let stored = match tables.read(key)? {
            Some(Err(corrupted)) => return Ok(Err(corrupted)),
            Some(Ok(record)) => Some(record),
            None => None,
        };
        let old = stored
            .as_ref()
            .map(|r| (r.place(), r.created_at_ms, r.is_expired(now_ms)));
        // A takeover inherits the dead attempt's recovery point, and keeps it
        // for the next one should it die too before it records its own point.
        let inherited = match &stored {
            Some(StoredRecord {
                state: StoredState::InFlight { recovery, .. },
                ..
            }) => recovery.clone(),
            _ => None,
        };
        let intent = match decide(stored, fingerprint, now_ms).claim_or_answer() {
            Ok(intent) => intent,
            Err(answer) => return Ok(Ok(answer)),
        };
        let token = self.next_token();
        let created_at_ms = match old {
            // A takeover continues the same logical request.
            Some((_, created, false)) if intent.takeover => created,
            _ => now_ms,
        };
        let mut record = StoredRecord {
            scope: key.scope().to_string(),
            idempotency_key: key.idempotency_key().to_string(),
            fingerprint: *fingerprint.as_bytes(),
            token,
            created_at_ms,
            updated_at_ms: now_ms,
            // Both set below: the expiry by the lease, the sweep time by `put`.
            expires_at_ms: 0,
            sweep_at_ms: 0,
            state: StoredState::InFlight {
                lease_until_ms: 0,
                recovery: None,
            },
        };
        let recovered = if intent.takeover { inherited } else { None };
        let lease_until_ms = lease_from(&mut record, now_ms, terms, recovered.clone());
        tables.put(key, old.map(|(slot, _, _)| slot), &mut record, 0)?;
        Ok(Ok(Begin::Claimed(Granted {
            token,
            lease_until_ms,
            takeover: intent.takeover,
            recovered,
        })))
    }

    /// Writes imported records, all or none (the outer error fails the
    /// batch; the inner one refuses this import only, before it wrote
    /// anything). Tokens issued afterwards are larger than every imported
    /// one, so an imported in-flight claim's holder, if any, is fenced like
    /// any other.
    pub(super) fn import(
        &mut self,
        tables: &mut WriteTables<'_>,
        records: &[StoredRecord],
        now_ms: u64,
    ) -> Result<Result<Imported>> {
        let mut keyed = Vec::with_capacity(records.len());
        let mut seen = std::collections::HashSet::with_capacity(records.len());
        let mut skipped_expired = 0;
        for record in records {
            if record.is_expired(now_ms) {
                skipped_expired += 1;
                continue;
            }
            let key = match Key::new(&record.scope, &record.idempotency_key) {
                Ok(key) => key,
                Err(err) => return Ok(Err(err)),
            };
            if !seen.insert(*key.hash()) {
                return Ok(Err(Error::ImportConflict {
                    key: key.to_string(),
                }));
            }
            let old = match tables.read(&key)? {
                Some(Ok(existing)) if existing.is_expired(now_ms) => Some(existing.place()),
                Some(Ok(_)) | Some(Err(_)) => {
                    return Ok(Err(Error::ImportConflict {
                        key: key.to_string(),
                    }));
                }
                None => None,
            };
            keyed.push((key, old, record));
        }
        let mut highest_token = 0;
        for (key, old, record) in &keyed {
            tables.put(key, *old, &mut (*record).clone(), 0)?;
            highest_token = highest_token.max(record.token);
        }
        if highest_token > self.token_seq {
            self.token_seq = highest_token;
            if self.token_seq >= self.token_ceiling {
                self.token_ceiling = self.token_seq.saturating_add(TOKEN_BLOCK);
            }
        }
        Ok(Ok(Imported {
            imported: keyed.len() as u64,
            skipped_expired,
        }))
    }

    /// The next fencing token, reserving a new block when the current one is
    /// used up (the batch then persists the new ceiling).
    pub(super) fn next_token(&mut self) -> u64 {
        if self.token_seq >= self.token_ceiling {
            self.token_ceiling = self.token_seq.saturating_add(TOKEN_BLOCK);
        }
        self.token_seq += 1;
        self.token_seq
    }
}

/// Makes `record` in flight with a fresh lease and `recovery` as its
/// recovery point; an abandoned claim expires one retention period after its
/// lease ends.
pub(super) fn lease_from(
    record: &mut StoredRecord,
    now_ms: u64,
    terms: ClaimTerms,
    recovery: Option<RecoveryPoint>,
) -> u64 {
    let lease_until_ms = now_ms.saturating_add(terms.lease_ms);
    record.state = StoredState::InFlight {
        lease_until_ms,
        recovery,
    };
    record.updated_at_ms = now_ms;
    record.expires_at_ms = lease_until_ms.saturating_add(terms.retention_ms);
    lease_until_ms
}

/// The record of the claim with `token`, if it still holds the key: the one
/// test every holder operation passes or fails with `LeaseLost`.
pub(super) fn held_record(
    tables: &WriteTables<'_>,
    key: &Key,
    token: u64,
    now_ms: u64,
) -> Result<Option<StoredRecord>> {
    Ok(claim_record(tables, key, token)?.filter(|record| !record.is_expired(now_ms)))
}

/// The in-flight record of the claim with `token`, expired or not.
pub(super) fn claim_record(
    tables: &WriteTables<'_>,
    key: &Key,
    token: u64,
) -> Result<Option<StoredRecord>> {
    Ok(match tables.read(key)? {
        Some(Ok(record))
            if record.token == token && matches!(record.state, StoredState::InFlight { .. }) =>
        {
            Some(record)
        }
        _ => None,
    })
}

/// Whether `key` has a record that is not expired (a damaged one counts as
/// live: it is not this holder's to judge).
pub(super) fn has_live_record(tables: &WriteTables<'_>, key: &Key, now_ms: u64) -> Result<bool> {
    Ok(match tables.read(key)? {
        None => false,
        Some(Ok(record)) => !record.is_expired(now_ms),
        Some(Err(_)) => true,
    })
}

/// When `key`'s live record is the completion of the claim with `token`,
/// with exactly `response`: its expiry. So a completion repeated after one
/// that landed (its answer lost to a failed sync, a heal, a dropped reply)
/// is success, not `LeaseLost`. Any other state, token or response is not
/// this completion.
pub(super) fn landed_completion(
    tables: &WriteTables<'_>,
    key: &Key,
    token: u64,
    response: &StoredResponse,
    now_ms: u64,
) -> Result<Option<u64>> {
    Ok(match tables.read(key)? {
        Some(Ok(record))
            if record.token == token
                && !record.is_expired(now_ms)
                && matches!(&record.state, StoredState::Completed { response: stored } if stored == response) =>
        {
            Some(record.expires_at_ms)
        }
        _ => None,
    })
}
