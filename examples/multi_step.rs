//! A three-step operation that survives being killed at any point: each
//! step's progress is a recovery point, and the attempt that takes a key
//! over resumes after the last finished step instead of starting again.
//!
//! ```text
//! cargo run --release --example multi_step                     # 20 orders in ./multi-step/
//! cargo run --release --example multi_step -- --crash-after 7  # dies in the middle of an order
//! cargo run --release --example multi_step                     # ... and this run resumes it
//! ```
//!
//! Each order takes three steps, none of which may happen twice:
//! 1. **charge** the card at the card network (external: it cannot join our
//!    transaction, but it honours a reference, as real payment APIs honour
//!    their idempotency keys);
//! 2. **write** the order row (local: ours to look up);
//! 3. **notify** the customer through the mailer (external, with a
//!    message reference like the charge).
//!
//! The pattern, as in brandur's "atomic phases":
//! - before an external step, record its *intent* with a fresh reference
//!   (`charging` with the charge reference), then call with that reference,
//!   then record the *result* (`charged` with the charge id). A takeover
//!   that finds `charging` calls again with the same reference and gets the
//!   same charge back; without the point it would invent a new reference
//!   and charge the card a second time;
//! - after a local step, record its result; a takeover that finds the
//!   step before it checks the local state first (the row may have been
//!   written just before the crash).
//!
//! The three services are files of effect lines in the directory
//! (`effects.log`): one line per charge, order and notification actually
//! made, which the kill test (`tests/multi_step.rs`) reads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use idemkv::{Begin, Claim, Config, Fingerprint, Key, Store, StoredResponse};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A three-step order (charge, write, notify) that survives being killed at
/// any point: a takeover resumes from the last recovery point.
#[derive(clap::Parser)]
#[command(name = "multi_step")]
struct Args {
    /// Directory for the store and the effect lines.
    #[arg(default_value = "multi-step")]
    dir: PathBuf,
    /// Exit abruptly, as a crash would, after this many steps.
    #[arg(long, value_name = "STEPS")]
    crash_after: Option<u64>,
    /// How many orders to work through.
    #[arg(long, default_value_t = 20)]
    orders: u64,
}

fn run() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let options = Options {
        dir: args.dir,
        from: 0,
        until: Some(args.orders),
        lease: Duration::from_secs(2),
        pause: Duration::from_millis(20),
        crash_after: args.crash_after,
    };
    std::fs::create_dir_all(&options.dir)?;
    let summary = work(&options, &mut std::io::stdout())?;
    println!(
        "{} orders done ({} resumed from a recovery point); effects in {}",
        summary.done,
        summary.resumed,
        options.dir.join(EFFECTS).display()
    );
    Ok(())
}

/// The effect lines' file, in the working directory.
pub const EFFECTS: &str = "effects.log";
/// The store's file, in the working directory.
pub const STORE: &str = "idem.redb";

/// What a run works on.
pub struct Options {
    /// Where the store and the effect lines live.
    pub dir: PathBuf,
    /// The first order's number (the ones before are done).
    pub from: u64,
    /// One past the last order's number; `None` for no end (until killed).
    pub until: Option<u64>,
    /// The lease of each claim: how long a dead attempt blocks its order.
    pub lease: Duration,
    /// The time each step's work takes.
    pub pause: Duration,
    /// Exits abruptly (as a crash would) after this many steps.
    pub crash_after: Option<u64>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Orders finished (by this run or an earlier one).
    pub done: u64,
    /// Orders this run resumed from a recovery point.
    pub resumed: u64,
}

/// The key of order `n`.
pub fn order_key(n: u64) -> Result<Key> {
    Ok(Key::new("shop POST /v1/orders", &format!("order-{n}"))?)
}

/// The receipt an order's claim is completed with.
pub fn receipt(n: u64, charge_id: &str) -> StoredResponse {
    StoredResponse::new(201, format!("receipt for order-{n}: {charge_id}"))
}

/// Processes orders `from..until` (or on and on), deferring one whose claim
/// is held by a dead attempt until its lease ends. Reports on `out`, one
/// line each: `CLAIMED n`, `RESUMED n PHASE`, `DONE n`.
pub fn work(options: &Options, out: &mut impl Write) -> Result<Summary> {
    let store = Store::open(
        options.dir.join(STORE),
        Config::default().lease(options.lease),
    )?;
    let mut effects = Effects::open(&options.dir.join(EFFECTS))?;
    let mut steps = Steps {
        taken: 0,
        crash_after: options.crash_after,
        pause: options.pause,
    };
    let mut summary = Summary::default();
    let mut next = options.from;
    // Orders held by a dead attempt, and when to look again.
    let mut deferred: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        let n = match deferred.front() {
            Some(&(n, at)) if at <= Instant::now() => {
                deferred.pop_front();
                n
            }
            _ if options.until.is_none_or(|until| next < until) => {
                next += 1;
                next - 1
            }
            Some(&(_, at)) => {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                continue;
            }
            None => break,
        };
        let key = order_key(n)?;
        match store.begin(&key, Fingerprint::of(key.idempotency_key().as_bytes()))? {
            Begin::Replay(_) => {}
            Begin::InProgress { retry_after } => {
                deferred.push_back((n, Instant::now() + retry_after));
                continue;
            }
            Begin::Mismatch => return Err(format!("{key}: the payload changed").into()),
            Begin::Claimed(claim) => {
                if let Some(point) = claim.recovered() {
                    summary.resumed += 1;
                    writeln!(out, "RESUMED {n} {}", point.phase())?;
                } else {
                    writeln!(out, "CLAIMED {n}")?;
                }
                out.flush()?;
                let charge_id = run_steps(&store, &claim, n, &mut effects, &mut steps)?;
                store.complete(claim, receipt(n, &charge_id))?;
            }
        }
        summary.done += 1;
        writeln!(out, "DONE {n}")?;
        out.flush()?;
    }
    store.close()?;
    Ok(summary)
}

/// Counts steps, and crashes on request.
struct Steps {
    taken: u64,
    crash_after: Option<u64>,
    pause: Duration,
}

impl Steps {
    /// One step's work.
    fn work(&mut self) {
        std::thread::sleep(self.pause);
        self.taken += 1;
        if self.crash_after == Some(self.taken) {
            eprintln!("crashing after {} steps, as asked", self.taken);
            std::process::abort();
        }
    }
}

/// Runs order `n`'s steps from its claim's recovery point to the end;
/// returns the charge id. A phase names what is done; its state carries what
/// the next steps need (the references and the charge id).
fn run_steps(
    store: &Store,
    claim: &Claim,
    n: u64,
    effects: &mut Effects,
    steps: &mut Steps,
) -> Result<String> {
    let mut phase = match claim.recovered() {
        Some(point) => (
            point.phase().to_string(),
            String::from_utf8(point.state().to_vec())?,
        ),
        None => ("start".to_string(), String::new()),
    };
    loop {
        phase = match (phase.0.as_str(), phase.1.as_str()) {
            ("start", _) => {
                // The intent first, with a reference no other attempt uses:
                // from here on every attempt charges with this one.
                let reference = format!("chg-{n}-{}", claim.token());
                ("charging".into(), reference)
            }
            ("charging", reference) => {
                steps.work();
                let charge_id = effects.charge(n, reference)?;
                ("charged".into(), charge_id)
            }
            ("charged", charge_id) => {
                steps.work();
                // The row may be there already: written just before the
                // crash that this attempt took over from.
                effects.write_order(n, charge_id)?;
                ("order_written".into(), charge_id.to_string())
            }
            ("order_written", charge_id) => {
                let message = format!("msg-{n}-{}", claim.token());
                ("notifying".into(), format!("{charge_id} {message}"))
            }
            ("notifying", state) => {
                let (charge_id, message) = state
                    .split_once(' ')
                    .ok_or_else(|| format!("order-{n}: a bad notifying state {state:?}"))?;
                steps.work();
                effects.notify(n, message)?;
                return Ok(charge_id.to_string());
            }
            (unknown, _) => return Err(format!("order-{n}: unknown phase {unknown:?}").into()),
        };
        store.record_progress(claim, &phase.0, phase.1.clone().into_bytes())?;
    }
}

/// The card network, the order table and the mailer, as effect lines in one
/// append-only file: `charge N REFERENCE CHARGE_ID`, `order N CHARGE_ID`,
/// `notify N MESSAGE`. Each line is one write of the whole line, so a kill
/// leaves whole lines (and at worst a torn last line, which is ignored and
/// ended before the next append).
pub struct Effects {
    file: File,
    /// Charge ids by reference (the network's memory of references).
    charges: HashMap<String, String>,
    /// Orders with a row.
    orders: HashSet<u64>,
    /// Messages sent (the mailer's memory of references).
    messages: HashSet<String>,
}

impl Effects {
    /// Opens the file and reads what every earlier run did.
    pub fn open(path: &Path) -> Result<Effects> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut effects = Effects {
            file,
            charges: HashMap::new(),
            orders: HashSet::new(),
            messages: HashSet::new(),
        };
        for line in complete_lines(&text) {
            match line.split(' ').collect::<Vec<_>>()[..] {
                ["charge", _, reference, id] => {
                    effects.charges.insert(reference.into(), id.into());
                }
                ["order", n, _] => {
                    effects.orders.insert(n.parse()?);
                }
                ["notify", _, message] => {
                    effects.messages.insert(message.into());
                }
                _ => return Err(format!("{}: a bad line {line:?}", path.display()).into()),
            }
        }
        if !text.is_empty() && !text.ends_with('\n') {
            effects.file.write_all(b"\n")?;
        }
        Ok(effects)
    }

    /// Charges order `n` under `reference`: a reference seen before returns
    /// its charge, as a payment API does with an idempotency key.
    fn charge(&mut self, n: u64, reference: &str) -> Result<String> {
        if let Some(id) = self.charges.get(reference) {
            return Ok(id.clone());
        }
        let id = format!("ch_{reference}");
        self.append(&format!("charge {n} {reference} {id}"))?;
        self.charges.insert(reference.into(), id.clone());
        Ok(id)
    }

    /// Writes order `n`'s row unless it is there.
    fn write_order(&mut self, n: u64, charge_id: &str) -> Result<()> {
        if self.orders.insert(n) {
            self.append(&format!("order {n} {charge_id}"))?;
        }
        Ok(())
    }

    /// Sends `message` unless the mailer has it already.
    fn notify(&mut self, n: u64, message: &str) -> Result<()> {
        if self.messages.insert(message.into()) {
            self.append(&format!("notify {n} {message}"))?;
        }
        Ok(())
    }

    fn append(&mut self, line: &str) -> Result<()> {
        self.file.seek(SeekFrom::End(0))?;
        self.file.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }
}

/// The lines of `text` that ended with a newline (a torn last line did not
/// happen as far as anyone reading it is concerned).
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole.split('\n').filter(|line| !line.is_empty())
}
