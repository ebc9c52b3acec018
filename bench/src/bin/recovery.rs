//! How long a store takes to open after a SIGKILL, beside raw redb opening
//! the same file with and without a full repair.
//!
//! ```text
//! cargo run --release -p idemkv-bench --bin recovery                      # 1M and 10M records
//! cargo run --release -p idemkv-bench --bin recovery -- --records 1000000
//! ```
//!
//! For each size a child process fills a store in the current directory
//! with completed records (256-byte bodies, through `Store::import` in
//! batches), then claims and completes fresh keys from 16 threads for two
//! seconds (journal frames, checkpoints, the writeback thread) and is
//! killed with SIGKILL while it does. The parent copies the killed image
//! (file and journal) twice, then times:
//!
//! - `Store::open` of the image: the storage engine loads the allocator
//!   state the last checkpoint recorded (quick repair), idemkv replays the
//!   journal's frames after that checkpoint and commits them;
//! - raw redb opening a copy of the file (the same allocator-state load,
//!   without the journal);
//! - raw redb opening the other copy with a full repair
//!   (`set_check_integrity_on_open`, which walks the whole file as a repair
//!   without a recorded allocator state does): what every open after a
//!   crash cost before checkpoints recorded the allocator state.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use idemkv::StoredResponse;
use idemkv::{Begin, Config, Fingerprint, Key, Record, RecordParts, RecordState, Store};

type Result<T, E = idemkv_bench::BoxError> = std::result::Result<T, E>;

const CHILD_ENV: &str = "IDEMKV_RECOVERY_CHILD";
const IMPORT_BATCH: u64 = 100_000;
const WRITERS: u64 = 16;
const WRITE_FOR: Duration = Duration::from_secs(2);

fn key(i: u64) -> Result<Key> {
    Ok(Key::new("recovery", &format!("r{i}"))?)
}

/// The child: fills `path` with `records` records, then writes until killed.
fn child(path: &Path, records: u64) -> Result<()> {
    let store = Store::open(path, Config::default().sweep_interval(None))?;
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let mut from = 0;
    while from < records {
        let to = (from + IMPORT_BATCH).min(records);
        let batch = (from..to)
            .map(|i| -> Result<Record> {
                Ok(Record::from_parts(RecordParts {
                    key: key(i)?,
                    state: RecordState::Completed {
                        response: StoredResponse::new(201, vec![b'x'; 256]),
                    },
                    fingerprint: Fingerprint::of(&i.to_le_bytes()),
                    token: i + 1,
                    created_at: now,
                    updated_at: now,
                    expires_at: now + day,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        store.import(batch)?;
        from = to;
    }
    println!("filled");
    std::io::stdout().flush()?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..WRITERS {
            let store = &store;
            scope.spawn(move || -> Result<()> {
                for i in (records + t..).step_by(WRITERS as usize) {
                    if t == 0 && started.elapsed() > WRITE_FOR {
                        println!("ready");
                        std::io::stdout().flush()?;
                    }
                    match store.begin(&key(i)?, Fingerprint::of(&i.to_le_bytes()))? {
                        Begin::Claimed(claim) => {
                            store.complete(claim, StoredResponse::new(201, vec![b'y'; 256]))?
                        }
                        other => return Err(format!("key {i}: {other:?}").into()),
                    }
                }
                Ok(())
            });
        }
    });
    Ok(())
}

fn copy_image(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)?;
    let journal = journal_of(from);
    if journal.exists() {
        let target = journal_of(to);
        std::fs::create_dir_all(&target)?;
        for entry in std::fs::read_dir(&journal)? {
            let entry = entry?;
            std::fs::copy(entry.path(), target.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn journal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn measure(exe: &Path, records: u64) -> Result<()> {
    let dir = tempfile::tempdir_in(".")?;
    let path = dir.path().join("killed.redb");
    let filling = Instant::now();
    let mut child = Command::new(exe)
        .env(CHILD_ENV, format!("{}\n{records}", path.display()))
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut filled_in = None;
    for line in lines.by_ref() {
        match line?.as_str() {
            "filled" => filled_in = Some(filling.elapsed()),
            "ready" => break,
            other => return Err(format!("child: {other}").into()),
        }
    }
    child.kill()?;
    let status = child.wait()?;
    if status.signal() != Some(9) {
        return Err(format!("the child was not killed: {status}").into());
    }
    let file_bytes = std::fs::metadata(&path)?.len();
    let segments = std::fs::read_dir(journal_of(&path)).map_or(0, |d| d.count());
    let plain = dir.path().join("plain.redb");
    let repaired = dir.path().join("repaired.redb");
    copy_image(&path, &plain)?;
    copy_image(&path, &repaired)?;
    // The page cache holds the copies' bytes now; drop what it can so that
    // every open reads the file as after a restart would.
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");

    let started = Instant::now();
    let store = Store::open(&path, Config::default().sweep_interval(None))?;
    let idemkv_open = started.elapsed();
    let live = store.metrics().live_records;
    drop(store);

    let started = Instant::now();
    let db = redb::Database::builder().open(&plain)?;
    let redb_open = started.elapsed();
    drop(db);

    let started = Instant::now();
    let db = redb::Database::builder()
        .set_check_integrity_on_open(true)
        .open(&repaired)?;
    let redb_repair = started.elapsed();
    drop(db);

    println!(
        "| {records} | {} MiB | {segments} | {live} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1}× |",
        file_bytes >> 20,
        idemkv_open.as_secs_f64() * 1e3,
        redb_open.as_secs_f64() * 1e3,
        redb_repair.as_secs_f64() * 1e3,
        redb_repair.as_secs_f64() / idemkv_open.as_secs_f64(),
    );
    eprintln!(
        "({records} records filled in {:.1} s)",
        filled_in.unwrap_or_default().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (path, records) = spec.split_once('\n').ok_or("bad child spec")?;
        return child(Path::new(path), records.parse()?);
    }
    let mut sizes = vec![1_000_000u64, 10_000_000];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--records" => {
                let list = args
                    .next()
                    .ok_or("--records needs a list, e.g. 1000000,10000000")?;
                sizes = list
                    .split(',')
                    .map(|n| n.parse())
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown argument {other}; see the file's header").into()),
        }
    }
    let exe = std::env::current_exe()?;
    println!(
        "| records | file | journal segments | records after open | idemkv open (quick repair + journal replay) | raw redb open | raw redb full repair | repair ÷ idemkv |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for records in sizes {
        measure(&exe, records)?;
    }
    Ok(())
}
