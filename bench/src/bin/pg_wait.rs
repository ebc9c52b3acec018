//! How long a waiting duplicate takes to see the first attempt's result on
//! the PostgreSQL backend with its defaults (push wake-ups through
//! `LISTEN`/`NOTIFY`, polling behind them), against the embedded store
//! (woken in process), measured in one run.
//!
//! `pg_wait [ROUNDS]` (default 30): each round, one attempt claims a fresh
//! key and 20 duplicates wait on it (on a second pool: another replica);
//! after a pause the holder completes, and each duplicate's delay from the
//! completion's return to its answer is recorded. Needs PostgreSQL at
//! 127.0.0.1:5432 (database `test`; `IDEMKV_PG_URL` overrides); it works in
//! a schema of its own and drops it.

use std::time::{Duration, Instant};

use idemkv::{Backend, Begin, Config, Fingerprint, Key, Store, StoredResponse, Terms};
use idemkv_postgres::{PgBackend, PgConfig};

const WAITERS: usize = 20;
const HOLD: Duration = Duration::from_millis(120);

/// One round on `holder` and `waiters`: the delays of every waiter.
async fn round<B: Backend>(
    holder: &B,
    waiters: &B,
    key: Key,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let fp = Fingerprint::of(b"{}");
    let Begin::Claimed(claim) = holder.begin(&key, fp, Terms::default()).await? else {
        return Err(format!("{key} was not free").into());
    };
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let (waiters, key) = (waiters.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let answer = waiters
                .begin(&key, fp, Terms::default().wait(Duration::from_secs(30)))
                .await;
            (
                Instant::now(),
                answer.map(|a| matches!(a, Begin::Replay(_))),
            )
        }));
    }
    tokio::time::sleep(HOLD).await;
    holder
        .complete(claim, StoredResponse::new(201, "done"))
        .await
        .map_err(|e| e.to_string())?;
    let completed = Instant::now();
    let mut delays = Vec::new();
    for task in tasks {
        let (answered, replayed) = task.await?;
        if !replayed? {
            return Err("a waiter did not get the replay".into());
        }
        delays.push(answered.saturating_duration_since(completed));
    }
    Ok(delays)
}

fn summary(name: &str, mut delays: Vec<Duration>) {
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<28} n={:<5} p50 {:>9.3} ms  p90 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
        delays.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(30), |n| n.parse())?;
    let url = std::env::var("IDEMKV_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let schema = format!("idemkv_pg_wait_{}", std::process::id());
    let config = PgConfig::default().schema(schema.clone());
    let holder = PgBackend::connect(&url, config.clone().pool_size(2)).await?;
    let waiters = PgBackend::connect(&url, config.pool_size(8)).await?;
    let store = Store::in_memory(Config::default())?.to_async();

    let (mut pg, mut embedded) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let key = Key::new("pg_wait", &format!("round-{r}"))?;
        pg.extend(round(&holder, &waiters, key.clone()).await?);
        embedded.extend(round(&store, &store, key).await?);
    }
    let polls = waiters.metrics();
    println!("{rounds} rounds of {WAITERS} waiters, holder completes after {HOLD:?}");
    summary("postgres (push wake-ups)", pg);
    summary("embedded (woken in process)", embedded);
    println!(
        "postgres waits: {} parked; answers: {} replays",
        polls.waits, polls.replays
    );

    let (client, connection) = tokio_postgres_connect(&url).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

async fn tokio_postgres_connect(
    url: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    tokio_postgres::Error,
> {
    tokio_postgres::connect(url, tokio_postgres::NoTls).await
}
