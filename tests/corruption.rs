//! Damaged files: bytes flipped or zeroed anywhere in a closed store file must
//! lead to an error (at open or on the affected records), never a panic, and
//! never a replay of wrong bytes.
//!
//! Every pattern is tried twice: with a plain open, and with
//! `Config::verify_on_open`, which refuses damaged files. The run is
//! deterministic: the pristine file is written on a manual clock, the damage
//! comes from a fixed seed and keys are looked up in a fixed order, so the
//! counts printed (and published in docs/reliability.md) reproduce.
//!
//! `IDEMKV_DAMAGE_PATTERNS=N` runs N patterns instead of the default 250.
//! `IDEMKV_DAMAGE_QUICK_REPAIR=off` writes and opens the files without
//! `Config::quick_repair` (whose allocator-state records change the file's
//! layout, and so what each pattern hits): with it on, pattern 1458 makes
//! redb panic inside a destructor while it unwinds, which aborts the
//! process (docs/reliability.md); the default 250 stay clear of it.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use common::*;
use idemkv::{Begin, Config, Error, Key, ManualClock, Store, StoredResponse};

const COMPLETED: usize = 150;

/// Each completed key's name and the response it must replay, in a fixed
/// order.
type Expected = BTreeMap<String, StoredResponse>;
const IN_FLIGHT: usize = 10;

/// The one configuration of every open: a manual clock at the same instant
/// (so the pristine file's bytes, and its leases, are the same every run).
fn config(verify_on_open: bool) -> Config {
    let quick_repair = std::env::var("IDEMKV_DAMAGE_QUICK_REPAIR").map_or(true, |v| v != "off");
    Config::default()
        .clock(ManualClock::default())
        .sweep_interval(None)
        .verify_on_open(verify_on_open)
        .quick_repair(quick_repair)
}

/// xorshift64*, so every run damages the same places.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    patterns: usize,
    refused_at_open: usize,
    /// Lookups of completed keys in files that opened.
    lookups: usize,
    exact_replays: usize,
    record_errors: usize,
    /// Completed records the damaged index no longer finds: answered as a
    /// fresh key, never as wrong bytes (a silent re-claim).
    unreachable: usize,
    /// In-flight records still answered in progress.
    in_flight_kept: usize,
    /// In-flight records the damaged index no longer finds.
    in_flight_unreachable: usize,
}

fn pristine(dir: &std::path::Path) -> Result<(Vec<u8>, Expected), Box<dyn std::error::Error>> {
    let path = dir.join("pristine.redb");
    let mut expected = BTreeMap::new();
    {
        let store = Store::open(&path, config(false))?;
        for i in 0..COMPLETED {
            let k = key(&format!("done-{i}"));
            let body = StoredResponse::new(200, format!("response body number {i} ").repeat(8))
                .with_header("x-n", i.to_string());
            store.complete(claimed(store.begin(&k, fp("p"))?), body.clone())?;
            expected.insert(format!("done-{i}"), body);
        }
        for i in 0..IN_FLIGHT {
            std::mem::forget(claimed(store.begin(&key(&format!("flying-{i}")), fp("p"))?));
        }
    }
    Ok((std::fs::read(&path)?, expected))
}

fn damage(bytes: &mut [u8], rng: &mut Rng) -> &'static str {
    match rng.below(4) {
        0 => {
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
            "one bit flipped"
        }
        1 => {
            for _ in 0..8 {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            "eight random bytes"
        }
        2 => {
            let page = rng.below(bytes.len() / 4096) * 4096;
            bytes[page..page + 4096].fill(0);
            "a 4 KiB page zeroed"
        }
        _ => {
            let start = rng.below(bytes.len() - 64);
            for b in &mut bytes[start..start + 64] {
                *b = rng.next() as u8;
            }
            "a 64-byte burst"
        }
    }
}

/// A lookup that failed: only the errors of damage are allowed.
fn record_error(name: &str, err: &Error, outcomes: &mut Outcomes) {
    assert!(
        matches!(
            err,
            Error::Corrupted { .. } | Error::Storage(_) | Error::Poisoned { .. }
        ),
        "{name}: unexpected {err:?}"
    );
    outcomes.record_errors += 1;
}

fn check_damaged(
    path: &std::path::Path,
    expected: &Expected,
    verify_on_open: bool,
    outcomes: &mut Outcomes,
) {
    let store = match Store::open(path, config(verify_on_open)) {
        Ok(store) => store,
        Err(err) => {
            assert!(
                matches!(
                    err,
                    Error::Corrupted { .. }
                        | Error::Storage(_)
                        | Error::NotAStore { .. }
                        | Error::UnsupportedVersion { .. }
                ),
                "unexpected open error {err:?}"
            );
            outcomes.refused_at_open += 1;
            return;
        }
    };
    for (name, body) in expected {
        let k: Key = key(name);
        outcomes.lookups += 1;
        match store.begin(&k, fp("p")) {
            Ok(Begin::Replay(stored)) => {
                assert_eq!(&stored, body, "{name}: a damaged file replayed wrong bytes");
                outcomes.exact_replays += 1;
            }
            Ok(Begin::Claimed(claim)) => {
                outcomes.unreachable += 1;
                drop(claim);
            }
            Ok(other) => panic!("{name}: a completed record answered {other:?}"),
            Err(err) => record_error(name, &err, outcomes),
        }
    }
    for i in 0..IN_FLIGHT {
        let name = format!("flying-{i}");
        match store.begin(&key(&name), fp("p")) {
            Ok(Begin::InProgress { .. }) => outcomes.in_flight_kept += 1,
            Ok(Begin::Claimed(_)) => outcomes.in_flight_unreachable += 1,
            Ok(other) => panic!("{name}: an in-flight record answered {other:?}"),
            Err(err) => record_error(&name, &err, outcomes),
        }
    }
}

#[test]
fn damaged_files_never_panic_and_never_replay_wrong_bytes() -> TestResult {
    let patterns: usize = std::env::var("IDEMKV_DAMAGE_PATTERNS")
        .ok()
        .and_then(|v| v.parse().ok())
        // 250 by default: pattern 207 (of this file layout) made a failed
        // open panic while closing the damaged database.
        .unwrap_or(250);
    let dir = tempfile::tempdir()?;
    let (bytes, expected) = pristine(dir.path())?;
    let mut rng = Rng(0x5EED_1DE4_4B1E_u64);
    let mut plain = Outcomes::default();
    let mut checked = Outcomes::default();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for n in 0..patterns {
        let mut damaged = bytes.clone();
        *kinds.entry(damage(&mut damaged, &mut rng)).or_default() += 1;
        let path = dir.path().join(format!("damaged-{n}.redb"));
        for (verify_on_open, outcomes) in [(false, &mut plain), (true, &mut checked)] {
            // Each open gets the damaged bytes as they were: lookups write.
            std::fs::write(&path, &damaged)?;
            let result = catch_unwind(AssertUnwindSafe(|| {
                check_damaged(&path, &expected, verify_on_open, outcomes)
            }));
            assert!(
                result.is_ok(),
                "pattern {n} panicked (verify_on_open {verify_on_open})"
            );
            outcomes.patterns += 1;
        }
        std::fs::remove_file(&path)?;
    }
    println!("damage patterns: {kinds:?}");
    println!("outcomes, plain open: {plain:?}");
    println!("outcomes, verify_on_open: {checked:?}");
    for (what, outcomes) in [("plain", &plain), ("verify_on_open", &checked)] {
        // Most damage lands where no record lives: most lookups replay. A
        // store that cannot find its records fails here.
        assert!(
            outcomes.exact_replays * 2 > outcomes.lookups,
            "{what}: only {} of {} lookups replayed",
            outcomes.exact_replays,
            outcomes.lookups
        );
        // Silent re-claims stay rare (0.06% in the published run).
        assert!(
            outcomes.unreachable * 100 <= outcomes.lookups,
            "{what}: {} of {} lookups were answered as new keys",
            outcomes.unreachable,
            outcomes.lookups
        );
        assert!(outcomes.in_flight_kept * 2 > outcomes.patterns - outcomes.refused_at_open);
    }
    // The check at open refuses at least what a plain open refuses, and
    // lets no more silent re-claims through.
    assert!(checked.refused_at_open >= plain.refused_at_open);
    assert!(checked.unreachable <= plain.unreachable);
    Ok(())
}
