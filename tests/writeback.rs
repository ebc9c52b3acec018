//! The writeback thread, which syncs a journaled store's file between
//! checkpoints (src/durability/writeback.rs): a journaled file store runs one while it
//! is open, and no other store does. One test in its own binary, so that no
//! other test's store is counted.

#![cfg(target_os = "linux")]

mod common;

use common::*;
use idemkv::{Key, Store};

/// Threads of this process named `idemkv-writeback` (a thread's name is cut
/// to 15 bytes in /proc), once every thread has its name: a new thread
/// starts with its parent's name and sets its own as it starts, so this
/// waits until no thread but this one bears this thread's name.
fn writeback_threads() -> Result<usize, Box<dyn std::error::Error>> {
    let own = std::fs::read_to_string("/proc/thread-self/comm")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (mut writeback, mut unnamed) = (0, 0);
        for task in std::fs::read_dir("/proc/self/task")? {
            let comm = std::fs::read_to_string(task?.path().join("comm"))?;
            if comm.trim_end() == "idemkv-writebac" {
                writeback += 1;
            } else if comm == own {
                unnamed += 1;
            }
        }
        if unnamed == 1 {
            return Ok(writeback);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} threads without a name of their own", unnamed - 1).into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_journaled_file_store_runs_one_writeback_thread_while_open() -> TestResult {
    let tmp = tempfile::tempdir()?;
    assert_eq!(writeback_threads()?, 0);
    let (config, _clock) = manual_config();
    let journaled = Store::open(tmp.path().join("j.redb"), config.clone().journal(true))?;
    assert_eq!(writeback_threads()?, 1);
    let plain = Store::open(tmp.path().join("p.redb"), config.clone().journal(false))?;
    let memory = Store::in_memory(config)?;
    assert_eq!(writeback_threads()?, 1, "a store without a journal");
    // The journaled store keeps working with it, and a reopen keeps the
    // writes.
    let key = Key::new("wb", "k")?;
    let claim = claimed(journaled.begin(&key, fp("x"))?);
    journaled.complete(claim, idemkv::StoredResponse::new(200, "done"))?;
    journaled.close()?;
    assert_eq!(writeback_threads()?, 0, "the thread outlived its store");
    drop((plain, memory));
    let reopened = Store::open(tmp.path().join("j.redb"), manual_config().0)?;
    assert_eq!(replayed(reopened.begin(&key, fp("x"))?).body(), b"done");
    Ok(())
}
