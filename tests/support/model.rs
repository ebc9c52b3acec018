//! The reference model of the store's rules and a harness that checks a store
//! against it, one step at a time. Shared by the proptest model test
//! (`tests/model.rs`) and the operation-sequence fuzz target
//! (`fuzz/fuzz_targets/operations.rs`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use idemkv::{Begin, Claim, Config, Error, Fingerprint, Key, ManualClock, Store, StoredResponse};

pub const KEYS: usize = 3;
pub const LEASE_MS: u64 = 1_000;
pub const RETENTION_MS: u64 = 5_000;
/// Wall-clock steps: within a lease, past a lease, past retention.
pub const CLOCK_STEPS_MS: [u64; 4] = [500, 1_500, 6_000, 3_600_000];

pub fn key(name: &str) -> Key {
    Key::new("model", name).expect("model keys are valid")
}

pub fn fp(payload: &str) -> Fingerprint {
    Fingerprint::of(payload.as_bytes())
}

/// Decodes one step from two bytes, for the fuzz target.
pub fn step_from_bytes(op: u8, arg: u8) -> Step {
    let claim = usize::from(arg % 4);
    let key = usize::from(arg) % KEYS;
    match op % 21 {
        0..=5 => Step::Begin {
            key,
            payload: usize::from(arg / 128),
        },
        6..=8 => Step::Complete { claim },
        9 => Step::Release { claim },
        10 => Step::Renew { claim },
        11 => Step::DropClaim { claim },
        12..=14 => Step::Advance {
            ms: [1, 10, 400, 999, 1_000, 3_000, 4_999, 6_000][usize::from(arg % 8)],
        },
        15 => Step::Get { key },
        16 => Step::Remove { key },
        17 => Step::Sweep,
        18 => Step::WallClockJump {
            back: arg & 1 == 1,
            ms: CLOCK_STEPS_MS[usize::from(arg / 2) % CLOCK_STEPS_MS.len()],
        },
        19 => Step::RecordProgress { claim },
        _ => Step::Reopen,
    }
}

/// A redb storage backend in memory that survives the `Store` using it, so
/// the harness can "reopen" without touching a disk.
#[derive(Clone, Debug, Default)]
pub struct SharedMemory(Arc<RwLock<Vec<u8>>>);

impl idemkv::StorageBackend for SharedMemory {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.read().unwrap_or_else(PoisonError::into_inner).len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let start = offset as usize;
        let source = bytes.get(start..start + out.len()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "read past the end")
        })?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut bytes = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// Where the harness keeps the store's bytes.
pub enum Backing {
    /// A real file in a scratch directory.
    File(tempfile::TempDir),
    /// Memory that outlives each `Store`.
    Memory(SharedMemory),
}

#[derive(Clone, Debug)]
pub enum Step {
    Begin {
        key: usize,
        payload: usize,
    },
    Complete {
        claim: usize,
    },
    Release {
        claim: usize,
    },
    Renew {
        claim: usize,
    },
    /// Records a recovery point (its phase names the step's number).
    RecordProgress {
        claim: usize,
    },
    DropClaim {
        claim: usize,
    },
    Advance {
        ms: u64,
    },
    Get {
        key: usize,
    },
    Remove {
        key: usize,
    },
    Sweep,
    Reopen,
    /// The wall clock is stepped (NTP, an operator) without time passing.
    WallClockJump {
        back: bool,
        ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// `recovery` is the phase of the holder's (or an earlier holder's)
    /// last recovery point.
    InFlight {
        lease_until: u64,
        recovery: Option<String>,
    },
    Completed {
        response: StoredResponse,
    },
}

#[derive(Clone, Debug)]
pub struct ModelRecord {
    payload: usize,
    token: u64,
    expires_at: u64,
    /// When a sweep deletes it (never before `expires_at`).
    sweep_at: u64,
    state: State,
}

/// The sweep time of a record written with `expires_at` over `old`: the old
/// record's, when that comes no earlier and at most `linger` later (a
/// completion may keep its claim's, up to 1/16 of the retention after its
/// own expiry), else its own expiry.
fn sweep_time(old: Option<&ModelRecord>, expires_at: u64, linger: u64) -> u64 {
    match old {
        Some(old) if old.sweep_at >= expires_at && old.sweep_at - expires_at <= linger => {
            old.sweep_at
        }
        _ => expires_at,
    }
}

/// How long after its expiry a completion may stay until the sweep.
const COMPLETION_LINGER_MS: u64 = RETENTION_MS / 16;

pub struct Model {
    now: u64,
    records: HashMap<usize, ModelRecord>,
    highest_token: u64,
}

impl Model {
    fn live(&self, key: usize) -> Option<&ModelRecord> {
        self.records.get(&key).filter(|r| r.expires_at > self.now)
    }

    /// The record `claim` still holds, if any.
    fn held(&self, key: usize, token: u64) -> bool {
        matches!(self.live(key), Some(r) if r.token == token && matches!(r.state, State::InFlight { .. }))
    }
}

pub struct Harness {
    backing: Backing,
    config: Config,
    clock: ManualClock,
    store: Option<Store>,
    /// Live claims: (key index, payload index, claim).
    claims: Vec<(usize, usize, Claim)>,
    model: Model,
    responses: u64,
    recovery_points: u64,
}

impl Harness {
    /// A harness over a real file (`in_memory` false) or shared memory; a
    /// file store with or without the write-ahead journal.
    pub fn new(cache_bytes: usize, in_memory: bool, journal: bool) -> Harness {
        let backing = if in_memory {
            Backing::Memory(SharedMemory::default())
        } else {
            Backing::File(tempfile::tempdir().expect("tempdir"))
        };
        let clock = ManualClock::default();
        let config = Config::default()
            .clock(clock.clone())
            .lease(Duration::from_millis(LEASE_MS))
            .retention(Duration::from_millis(RETENTION_MS))
            .cache_bytes(cache_bytes)
            .sweep_interval(None)
            .journal(journal);
        let store = Some(open(&backing, &config));
        let start = clock_ms(&clock);
        Harness {
            backing,
            config,
            clock,
            store,
            claims: Vec::new(),
            model: Model {
                now: start,
                records: HashMap::new(),
                highest_token: 0,
            },
            responses: 0,
            recovery_points: 0,
        }
    }

    /// Brings the store back to an empty one, as a new harness would have:
    /// every claim dropped and every key removed (the clock and the token
    /// sequence go on, which the model follows).
    pub fn reset(&mut self) {
        self.claims.clear();
        for k in 0..KEYS {
            self.store()
                .remove(&key(&format!("k{k}")))
                .expect("remove during reset");
        }
        self.model.records.clear();
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open between steps")
    }

    pub fn run(&mut self, step: &Step) {
        let now = self.model.now;
        match *step {
            Step::Begin { key: k, payload } => {
                let answer = self
                    .store()
                    .begin(&key(&format!("k{k}")), fp(&format!("p{payload}")));
                let answer = answer.expect("begin never fails here");
                let expected = self.model.live(k).cloned();
                match (expected, answer) {
                    (None, Begin::Claimed(claim)) => {
                        assert!(!claim.is_takeover());
                        assert_eq!(claim.recovered(), None);
                        self.record_claim(k, payload, claim, now, None);
                    }
                    (Some(r), Begin::Mismatch) => assert_ne!(r.payload, payload),
                    (Some(r), Begin::Replay(response)) => {
                        assert_eq!(r.payload, payload);
                        assert_eq!(r.state, State::Completed { response });
                    }
                    (Some(r), Begin::InProgress { retry_after }) => {
                        assert_eq!(r.payload, payload);
                        let State::InFlight { lease_until, .. } = r.state else {
                            panic!("InProgress for a completed record");
                        };
                        assert!(lease_until > now);
                        assert_eq!(retry_after, Duration::from_millis(lease_until - now));
                    }
                    (Some(r), Begin::Claimed(claim)) => {
                        assert_eq!(r.payload, payload, "takeover with another payload");
                        let State::InFlight {
                            lease_until,
                            recovery,
                        } = r.state
                        else {
                            panic!("a completed record was taken over");
                        };
                        assert!(lease_until <= now);
                        assert!(claim.is_takeover());
                        // The takeover inherits the last recovery point.
                        assert_eq!(claim.recovered().map(|p| p.phase()), recovery.as_deref());
                        let created = self.record_claim(k, payload, claim, now, recovery);
                        assert!(created > r.token);
                    }
                    (expected, answer) => panic!("model {expected:?}, store {answer:?}"),
                }
            }
            Step::Complete { claim } => {
                let Some((k, payload, claim)) = self.take_claim(claim) else {
                    return;
                };
                let held = self.model.held(k, claim.token());
                self.responses += 1;
                let response = StoredResponse::new(200, format!("response {}", self.responses))
                    .with_header("n", self.responses.to_string());
                let result = self.store().complete(claim, response.clone());
                if held {
                    result.expect("holder completes");
                    let old = &self.model.records[&k];
                    let expires_at = now + RETENTION_MS;
                    self.model.records.insert(
                        k,
                        ModelRecord {
                            payload,
                            token: old.token,
                            expires_at,
                            sweep_at: sweep_time(Some(old), expires_at, COMPLETION_LINGER_MS),
                            state: State::Completed { response },
                        },
                    );
                } else {
                    assert!(
                        matches!(
                            result.as_ref().map_err(|e| e.error()),
                            Err(Error::LeaseLost)
                        ),
                        "{result:?}"
                    );
                }
            }
            Step::Release { claim } => {
                let Some((k, _, claim)) = self.take_claim(claim) else {
                    return;
                };
                let held = self.model.held(k, claim.token());
                // The claim's own record, live or expired: a release
                // deletes it either way.
                let own = self.model.records.get(&k).is_some_and(|r| {
                    r.token == claim.token() && matches!(r.state, State::InFlight { .. })
                });
                let result = self.store().release(claim);
                if held || own {
                    result.expect("holder releases");
                    self.model.records.remove(&k);
                } else if self.model.live(k).is_none() {
                    // Nothing live to release: the key is free, as asked.
                    result.expect("a release with nothing left to release");
                } else {
                    assert!(
                        matches!(
                            result.as_ref().map_err(|e| e.error()),
                            Err(Error::LeaseLost)
                        ),
                        "{result:?}"
                    );
                }
            }
            Step::Renew { claim } => {
                let Some((k, _, claim)) = self.claims.get(claim) else {
                    return;
                };
                let held = self.model.held(*k, claim.token());
                let result = self.store().renew(claim);
                if held {
                    result.expect("holder renews");
                    let record = self.model.records.get_mut(k).expect("held");
                    if let State::InFlight { lease_until, .. } = &mut record.state {
                        *lease_until = now + LEASE_MS;
                    }
                    record.expires_at = now + LEASE_MS + RETENTION_MS;
                    record.sweep_at = sweep_time(Some(record), record.expires_at, 0);
                } else {
                    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
                }
            }
            Step::RecordProgress { claim } => {
                let Some((k, _, claim)) = self.claims.get(claim) else {
                    return;
                };
                let held = self.model.held(*k, claim.token());
                self.recovery_points += 1;
                let phase = format!("step_{}", self.recovery_points);
                let result =
                    self.store()
                        .record_progress(claim, &phase, phase.clone().into_bytes());
                if held {
                    result.expect("holder records progress");
                    let record = self.model.records.get_mut(k).expect("held");
                    record.state = State::InFlight {
                        lease_until: now + LEASE_MS,
                        recovery: Some(phase),
                    };
                    record.expires_at = now + LEASE_MS + RETENTION_MS;
                    record.sweep_at = sweep_time(Some(record), record.expires_at, 0);
                } else {
                    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
                }
            }
            Step::DropClaim { claim } => {
                self.take_claim(claim);
            }
            Step::Advance { ms } => {
                self.clock.advance(Duration::from_millis(ms));
                self.model.now += ms;
            }
            Step::Get { key: k } => {
                let record = self.store().get(&key(&format!("k{k}"))).expect("get");
                match (self.model.live(k), record) {
                    (None, None) => {}
                    (Some(expected), Some(record)) => {
                        assert_eq!(record.token(), expected.token);
                        assert_eq!(record.fingerprint(), fp(&format!("p{}", expected.payload)));
                        assert_eq!(ms_since_epoch(record.expires_at()), expected.expires_at);
                        match &expected.state {
                            State::InFlight {
                                lease_until,
                                recovery,
                            } => {
                                assert_eq!(
                                    record.lease_until().map(ms_since_epoch),
                                    Some(*lease_until)
                                );
                                let point = record.recovery_point();
                                assert_eq!(point.map(|p| p.phase()), recovery.as_deref());
                                assert_eq!(
                                    point.map(|p| p.state()),
                                    recovery.as_deref().map(str::as_bytes)
                                );
                            }
                            State::Completed { response } => {
                                assert_eq!(record.response(), Some(response))
                            }
                        }
                    }
                    (expected, record) => panic!("model {expected:?}, store {record:?}"),
                }
            }
            Step::Remove { key: k } => {
                let removed = self.store().remove(&key(&format!("k{k}"))).expect("remove");
                assert_eq!(removed, self.model.live(k).is_some());
                self.model.records.remove(&k);
            }
            Step::Sweep => {
                let swept = self.store().sweep_expired().expect("sweep");
                let before = self.model.records.len();
                let now = self.model.now;
                self.model.records.retain(|_, r| r.sweep_at > now);
                assert_eq!(swept, (before - self.model.records.len()) as u64);
                self.check_file();
            }
            Step::Reopen => {
                // The process "dies": claims vanish without completing, their
                // records stay in flight.
                self.claims.clear();
                self.store = None;
                self.store = Some(open(&self.backing, &self.config));
                // A new process takes its time from the wall clock, steps
                // included; an open store never does.
                self.model.now = clock_ms(&self.clock);
                self.check_file();
            }
            Step::WallClockJump { back, ms } => {
                let by = Duration::from_millis(ms);
                if back {
                    self.clock.step_back(by);
                } else {
                    self.clock.step_forward(by);
                }
            }
        }
    }

    /// Compares the file with the model: exactly the model's records are
    /// stored (expired ones included until a sweep deletes them), in flight
    /// or completed as the model says, and the file is consistent.
    fn check_file(&self) {
        let report = self.store().verify().expect("verify");
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(
            report.records,
            self.model.records.len() as u64,
            "{report:?}"
        );
        let in_flight = self
            .model
            .records
            .values()
            .filter(|r| matches!(r.state, State::InFlight { .. }))
            .count();
        assert_eq!(report.in_flight, in_flight as u64, "{report:?}");
        assert_eq!(self.store().metrics().live_records, report.records);
    }

    /// Adds a claim the store just granted to the model, with the recovery
    /// point it inherited; returns its token.
    fn record_claim(
        &mut self,
        k: usize,
        payload: usize,
        claim: Claim,
        now: u64,
        recovery: Option<String>,
    ) -> u64 {
        let token = claim.token();
        assert!(token > self.model.highest_token, "tokens only grow");
        self.model.highest_token = token;
        let expires_at = now + LEASE_MS + RETENTION_MS;
        let sweep_at = sweep_time(self.model.records.get(&k), expires_at, 0);
        self.model.records.insert(
            k,
            ModelRecord {
                payload,
                token,
                expires_at,
                sweep_at,
                state: State::InFlight {
                    lease_until: now + LEASE_MS,
                    recovery,
                },
            },
        );
        self.claims.push((k, payload, claim));
        token
    }

    fn take_claim(&mut self, index: usize) -> Option<(usize, usize, Claim)> {
        (index < self.claims.len()).then(|| self.claims.remove(index))
    }
}

fn clock_ms(clock: &ManualClock) -> u64 {
    ms_since_epoch(idemkv::Clock::now(clock))
}

fn ms_since_epoch(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_millis() as u64
}

fn open(backing: &Backing, config: &Config) -> Store {
    match backing {
        Backing::File(dir) => Store::open(dir.path().join("model.redb"), config.clone()),
        Backing::Memory(memory) => Store::with_backend(memory.clone(), config.clone()),
    }
    .expect("the store opens")
}
