//! Every command of `idemkv`, run as a real process against real files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use idemkv::{Begin, Config, Fingerprint, Key, ManualClock, Store, StoredResponse, Terms};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `idemkv ARGS` with `stdin` as its standard input.
fn idemkv(args: &[&str], stdin: &[u8]) -> Result<Output, std::io::Error> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idemkv"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin)?;
    }
    child.wait_with_output()
}

/// Runs `idemkv ARGS` and insists on success; its standard output.
fn ok(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = idemkv(args, b"")?;
    if !out.status.success() {
        return Err(format!(
            "idemkv {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn json_lines(text: &str) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    text.lines().map(serde_json::from_str).collect()
}

fn key(scope: &str, name: &str) -> Key {
    Key::new(scope, name).expect("test keys are valid")
}

fn claim(store: &Store, key: &Key, terms: Terms) -> idemkv::Claim {
    match store.begin_with(key, Fingerprint::of(b"{}"), terms) {
        Ok(Begin::Claimed(claim)) => claim,
        other => panic!("expected a claim, got {other:?}"),
    }
}

/// A store file written two hours ago (by the clock), closed: three
/// completed records in scope `t1`, one in `t2`; an in-flight claim with a
/// 60 s lease (stuck by now) and one with a 1-day lease (still running).
fn populated(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join("store.redb");
    let clock = ManualClock::new(SystemTime::now() - Duration::from_secs(2 * 3600));
    let config = Config::default()
        .clock(clock)
        .retention(Duration::from_secs(7 * 24 * 3600))
        .sweep_interval(None);
    let store = Store::open(&path, config)?;
    for (scope, name) in [("t1", "a"), ("t1", "b"), ("t1", "c"), ("t2", "d")] {
        let response = StoredResponse::new(201, format!("body of {name}: \u{0}\u{ff}"))
            .with_header("content-type", "text/plain");
        store.complete(claim(&store, &key(scope, name), Terms::default()), response)?;
    }
    drop(claim(
        &store,
        &key("t1", "stuck"),
        Terms::default().lease(Duration::from_secs(60)),
    ));
    let long = Terms::default().lease(Duration::from_secs(24 * 3600));
    let running = claim(&store, &key("t2", "running"), long);
    // Binary state, so that the export's base64 is exercised.
    store.record_progress(&running, "charge_created", &b"ch_1 \x00\xff"[..])?;
    drop(running);
    store.close()?;
    Ok(path)
}

#[test]
fn stats_list_stuck_and_get_describe_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = populated(dir.path())?;
    let file = path.to_str().ok_or("path")?;

    let stats: serde_json::Value = serde_json::from_str(&ok(&["stats", file, "--json"])?)?;
    assert_eq!(stats["completed"], 4);
    assert_eq!(stats["in_flight"], 2);
    assert_eq!(stats["past_lease"], 1);
    assert_eq!(stats["top_scopes"][0], serde_json::json!(["t1", 4]));
    assert_eq!(stats["oldest_in_flight"]["key"], "stuck");
    assert_eq!(stats["format_version"], 4);
    let human = ok(&["stats", file])?;
    assert!(
        human.contains("6 (2 in flight, 1 of them past their lease; 4 completed)"),
        "{human}"
    );

    let completed = json_lines(&ok(&["list", file, "--state", "completed", "--json"])?)?;
    assert_eq!(completed.len(), 4);
    let t2 = json_lines(&ok(&["list", file, "--scope", "t2", "--json"])?)?;
    assert_eq!(t2.len(), 2);
    let limited = json_lines(&ok(&["list", file, "--limit", "3", "--json"])?)?;
    assert_eq!(limited.len(), 3);
    let old = json_lines(&ok(&["list", file, "--older-than", "1h", "--json"])?)?;
    assert_eq!(old.len(), 6, "everything was written two hours ago");
    assert_eq!(
        ok(&["list", file, "--older-than", "3h"])?,
        "no record matches\n",
        "an empty result says so instead of printing a bare header"
    );
    let table = ok(&["list", file])?;
    assert!(table.starts_with("KEY"), "{table}");
    assert_eq!(table.lines().count(), 7);

    let stuck = json_lines(&ok(&["stuck", file, "--json"])?)?;
    assert_eq!(stuck.len(), 1);
    assert_eq!(
        (&stuck[0]["key"], &stuck[0]["state"]),
        (&"stuck".into(), &"in_flight".into())
    );
    assert!(json_lines(&ok(&["stuck", file, "--older-than", "3h", "--json"])?)?.is_empty());
    assert_eq!(
        ok(&["stuck", file, "--older-than", "3h"])?,
        "no claim is past its lease\n"
    );

    let one: serde_json::Value = serde_json::from_str(&ok(&["get", file, "t1", "b", "--json"])?)?;
    assert_eq!(one["response"]["status"], 201);
    assert_eq!(one["fingerprint"].as_str().map(str::len), Some(64));
    let shown = ok(&["get", file, "t1", "b"])?;
    assert!(
        shown.contains("status") && shown.contains("body of b"),
        "{shown}"
    );
    let raw = idemkv(&["get", file, "t1", "b", "--body", "-"], b"")?;
    assert_eq!(raw.stdout, "body of b: \u{0}\u{ff}".as_bytes());
    let absent = idemkv(&["get", file, "t1", "nope"], b"")?;
    assert_eq!(absent.status.code(), Some(1));
    let running = ok(&["get", file, "t2", "running"])?;
    assert!(
        running.contains("charge_created (7 bytes of state"),
        "{running}"
    );
    Ok(())
}

#[test]
fn release_and_remove_ask_first_and_refuse_the_wrong_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = populated(dir.path())?;
    let file = path.to_str().ok_or("path")?;

    // No terminal to ask on and no --yes: refused, nothing changed.
    let refused = idemkv(&["release", file, "t1", "stuck"], b"y\n")?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(json_lines(&ok(&["stuck", file, "--json"])?)?.len(), 1);

    let completed = idemkv(&["release", file, "t1", "a", "--yes"], b"")?;
    assert_eq!(completed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&completed.stderr).contains("idemkv remove"));

    assert!(ok(&["release", file, "t1", "stuck", "--yes"])?.contains("released"));
    assert!(json_lines(&ok(&["stuck", file, "--json"])?)?.is_empty());
    let store = Store::open(&path, Config::default().sweep_interval(None))?;
    assert!(matches!(
        store.begin(&key("t1", "stuck"), Fingerprint::of(b"{}"))?,
        Begin::Claimed(_)
    ));
    store.close()?;

    assert!(ok(&["remove", file, "t1", "a", "-y"])?.contains("removed"));
    let gone = idemkv(&["get", file, "t1", "a"], b"")?;
    assert_eq!(gone.status.code(), Some(1));
    let again = idemkv(&["remove", file, "t1", "a", "--yes"], b"")?;
    assert_eq!(again.status.code(), Some(1));
    Ok(())
}

#[test]
fn export_then_import_gives_back_the_same_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = populated(dir.path())?;
    let file = path.to_str().ok_or("path")?;
    let exported = idemkv(&["export", file], b"")?;
    assert!(exported.status.success());
    assert_eq!(exported.stdout.iter().filter(|b| **b == b'\n').count(), 6);

    let copy = dir.path().join("copy.redb");
    let copy_file = copy.to_str().ok_or("path")?;
    let imported = idemkv(&["import", copy_file, "--json"], &exported.stdout)?;
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&imported.stdout)?;
    assert_eq!(summary["imported"], 6);

    let again = idemkv(&["export", copy_file], b"")?;
    assert_eq!(
        again.stdout, exported.stdout,
        "the same records, byte for byte"
    );

    // Importing into a file that holds them already conflicts and changes
    // nothing.
    let conflict = idemkv(&["import", copy_file], &exported.stdout)?;
    assert_eq!(conflict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("nothing was imported"));
    assert_eq!(idemkv(&["export", copy_file], b"")?.stdout, exported.stdout);
    // The running claim's recovery point went out and came back.
    let text = String::from_utf8(exported.stdout)?;
    assert!(
        text.contains(r#""recovery":{"phase":"charge_created","state":"Y2hfMSAA/w=="}"#),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_bad_import_line_is_named_and_nothing_is_imported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = populated(dir.path())?;
    let exported = idemkv(&["export", path.to_str().ok_or("path")?], b"")?.stdout;
    let mut lines: Vec<&[u8]> = exported.split(|b| *b == b'\n').collect();
    lines[2] = b"{\"scope\":\"t1\",\"key\":";
    let broken = lines.join(&b'\n');
    let target = dir.path().join("target.redb");
    let out = idemkv(&["import", target.to_str().ok_or("path")?], &broken)?;
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("line 3") && message.contains("nothing was imported"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "one clear line: {message}");
    assert!(!target.exists(), "nothing was written, not even a file");

    let bad_key = b"{\"scope\":\"s\",\"key\":\"has space\",\"fingerprint\":\"00\",\"token\":1,\
        \"created_at_ms\":0,\"updated_at_ms\":0,\"expires_at_ms\":0,\"state\":\"in_flight\",\
        \"lease_until_ms\":0}\n";
    let out = idemkv(&["import", target.to_str().ok_or("path")?], bad_key)?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: invalid idempotency key"));
    Ok(())
}

#[test]
fn backup_writes_a_copy_that_opens_alone_and_never_replaces_a_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = populated(dir.path())?;
    let file = path.to_str().ok_or("path")?;
    let dest = dir.path().join("copy.redb");
    let dest_arg = dest.to_str().ok_or("path")?;
    let done: serde_json::Value =
        serde_json::from_str(&ok(&["backup", file, dest_arg, "--json"])?)?;
    let listed = json_lines(&ok(&["list", file, "--json"])?)?;
    assert_eq!(done["records"].as_u64(), Some(listed.len() as u64));
    assert_eq!(json_lines(&ok(&["list", dest_arg, "--json"])?)?, listed);
    assert!(!dir.path().join("copy.redb.journal").exists());
    // A second backup to the same path is refused, and changes nothing.
    let before = std::fs::read(&dest)?;
    let again = idemkv(&["backup", file, dest_arg], b"")?;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("new path"));
    assert_eq!(std::fs::read(&dest)?, before);
    Ok(())
}

#[test]
fn sweep_verify_and_compact() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("old.redb");
    let file = path.to_str().ok_or("path")?;
    {
        // Records that expired a day ago, and one that lives on.
        let clock = ManualClock::new(SystemTime::now() - Duration::from_secs(3 * 24 * 3600));
        let config = Config::default()
            .clock(clock)
            .retention(Duration::from_secs(24 * 3600))
            .sweep_interval(None);
        let store = Store::open(&path, config)?;
        for i in 0..300 {
            let response = StoredResponse::new(200, vec![b'x'; 2000]);
            store.complete(
                claim(&store, &key("old", &format!("k{i}")), Terms::default()),
                response,
            )?;
        }
        let live = Terms::default().retention(Duration::from_secs(30 * 24 * 3600));
        store.complete(
            claim(&store, &key("new", "kept"), live),
            StoredResponse::new(200, "MARKER-0123456789"),
        )?;
        store.close()?;
    }
    let swept: serde_json::Value = serde_json::from_str(&ok(&["sweep", file, "--json"])?)?;
    assert_eq!(swept["deleted"], 300);
    let stats: serde_json::Value = serde_json::from_str(&ok(&["stats", file, "--json"])?)?;
    assert_eq!(stats["completed"], 1);
    assert!(stats["last_sweep_ms"].is_u64());

    assert!(ok(&["verify", file])?.contains("problems"));
    let compacted: serde_json::Value = serde_json::from_str(&ok(&["compact", file, "--json"])?)?;
    assert!(compacted["bytes_after"].as_u64() < compacted["bytes_before"].as_u64());
    assert_eq!(json_lines(&ok(&["list", file, "--json"])?)?.len(), 1);

    // Damage the one record's body on disk: verify exits 3.
    let mut bytes = std::fs::read(&path)?;
    let at = bytes
        .windows(17)
        .position(|w| w == b"MARKER-0123456789")
        .ok_or("the record's body is not in the file")?;
    bytes[at + 8] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    let damaged = idemkv(&["verify", file], b"")?;
    assert_eq!(
        damaged.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );
    Ok(())
}

#[test]
fn unknown_states_and_durations_are_refused_with_the_accepted_values() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = populated(dir.path())?;
    let file = path.to_str().ok_or("path")?;
    let state = idemkv(&["list", file, "--state", "done"], b"")?;
    assert_eq!(state.status.code(), Some(2));
    let message = String::from_utf8_lossy(&state.stderr);
    assert!(
        message.contains("in-flight") && message.contains("completed"),
        "{message}"
    );
    let duration = idemkv(&["stuck", file, "--older-than", "soon"], b"")?;
    assert_eq!(duration.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&duration.stderr).contains("--older-than"));
    Ok(())
}

#[test]
fn missing_foreign_and_held_files_are_one_clear_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.redb");
    for command in [
        "stats", "list", "stuck", "sweep", "verify", "compact", "export",
    ] {
        let out = idemkv(&[command, missing.to_str().ok_or("path")?], b"")?;
        assert_eq!(out.status.code(), Some(1), "{command}");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains("does not exist"), "{command}: {message}");
        assert_eq!(message.lines().count(), 1);
    }
    assert!(!missing.exists(), "never created by a command that reads");

    let foreign = dir.path().join("notes.txt");
    std::fs::write(
        &foreign,
        "not a database at all, just some text that is long enough",
    )?;
    let out = idemkv(&["stats", foreign.to_str().ok_or("path")?], b"")?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let future = dir.path().join("future.redb");
    Store::open(&future, Config::default())?.close()?;
    {
        let db = redb::Database::open(&future)?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))?
            .insert("format_version", 99)?;
        txn.commit()?;
    }
    let out = idemkv(&["list", future.to_str().ok_or("path")?], b"")?;
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("upgrade idemkv"), "{message}");
    assert_eq!(message.lines().count(), 1);

    let held = dir.path().join("held.redb");
    let store = Store::open(&held, Config::default())?;
    let out = idemkv(&["stats", held.to_str().ok_or("path")?], b"")?;
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("open in a running process") && message.contains("stop"),
        "{message}"
    );
    store.close()?;
    Ok(())
}
