//! The write-ahead journal (`Config::journal`) at the store's level: a copy
//! of the file and its journal taken while the store runs (what a power
//! loss leaves of a process that synced its frames) opens with every
//! acknowledged write, with a torn frame at its end too; a damaged frame
//! before the end is refused instead of dropping what follows; a journal
//! that cannot be written fails the commit and shows nothing; and a file
//! moves between stores with and without the journal.
//!
//! The SIGKILL rounds of tests/crash.rs alternate between the two.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use idemkv::{Config, Error, Key, Store};

const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const FRAMES_START: u64 = 4096;
const FRAME_HEADER: u64 = 28;

fn journal_dir(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn journaled() -> (Config, idemkv::ManualClock) {
    let (config, clock) = manual_config();
    (config.journal(true), clock)
}

/// Copies the store file and its journal to `to` (the journal first: what it
/// holds is synced before the file's commit, so the copy is a state a crash
/// could leave).
fn copy_store(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from_dir, to_dir) = (journal_dir(from), journal_dir(to));
    std::fs::create_dir_all(&to_dir)?;
    for entry in std::fs::read_dir(&from_dir)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to_dir.join(entry.file_name()))?;
    }
    std::fs::copy(from, to)?;
    Ok(())
}

/// Each segment's number (from its header) and the offset after its last
/// whole frame, walking the frame headers as docs/design.md describes them.
fn segment_ends(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, u64)>> {
    let mut ends = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = std::fs::File::open(&path)?;
        let mut header = [0u8; 28];
        file.read_exact_at(&mut header, 0)?;
        let number = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let mut offset = FRAMES_START;
        loop {
            let mut frame = [0u8; FRAME_HEADER as usize];
            file.read_exact_at(&mut frame, offset)?;
            let len = u32::from_le_bytes(frame[..4].try_into().unwrap_or_default()) as u64;
            let of = u64::from_le_bytes(frame[4..12].try_into().unwrap_or_default());
            if of != number || len == 0 || offset + FRAME_HEADER + len > SEGMENT_BYTES {
                break;
            }
            // Frames start at multiples of 512 bytes.
            offset = (offset + FRAME_HEADER + len).div_ceil(512) * 512;
        }
        ends.push((path, number, offset));
    }
    ends.sort_by_key(|(_, number, _)| *number);
    Ok(ends)
}

/// Claims and completes `count` keys named `prefix-i`.
fn write(store: &Store, prefix: &str, count: usize) -> TestResult {
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let claim = claimed(store.begin(&key(&name), fp(&name))?);
        store.complete(claim, response(&name))?;
    }
    Ok(())
}

fn check(store: &Store, prefix: &str, count: usize) -> TestResult {
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        assert_eq!(
            replayed(store.begin(&key(&name), fp(&name))?),
            response(&name),
            "{name}"
        );
    }
    Ok(())
}

/// A journaled store that wrote `count` keys named `k-i`, copied while it
/// ran and then dropped: (its directory, the copy's path, its config).
fn copied_after(
    count: usize,
) -> Result<(tempfile::TempDir, PathBuf, Config), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let (path, copy) = (tmp.path().join("live.redb"), tmp.path().join("copy.redb"));
    let (config, _clock) = journaled();
    let store = Store::open(&path, config.clone())?;
    write(&store, "k", count)?;
    copy_store(&path, &copy)?;
    drop(store);
    Ok((tmp, copy, config))
}

#[test]
fn a_copy_taken_while_the_store_runs_opens_with_every_acknowledged_write() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (path, copy) = (tmp.path().join("live.redb"), tmp.path().join("copy.redb"));
    let (config, _clock) = journaled();
    let store = Store::open(&path, config.clone())?;
    write(&store, "k", 300)?;
    let flying = claimed(store.begin(&key("flying"), fp("flying"))?);
    copy_store(&path, &copy)?;

    let reopened = Store::open(&copy, config.clone())?;
    check(&reopened, "k", 300)?;
    let record = reopened.get(&key("flying"))?.ok_or("the claim is lost")?;
    assert_eq!(record.token(), flying.token());
    assert_eq!(reopened.stats()?.format_version, 4);
    assert!(reopened.verify()?.is_ok());
    // The reopened store goes on journaling after what it replayed.
    write(&reopened, "after", 20)?;
    reopened.close()?;
    let again = Store::open(&copy, config)?;
    check(&again, "k", 300)?;
    check(&again, "after", 20)?;
    drop(store);
    Ok(())
}

#[test]
fn a_torn_frame_at_the_end_of_the_journal_is_dropped() -> TestResult {
    let (_tmp, copy, config) = copied_after(50)?;
    // A frame that was being written when the power went: a whole header
    // whose payload never arrived.
    let ends = segment_ends(&journal_dir(&copy))?;
    let (newest, number, end) = ends.last().ok_or("no segment")?;
    let mut torn = Vec::new();
    torn.extend_from_slice(&500u32.to_le_bytes());
    torn.extend_from_slice(&number.to_le_bytes());
    torn.extend_from_slice(&[0x5A; 16]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(newest)?
        .write_all_at(&torn, *end)?;
    let reopened = Store::open(&copy, config)?;
    check(&reopened, "k", 50)?;
    Ok(())
}

#[test]
fn a_damaged_frame_before_the_end_is_refused_not_skipped() -> TestResult {
    let (_tmp, copy, config) = copied_after(50)?;
    let ends = segment_ends(&journal_dir(&copy))?;
    let (newest, _, end) = ends.last().ok_or("no segment")?;
    assert!(
        *end > FRAMES_START + 4 * FRAME_HEADER,
        "the journal holds frames"
    );
    // A byte of the first frame's payload.
    std::fs::OpenOptions::new()
        .write(true)
        .open(newest)?
        .write_all_at(&[0xFF, 0x00, 0xFF], FRAMES_START + FRAME_HEADER + 3)?;
    match Store::open(&copy, config) {
        Err(Error::Corrupted { detail }) => assert!(detail.contains("journal"), "{detail}"),
        Err(other) => return Err(format!("expected Corrupted, got {other}").into()),
        Ok(_) => return Err("a damaged journal was opened".into()),
    }
    Ok(())
}

#[test]
fn a_journal_that_cannot_be_written_fails_the_commit_and_shows_nothing() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("store.redb");
    let (config, _clock) = journaled();
    let store = Store::open(
        &path,
        config.reopen_backoff(std::time::Duration::from_millis(1)),
    )?;
    // A file where the journal's directory belongs: no segment can be made.
    std::fs::write(journal_dir(&path), b"in the way")?;
    let err = store.begin(&key("a"), fp("a")).err().ok_or("claimed")?;
    assert!(matches!(err, Error::Storage(_)), "{err}");
    assert!(store.get(&key("a"))?.is_none());
    // Writes are refused until the store reopens; it cannot while the
    // journal cannot be read.
    assert!(store.begin(&key("b"), fp("b")).is_err());
    std::fs::remove_file(journal_dir(&path))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let claim = loop {
        match store.begin(&key("b"), fp("b")) {
            Ok(begin) => break claimed(begin),
            Err(Error::Poisoned { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(other) => return Err(other.into()),
        }
    };
    store.complete(claim, response("b"))?;
    assert!(store.get(&key("a"))?.is_none());
    store.close()?;
    let store = Store::open(&path, manual_config().0)?;
    assert_eq!(replayed(store.begin(&key("b"), fp("b"))?), response("b"));
    Ok(())
}

#[test]
fn a_file_moves_between_stores_with_and_without_the_journal() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (path, copy) = (tmp.path().join("live.redb"), tmp.path().join("copy.redb"));
    let plain = manual_config().0.journal(false);
    {
        let store = Store::open(&path, plain.clone())?;
        write(&store, "plain", 10)?;
        assert_eq!(store.stats()?.format_version, 3);
    }
    let store = Store::open(&path, plain.clone().journal(true))?;
    check(&store, "plain", 10)?;
    write(&store, "journaled", 10)?;
    copy_store(&path, &copy)?;
    drop(store);
    // A store without the journal replays it all the same.
    let store = Store::open(&copy, plain.clone())?;
    check(&store, "plain", 10)?;
    check(&store, "journaled", 10)?;
    assert_eq!(store.stats()?.format_version, 4);
    write(&store, "plain-again", 10)?;
    store.close()?;
    let store = Store::open(&copy, plain.journal(true))?;
    for prefix in ["plain", "journaled", "plain-again"] {
        check(&store, prefix, 10)?;
    }
    Ok(())
}

#[test]
fn segments_are_reused_under_a_long_stream_of_writes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (path, copy) = (tmp.path().join("live.redb"), tmp.path().join("copy.redb"));
    let (config, _clock) = journaled();
    let store = Store::open(&path, config.clone())?;
    // 64 KiB bodies: 40 MiB of frames, ten segments' worth.
    let body = "x".repeat(64 * 1024);
    for i in 0..640 {
        let k = Key::new("big", &format!("{i}"))?;
        let claim = claimed(store.begin(&k, fp("big"))?);
        store.complete(claim, idemkv::StoredResponse::new(200, body.clone()))?;
    }
    let segments = std::fs::read_dir(journal_dir(&path))?.count();
    // A checkpoint is due once four full segments hold uncovered frames:
    // those four and the one being written.
    assert!(
        (1..=5).contains(&segments),
        "{segments} segments for ten segments' worth of frames"
    );
    copy_store(&path, &copy)?;
    drop(store);
    let store = Store::open(&copy, config)?;
    for i in 0..640 {
        let k = Key::new("big", &format!("{i}"))?;
        assert_eq!(
            replayed(store.begin(&k, fp("big"))?).body(),
            body.as_bytes()
        );
    }
    Ok(())
}
