//! The conformance suite against PostgreSQL at 127.0.0.1:5432 (database
//! `test`, trust auth; `IDEMKV_PG_URL` overrides), each case in a schema of
//! its own, on a clock the test moves: the table's clock function reads a
//! one-row table instead of `now()`.
//!
//! When the server cannot be reached, the cases fail if `CI=true` and are
//! skipped with the reason otherwise.

mod support;

use std::time::Duration;

use idemkv_conformance::{BoxError, Fault, Harness, Setup, Subject};
use idemkv_postgres::{PgBackend, PgConfig};

/// One case's backend, its schema and its clock.
struct Pg {
    backend: PgBackend,
    /// Between the backend's pool and the server: drops a connection where
    /// a case injects a fault.
    proxy: support::proxy::Proxy,
    client: tokio_postgres::Client,
    schema: String,
}

impl Subject for Pg {
    type Backend = PgBackend;

    fn backend(&self) -> &PgBackend {
        &self.backend
    }

    async fn advance(&self, by: Duration) {
        if let Err(err) = support::advance(&self.client, &self.schema, by).await {
            panic!("moving the test clock failed: {err}");
        }
    }

    async fn sweep(&self) -> idemkv::Result<u64> {
        self.backend.sweep_expired().await
    }

    async fn inject(&self, fault: Fault) -> Result<(), BoxError> {
        match fault {
            Fault::BeforeLanding => self.proxy.cut_next_request(),
            Fault::AnswerLost => self.proxy.lose_next_answer(),
        }
        Ok(())
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        support::drop_schema(&self.schema);
    }
}

/// The backend as configured: statements prepared once per connection, or
/// run unnamed (`PgConfig::unnamed_statements`).
struct Postgres {
    unnamed: bool,
}

impl Harness for Postgres {
    type Subject = Pg;

    async fn open(&self, setup: Setup) -> Result<Pg, BoxError> {
        let client = support::connect().await?;
        let schema = support::fresh_schema();
        let config = PgConfig::default()
            .schema(schema.clone())
            .lease(setup.lease)
            .retention(setup.retention)
            .max_response_bytes(setup.max_response_bytes)
            .max_recovery_point_bytes(setup.max_recovery_point_bytes)
            .sweep_batch(setup.sweep_batch)
            .pool_size(4)
            .unnamed_statements(self.unnamed);
        let proxy =
            support::proxy::Proxy::start(support::proxy::upstream(&support::url()).await?).await?;
        let url = support::proxy::url_via(&support::url(), proxy.addr())?;
        let backend = PgBackend::connect(&url, config).await?;
        support::install_test_clock(&client, &schema, &backend).await?;
        Ok(Pg {
            backend,
            proxy,
            client,
            schema,
        })
    }
}

idemkv_conformance::suite!(Postgres { unnamed: false });

/// The whole suite again with unnamed statements, as behind PgBouncer in
/// transaction mode.
mod unnamed_statements {
    idemkv_conformance::suite!(super::Postgres { unnamed: true });
}
