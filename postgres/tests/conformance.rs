//! The conformance suite against PostgreSQL at 127.0.0.1:5432 (database
//! `test`, trust auth; `IDEMKV_PG_URL` overrides), each case in a schema of
//! its own, on a clock the test moves: the table's clock function reads a
//! one-row table instead of `now()`.
//!
//! When the server cannot be reached, the cases fail if `CI=true` and are
//! skipped with the reason otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idemkv_conformance::{BoxError, Harness, Setup, Skipped, Subject};
use idemkv_postgres::{PgBackend, PgConfig};

fn url() -> String {
    std::env::var("IDEMKV_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A schema no other case or run uses.
fn fresh_schema() -> String {
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

/// One case's backend, its schema and its clock.
struct Pg {
    backend: PgBackend,
    client: tokio_postgres::Client,
    schema: String,
}

impl Subject for Pg {
    type Backend = PgBackend;

    fn backend(&self) -> &PgBackend {
        &self.backend
    }

    async fn advance(&self, by: Duration) {
        let ms = by.as_millis() as i64;
        let moved = self
            .client
            .execute(
                &format!(
                    "UPDATE \"{}\".test_clock SET t = t + $1::bigint * interval '1 millisecond'",
                    self.schema
                ),
                &[&ms],
            )
            .await;
        if let Err(err) = moved {
            panic!("moving the test clock failed: {err}");
        }
    }

    async fn sweep(&self) -> idemkv::Result<u64> {
        self.backend.sweep_expired().await
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Best effort: a schema left behind only takes space.
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        let url = url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&drop_schema).await
            })?;
            Ok::<_, BoxError>(())
        })
        .join();
    }
}

struct Postgres;

impl Harness for Postgres {
    type Subject = Pg;

    async fn open(&self, setup: Setup) -> Result<Pg, BoxError> {
        let (client, connection) = match tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
        {
            Ok(connected) => connected,
            Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
                return Err(Box::new(Skipped(format!(
                    "PostgreSQL at {} is unreachable ({err}); CI=true makes this a failure",
                    url()
                ))));
            }
            Err(err) => return Err(format!("PostgreSQL at {} is unreachable: {err}", url()).into()),
        };
        tokio::spawn(connection);
        let schema = fresh_schema();
        let config = PgConfig::default()
            .schema(schema.clone())
            .lease(setup.lease)
            .retention(setup.retention)
            .max_response_bytes(setup.max_response_bytes)
            .sweep_batch(setup.sweep_batch)
            .pool_size(4);
        let backend = PgBackend::connect(&url(), config).await?;
        // The test clock: a one-row table, millisecond-aligned, that the
        // table's clock function reads instead of now().
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".test_clock (t timestamptz NOT NULL);
                 INSERT INTO \"{schema}\".test_clock VALUES (date_trunc('milliseconds', now()));
                 CREATE OR REPLACE FUNCTION {now} RETURNS timestamptz LANGUAGE sql STABLE
                     AS 'SELECT t FROM \"{schema}\".test_clock';",
                now = backend.clock_function(),
            ))
            .await?;
        Ok(Pg {
            backend,
            client,
            schema,
        })
    }
}

idemkv_conformance::suite!(Postgres);
