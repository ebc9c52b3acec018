//! A full disk on a real file system: a small tmpfs mounted for the test
//! (which needs root; without it the tests are skipped with the reason, and
//! fail under `CI=true`). The disk fills at open, while the store runs, and
//! while it creates a journal segment; in each case, once space returns,
//! the same `Store` handle takes writes again and every acknowledged write
//! is there, in that handle and after a reopen. The disk also fills during
//! a checkpoint and during a backup. A store whose file was
//! moved away while it was failing refuses to heal into a new empty file.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use idemkv::{Begin, Config, Error, Fingerprint, Health, Key, Store, StoredResponse};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// How long a heal may take once space is back (the reopen backoff is at
/// most 5 s; the rest is margin for a loaded machine).
const HEAL_DEADLINE: Duration = Duration::from_secs(60);

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one, or says why it cannot (then the test is skipped, or
    /// fails under `CI=true`).
    fn mount(mib: u64) -> Option<SmallDisk> {
        let skip = |reason: String| {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("CI=true: the full-disk tests must run, but {reason}");
            }
            eprintln!("skipped: {reason} (the full-disk tests mount a tmpfs, which needs root)");
            None
        };
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(err) => return skip(format!("no scratch directory: {err}")),
        };
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(SmallDisk { dir }),
            Ok(output) => skip(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(err) => skip(format!("cannot run mount: {err}")),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the file system with `filler`, then frees `leave` bytes of it.
    fn fill(&self, leave: u64) -> Result<()> {
        let path = self.path("filler");
        let mut file = File::create(&path)?;
        let chunk = vec![0xA5u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err) if err.raw_os_error() == Some(28) => break,
                Err(err) => return Err(err.into()),
            }
        }
        file.set_len(written.saturating_sub(leave))?;
        Ok(())
    }

    /// Every file on the disk with its size, and the space left.
    fn listing(&self) -> String {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk(&path, out),
                    Ok(meta) => out.push(format!("{} {} B", path.display(), meta.len())),
                    Err(_) => {}
                }
            }
        }
        let mut files = Vec::new();
        walk(self.dir.path(), &mut files);
        let free = Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(self.dir.path())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .last()
                    .unwrap_or("?")
                    .to_string()
            })
            .unwrap_or_else(|_| "?".into());
        format!("[{}], {free} KiB free", files.join(", "))
    }

    /// Gives the filler's space back.
    fn free(&self) -> Result<()> {
        match std::fs::remove_file(self.path("filler")) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn config() -> Config {
    Config::default()
        .journal(true)
        .sweep_interval(None)
        // Small caches, so that redb writes pages to the small disk too.
        .storage_cache_bytes(4 << 20)
}

fn key(i: u64) -> Key {
    Key::new("full-disk", &format!("k{i}")).expect("valid key")
}

fn fp(i: u64) -> Fingerprint {
    Fingerprint::of(&i.to_le_bytes())
}

fn body(i: u64) -> StoredResponse {
    let mut bytes = vec![(i % 251) as u8; 16 * 1024];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    StoredResponse::new(200, bytes)
}

/// Claims and completes key `i`; `Ok(false)` if the store refused
/// (storage full, poisoned), with nothing acknowledged.
fn write(store: &Store, i: u64) -> Result<bool> {
    Ok(try_write(store, i)?.is_none())
}

/// Claims and completes key `i`: `None` once acknowledged, or the storage
/// error that refused it.
fn try_write(store: &Store, i: u64) -> Result<Option<Error>> {
    let claim = match store.begin(&key(i), fp(i)) {
        Ok(Begin::Claimed(claim)) => claim,
        Ok(other) => return Err(format!("k{i}: fresh key answered {other:?}").into()),
        Err(err @ (Error::Storage(_) | Error::Poisoned { .. })) => return Ok(Some(err)),
        Err(err) => return Err(err.into()),
    };
    match store.complete(claim, body(i)) {
        Ok(()) => Ok(None),
        Err(err) => match err.into_parts().0 {
            err @ (Error::Storage(_) | Error::Poisoned { .. }) => Ok(Some(err)),
            err => Err(err.into()),
        },
    }
}

/// Writes fresh keys from `*next` until the store refuses one (at most
/// `limit`); returns the acknowledged ones and the refusal.
fn write_until_refused(store: &Store, next: &mut u64, limit: u64) -> Result<(Vec<u64>, Error)> {
    let mut acknowledged = Vec::new();
    for _ in 0..limit {
        let i = *next;
        *next += 1;
        match try_write(store, i)? {
            None => acknowledged.push(i),
            Some(refusal) => return Ok((acknowledged, refusal)),
        }
    }
    Err(format!("the store took {limit} writes on a full disk").into())
}

/// Retries a write on the same handle until it succeeds (the store healed).
fn wait_for_heal(store: &Store, next: &mut u64) -> Result<u64> {
    let deadline = Instant::now() + HEAL_DEADLINE;
    loop {
        let i = *next;
        *next += 1;
        if write(store, i)? {
            return Ok(i);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no write succeeded within {HEAL_DEADLINE:?} of space returning: {:?}",
                store.health()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_replays(store: &Store, acknowledged: &[u64]) -> Result<()> {
    for &i in acknowledged {
        match store.begin(&key(i), fp(i))? {
            Begin::Replay(response) if response == body(i) => {}
            other => return Err(format!("acknowledged k{i} answers {other:?}").into()),
        }
    }
    Ok(())
}

/// The disk fills while the store runs; space returns; the same handle
/// resumes, and nothing acknowledged is lost, before or after a reopen.
/// The first refusal must mention `refused_by`.
fn fills_and_heals(disk: &SmallDisk, config: Config, leave: u64, refused_by: &str) -> Result<()> {
    let path = disk.path("idem.redb");
    let store = Store::open(&path, config.clone())?;
    let mut next = 0;
    let mut acknowledged = Vec::new();
    for _ in 0..20 {
        if !write(&store, next)? {
            return Err("a write failed before the disk was full".into());
        }
        acknowledged.push(next);
        next += 1;
    }
    disk.fill(leave)?;
    let (more, refusal) = write_until_refused(&store, &mut next, 100_000)?;
    acknowledged.extend(more);
    let refusal = refusal.to_string();
    assert!(refusal.contains(refused_by), "refused by: {refusal}");
    assert!(
        matches!(store.health(), Health::Recovering { .. }),
        "{:?}",
        store.health()
    );
    disk.free()?;
    acknowledged.push(wait_for_heal(&store, &mut next)?);
    assert_eq!(store.health(), Health::Ok);
    check_replays(&store, &acknowledged)?;
    assert!(store.metrics().recoveries >= 1, "healed without a recovery");
    store.close()?;
    let store = Store::open(&path, config)?;
    check_replays(&store, &acknowledged)?;
    store.close()?;
    Ok(())
}

#[test]
fn a_disk_that_fills_while_the_store_runs_heals_on_the_same_handle() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    // The storage engine's pages meet the full disk first.
    fills_and_heals(&disk, config(), 0, "No space left")
}

#[test]
fn a_disk_that_fills_while_a_journal_segment_is_created_heals() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    // Room for half a segment, and the storage engine keeps its pages in
    // memory until a checkpoint, which comes only once four segments are
    // full: frames fill the first segment, and the next one's creation
    // fails midway.
    let config = config()
        .storage_cache_bytes(128 << 20)
        .checkpoint_interval(Duration::MAX);
    fills_and_heals(
        &disk,
        config,
        2 << 20,
        "MiB of free space for a new segment",
    )?;
    // Nothing half-created is left in the journal.
    for entry in std::fs::read_dir(disk.path("idem.redb.journal"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("segment-") && !name.contains('.'),
            "left in the journal: {name}"
        );
    }
    Ok(())
}

#[test]
fn a_disk_that_fills_during_a_checkpoint_heals() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    // Every batch after a journaled one is a checkpoint, and the storage
    // engine keeps its pages in memory until then: frames go into the
    // segment created before the disk filled, so the first write the full
    // disk refuses is a checkpoint's.
    let config = config()
        .storage_cache_bytes(128 << 20)
        .checkpoint_interval(Duration::ZERO);
    fills_and_heals(&disk, config, 0, "No space left")
}

#[test]
fn a_disk_full_at_open_fails_clearly_or_heals_once_space_returns() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    let path = disk.path("idem.redb");
    // A store with answers, closed.
    let store = Store::open(&path, config())?;
    let acknowledged: Vec<u64> = (0..20).collect();
    for &i in &acknowledged {
        assert!(write(&store, i)?);
    }
    store.close()?;
    for leave in [0, 1 << 20] {
        disk.fill(leave)?;
        let mut next = 1_000 + leave;
        match Store::open(&path, config()) {
            // Open worked: writes wait for space, then resume.
            Ok(store) => {
                check_replays(&store, &acknowledged)?;
                write_until_refused(&store, &mut next, 100_000)?;
                disk.free()?;
                wait_for_heal(&store, &mut next)?;
                store.close()?;
            }
            // Open failed, with an error that names the lack of space.
            Err(err) => {
                let message = err.to_string();
                assert!(
                    message.contains("No space left") || message.contains("space"),
                    "{message}"
                );
                disk.free()?;
            }
        }
        // Whatever the failed attempt left behind does not block an open.
        let store = Store::open(&path, config())?;
        check_replays(&store, &acknowledged)?;
        assert!(write(&store, 5_000 + leave)?);
        store.close()?;
    }
    Ok(())
}

#[test]
fn a_new_store_on_a_full_disk_opens_once_space_returns() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    let path = disk.path("idem.redb");
    disk.fill(0)?;
    let mut next = 0;
    // Each step names itself in its error, and the file system's contents
    // are listed with it, so that a failure says where space went.
    let step = |what: &str, err: &dyn std::fmt::Display| -> Box<dyn std::error::Error> {
        format!("{what}: {err}; the disk holds {}", disk.listing()).into()
    };
    let opened_full = Store::open(&path, config());
    let first_open = match &opened_full {
        Ok(_) => "opened on the full disk".to_string(),
        Err(err) => format!("refused on the full disk ({err})"),
    };
    if let Ok(store) = opened_full {
        assert!(!write(&store, next)?, "a write on a full disk succeeded");
        next += 1;
        disk.free()?;
        let healed = wait_for_heal(&store, &mut next)?;
        check_replays(&store, &[healed]).map_err(|e| step("replays after the heal", &e))?;
        store
            .close()
            .map_err(|e| step("closing after the heal", &e))?;
    } else {
        disk.free()?;
    }
    let store = Store::open(&path, config()).map_err(|e| {
        step(
            &format!("the open once space returned, first {first_open}"),
            &e,
        )
    })?;
    assert!(write(&store, 10_000)?);
    store.close().map_err(|e| step("the last close", &e))?;
    Ok(())
}

#[test]
fn a_heal_never_reopens_a_moved_file_as_a_new_store() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    let path = disk.path("idem.redb");
    let moved = disk.path("moved.redb");
    let store = Store::open(&path, config())?;
    let mut next = 0;
    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        assert!(write(&store, next)?);
        acknowledged.push(next);
        next += 1;
    }
    disk.fill(0)?;
    acknowledged.extend(write_until_refused(&store, &mut next, 100_000)?.0);
    // While the store is failing, its file goes away.
    std::fs::rename(&path, &moved)?;
    disk.free()?;
    let deadline = Instant::now() + HEAL_DEADLINE;
    loop {
        match store.health() {
            Health::Failed { cause } if cause.contains("moved, deleted or replaced") => break,
            other => assert!(
                Instant::now() < deadline,
                "the store did not report its file gone: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!write(&store, next)?, "a write succeeded without the file");
    next += 1;
    assert!(!path.exists(), "the heal created a new file in its place");
    // Put back, the same file heals the same handle.
    std::fs::rename(&moved, &path)?;
    acknowledged.push(wait_for_heal(&store, &mut next)?);
    check_replays(&store, &acknowledged)?;
    store.close()?;
    Ok(())
}

#[test]
fn a_backup_on_a_full_disk_leaves_nothing_and_works_once_space_returns() -> Result<()> {
    let Some(disk) = SmallDisk::mount(24) else {
        return Ok(());
    };
    let store = Store::open(disk.path("idem.redb"), config())?;
    let acknowledged: Vec<u64> = (0..50).collect();
    for &i in &acknowledged {
        assert!(write(&store, i)?);
    }
    disk.fill(0)?;
    let backup = disk.path("backup.redb");
    assert!(store.backup_to(&backup).is_err(), "a backup on a full disk");
    assert!(!backup.exists(), "a failed backup left a file");
    assert!(!disk.path("backup.redb.creating").exists());
    disk.free()?;
    store.backup_to(&backup)?;
    store.close()?;
    let restored = Store::open(&backup, config())?;
    check_replays(&restored, &acknowledged)?;
    Ok(())
}
