//! The kill test of `examples/multi_step.rs`: a child process works through
//! orders (charge, write, notify, each step recorded as a recovery point)
//! and dies in the middle of one, round after round, on the same directory.
//! Each new child takes the dead one's order over after its lease and
//! resumes it from its recovery point. At the end a last child finishes
//! every order, and the parent checks the effect lines: every order was
//! charged, written and notified exactly once, and its claim completed with
//! the receipt of that one charge.
//!
//! Where a child dies is arranged, not left to the machine's load: each
//! child aborts (as a kill would stop it: no destructor, no flush) just
//! before the effect of its k-th step, k from a seeded sequence (the
//! example's `crash_after`), so every death lands inside an order, after
//! at least one recovery point, at each of the three steps in turn. Every
//! round must prove something: each child must die that way (not by an
//! error or by running out of work), and every death must be followed by a
//! takeover that resumes from a recovery point (counted per phase).
//!
//! This file has its own `main` (no test harness): the same binary is the
//! parent and, with `IDEMKV_MULTI_STEP_CHILD` set, the child, which runs
//! the example's code. `IDEMKV_MULTI_STEP_ROUNDS=N` sets the number of
//! kill rounds (default 200).

#[allow(dead_code)]
#[path = "../examples/multi_step.rs"]
mod multi_step;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idemkv::{Begin, Config, Fingerprint, Store};
use multi_step::{EFFECTS, Options, STORE, complete_lines, order_key, receipt};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const CHILD_ENV: &str = "IDEMKV_MULTI_STEP_CHILD";
const SIGABRT: i32 = 6;
/// How long a child may take to reach its crash step (it is a few
/// milliseconds of work and, at most, a lease's wait).
const CHILD_DEADLINE: Duration = Duration::from_secs(120);
/// Short, so that a killed child's order is taken over a round or two
/// later; every step's recovery point restarts it.
const LEASE: Duration = Duration::from_millis(50);
/// Each step's work, so that kills land inside orders as often as between.
const PAUSE: Duration = Duration::from_millis(1);

fn main() -> std::process::ExitCode {
    let outcome = match std::env::var(CHILD_ENV) {
        Ok(args) => child(&args),
        Err(_) => parent(),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `DIR FROM UNTIL [CRASH_AFTER]`: works on orders `FROM..UNTIL` (an empty
/// `UNTIL`: on and on), and aborts after `CRASH_AFTER` steps if given.
fn child(args: &str) -> Result<()> {
    let parts: Vec<&str> = args.split('\t').collect();
    let [dir, from, until, crash_after @ ..] = &parts[..] else {
        return Err(
            format!("{CHILD_ENV}={args:?} is not DIR\\tFROM\\tUNTIL[\\tCRASH_AFTER]").into(),
        );
    };
    let options = Options {
        dir: dir.into(),
        from: from.parse()?,
        until: (!until.is_empty()).then(|| until.parse()).transpose()?,
        lease: LEASE,
        pause: PAUSE,
        crash_after: crash_after.first().map(|k| k.parse()).transpose()?,
    };
    multi_step::work(&options, &mut std::io::stdout())?;
    Ok(())
}

/// What the children reported.
#[derive(Default)]
struct Reports {
    /// Orders known done: children start after the lowest one that is not.
    done: std::collections::BTreeSet<u64>,
    /// The highest order any child claimed.
    highest: Option<u64>,
    /// Resumptions, by the phase resumed from.
    resumed: BTreeMap<String, u64>,
}

impl Reports {
    fn read(&mut self, output: &str) -> Result<()> {
        for line in complete_lines(output) {
            match line.split(' ').collect::<Vec<_>>()[..] {
                ["CLAIMED", n] => self.claimed(n.parse()?),
                ["RESUMED", n, phase] => {
                    self.claimed(n.parse()?);
                    *self.resumed.entry(phase.to_string()).or_default() += 1;
                }
                ["DONE", n] => {
                    self.done.insert(n.parse()?);
                }
                _ => return Err(format!("a child printed {line:?}").into()),
            }
        }
        Ok(())
    }

    fn claimed(&mut self, n: u64) {
        self.highest = self.highest.max(Some(n));
    }

    /// The first order not known to be done.
    fn first_open(&self) -> u64 {
        (0..).find(|n| !self.done.contains(n)).unwrap_or(0)
    }
}

/// Waits for `child` to exit; past `deadline`, kills it and fails.
fn wait_or_kill(
    child: &mut std::process::Child,
    deadline: Duration,
) -> Result<std::process::ExitStatus> {
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > until {
            child.kill()?;
            child.wait()?;
            return Err(format!("a child did not reach its crash step within {deadline:?}").into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn spawn(args: String) -> Result<std::process::Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn parent() -> Result<()> {
    let rounds: u64 = std::env::var("IDEMKV_MULTI_STEP_ROUNDS")
        .ok()
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(200);
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let dir_text = dir.to_str().ok_or("the scratch path is not UTF-8")?;
    let mut reports = Reports::default();
    // xorshift, seeded per run and printed, so that a failure can be rerun
    // with IDEMKV_MULTI_STEP_SEED.
    let mut random: u64 = match std::env::var("IDEMKV_MULTI_STEP_SEED") {
        Ok(seed) => seed.parse()?,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64,
    } | 1;
    let seed = random;
    let started = std::time::Instant::now();
    for round in 0..rounds {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        // The child dies before the effect of its k-th step: 1 to 9 steps,
        // so every step of an order is where some child dies.
        let crash_after = 1 + random % 9;
        let mut child = spawn(format!(
            "{dir_text}\t{}\t\t{crash_after}",
            reports.first_open()
        ))?;
        let status = wait_or_kill(&mut child, CHILD_DEADLINE)?;
        let (mut output, mut errors) = (String::new(), String::new());
        child
            .stdout
            .take()
            .ok_or("no stdout")?
            .read_to_string(&mut output)?;
        child
            .stderr
            .take()
            .ok_or("no stderr")?
            .read_to_string(&mut errors)?;
        if status.signal() != Some(SIGABRT) || !errors.contains("crashing after") {
            return Err(format!(
                "round {round} (seed {seed}): the child did not die at its step {crash_after} but \
                 ended with {status}: {errors}"
            )
            .into());
        }
        reports.read(&output)?;
    }
    let killing = started.elapsed();

    // The last child finishes every order any child claimed.
    let until = reports.highest.ok_or("no child ever claimed an order")? + 1;
    let last = spawn(format!("{dir_text}\t0\t{until}"))?.wait_with_output()?;
    if !last.status.success() {
        return Err(format!(
            "the last child failed ({}): {}",
            last.status,
            String::from_utf8_lossy(&last.stderr)
        )
        .into());
    }
    reports.read(&String::from_utf8(last.stdout)?)?;

    let charges = check(dir, until)?;
    let resumed: u64 = reports.resumed.values().sum();
    println!(
        "{rounds} crash rounds in {:.1} s (seed {seed}); {until} orders, each charged, written \
         and notified exactly once; {resumed} resumed from a recovery point ({:?}); {charges} charges",
        killing.as_secs_f64(),
        reports.resumed
    );
    // Every death left an order in flight with a recovery point, and a
    // later child resumed it.
    if resumed < rounds {
        return Err(format!(
            "only {resumed} resumptions after {rounds} deaths inside orders (seed {seed})"
        )
        .into());
    }
    Ok(())
}

/// The effect lines and the store agree: orders `0..until` each have one
/// charge, one row naming that charge, one notification, and a claim
/// completed with that charge's receipt. Returns the number of charges.
fn check(dir: &Path, until: u64) -> Result<usize> {
    let text = std::fs::read_to_string(dir.join(EFFECTS))?;
    let mut charges: HashMap<u64, Vec<String>> = HashMap::new();
    let mut orders: HashMap<u64, Vec<String>> = HashMap::new();
    let mut notes: HashMap<u64, u64> = HashMap::new();
    for line in complete_lines(&text) {
        match line.split(' ').collect::<Vec<_>>()[..] {
            ["charge", n, _, id] => charges.entry(n.parse()?).or_default().push(id.into()),
            ["order", n, id] => orders.entry(n.parse()?).or_default().push(id.into()),
            ["notify", n, _] => *notes.entry(n.parse()?).or_default() += 1,
            _ => return Err(format!("a bad effect line {line:?}").into()),
        }
    }
    let store = Store::open(dir.join(STORE), Config::default().sweep_interval(None))?;
    for n in 0..until {
        let charge = match charges.get(&n).map(Vec::as_slice) {
            Some([one]) => one,
            other => return Err(format!("order-{n} was charged {other:?}").into()),
        };
        if orders.get(&n).map(Vec::as_slice) != Some(std::slice::from_ref(charge)) {
            return Err(format!("order-{n}: rows {:?} for charge {charge}", orders.get(&n)).into());
        }
        if notes.get(&n) != Some(&1) {
            return Err(format!("order-{n} was notified {:?} times", notes.get(&n)).into());
        }
        let key = order_key(n)?;
        match store.begin(&key, Fingerprint::of(key.idempotency_key().as_bytes()))? {
            Begin::Replay(response) if response == receipt(n, charge) => {}
            other => return Err(format!("order-{n}: {other:?} instead of its receipt").into()),
        }
    }
    if charges.keys().any(|n| *n >= until) {
        return Err("an order past the last one claimed was charged".into());
    }
    Ok(charges.len())
}
