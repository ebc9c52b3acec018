//! What the PostgreSQL tests share: the server's address, a schema per test,
//! the movable clock, and the rule for an unreachable server.
#![allow(dead_code)]

pub mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idemkv_conformance::{BoxError, Skipped};
use idemkv_postgres::{PgBackend, PgConfig};

/// The server: 127.0.0.1:5432, database `test`, unless `IDEMKV_PG_URL`.
pub fn url() -> String {
    std::env::var("IDEMKV_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A schema no other test or run uses.
pub fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "idemkv_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A plain connection, or why there is none: `Skipped` locally, a failure
/// under `CI=true`.
pub async fn connect() -> Result<tokio_postgres::Client, BoxError> {
    match tokio_postgres::connect(&url(), tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            Err(Box::new(Skipped(format!(
                "PostgreSQL at {} is unreachable ({err}); CI=true makes this a failure",
                url()
            ))))
        }
        Err(err) => Err(format!("PostgreSQL at {} is unreachable: {err}", url()).into()),
    }
}

/// Replaces the table's clock with a one-row table the test moves
/// (millisecond-aligned, starting at the server's now). Every backend on
/// this schema, in any process, reads it.
pub async fn install_test_clock(
    client: &tokio_postgres::Client,
    schema: &str,
    backend: &PgBackend,
) -> Result<(), BoxError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".test_clock (t timestamptz NOT NULL);
             INSERT INTO \"{schema}\".test_clock VALUES (date_trunc('milliseconds', now()));
             CREATE OR REPLACE FUNCTION {now} RETURNS timestamptz LANGUAGE sql STABLE
                 AS 'SELECT t FROM \"{schema}\".test_clock';",
            now = backend.clock_function(),
        ))
        .await?;
    Ok(())
}

/// Moves the test clock of `schema` forward.
pub async fn advance(
    client: &tokio_postgres::Client,
    schema: &str,
    by: Duration,
) -> Result<(), BoxError> {
    let ms = by.as_millis() as i64;
    client
        .execute(
            &format!(
                "UPDATE \"{schema}\".test_clock SET t = t + $1::bigint * interval '1 millisecond'"
            ),
            &[&ms],
        )
        .await?;
    Ok(())
}

/// A backend on `schema` with the conformance suite's lease and retention.
pub async fn backend(schema: &str, pool: usize) -> Result<PgBackend, BoxError> {
    let config = PgConfig::default()
        .schema(schema)
        .lease(Duration::from_secs(60))
        .retention(Duration::from_secs(3600))
        .pool_size(pool);
    Ok(PgBackend::connect(&url(), config).await?)
}

/// Drops `schema` (best effort, from any thread: a runtime of its own).
pub fn drop_schema(schema: &str) {
    let drop_schema = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let url = url();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&drop_schema).await
        })?;
        Ok::<_, BoxError>(())
    })
    .join();
}
