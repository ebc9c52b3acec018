//! What the HTTP layer's PostgreSQL tests share: the server's address and
//! the rule for an unreachable server.
#![allow(dead_code)]

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server: 127.0.0.1:5432, database `test`, unless `IDEMKV_PG_URL`.
pub fn url() -> String {
    std::env::var("IDEMKV_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A client for the test's own statements, or `None` (with the reason
/// printed) when the server is unreachable and `CI` is not `true`; under
/// `CI=true` an unreachable server is an error.
pub async fn admin() -> Result<Option<tokio_postgres::Client>, BoxError> {
    match tokio_postgres::connect(&url(), tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(Some(client))
        }
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: PostgreSQL at {} is unreachable ({err}); CI=true makes this a failure",
                url()
            );
            Ok(None)
        }
        Err(err) => Err(format!("PostgreSQL at {} is unreachable: {err}", url()).into()),
    }
}
