//! Plays one request through every outcome idemkv can give.
//!
//! ```text
//! cargo run --release --example quickstart            # uses ./idem.redb (and ./idem.redb.journal/)
//! cargo run --release --example quickstart -- my.redb
//! ```
//!
//! Run it twice: the second run finds the first run's completed request in
//! the file and replays it instead of charging again.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idemkv::{Begin, Config, Fingerprint, Key, Store, StoredResponse};

fn main() -> ExitCode {
    // Errors are printed with Display: idemkv's messages say what to do.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Plays one request through every outcome idemkv can give; a second run on
/// the same file replays the first run's answer.
#[derive(clap::Parser)]
#[command(name = "quickstart")]
struct Args {
    /// The store's file (its journal directory sits beside it).
    #[arg(default_value = "idem.redb")]
    path: std::path::PathBuf,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = <Args as clap::Parser>::parse().path;
    let store = Store::open(&path, Config::default().lease(Duration::from_secs(30)))?;
    println!("opened {}", path.display());

    // What a client sends: an Idempotency-Key header and a body. The scope
    // keeps one tenant's keys apart from another's.
    let key = Key::new("acct_42 POST /v1/charges", "charge-2026-11-27-0001")?;
    let body = br#"{"amount":1200,"currency":"eur"}"#;
    let fingerprint = Fingerprint::of(body);

    // Steps are numbered as they happen: a second run skips the charge.
    let mut steps = 0;
    let mut step = || {
        steps += 1;
        steps
    };
    println!("\n{}. first attempt", step());
    match store.begin(&key, fingerprint)? {
        Begin::Claimed(claim) => {
            println!(
                "   claimed (token {}): the claim is on disk, safe to charge the card",
                claim.token()
            );

            println!(
                "\n{}. a retry arrives while the charge is still running",
                step()
            );
            describe(&store, store.begin(&key, fingerprint)?)?;

            let charge_id = format!(
                "ch_{}",
                SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
            );
            let response =
                StoredResponse::new(201, format!(r#"{{"id":"{charge_id}","amount":1200}}"#))
                    .with_header("content-type", "application/json");
            store.complete(claim, response)?;
            println!(
                "\n{}. charged once as {charge_id}; the response is stored",
                step()
            );
        }
        other => {
            println!("   this key was used by an earlier run of the example:");
            describe(&store, other)?;
        }
    }

    println!(
        "\n{}. the client lost the response and retries with the same body",
        step()
    );
    describe(&store, store.begin(&key, fingerprint)?)?;

    println!(
        "\n{}. a buggy client reuses the key for a different charge",
        step()
    );
    describe(
        &store,
        store.begin(
            &key,
            Fingerprint::of(br#"{"amount":9900,"currency":"eur"}"#),
        )?,
    )?;

    let m = store.metrics();
    println!(
        "\nmetrics: claims={} replays={} in_progress={} mismatches={} completions={} commits={} committed_ops={}",
        m.claims, m.replays, m.in_progress, m.mismatches, m.completions, m.commits, m.committed_ops
    );
    Ok(())
}

fn describe(store: &Store, answer: Begin) -> Result<(), idemkv::Error> {
    match answer {
        Begin::Claimed(claim) => {
            println!(
                "   claimed (token {}); releasing it, nothing was done",
                claim.token()
            );
            store.release(claim)?;
        }
        Begin::Replay(response) => println!(
            "   replay: the stored response comes back, the card is not charged again\n   -> {} {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        ),
        Begin::InProgress { retry_after } => println!(
            "   in progress: another attempt holds the key; retry in {retry_after:?} (HTTP 409)"
        ),
        Begin::Mismatch => {
            println!(
                "   mismatch: same key, different request; rejected without running it (HTTP 422)"
            )
        }
    }
    Ok(())
}
