//! What survives closing and reopening the file, and which files are refused.

mod common;

use std::time::Duration;

use common::*;
use idemkv::{Config, Error, Store};
use redb::{Database, TableDefinition};

#[test]
fn acknowledged_claims_and_completions_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("idem.redb");
    let (config, clock) = manual_config();
    let (done_token, flying_token) = {
        let store = Store::open(&path, config.clone())?;
        let done = claimed(store.begin(&key("done"), fp("a"))?);
        let done_token = done.token();
        store.complete(done, response("kept"))?;
        // The holder dies with the process: its claim is never completed.
        let flying = claimed(store.begin(&key("flying"), fp("a"))?);
        let flying_token = flying.token();
        std::mem::forget(flying);
        (done_token, flying_token)
    };

    let store = Store::open(&path, config)?;
    assert_eq!(
        replayed(store.begin(&key("done"), fp("a"))?),
        response("kept")
    );
    mismatch(store.begin(&key("done"), fp("b"))?);
    // A dead process's claim keeps its lease after the restart.
    assert_eq!(in_progress(store.begin(&key("flying"), fp("a"))?), LEASE);
    clock.advance(LEASE);
    let takeover = claimed(store.begin(&key("flying"), fp("a"))?);
    assert!(takeover.is_takeover());
    assert!(takeover.token() > flying_token.max(done_token));
    store.complete(takeover, response("after restart"))?;
    Ok(())
}

#[test]
fn tokens_keep_growing_across_restarts_and_deletions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokens.redb");
    let mut last = 0;
    for round in 0..4 {
        let store = Store::open(&path, Config::default())?;
        let k = key("same-key");
        for _ in 0..3 {
            let claim = claimed(store.begin(&k, fp("a"))?);
            assert!(
                claim.token() > last,
                "round {round}: {} <= {last}",
                claim.token()
            );
            last = claim.token();
            store.release(claim)?;
        }
        assert!(store.remove(&k).is_ok());
    }
    Ok(())
}

#[test]
fn a_second_open_of_the_same_file_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("once.redb");
    let store = Store::open(&path, Config::default())?;
    let err = Store::open(&path, Config::default()).expect_err("second open");
    assert!(
        matches!(&err, Error::AlreadyOpen { path: p } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("Clone"));
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    // Dropping the last handle closes the file (the committer is joined).
    let clone = store.clone();
    drop(store);
    assert!(matches!(
        Store::open(&path, Config::default()),
        Err(Error::AlreadyOpen { .. })
    ));
    drop(clone);
    Store::open(&path, Config::default())?;
    Ok(())
}

#[test]
fn a_file_from_a_newer_format_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("future.redb");
    drop(Store::open(&path, Config::default())?);
    {
        let db = Database::open(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(TableDefinition::<&str, u64>::new("meta"))?
            .insert("format_version", 99)?;
        txn.commit()?;
    }
    let err = Store::open(&path, Config::default()).expect_err("newer format");
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 99,
                supported: 4
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade idemkv"));
    Ok(())
}

#[test]
fn a_foreign_redb_file_is_refused_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("other-app.redb");
    let users: TableDefinition<&str, &str> = TableDefinition::new("users");
    {
        let db = Database::create(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(users)?.insert("alice", "admin")?;
        txn.commit()?;
    }
    let err = Store::open(&path, Config::default()).expect_err("foreign file");
    assert!(matches!(err, Error::NotAStore { .. }), "{err:?}");
    let db = Database::open(&path)?;
    let txn = redb::ReadableDatabase::begin_read(&db)?;
    let table = txn.open_table(users)?;
    let value = redb::ReadableTable::get(&table, "alice")?.ok_or("data lost")?;
    assert_eq!(value.value(), "admin");
    Ok(())
}

#[test]
fn a_file_that_is_not_redb_is_an_error_not_a_panic() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(100))?;
    let err = Store::open(&path, Config::default()).expect_err("not a store");
    assert!(matches!(err, Error::NotAStore { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(&path)?,
        "these are my notes, not a database\n".repeat(100),
        "the file is not modified"
    );
    Ok(())
}

#[test]
fn a_directory_or_missing_directory_is_a_clear_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = Store::open(dir.path(), Config::default()).expect_err("a directory");
    assert!(matches!(err, Error::CannotOpen { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("directory this process can write to")
    );
    let err = Store::open(dir.path().join("no/such/dir/x.redb"), Config::default())
        .expect_err("a missing directory");
    assert!(matches!(err, Error::CannotOpen { .. }), "{err:?}");
    Ok(())
}

#[test]
fn retention_is_measured_in_stored_time_across_restarts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("retention.redb");
    let (config, clock) = manual_config();
    {
        let store = Store::open(&path, config.clone())?;
        store.complete(claimed(store.begin(&key("r"), fp("a"))?), response("r"))?;
    }
    clock.advance(RETENTION - Duration::from_millis(1));
    {
        let store = Store::open(&path, config.clone())?;
        replayed(store.begin(&key("r"), fp("a"))?);
    }
    clock.advance(Duration::from_millis(1));
    let store = Store::open(&path, config)?;
    assert!(store.get(&key("r"))?.is_none());
    // Swept at its claim's expiry entry, which the completion kept.
    assert_eq!(store.sweep_expired()?, 0);
    clock.advance(LEASE);
    assert_eq!(store.sweep_expired()?, 1);
    Ok(())
}

#[test]
fn tokens_grow_across_a_reservation_block_and_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("blocks.redb");
    let config = Config::default().durability(idemkv::Durability::None);
    let mut last = 0;
    for _ in 0..2 {
        let store = Store::open(&path, config.clone())?;
        // More claims than one block of reserved tokens.
        for i in 0..4200 {
            let claim = claimed(store.begin(&key(&format!("b{}", i % 7)), fp("a"))?);
            assert!(claim.token() > last);
            last = claim.token();
            store.release(claim)?;
        }
    }
    Ok(())
}

#[test]
fn claims_live_in_the_inflight_table_and_completions_in_records() -> TestResult {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("layout.redb");
    let count = |name: &str| -> Result<u64, Box<dyn std::error::Error>> {
        let db = Database::open(&path)?;
        let txn = db.begin_read()?;
        Ok(txn
            .open_table(TableDefinition::<&[u8; 32], &[u8]>::new(name))?
            .len()?)
    };
    {
        let store = Store::open(&path, Config::default())?;
        std::mem::forget(claimed(store.begin(&key("a"), fp("a"))?));
        let done = claimed(store.begin(&key("b"), fp("b"))?);
        store.complete(done, response("b"))?;
    }
    assert_eq!((count("inflight")?, count("records")?), (1, 1));
    Ok(())
}
