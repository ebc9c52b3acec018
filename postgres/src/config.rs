//! [`PgConfig`]: where the records live and the terms of claims.

use std::path::PathBuf;
use std::time::Duration;

use idemkv::{Error, Result};

/// How a [`PgBackend`](crate::PgBackend) is set up, built with chained
/// setters; every setter documents its default.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a PgConfig does nothing until passed to PgBackend::connect"]
pub struct PgConfig {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_recovery_point_bytes: usize,
    pub(crate) sweep_batch: usize,
    pub(crate) pool_size: usize,
    pub(crate) poll_min: Duration,
    pub(crate) poll_max: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) push_wakeups: bool,
    pub(crate) tls_ca_file: Option<PathBuf>,
    pub(crate) unnamed_statements: bool,
    pub(crate) metrics_label: Option<String>,
}

impl Default for PgConfig {
    fn default() -> PgConfig {
        PgConfig {
            schema: "public".into(),
            table: "idemkv_records".into(),
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            max_response_bytes: 1 << 20,
            max_recovery_point_bytes: 64 << 10,
            sweep_batch: 1000,
            pool_size: 16,
            poll_min: Duration::from_millis(2),
            poll_max: Duration::from_millis(50),
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            push_wakeups: true,
            tls_ca_file: None,
            unnamed_statements: false,
            metrics_label: None,
        }
    }
}

impl PgConfig {
    /// A name for this backend in what
    /// [`PgBackend::publish_metrics`](crate::PgBackend::publish_metrics)
    /// publishes (feature `metrics`): every metric carries the label
    /// `store="<name>"`, as `idemkv::Config::metrics_label` gives the
    /// embedded store's. Without it the metrics carry no label, and two
    /// backends in one process overwrite each other's: name each.
    pub fn metrics_label(mut self, name: impl Into<String>) -> Self {
        self.metrics_label = Some(name.into());
        self
    }

    /// The schema the table lives in (default `public`); created if missing.
    /// Lower-case letters, digits and `_`, starting with a letter or `_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The records table (default `idemkv_records`); its sequence, clock
    /// function and index take its name as a prefix. Same rule as
    /// [`schema`](Self::schema).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How long a claim is exclusive without a renewal (default 60 s), as
    /// `idemkv::Config::lease`.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a completed record is replayed (default 24 h), as
    /// `idemkv::Config::retention`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The largest response stored, body and headers (default 1 MiB).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The largest recovery point `record_progress` stores, phase name plus
    /// state (default 64 KiB, as `idemkv::Config::max_recovery_point_bytes`).
    pub fn max_recovery_point_bytes(mut self, bytes: usize) -> Self {
        self.max_recovery_point_bytes = bytes;
        self
    }

    /// The most records one sweep statement deletes (default 1,000).
    pub fn sweep_batch(mut self, records: usize) -> Self {
        self.sweep_batch = records;
        self
    }

    /// Connections in the pool (default 16).
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// How a waiting `begin` polls a running claim: first after `min`, then twice
    /// as long each time up to `max` (defaults 2 ms and 50 ms), never past
    /// the holder's lease or the caller's timeout.
    pub fn wait_polling(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max;
        self
    }

    /// The CA certificate(s), in a PEM file, that the server's certificate
    /// must chain to when the URL says `sslmode=require` (default: the
    /// system's roots). A managed database's CA bundle, or a self-signed
    /// server's own certificate.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Whether statements run unnamed (default false: each is prepared
    /// once per connection and then run by name). Unnamed, each is parsed
    /// again on every execution, in the same round trip, so a claiming
    /// `begin` still takes 2 round trips and a completion 1, at the cost of
    /// the server parsing and planning each one. For PgBouncer older than
    /// 1.21 in transaction mode, which cannot keep named statements across
    /// the server connections it hands out; also turn
    /// [`push_wakeups`](Self::push_wakeups) off there (`LISTEN` needs a
    /// session).
    pub fn unnamed_statements(mut self, enabled: bool) -> Self {
        self.unnamed_statements = enabled;
        self
    }

    /// Whether waiting `begin` callers are woken at once when the key's holder
    /// completes or releases it on any replica (default true): one extra
    /// connection per backend `LISTEN`s on the table's channel, reconnecting
    /// with backoff; polling ([`wait_polling`](Self::wait_polling)) goes on
    /// underneath as the fallback. Off, waiters only poll.
    pub fn push_wakeups(mut self, enabled: bool) -> Self {
        self.push_wakeups = enabled;
        self
    }

    /// The longest any backend call may take (default 5 s): a claim, a
    /// completion, a release, a renewal, a recovery point, a read, a sweep
    /// statement, and each look of a waiting `begin` (whose own timeout is the
    /// caller's). Past it the call answers `Error::Unavailable`, which is
    /// transient, instead of hanging on a network that drops packets
    /// silently; a write cut off this way may still land, and repeating it
    /// is safe. It also bounds the wait for a free pooled connection, the
    /// server's `statement_timeout` (unless the URL's `options` set one),
    /// and, doubled, the TCP user timeout. Keep it well under the lease:
    /// the HTTP layer repeats a completion for half the lease.
    pub fn call_timeout(mut self, bound: Duration) -> Self {
        self.call_timeout = bound;
        self
    }

    /// The longest a new connection may take to open, or an idle one to be
    /// checked before reuse (default 5 s), unless the URL sets
    /// `connect_timeout`.
    pub fn connect_timeout(mut self, bound: Duration) -> Self {
        self.connect_timeout = bound;
        self
    }

    /// Checks the names and the terms.
    pub(crate) fn validate(&self) -> Result<()> {
        for (what, name) in [("schema", &self.schema), ("table", &self.table)] {
            if !is_identifier(name) {
                return Err(Error::InvalidConfig(format!(
                    "{what} name {name:?}: use 1 to 48 lower-case letters, digits and _, \
                     starting with a letter or _"
                )));
            }
        }
        let milli = Duration::from_millis(1);
        if self.lease < milli || self.retention < milli {
            return Err(Error::InvalidConfig(
                "lease and retention must be at least 1 ms each".into(),
            ));
        }
        if self.sweep_batch == 0 || self.pool_size == 0 {
            return Err(Error::InvalidConfig(
                "sweep_batch and pool_size must be at least 1".into(),
            ));
        }
        if self.call_timeout < milli || self.connect_timeout < milli {
            return Err(Error::InvalidConfig(
                "call_timeout and connect_timeout must be at least 1 ms each".into(),
            ));
        }
        if self.poll_min.is_zero() || self.poll_max < self.poll_min {
            return Err(Error::InvalidConfig(
                "wait_polling needs 0 < min <= max".into(),
            ));
        }
        Ok(())
    }
}

/// A name safe to put in SQL unquoted and quoted alike: it cannot close a
/// quote or start another statement.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && name.len() <= 48
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_break_out_of_sql_are_refused() {
        for bad in [
            "",
            "Records",
            "a-b",
            "a\"b",
            "x; drop table y",
            "1abc",
            &"a".repeat(49),
        ] {
            assert!(
                PgConfig::default().table(bad).validate().is_err(),
                "{bad:?}"
            );
        }
        for good in ["idemkv_records", "_t", "t2"] {
            assert!(
                PgConfig::default().table(good).validate().is_ok(),
                "{good:?}"
            );
        }
    }
}
