//! TLS to the local server, which (as Debian installs it) serves the
//! self-signed "snakeoil" certificate for `localhost`: with
//! `sslmode=require` and that certificate as the CA file, the pool's and
//! the listener's connections are encrypted (the server's `pg_stat_ssl`
//! says so) and the backend works; without the CA file the same
//! certificate is refused when the CA file names another CA.
//!
//! Skipped with the reason when the server has SSL off or the certificate
//! is not at its Debian path.

mod support;

use std::time::{Duration, Instant};

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_conformance::{BoxError, Skipped};
use idemkv_postgres::{PgBackend, PgConfig};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// A CA certificate of the system's that is not the server's (the first
/// by name in /etc/ssl/certs).
fn other_ca() -> Result<std::path::PathBuf, BoxError> {
    let mut candidates: Vec<_> = std::fs::read_dir("/etc/ssl/certs")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|e| e == "pem")
                && !path.to_string_lossy().contains("snakeoil")
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| Skipped("no other CA certificate in /etc/ssl/certs".into()).into())
}

async fn tls() -> Result<(), BoxError> {
    let admin = support::connect().await?;
    let ssl: String = admin.query_one("SHOW ssl", &[]).await?.get(0);
    if ssl != "on" || !std::path::Path::new(SNAKEOIL).exists() {
        return Err(Skipped(format!(
            "the server has ssl={ssl}, or {SNAKEOIL} is missing: no TLS to test against"
        ))
        .into());
    }
    let application = format!("idemkv_tls_{}", std::process::id());
    let url = format!(
        "host=localhost port=5432 user=postgres dbname=test sslmode=require \
         application_name={application}"
    );
    let schema = support::fresh_schema();
    let config = PgConfig::default().schema(schema.clone()).pool_size(2);

    // With another CA's certificate as the CA file, the server's
    // certificate chains to nothing trusted: refused, never used
    // unverified.
    let other_ca = other_ca()?;
    let refused = PgBackend::connect(&url, config.clone().tls_ca_file(&other_ca)).await;
    let err = refused
        .err()
        .ok_or("an unverifiable certificate was accepted")?;
    assert!(err.to_string().contains("certificate"), "{err}");

    let backend = PgBackend::connect(&url, config.tls_ca_file(SNAKEOIL)).await?;
    let key = Key::new("payments", "order-1")?;
    let fp = Fingerprint::of(b"{}");
    let Begin::Claimed(claim) = backend.begin(&key, fp, Terms::default()).await? else {
        return Err("a fresh key was not claimed".into());
    };
    backend
        .complete(claim, StoredResponse::new(201, "ch_1"))
        .await?;
    let started = Instant::now();
    while !backend.listening() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the listening connection never came up over TLS".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&application],
        )
        .await?;
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        all >= 2,
        "the pool's and the listener's connections ({all})"
    );
    assert_eq!(encrypted, all, "every connection is encrypted");
    support::drop_schema(&schema);
    Ok(())
}

#[test]
fn require_means_verified_tls_for_every_connection() {
    idemkv_conformance::run(tls());
}
