//! A crash at every step of a journal segment's life, on a real directory:
//! creating a new segment (temporary file, zero-fill, sync, rename,
//! directory sync), activating it or reusing an old one (header written,
//! header synced), writing frames, and the checkpoint that frees segments.
//!
//! Each round runs a child process that claims and completes keys one at a
//! time, printing each acknowledged step, and aborts at a named point
//! (`IDEMKV_CRASH_AT`, the `fault-injection` feature): the kill lands
//! exactly there, not where the machine's load happens to put it. The
//! parent then opens the store and checks that it opens, that every
//! acknowledged completion replays its exact answer, that every
//! acknowledged claim is still held, and that the store takes new writes.
//!
//! The child never checkpoints on a timer, only when four full segments
//! wait for one (the journal's own bound), so its journal takes the same
//! path in every run: 48 KiB completions fill segments 0 to 4, the first
//! checkpoint frees them, and the sixth activation reuses segment 0.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use idemkv::fault_injection::CRASH_POINTS;
use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const CHILD_ENV: &str = "IDEMKV_LIFECYCLE_CHILD";
/// Operations a child runs if no crash stops it first.
const OPERATIONS: u64 = 700;
const BODY_BYTES: usize = 48 * 1024;
/// The arrivals at each point that a round crashes at: every point's first;
/// a later segment's creation; the first reuse of a segment (the sixth
/// activation) and the next; a frame deep into the reused segments; the
/// first two checkpoints.
const ROUNDS: &[(&str, &[u64])] = &[
    ("segment.temp_created", &[1, 2, 5]),
    ("segment.temp_half_filled", &[1, 5]),
    ("segment.temp_synced", &[1, 5]),
    ("segment.renamed", &[1, 5]),
    ("segment.dir_synced", &[1, 5]),
    ("segment.header_written", &[1, 5, 6, 7]),
    ("segment.header_synced", &[1, 6, 7]),
    ("segment.frame_written", &[1, 2, 1200]),
    ("segment.frame_synced", &[1, 1200]),
    ("checkpoint.committed", &[1, 2]),
];

fn config() -> Config {
    Config::default()
        .journal(true)
        .checkpoint_interval(Duration::MAX)
        .sweep_interval(None)
}

fn key(i: u64) -> Result<Key> {
    Ok(Key::new("lifecycle", &format!("k{i}"))?)
}

fn fingerprint(i: u64) -> Fingerprint {
    Fingerprint::of(&i.to_le_bytes())
}

fn body(i: u64) -> StoredResponse {
    let mut bytes = vec![(i % 251) as u8; BODY_BYTES];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    StoredResponse::new(201, bytes).with_header("x-op", i.to_string())
}

fn emit(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The child: `C i` after each acknowledged claim, `D i` after each
/// acknowledged completion, `END` if it ran out of operations.
fn child(path: &Path) -> Result<()> {
    let store = Store::open(path, config())?;
    for i in 0..OPERATIONS {
        let Begin::Claimed(claim) = store.begin(&key(i)?, fingerprint(i))? else {
            return Err(format!("k{i}: a fresh key was not claimed").into());
        };
        emit(&format!("C {i}\n"))?;
        store.complete(claim, body(i))?;
        emit(&format!("D {i}\n"))?;
    }
    emit("END\n")?;
    Ok(())
}

/// One crash at `point`'s `arrival`-th arrival; checks the store after it.
/// Returns the acknowledged completions, or `None` if the child never got
/// there.
fn round(exe: &Path, point: &str, arrival: u64) -> Result<Option<usize>> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("idem.redb");
    let mut child = Command::new(exe)
        .env(CHILD_ENV, &path)
        .env("IDEMKV_CRASH_AT", format!("{point}:{arrival}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut claimed = Vec::new();
    let mut done = Vec::new();
    let mut ended = false;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.split_once(' ') {
            Some(("C", i)) => claimed.push(i.parse::<u64>()?),
            Some(("D", i)) => done.push(i.parse::<u64>()?),
            _ if line == "END" => ended = true,
            _ => return Err(format!("unexpected line from the child: {line}").into()),
        }
    }
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if ended {
        if !output.status.success() {
            return Err(format!("{point}:{arrival}: the child failed: {stderr}").into());
        }
        return Ok(None);
    }
    if output.status.success() || !stderr.contains("idemkv: crashing at") {
        return Err(format!(
            "{point}:{arrival}: the child stopped without crashing ({}): {stderr}",
            output.status
        )
        .into());
    }
    // The store opens, with every acknowledged write.
    let store = Store::open(&path, config())
        .map_err(|err| format!("{point}:{arrival}: the store does not open: {err}"))?;
    for &i in &done {
        match store.begin(&key(i)?, fingerprint(i))? {
            Begin::Replay(response) if response == body(i) => {}
            other => {
                return Err(format!(
                    "{point}:{arrival}: completion {i} was acknowledged, the store answers {other:?}"
                )
                .into());
            }
        }
    }
    for &i in claimed.iter().filter(|i| !done.contains(i)) {
        match store.begin(&key(i)?, fingerprint(i))? {
            // Held, or completed: the completion may have landed without
            // its acknowledgement being printed.
            Begin::InProgress { .. } => {}
            Begin::Replay(response) if response == body(i) => {}
            other => {
                return Err(format!(
                    "{point}:{arrival}: claim {i} was acknowledged, the store answers {other:?}"
                )
                .into());
            }
        }
    }
    // And it takes new writes, through the next segments too.
    for i in OPERATIONS..OPERATIONS + 100 {
        let Begin::Claimed(claim) = store.begin(&key(i)?, fingerprint(i))? else {
            return Err(format!("{point}:{arrival}: a fresh key after the crash").into());
        };
        store.complete(claim, body(i))?;
    }
    store.close()?;
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("idem.redb.journal"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("segment-") || name.contains('.'))
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("{point}:{arrival}: left in the journal: {leftovers:?}").into());
    }
    Ok(Some(done.len()))
}

fn main() -> Result<()> {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&path));
    }
    // libtest's arguments (a filter, --list) do not apply: one test.
    if std::env::args().any(|arg| arg == "--list") {
        println!("lifecycle: test");
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    for point in CRASH_POINTS {
        if !ROUNDS.iter().any(|(name, _)| name == point) {
            return Err(format!("no round crashes at {point}").into());
        }
    }
    let mut rounds = 0;
    for (point, arrivals) in ROUNDS {
        for &arrival in *arrivals {
            let Some(acknowledged) = round(&exe, point, arrival)? else {
                return Err(format!(
                    "{point}:{arrival} was not reached in {OPERATIONS} operations"
                )
                .into());
            };
            rounds += 1;
            println!(
                "{point}:{arrival}: reopened with all {acknowledged} acknowledged completions"
            );
        }
    }
    println!("test result: ok. {rounds} passed; 0 failed");
    Ok(())
}
