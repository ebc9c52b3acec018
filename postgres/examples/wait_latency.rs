//! How long a waiter on one replica takes to get the answer once the
//! holder on another replica completes the key: two backends (two pools,
//! as two replicas have) on one table; for each of 300 keys the holder
//! claims it, the other replica's waiting `begin` parks on it, the holder
//! holds it for 20 ms more (its side effect), and the time
//! from the moment the holder's `complete` starts to the moment the
//! waiter has its replay is measured. Run with push wake-ups
//! (`LISTEN`/`NOTIFY`) and with polling alone, in one run:
//!
//! ```text
//! cargo run --release -p idemkv-postgres --example wait_latency -- [URL]
//! ```
//!
//! The URL defaults to the local server's `test` database.

use std::time::{Duration, Instant};

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_postgres::{PgBackend, PgConfig};

const KEYS: usize = 300;
/// How long the holder holds each key after the waiter parked.
const HOLD: Duration = Duration::from_millis(20);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn replica(url: &str, schema: &str, push: bool) -> Result<PgBackend, BoxError> {
    let config = PgConfig::default()
        .schema(schema)
        .pool_size(4)
        .push_wakeups(push);
    let backend = PgBackend::connect(url, config).await?;
    while push && !backend.listening() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(backend)
}

/// Wait-to-answer latencies in microseconds, sorted.
async fn measure(url: &str, schema: &str, push: bool) -> Result<Vec<u128>, BoxError> {
    let holder = replica(url, schema, push).await?;
    let waiter = replica(url, schema, push).await?;
    let fp = Fingerprint::of(b"{}");
    let mut latencies = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = Key::new(
            "latency",
            &format!("{}-{i}", if push { "push" } else { "poll" }),
        )?;
        let Begin::Claimed(claim) = holder.begin(&key, fp, Terms::default()).await? else {
            return Err("a fresh key was not claimed".into());
        };
        let parked = waiter.metrics().waits;
        let waiting = {
            let (waiter, key) = (waiter.clone(), key.clone());
            tokio::spawn(async move {
                let answer = waiter
                    .begin(&key, fp, Terms::default().wait(Duration::from_secs(60)))
                    .await;
                (answer, Instant::now())
            })
        };
        while waiter.metrics().waits == parked {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // The holder's side effect runs for a while (20 ms) while the
        // waiter waits.
        tokio::time::sleep(HOLD).await;
        let started = Instant::now();
        holder
            .complete(claim, StoredResponse::new(201, "ok"))
            .await?;
        let (answer, answered) = waiting.await?;
        if !matches!(answer?, Begin::Replay(_)) {
            return Err("the waiter did not get the replay".into());
        }
        latencies.push(answered.duration_since(started).as_micros());
    }
    latencies.sort_unstable();
    Ok(latencies)
}

fn quantile(sorted: &[u128], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// How long a waiter on one replica takes to see another replica's
/// completion, with push wake-ups and with polling.
#[derive(clap::Parser)]
#[command(name = "wait_latency")]
struct Args {
    /// The database (libpq key=value or postgres:// URL).
    #[arg(default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test")]
    url: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let url = <Args as clap::Parser>::parse().url;
    let schema = format!("idemkv_latency_{}", std::process::id());
    for push in [false, true] {
        let latencies = measure(&url, &schema, push).await?;
        println!(
            "{:<22} p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   ({KEYS} keys)",
            if push {
                "push (LISTEN/NOTIFY)"
            } else {
                "polling alone"
            },
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.99),
            quantile(&latencies, 1.0),
        );
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
