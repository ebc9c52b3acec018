//! TLS to the server: which connector a URL asks for, and the rustls
//! configuration that checks the server's certificate.
//!
//! `sslmode=require` in the URL means TLS with the server's certificate
//! verified (its chain against [`PgConfig::tls_ca_file`] or, without one,
//! the system's roots, and its name against the URL's host), as libpq's
//! `verify-full`. `disable` and `prefer` (tokio-postgres' default) mean
//! plain TCP: TLS that falls back to clear text, or that accepts any
//! certificate, protects against no one who can intercept the connection,
//! so it is not offered.

use std::sync::Arc;

use idemkv::{Error, Result};
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PgConfig;

/// The connector for `pg`: rustls when its `sslmode` requires TLS, `None`
/// for plain TCP.
pub(crate) fn connector(
    pg: &tokio_postgres::Config,
    config: &PgConfig,
) -> Result<Option<MakeRustlsConnect>> {
    if pg.get_ssl_mode() != SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls_ca_file {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|err| {
                    Error::InvalidConfig(format!(
                        "tls_ca_file {}: {err}; give a PEM file with the CA certificate(s)",
                        path.display()
                    ))
                })?;
            for certificate in certificates {
                roots.add(certificate).map_err(|err| {
                    Error::InvalidConfig(format!("tls_ca_file {}: {err}", path.display()))
                })?;
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot parse is skipped, as every
                // TLS client does.
                let _ = roots.add(certificate);
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::InvalidConfig(
            "sslmode=require but no CA certificate was found: set PgConfig::tls_ca_file".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::InvalidConfig(format!("TLS: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}
