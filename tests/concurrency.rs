//! Many threads, one store: at most one live claim per key, and group commit
//! keeps every caller's answer exact.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use idemkv::{Begin, Config, Store, StoredResponse, Terms};

const THREADS: usize = 16;

/// Runs `f(thread index)` on `n` threads released together by a barrier and
/// returns their results in thread order.
fn race<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Result<Vec<T>, Box<dyn std::error::Error>> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                f(t)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "thread panicked".into()))
        .collect()
}

#[test]
fn one_key_many_threads_exactly_one_claim() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("one-key.redb"), Config::default())?;
    for round in 0..20 {
        let k = key(&format!("contended-{round}"));
        let answers = race(THREADS, {
            let (store, k) = (store.clone(), k.clone());
            move |_| store.begin(&k, fp("same"))
        })?;
        let mut claims = Vec::new();
        for answer in answers {
            match answer? {
                Begin::Claimed(claim) => claims.push(claim),
                Begin::InProgress { .. } => {}
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(claims.len(), 1, "round {round}: exactly one winner");
        let winner = claims.pop().ok_or("no winner")?;
        store.complete(winner, response(&format!("winner-{round}")))?;
        assert_eq!(
            replayed(store.begin(&k, fp("same"))?),
            response(&format!("winner-{round}"))
        );
    }
    Ok(())
}

#[test]
fn many_keys_many_threads_every_answer_is_its_own() -> TestResult {
    let dir = tempfile::tempdir()?;
    // No background sweeper: the commit counts below belong to this test's
    // operations alone, with no timer able to move them.
    let store = Store::open(
        dir.path().join("many-keys.redb"),
        Config::default().sweep_interval(None),
    )?;
    const PER_THREAD: usize = 50;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || -> Result<(), idemkv::Error> {
                for i in 0..PER_THREAD {
                    let k = key(&format!("t{t}-k{i}"));
                    let claim = claimed(store.begin(&k, fp(&format!("{t}/{i}")))?);
                    store.complete(claim, response(&format!("{t}/{i}")))?;
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "thread panicked")??;
    }
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            let k = key(&format!("t{t}-k{i}"));
            let answer = replayed(store.begin(&k, fp(&format!("{t}/{i}")))?);
            assert_eq!(answer, response(&format!("{t}/{i}")));
        }
    }
    let m = store.metrics();
    let ops = (THREADS * PER_THREAD * 2) as u64;
    assert_eq!(
        m.committed_ops, ops,
        "every claim and completion committed once"
    );
    assert_eq!(m.claims, (THREADS * PER_THREAD) as u64);
    assert_eq!(m.completions, (THREADS * PER_THREAD) as u64);
    assert_eq!(m.replays, (THREADS * PER_THREAD) as u64);
    Ok(())
}

#[test]
fn every_waiter_gets_the_winners_response() -> TestResult {
    let store = Store::in_memory(Config::default())?;
    for round in 0..10 {
        let k = key(&format!("hot-{round}"));
        let answers = race(THREADS, {
            let store = store.clone();
            move |t| -> Result<(bool, StoredResponse), idemkv::Error> {
                match store.begin_with(
                    &k,
                    fp("hot"),
                    Terms::default().wait(Duration::from_secs(60)),
                )? {
                    Begin::Claimed(claim) => {
                        // Give the others time to park behind the claim.
                        thread::sleep(Duration::from_millis(5));
                        let body = response(&format!("round {round} won by {t}"));
                        store.complete(claim, body.clone())?;
                        Ok((true, body))
                    }
                    Begin::Replay(body) => Ok((false, body)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        })?;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer?);
        }
        let winners: Vec<_> = results.iter().filter(|(won, _)| *won).collect();
        assert_eq!(winners.len(), 1, "round {round}");
        let winning_body = &winners[0].1;
        assert!(results.iter().all(|(_, body)| body == winning_body));
    }
    Ok(())
}

#[test]
fn takeover_races_have_one_winner() -> TestResult {
    let (config, clock) = manual_config();
    let store = Store::in_memory(config)?;
    for round in 0..20 {
        let k = key(&format!("takeover-{round}"));
        let original = claimed(store.begin(&k, fp("a"))?);
        clock.advance(LEASE);
        let answers = race(THREADS, {
            let (store, k) = (store.clone(), k.clone());
            move |_| store.begin(&k, fp("a"))
        })?;
        let mut claims = Vec::new();
        for answer in answers {
            if let Begin::Claimed(claim) = answer? {
                claims.push(claim);
            }
        }
        assert_eq!(claims.len(), 1, "round {round}: one takeover");
        let winner = claims.pop().ok_or("no winner")?;
        assert!(winner.is_takeover() && winner.token() > original.token());
        let err = store
            .complete(original, response("stale"))
            .expect_err("fenced");
        assert!(matches!(err.error(), idemkv::Error::LeaseLost), "{err:?}");
        store.complete(winner, response("fresh"))?;
        assert_eq!(replayed(store.begin(&k, fp("a"))?), response("fresh"));
    }
    Ok(())
}

/// Many threads on few keys: per key exactly one winner, and every other
/// caller (waiting or retrying) ends with the winner's response.
/// `IDEMKV_STRESS_ROUNDS=N` runs more rounds (default 40).
#[test]
fn stress_few_keys_one_winner_each() -> TestResult {
    const KEYS: usize = 4;
    const CALLERS: usize = 32;
    let rounds: usize = std::env::var("IDEMKV_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("stress.redb"), Config::default())?;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(CALLERS));
        let handles: Vec<_> = (0..CALLERS)
            .map(|t| {
                let (store, barrier) = (store.clone(), Arc::clone(&barrier));
                thread::spawn(
                    move || -> Result<(usize, bool, StoredResponse), idemkv::Error> {
                        let k = key(&format!("stress-{round}-{}", t % KEYS));
                        barrier.wait();
                        // Half the callers wait, half poll like an impatient client.
                        let answer = if t % 2 == 0 {
                            store.begin_with(
                                &k,
                                fp("same"),
                                Terms::default().wait(Duration::from_secs(60)),
                            )?
                        } else {
                            loop {
                                match store.begin(&k, fp("same"))? {
                                    Begin::InProgress { .. } => thread::yield_now(),
                                    other => break other,
                                }
                            }
                        };
                        match answer {
                            Begin::Claimed(claim) => {
                                let body =
                                    response(&format!("round {round} key {} won by {t}", t % KEYS));
                                store.complete(claim, body.clone())?;
                                Ok((t % KEYS, true, body))
                            }
                            Begin::Replay(body) => Ok((t % KEYS, false, body)),
                            other => panic!("unexpected {other:?}"),
                        }
                    },
                )
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.join().map_err(|_| "caller panicked")??);
        }
        for k in 0..KEYS {
            let of_key: Vec<_> = results.iter().filter(|(key, _, _)| *key == k).collect();
            let winners: Vec<_> = of_key.iter().filter(|(_, won, _)| *won).collect();
            assert_eq!(winners.len(), 1, "round {round} key {k}");
            assert!(of_key.iter().all(|(_, _, body)| body == &winners[0].2));
        }
    }
    Ok(())
}

/// A lookup that starts after a write was acknowledged sees it, on any
/// thread: lookups read the snapshot the committer publishes before it
/// answers. The replay cache is off, so every answer below comes from a
/// lookup; the channels order the reader's lookups after the writer's
/// acknowledgement, and the writer's next write after the reader's checks.
#[test]
fn lookups_see_every_acknowledged_write() -> TestResult {
    #[derive(Clone, Copy)]
    enum Step {
        Completed(usize),
        Removed(usize),
    }
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path().join("visibility.redb"),
        Config::default().cache_bytes(0).sweep_interval(None),
    )?;
    const KEYS: usize = 200;
    let (to_reader, steps) = std::sync::mpsc::channel::<Step>();
    let (checked, from_reader) = std::sync::mpsc::channel::<()>();
    let reader = {
        let store = store.clone();
        thread::spawn(
            move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                for step in steps {
                    match step {
                        Step::Completed(i) => {
                            let k = key(&format!("k{i}"));
                            let record = store.get(&k)?.ok_or("completed key reads as absent")?;
                            assert_eq!(record.response(), Some(&response("r")), "k{i}");
                            assert_eq!(replayed(store.begin(&k, fp("p"))?), response("r"));
                        }
                        Step::Removed(i) => {
                            let k = key(&format!("k{i}"));
                            assert!(store.get(&k)?.is_none(), "k{i} removed");
                            store.release(claimed(store.begin(&k, fp("other"))?))?;
                        }
                    }
                    checked.send(())?;
                }
                Ok(())
            },
        )
    };
    // Each step waits for the reader's check; a reader that failed ends the
    // loop, and its failure is reported by the join below.
    let check = |step| to_reader.send(step).is_ok() && from_reader.recv().is_ok();
    for i in 0..KEYS {
        let k = key(&format!("k{i}"));
        let claim = claimed(store.begin(&k, fp("p"))?);
        store.complete(claim, response("r"))?;
        if !check(Step::Completed(i)) {
            break;
        }
        if i % 2 == 0 {
            assert!(store.remove(&k)?);
            if !check(Step::Removed(i)) {
                break;
            }
        }
    }
    drop(to_reader);
    reader
        .join()
        .map_err(|_| "reader panicked")?
        .map_err(|err| err.to_string())?;
    Ok(())
}

/// Lookups on other threads while commits run: a lookup that starts after
/// a write was acknowledged sees it, even while later commits are being
/// made (the lookups' shared snapshot must never hold a state older than
/// the last acknowledged commit). The replay cache is off, so every lookup
/// reads the file.
#[test]
fn lookups_during_commits_see_every_acknowledged_write() -> TestResult {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path().join("during.redb"),
        Config::default().cache_bytes(0).sweep_interval(None),
    )?;
    const WRITES: usize = 400;
    // Keys 0..acknowledged are completed and acknowledged.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    thread::scope(|scope| -> TestResult {
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (store, acknowledged, done) = (&store, &acknowledged, &done);
            readers.push(scope.spawn(move || -> Result<u64, String> {
                let mut lookups = 0;
                while !done.load(Ordering::SeqCst) {
                    let n = acknowledged.load(Ordering::SeqCst);
                    if n == 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    let k = key(&format!("w{}", n - 1));
                    let record = store.get(&k).map_err(|e| e.to_string())?;
                    match record {
                        Some(record) if record.response() == Some(&response("w")) => {}
                        other => {
                            return Err(format!(
                                "w{} was acknowledged, a lookup read {other:?}",
                                n - 1
                            ));
                        }
                    }
                    lookups += 1;
                }
                Ok(lookups)
            }));
        }
        // Unrelated commits from another writer keep the committer busy, so
        // that lookups overlap commits.
        let noise = {
            let (store, done) = (&store, &done);
            scope.spawn(move || -> Result<(), String> {
                let mut i = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let k = key(&format!("noise{i}"));
                    let claim = claimed(store.begin(&k, fp("n")).map_err(|e| e.to_string())?);
                    store.release(claim).map_err(|e| e.to_string())?;
                    i += 1;
                }
                Ok(())
            })
        };
        let written = (|| -> TestResult {
            for i in 0..WRITES {
                let k = key(&format!("w{i}"));
                store.complete(claimed(store.begin(&k, fp("p"))?), response("w"))?;
                acknowledged.store(i + 1, Ordering::SeqCst);
            }
            Ok(())
        })();
        done.store(true, Ordering::SeqCst);
        noise.join().map_err(|_| "noise writer panicked")??;
        for reader in readers {
            reader.join().map_err(|_| "reader panicked")??;
        }
        written
    })
}
