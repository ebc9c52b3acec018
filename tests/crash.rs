//! Kill tests: a child process claims and completes keys from 16 threads while
//! its sweeper deletes the previous rounds' expired records, printing every
//! step the store acknowledged; the parent kills it with SIGKILL at a random
//! moment, reopens the file and checks that every acknowledged claim exists
//! and every acknowledged completion replays byte for byte. Many rounds run
//! on the same file.
//!
//! Every round must prove something: the parent kills the child only after it
//! acknowledged at least [`MIN_ACKS`] completions (and so as many claims),
//! and the child must die by the SIGKILL, not by an error of its own.
//!
//! Odd rounds run with the write-ahead journal (`Config::journal`), even
//! ones without, on the same file: a round's check opens the file the way
//! its child did, and the next child the other way, so a journal left by a
//! kill is replayed by stores of both kinds. Checkpoints come every 20 ms
//! and answers are 12 KiB, so a kill lands after many checkpoints with
//! frames behind the last, and children fill journal segments; a kill at
//! each exact step of a segment's life is tests/lifecycle.rs's job.
//!
//! This file has its own `main` (no test harness): the same binary is the
//! parent and, with `IDEMKV_CRASH_CHILD` set, the child.
//! `IDEMKV_CRASH_ROUNDS=N` sets the number of rounds (default 25).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use idemkv::{Begin, Config, Fingerprint, Key, ManualClock, Store, StoredResponse};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const CHILD_ENV: &str = "IDEMKV_CRASH_CHILD";
const THREADS: usize = 16;
/// Each round's clock starts ten days after the previous one, so a one-day
/// retention makes every earlier round's records expired: the child's
/// sweeper is deleting them while it is killed.
const ROUND_SPACING: Duration = Duration::from_secs(10 * 24 * 3600);
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Completions the child must acknowledge before it may be killed.
const MIN_ACKS: usize = 20;
/// How long the child may take to acknowledge them.
const ACK_DEADLINE: Duration = Duration::from_secs(120);
const SIGKILL: i32 = 9;
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(20);

fn config(round: u64, sweeping: bool) -> Config {
    let start = UNIX_EPOCH + Duration::from_secs(1_767_225_600) + ROUND_SPACING * round as u32;
    Config::default()
        .clock(ManualClock::new(start))
        .retention(RETENTION)
        .sweep_batch(5)
        .sweep_interval(sweeping.then_some(Duration::from_millis(1)))
        .journal(round % 2 == 1)
        // Checkpoints every few milliseconds: a kill lands after many of
        // them, with frames behind the last one, and the journal's segments
        // fill, are freed and are reused within one child's life.
        .checkpoint_interval(CHECKPOINT_INTERVAL)
}

fn key(round: u64, thread: usize, i: u64) -> Result<Key> {
    Ok(Key::new("crash", &format!("r{round}-t{thread}-{i}"))?)
}

fn fingerprint(key: &Key) -> Fingerprint {
    Fingerprint::of(key.idempotency_key().as_bytes())
}

fn body(key: &Key) -> StoredResponse {
    StoredResponse::new(
        201,
        // About 12 KiB: a child's frames fill journal segments.
        format!("the one answer for {}", key.idempotency_key()).repeat(512),
    )
    .with_header("x-key", key.idempotency_key())
}

/// The child: works until it is killed. Prints `C <key> <token>` after each
/// acknowledged claim and `D <key>` after each acknowledged completion.
fn child(path: &Path, round: u64) -> Result<()> {
    let store = Store::open(path, config(round, true))?;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let store = &store;
            scope.spawn(move || -> Result<()> {
                for i in 0.. {
                    let k = key(round, t, i)?;
                    let Begin::Claimed(claim) = store.begin(&k, fingerprint(&k))? else {
                        return Err(format!("{k}: fresh key not claimed").into());
                    };
                    let line = format!("C {} {}\n", k.idempotency_key(), claim.token());
                    emit(&line)?;
                    store.complete(claim, body(&k))?;
                    emit(&format!("D {}\n", k.idempotency_key()))?;
                }
                Ok(())
            });
        }
    });
    Ok(())
}

fn emit(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Small deterministic generator for kill times, counted from the child's
/// [`MIN_ACKS`]th acknowledged completion.
fn kill_after(round: u64) -> Duration {
    let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    Duration::from_millis(x % 800)
}

struct Round {
    claims: usize,
    completions: usize,
    /// Segment files in the killed child's journal.
    segments: usize,
}

/// Segment files in the journal of the store at `path`.
fn journal_segments(path: &Path) -> Result<usize> {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".journal");
    Ok(std::fs::read_dir(&dir).map_or(0, |entries| entries.count()))
}

fn parent_round(exe: &Path, path: &Path, round: u64) -> Result<Round> {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, format!("{}\n{round}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let (line_tx, line_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for the child to acknowledge enough, then let it run a little
    // longer before the kill.
    let mut lines = Vec::new();
    let deadline = Instant::now() + ACK_DEADLINE;
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("D "))
        .count()
        < MIN_ACKS
    {
        match line_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                return Err(format!(
                    "round {round}: the child acknowledged {} lines, fewer than {MIN_ACKS} \
                     completions, before it stopped or the deadline ({status})",
                    lines.len()
                )
                .into());
            }
        }
    }
    std::thread::sleep(kill_after(round));
    child.kill()?; // SIGKILL
    let status = child.wait()?;
    reader.join().map_err(|_| "reader panicked")?;
    lines.extend(line_rx.try_iter());
    if status.signal() != Some(SIGKILL) {
        return Err(format!(
            "round {round}: the child ended by itself ({status}), not by the kill"
        )
        .into());
    }

    let mut claimed: HashMap<String, u64> = HashMap::new();
    let mut completed: Vec<String> = Vec::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["C", name, token] => {
                claimed.insert(name.to_string(), token.parse()?);
            }
            ["D", name] => completed.push(name.to_string()),
            // A line cut by the kill was never fully acknowledged.
            _ => {}
        }
    }

    let segments = journal_segments(path)?;
    let store = Store::open(path, config(round, false))?;
    for name in &completed {
        let k = Key::new("crash", name)?;
        match store.begin(&k, fingerprint(&k))? {
            Begin::Replay(stored) if stored == body(&k) => {}
            other => {
                return Err(format!(
                    "round {round}: acknowledged completion {name} lost: {other:?}"
                )
                .into());
            }
        }
    }
    for (name, token) in &claimed {
        let k = Key::new("crash", name)?;
        let record = store
            .get(&k)?
            .ok_or_else(|| format!("round {round}: acknowledged claim {name} lost"))?;
        if record.token() != *token {
            return Err(format!(
                "round {round}: {name} has token {} not {token}",
                record.token()
            )
            .into());
        }
    }
    if completed.len() < MIN_ACKS || claimed.len() < MIN_ACKS {
        return Err(format!(
            "round {round}: only {} claims and {} completions were acknowledged",
            claimed.len(),
            completed.len()
        )
        .into());
    }
    Ok(Round {
        claims: claimed.len(),
        completions: completed.len(),
        segments,
    })
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (path, round) = spec.split_once('\n').ok_or("bad child spec")?;
        return child(Path::new(path), round.parse()?);
    }
    let rounds: u64 = std::env::var("IDEMKV_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join("crash.redb");
    let started = SystemTime::now();
    let (mut claims, mut completions, mut passed, mut failed) = (0, 0, 0, 0);
    let mut most_segments = 0;
    for round in 0..rounds {
        match parent_round(&exe, &path, round) {
            Ok(r) => {
                claims += r.claims;
                completions += r.completions;
                most_segments = most_segments.max(r.segments);
                passed += 1;
            }
            Err(err) => {
                eprintln!("FAILED: {err}");
                failed += 1;
            }
        }
    }
    let store = Store::open(&path, config(rounds, false))?;
    println!(
        "kill rounds: {rounds}, acknowledged claims verified: {claims}, acknowledged completions verified: {completions}, \
         records in the file at the end: {}, {:?}",
        store.metrics().live_records,
        started.elapsed().unwrap_or_default()
    );
    println!("journal at the kills: up to {most_segments} segment files");
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
