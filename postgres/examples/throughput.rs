//! Fresh-key cycles per second (a claiming `begin`, then `complete`) of two
//! replicas (two backends, each with its own pool) sharing one table, with
//! 1, 16 and 64 clients spread over both, beside PostgreSQL's own loop of
//! one statement per operation (an `INSERT` of the key and its response,
//! on a plain table, through the same kind of pools) in the same run:
//!
//! ```text
//! cargo run --release -p idemkv-postgres --example throughput -- [URL] [--seconds N] [--polling]
//! ```
//!
//! The URL defaults to the local server's `test` database, each
//! measurement to 5 seconds. With `--polling`, the table's wake-up triggers
//! are disabled and the backends poll (`PgConfig::push_wakeups(false)`):
//! what push wake-ups cost a completion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_postgres::{PgBackend, PgConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `clients` tasks of `cycle` for `seconds`; cycles per second.
async fn run<F, Fut>(clients: usize, seconds: u64, cycle: F) -> Result<f64, BoxError>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (stop, done, cycle) = (Arc::clone(&stop), Arc::clone(&done), cycle.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                cycle(client, n).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BoxError>(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let cycles = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(cycles as f64 / elapsed)
}

/// Fresh-key cycles per second of two replicas sharing one table, beside
/// PostgreSQL's own INSERT loop, at 1, 16 and 64 clients.
#[derive(clap::Parser)]
#[command(name = "throughput")]
struct Args {
    /// The database (libpq key=value or postgres:// URL).
    #[arg(default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test")]
    url: String,
    /// How long each measurement runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Disable the wake-up triggers: the backends poll.
    #[arg(long)]
    polling: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let Args {
        url,
        seconds,
        polling,
    } = <Args as clap::Parser>::parse();
    let schema = format!("idemkv_throughput_{}", std::process::id());
    let config = PgConfig::default()
        .schema(schema.clone())
        .pool_size(16)
        .push_wakeups(!polling);
    let replicas = [
        PgBackend::connect(&url, config.clone()).await?,
        PgBackend::connect(&url, config).await?,
    ];
    // PostgreSQL's own loop: one INSERT per operation, through two pools
    // of 16 like the replicas'.
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".plain (k text PRIMARY KEY, response bytea NOT NULL)"
        ))
        .await?;
    if polling {
        admin
            .batch_execute(&format!(
                "ALTER TABLE {} DISABLE TRIGGER USER",
                replicas[0].table()
            ))
            .await?;
    }
    let insert = format!("INSERT INTO \"{schema}\".plain (k, response) VALUES ($1, $2)");
    let mut plain_pools = Vec::new();
    for _ in 0..2 {
        let pg: tokio_postgres::Config = url.parse()?;
        let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
        plain_pools.push(
            deadpool_postgres::Pool::builder(manager)
                .max_size(16)
                .build()?,
        );
    }

    println!(
        "| clients | idemkv, two replicas (cycles/s) | PostgreSQL INSERT loop (ops/s) | ratio |"
    );
    println!("|---|---|---|---|");
    for clients in [1, 16, 64] {
        let idemkv = run(clients, seconds, {
            let replicas = replicas.clone();
            move |client, n| {
                let backend = replicas[client % 2].clone();
                async move {
                    let key = Key::new("bench", &format!("c{clients}-{client}-{n}"))?;
                    let Begin::Claimed(claim) = backend
                        .begin(&key, Fingerprint::of(b"{}"), Terms::default())
                        .await?
                    else {
                        return Err("a fresh key was not claimed".into());
                    };
                    backend
                        .complete(claim, StoredResponse::new(201, "{\"id\":\"ch_1\"}"))
                        .await?;
                    Ok(())
                }
            }
        })
        .await?;
        let plain = run(clients, seconds, {
            let (pools, insert) = (plain_pools.clone(), insert.clone());
            move |client, n| {
                let (pool, insert) = (pools[client % 2].clone(), insert.clone());
                async move {
                    let connection = pool.get().await?;
                    let statement = connection.prepare_cached(&insert).await?;
                    let key = format!("c{clients}-{client}-{n}");
                    let response: &[u8] = b"{\"id\":\"ch_1\"}";
                    connection.execute(&statement, &[&key, &response]).await?;
                    Ok(())
                }
            }
        })
        .await?;
        println!(
            "| {clients} | {idemkv:.0} | {plain:.0} | {:.2} |",
            idemkv / plain
        );
    }
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
