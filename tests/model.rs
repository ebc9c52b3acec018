//! Random operation sequences against a small reference model of the rules.
//!
//! The model is a map from key to record with the states of the design:
//! in flight (token, lease end) or completed (response), each with an expiry
//! time. Every answer of the store is checked against it, including exact
//! `retry_after` values and replayed bytes, across clock jumps, sweeps and
//! reopening the file.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use idemkv::{Begin, Claim, Config, Error, ManualClock, Store, StoredResponse};
use proptest::prelude::*;

const KEYS: usize = 3;
const LEASE_MS: u64 = 1_000;
const RETENTION_MS: u64 = 5_000;

#[derive(Clone, Debug)]
enum Step {
    Begin { key: usize, payload: usize },
    Complete { claim: usize },
    Release { claim: usize },
    Renew { claim: usize },
    DropClaim { claim: usize },
    Advance { ms: u64 },
    Get { key: usize },
    Remove { key: usize },
    Sweep,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..KEYS, 0..2usize).prop_map(|(key, payload)| Step::Begin { key, payload }),
        3 => (0..4usize).prop_map(|claim| Step::Complete { claim }),
        1 => (0..4usize).prop_map(|claim| Step::Release { claim }),
        1 => (0..4usize).prop_map(|claim| Step::Renew { claim }),
        1 => (0..4usize).prop_map(|claim| Step::DropClaim { claim }),
        3 => prop::sample::select(vec![1u64, 10, 400, 999, 1_000, 3_000, 4_999, 6_000])
            .prop_map(|ms| Step::Advance { ms }),
        1 => (0..KEYS).prop_map(|key| Step::Get { key }),
        1 => (0..KEYS).prop_map(|key| Step::Remove { key }),
        1 => Just(Step::Sweep),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    InFlight { lease_until: u64 },
    Completed { response: StoredResponse },
}

#[derive(Clone, Debug)]
struct ModelRecord {
    payload: usize,
    token: u64,
    expires_at: u64,
    state: State,
}

struct Model {
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

struct Harness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    config: Config,
    clock: ManualClock,
    store: Option<Store>,
    /// Live claims: (key index, payload index, claim).
    claims: Vec<(usize, usize, Claim)>,
    model: Model,
    responses: u64,
}

impl Harness {
    fn new(cache_bytes: usize) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.redb");
        let clock = ManualClock::default();
        let config = Config::default()
            .clock(clock.clone())
            .lease(Duration::from_millis(LEASE_MS))
            .retention(Duration::from_millis(RETENTION_MS))
            .cache_bytes(cache_bytes)
            .sweep_interval(None);
        let store = Some(Store::open(&path, config.clone()).expect("open"));
        let start = clock_ms(&clock);
        Harness {
            _dir: dir,
            path,
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
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open between steps")
    }

    fn run(&mut self, step: &Step) {
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
                        self.record_claim(k, payload, claim, now);
                    }
                    (Some(r), Begin::Mismatch) => assert_ne!(r.payload, payload),
                    (Some(r), Begin::Replay(response)) => {
                        assert_eq!(r.payload, payload);
                        assert_eq!(r.state, State::Completed { response });
                    }
                    (Some(r), Begin::InProgress { retry_after }) => {
                        assert_eq!(r.payload, payload);
                        let State::InFlight { lease_until } = r.state else {
                            panic!("InProgress for a completed record");
                        };
                        assert!(lease_until > now);
                        assert_eq!(retry_after, Duration::from_millis(lease_until - now));
                    }
                    (Some(r), Begin::Claimed(claim)) => {
                        assert_eq!(r.payload, payload, "takeover with another payload");
                        assert!(
                            matches!(r.state, State::InFlight { lease_until } if lease_until <= now)
                        );
                        assert!(claim.is_takeover());
                        let created = self.record_claim(k, payload, claim, now);
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
                    self.model.records.insert(
                        k,
                        ModelRecord {
                            payload,
                            token: self.model.records[&k].token,
                            expires_at: now + RETENTION_MS,
                            state: State::Completed { response },
                        },
                    );
                } else {
                    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
                }
            }
            Step::Release { claim } => {
                let Some((k, _, claim)) = self.take_claim(claim) else {
                    return;
                };
                let held = self.model.held(k, claim.token());
                let result = self.store().release(claim);
                if held {
                    result.expect("holder releases");
                    self.model.records.remove(&k);
                } else {
                    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
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
                    record.state = State::InFlight {
                        lease_until: now + LEASE_MS,
                    };
                    record.expires_at = now + LEASE_MS + RETENTION_MS;
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
                            State::InFlight { lease_until } => {
                                assert_eq!(
                                    record.lease_until().map(ms_since_epoch),
                                    Some(*lease_until)
                                )
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
                self.model.records.retain(|_, r| r.expires_at > now);
                assert_eq!(swept, (before - self.model.records.len()) as u64);
            }
            Step::Reopen => {
                // The process "dies": claims vanish without completing, their
                // records stay in flight.
                self.claims.clear();
                self.store = None;
                self.store = Some(Store::open(&self.path, self.config.clone()).expect("reopen"));
            }
        }
    }

    /// Adds a claim the store just granted to the model; returns its token.
    fn record_claim(&mut self, k: usize, payload: usize, claim: Claim, now: u64) -> u64 {
        let token = claim.token();
        assert!(token > self.model.highest_token, "tokens only grow");
        self.model.highest_token = token;
        self.model.records.insert(
            k,
            ModelRecord {
                payload,
                token,
                expires_at: now + LEASE_MS + RETENTION_MS,
                state: State::InFlight {
                    lease_until: now + LEASE_MS,
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(
        steps in prop::collection::vec(step(), 1..60),
        // Off, about one entry per shard (constant eviction), and the default.
        cache_bytes in prop::sample::select(vec![0usize, 64 * 200, 64 << 20]),
    ) {
        let mut harness = Harness::new(cache_bytes);
        for step in &steps {
            harness.run(step);
        }
        // Whatever happened, the final state is readable and consistent.
        for k in 0..KEYS {
            harness.run(&Step::Get { key: k });
        }
    }
}
