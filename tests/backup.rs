//! `Store::backup_to`: a consistent copy of a live store that opens on its
//! own, taken while another thread writes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use idemkv::{Begin, Config, Error, Store};

fn config() -> Config {
    // No checkpoint during the test: the latest writes are in the journal
    // only, and the backup must still hold them.
    Config::default()
        .sweep_interval(None)
        .checkpoint_interval(Duration::MAX)
}

#[test]
fn a_backup_of_a_live_store_holds_every_acknowledged_write_and_opens_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("live.redb"), config())?;
    let held = claimed(store.begin(&key("held"), fp("a"))?);
    let held_token = held.token();
    let acknowledged = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let backup_path = dir.path().join("backup.redb");
    let (copied_before, backup) =
        std::thread::scope(|scope| -> Result<_, Box<dyn std::error::Error>> {
            let writer = scope.spawn(|| -> Result<(), String> {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) || i < 400 {
                    let k = key(&format!("w{i}"));
                    let claim = claimed(store.begin(&k, fp("p")).map_err(|e| e.to_string())?);
                    store
                        .complete(claim, response(&format!("{i}")))
                        .map_err(|e| e.to_string())?;
                    i += 1;
                    acknowledged.store(i, Ordering::SeqCst);
                }
                Ok(())
            });
            while acknowledged.load(Ordering::SeqCst) < 200 {
                std::thread::yield_now();
            }
            // Everything acknowledged so far must be in the backup; the writer
            // goes on during the copy.
            let before = acknowledged.load(Ordering::SeqCst);
            let backup = store.backup_to(&backup_path)?;
            stop.store(true, Ordering::SeqCst);
            writer.join().map_err(|_| "writer panicked")??;
            Ok((before, backup))
        })?;
    assert!(backup.records as usize > copied_before, "{backup:?}");
    assert_eq!(backup.bytes, std::fs::metadata(&backup_path)?.len());
    // The live store went on.
    assert_eq!(
        replayed(store.begin(&key("w399"), fp("p"))?),
        response("399")
    );
    store.complete(held, response("held"))?;
    drop(store);

    // The backup opens by itself, without the live store's journal.
    assert!(!dir.path().join("backup.redb.journal").exists());
    let restored = Store::open(&backup_path, config())?;
    for i in 0..copied_before {
        assert_eq!(
            replayed(restored.begin(&key(&format!("w{i}")), fp("p"))?),
            response(&format!("{i}")),
            "w{i}"
        );
    }
    // The claim in flight at the time is in flight in the backup, and a new
    // claim's token is above every token copied.
    let record = restored.get(&key("held"))?.ok_or("held claim missing")?;
    assert_eq!(record.token(), held_token);
    in_progress(restored.begin(&key("held"), fp("a"))?);
    let fresh = claimed(restored.begin(&key("fresh"), fp("a"))?);
    let highest = (0..copied_before)
        .map(|i| {
            restored
                .get(&key(&format!("w{i}")))
                .map(|r| r.map_or(0, |r| r.token()))
        })
        .collect::<Result<Vec<u64>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    assert!(fresh.token() > highest.max(held_token));
    restored.complete(fresh, response("fresh"))?;
    assert!(restored.verify()?.is_ok());
    Ok(())
}

#[test]
fn a_backup_never_replaces_a_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("live.redb"), config())?;
    store.complete(claimed(store.begin(&key("a"), fp("a"))?), response("a"))?;
    let taken = dir.path().join("taken.redb");
    std::fs::write(&taken, b"someone else's file")?;
    let err = store.backup_to(&taken).expect_err("the path is taken");
    assert!(matches!(err, Error::CannotOpen { .. }), "{err:?}");
    assert!(
        err.to_string().contains("a backup goes to a new path"),
        "{err}"
    );
    assert_eq!(std::fs::read(&taken)?, b"someone else's file");
    // Nor beside a journal directory, which an open would replay into it.
    let beside = dir.path().join("beside.redb");
    std::fs::create_dir(dir.path().join("beside.redb.journal"))?;
    assert!(store.backup_to(&beside).is_err());
    assert!(!beside.exists());
    // A second backup to a new path works, and leaves nothing else behind.
    store.backup_to(dir.path().join("second.redb"))?;
    let mut names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(
        names,
        [
            "beside.redb.journal",
            "live.redb",
            "live.redb.journal",
            "second.redb",
            "taken.redb"
        ]
    );
    let restored = Store::open(dir.path().join("second.redb"), config())?;
    assert!(matches!(
        restored.begin(&key("a"), fp("a"))?,
        Begin::Replay(_)
    ));
    Ok(())
}
