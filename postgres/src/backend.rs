//! [`PgBackend`]: the [`Backend`] trait over the shared table.
//!
//! Every operation is one statement (a `begin` that claims is two: a read,
//! then the atomic claim), each in its own implicit transaction, so a
//! connection is never held between statements. The rules are those of the
//! embedded store, decided by the database:
//! - a claim is one `INSERT … ON CONFLICT … DO UPDATE … WHERE` that succeeds
//!   only on a free key, an expired record, or an in-flight record past its
//!   lease with the same fingerprint (a takeover); the token comes from one
//!   sequence, so it is larger than any earlier token;
//! - holder calls match the row by key and token, in flight and unexpired:
//!   zero rows matched is `LeaseLost`;
//! - every time is the database's (`<table>_now()`, which is `now()`), so
//!   replicas with skewed clocks agree on every lease.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use idemkv::support::{ClaimFacts, OutcomeCounters};
use idemkv::{
    Backend, Begin, ClaimInfo, CompleteError, Error, Fingerprint, Key, Metrics, Record,
    RecordParts, RecordState, RecoveryPoint, ReleaseError, Result, StorageError, StoredResponse,
    Terms,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::claim::PgClaim;
use crate::config::PgConfig;
use crate::schema::{Names, Statements, Stmt, migrate};
use crate::wakeups::Wakeups;

/// The idempotency store on a shared PostgreSQL database: the same answers
/// as the embedded store, agreed on by every replica that connects to the
/// same table. Cheap to clone (a pool behind an `Arc`).
#[derive(Clone, Debug)]
pub struct PgBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    config: PgConfig,
    names: Names,
    sql: Statements,
    counters: Counters,
    /// This replica's waiting `begin` callers, woken by the listener.
    wakeups: Arc<Wakeups>,
    /// The listening connection's task (`None` without push wake-ups).
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// The counters of this replica (each replica counts its own): the
/// outcomes every backend counts, published on demand
/// ([`PgBackend::publish_metrics`]), and this backend's own.
#[derive(Debug, Default)]
struct Counters {
    outcomes: OutcomeCounters,
    /// Calls cut off by `PgConfig::call_timeout`.
    timeouts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A database error as `Error::Unavailable`, with the server's own message
/// (a `tokio_postgres::Error` displays only "db error").
pub(crate) fn db_error(err: impl std::error::Error + Send + Sync + 'static) -> Error {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Unavailable(StorageError::new(message))
}

/// Sets the connection-level bounds `config` implies on `pg`, where the URL
/// did not set them itself: the connect timeout; TCP keepalives (idle 30 s,
/// then every 10 s, 3 probes) so that a peer that vanished without a reset
/// is noticed on an idle connection; a TCP user timeout of twice the call
/// timeout, so that a connection whose sent data goes unacknowledged that
/// long is closed by the operating system; and the server's
/// `statement_timeout` at the call timeout, so that the server gives up on
/// a statement its caller has given up on.
fn bound_connections(pg: &mut tokio_postgres::Config, config: &PgConfig) {
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.connect_timeout);
    }
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(config.call_timeout * 2);
    }
    let statement_timeout = format!("-c statement_timeout={}", millis(config.call_timeout));
    let options = match pg.get_options() {
        Some(own) if own.contains("statement_timeout") => own.to_string(),
        Some(own) => format!("{own} {statement_timeout}"),
        None => statement_timeout,
    };
    pg.options(options);
}

/// `statement` prepared on `client`'s connection once, then reused from
/// the pool's per-connection statement cache: each later execution is one
/// round trip (Bind, Execute, Sync) instead of two (Parse first).
async fn prepared(client: &Object, statement: &Stmt) -> Result<tokio_postgres::Statement> {
    client
        .prepare_typed_cached(&statement.sql, statement.types)
        .await
        .map_err(db_error)
}

/// The answer of a write that ends a claim (a completion, a release): a
/// transient failure means the statement may not have run, or ran without
/// its answer arriving, so the claim goes back for the caller to repeat the
/// write (safe to repeat) or give it up; any other failure ends the claim.
fn hand_back(outcome: Result<()>, claim: PgClaim) -> Result<(), CompleteError<PgClaim>> {
    match outcome {
        Ok(()) => Ok(()),
        Err(err) if err.is_transient() => Err(CompleteError::refused(err, claim)),
        Err(err) => Err(CompleteError::failed(err)),
    }
}

/// `params` paired with `statement`'s parameter types, for the unnamed
/// statements of [`PgConfig::unnamed_statements`].
fn typed<'a>(
    statement: &Stmt,
    params: &[&'a (dyn ToSql + Sync)],
) -> Vec<(&'a (dyn ToSql + Sync), tokio_postgres::types::Type)> {
    params
        .iter()
        .copied()
        .zip(statement.types.iter().cloned())
        .collect()
}

/// How many times `begin` re-reads a key whose record changed between its
/// read and its claim before it reports the contention.
const CLAIM_ATTEMPTS: usize = 16;

impl PgBackend {
    /// Connects to `url` (`postgres://user@host/db` or `host=… dbname=…`),
    /// creates the schema if missing ([`migrate`](Self::migrate)) and checks
    /// its version.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a bad URL or setting, or a table of a
    /// newer schema version; [`Error::Unavailable`] when the database cannot
    /// be reached.
    pub async fn connect(url: &str, config: PgConfig) -> Result<PgBackend> {
        config.validate()?;
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|err| Error::InvalidConfig(format!("database URL: {err}")))?;
        bound_connections(&mut pg, &config);
        let listening = pg.clone();
        let tls = crate::tls::connector(&pg, &config)?;
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(pg, tls.clone(), manager_config()),
            None => Manager::from_config(pg, tokio_postgres::NoTls, manager_config()),
        };
        // A request waits for a free connection, and a new connection is
        // made or an idle one checked, within the bounds; never forever.
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(config.call_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|err| Error::InvalidConfig(format!("connection pool: {err}")))?;
        let names = Names::of(&config);
        let sql = Statements::of(&names);
        let wakeups = Arc::new(Wakeups::default());
        let listener = config.push_wakeups.then(|| {
            let (channel, prefix) = (names.channel.clone(), names.wake_prefix.clone());
            let wakeups = Arc::clone(&wakeups);
            match tls {
                Some(tls) => tokio::spawn(crate::wakeups::listen(
                    listening, tls, channel, prefix, wakeups,
                )),
                None => tokio::spawn(crate::wakeups::listen(
                    listening,
                    tokio_postgres::NoTls,
                    channel,
                    prefix,
                    wakeups,
                )),
            }
        });
        let backend = PgBackend {
            inner: Arc::new(Inner {
                pool,
                config,
                names,
                sql,
                counters: Counters::default(),
                wakeups,
                listener,
            }),
        };
        backend.migrate().await?;
        Ok(backend)
    }

    /// Publishes this backend's counters and its pool's state through the
    /// `metrics` facade, as absolute values: the outcome counters under the
    /// embedded store's names (`idemkv_claims_total`, `idemkv_replays_total`,
    /// … as `idemkv::PUBLISHED_METRICS` lists them), and
    /// `idemkv_pg_pool_connections` (open), `idemkv_pg_pool_available`
    /// (idle), `idemkv_pg_pool_waiting` (callers waiting for a connection)
    /// and `idemkv_pg_timeouts_total` (calls cut off by
    /// [`PgConfig::call_timeout`]). Call it before each scrape (the
    /// example's `/metrics` does) or on a timer.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self) {
        let outcomes = self.inner.counters.outcomes.values();
        let own = [("idemkv_pg_timeouts_total", self.timed_out_calls())];
        for (name, value) in outcomes.into_iter().chain(own) {
            self.counter(name).absolute(value);
        }
        let pool = self.inner.pool.status();
        self.gauge("idemkv_pg_pool_connections")
            .set(pool.size as f64);
        self.gauge("idemkv_pg_pool_available")
            .set(pool.available as f64);
        self.gauge("idemkv_pg_pool_waiting")
            .set(pool.waiting as f64);
    }

    /// The labels this backend's metrics carry: `store`, or none.
    #[cfg(feature = "metrics")]
    fn labels(&self) -> Vec<metrics::Label> {
        self.inner
            .config
            .metrics_label
            .iter()
            .map(|store| metrics::Label::new("store", store.clone()))
            .collect()
    }

    /// The counter `name`, with this backend's labels.
    #[cfg(feature = "metrics")]
    fn counter(&self, name: &'static str) -> metrics::Counter {
        metrics::counter!(name, self.labels())
    }

    /// The gauge `name`, with this backend's labels.
    #[cfg(feature = "metrics")]
    fn gauge(&self, name: &'static str) -> metrics::Gauge {
        metrics::gauge!(name, self.labels())
    }

    /// Whether the connection that listens for push wake-ups is up (always
    /// false with [`PgConfig::push_wakeups`] off).
    pub fn listening(&self) -> bool {
        self.inner.wakeups.listening()
    }

    /// Calls cut off by [`PgConfig::call_timeout`] since the backend was
    /// made (each answered `Unavailable`).
    pub fn timed_out_calls(&self) -> u64 {
        self.inner.counters.timeouts.load(Ordering::Relaxed)
    }

    /// Creates the schema, table, index, sequence and clock function if
    /// missing, under an advisory lock (replicas may start together).
    /// `connect` calls it; it is safe to call again.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn migrate(&self) -> Result<()> {
        self.bounded(async {
            let mut client = self.client().await?;
            migrate(&mut client, &self.inner.names).await
        })
        .await
    }

    /// The qualified name of the records table, as SQL (`"schema"."table"`).
    pub fn table(&self) -> &str {
        &self.inner.names.table
    }

    /// The qualified name of the clock function every statement reads the
    /// time from (`"schema"."table_now"()`).
    pub fn clock_function(&self) -> &str {
        &self.inner.names.now
    }

    /// Deletes every expired record, `sweep_batch` rows per statement, and
    /// returns how many. Replicas may sweep at once: rows another sweep has
    /// locked are skipped, never deleted twice.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] for a database error; rows deleted by earlier
    /// statements stay deleted.
    pub async fn sweep_expired(&self) -> Result<u64> {
        let batch = self.inner.config.sweep_batch as i64;
        let mut total = 0;
        loop {
            let deleted = self
                .bounded(async {
                    let client = self.client().await?;
                    self.execute(&client, &self.inner.sql.sweep, &[&batch])
                        .await
                })
                .await?;
            total += deleted;
            self.inner.counters.outcomes.expired.add(deleted);
            if deleted < batch as u64 {
                break;
            }
        }
        // Keys waited on by waiters that gave up on a key nobody finished.
        self.bounded(async {
            let client = self.client().await?;
            self.execute(&client, &self.inner.sql.sweep_waiting, &[])
                .await
        })
        .await?;
        self.inner.counters.outcomes.sweeps.bump();
        Ok(total)
    }

    /// Sweeps every `every` on a task of the current tokio runtime, until
    /// the returned handle is aborted or the runtime stops. A failed sweep
    /// is counted (`Metrics::sweep_errors`) and retried at the next tick.
    /// Every replica may run one: they skip each other's rows.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let backend = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if backend.sweep_expired().await.is_err() {
                    backend.inner.counters.outcomes.sweep_errors.bump();
                }
            }
        })
    }

    /// Runs one backend call within `PgConfig::call_timeout`: past it the
    /// call is dropped (a statement already sent may still land, as with
    /// any lost answer) and answers `Unavailable`, which is transient.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let bound = self.inner.config.call_timeout;
        match tokio::time::timeout(bound, call).await {
            Ok(result) => result,
            Err(_) => {
                bump(&self.inner.counters.timeouts);
                Err(db_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the database did not answer within {bound:?} (PgConfig::call_timeout); \
                         the write may or may not have landed: retry"
                    ),
                )))
            }
        }
    }

    async fn client(&self) -> Result<Object> {
        self.inner.pool.get().await.map_err(db_error)
    }

    /// One attempt: answers from the live record if it decides, else
    /// claims. Counts nothing (`begin` counts their final
    /// answer).
    async fn attempt(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        lease: Duration,
        retention: Duration,
    ) -> Result<Begin<PgClaim>> {
        let client = self.client().await?;
        let (scope, idem) = (key.scope(), key.idempotency_key());
        let fp: &[u8] = fingerprint.as_bytes();
        let (lease_ms, retention_ms) = (millis(lease), millis(retention));
        for _ in 0..CLAIM_ATTEMPTS {
            let row = self
                .query_opt(&client, &self.inner.sql.look, &[&scope, &idem])
                .await?;
            if let Some(row) = row
                && let Some(answer) = answer_from(&row, fp)?
            {
                return Ok(answer);
            }
            let claimed = self
                .query_opt(
                    &client,
                    &self.inner.sql.claim,
                    &[&scope, &idem, &fp, &lease_ms, &retention_ms],
                )
                .await?;
            if let Some(row) = claimed {
                return Ok(Begin::Claimed(PgClaim {
                    key: key.clone(),
                    fingerprint,
                    token: row.get(0),
                    takeover: row.get(1),
                    lease,
                    retention,
                    recovered: recovery_from(key, &row, 2)?,
                }));
            }
            // Another attempt claimed or completed the key between the read
            // and the claim: read again.
        }
        Err(db_error(std::io::Error::other(format!(
            "{key} changed under {CLAIM_ATTEMPTS} attempts in a row to claim it; retry"
        ))))
    }

    fn terms(&self, terms: Terms) -> Result<(Duration, Duration)> {
        terms.resolve(self.inner.config.lease, self.inner.config.retention)
    }

    fn count(&self, answer: &Begin<PgClaim>) {
        self.inner
            .counters
            .outcomes
            .count_begin(answer, |claim| ClaimFacts {
                takeover: claim.takeover,
                resumed: claim.recovered.is_some(),
            });
    }

    /// The first row of `statement` with `params`: a cached prepared
    /// statement, or with `unnamed_statements` an unnamed one parsed in the
    /// same round trip.
    async fn query_opt(
        &self,
        client: &Object,
        statement: &Stmt,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let rows = if self.inner.config.unnamed_statements {
            client
                .query_typed(&statement.sql, &typed(statement, params))
                .await
        } else {
            client
                .query(&prepared(client, statement).await?, params)
                .await
        };
        Ok(rows.map_err(db_error)?.into_iter().next())
    }

    /// The rows `statement` with `params` changed, run as
    /// [`query_opt`](Self::query_opt) runs a query.
    async fn execute(
        &self,
        client: &Object,
        statement: &Stmt,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let changed = if self.inner.config.unnamed_statements {
            client
                .execute_typed(&statement.sql, &typed(statement, params))
                .await
        } else {
            client
                .execute(&prepared(client, statement).await?, params)
                .await
        };
        changed.map_err(db_error)
    }

    /// Records that a waiting `begin` waits on `key`, so that the holder's
    /// completion or release notifies the replicas (schema version 3).
    async fn announce_wait(&self, key: &Key) -> Result<()> {
        self.bounded(async {
            let client = self.client().await?;
            self.execute(
                &client,
                &self.inner.sql.wait_for,
                &[&key.scope(), &key.idempotency_key()],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Runs a holder statement on the claim's row; zero rows is `LeaseLost`.
    async fn fenced(
        &self,
        statement: &Stmt,
        claim: &PgClaim,
        more: &[&(dyn ToSql + Sync)],
    ) -> Result<()> {
        let client = self.client().await?;
        let (scope, idem) = (claim.key.scope(), claim.key.idempotency_key());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&scope, &idem, &claim.token];
        params.extend_from_slice(more);
        let rows = self.execute(&client, statement, &params).await?;
        if rows == 0 {
            self.inner.counters.outcomes.leases_lost.bump();
            return Err(Error::LeaseLost);
        }
        Ok(())
    }
}

/// The answer a live record gives an attempt with fingerprint `fp`, or
/// `None` when the attempt may claim (an in-flight record of the same
/// fingerprint whose lease has ended).
fn answer_from(row: &Row, fp: &[u8]) -> Result<Option<Begin<PgClaim>>> {
    let stored: &[u8] = row.get(0);
    if stored != fp {
        return Ok(Some(Begin::Mismatch));
    }
    let in_flight: bool = row.get(1);
    if in_flight {
        let left_ms: Option<i64> = row.get(2);
        return Ok(match left_ms {
            Some(left) if left > 0 => Some(Begin::InProgress {
                retry_after: Duration::from_millis(left as u64),
            }),
            _ => None,
        });
    }
    Ok(Some(Begin::Replay(response_from(row, 3)?)))
}

/// The stored response in columns `first..first + 4` (status, header names,
/// header values, body).
fn response_from(row: &Row, first: usize) -> Result<StoredResponse> {
    let status: Option<i32> = row.get(first);
    let names: Option<Vec<String>> = row.get(first + 1);
    let values: Option<Vec<Vec<u8>>> = row.get(first + 2);
    let body: Option<Vec<u8>> = row.get(first + 3);
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| Error::Corrupted {
            detail: "a completed row has no valid status".into(),
        })?;
    let (names, values) = (names.unwrap_or_default(), values.unwrap_or_default());
    if names.len() != values.len() {
        return Err(Error::Corrupted {
            detail: "a completed row has header names and values of different lengths".into(),
        });
    }
    let mut response = StoredResponse::new(status, body.unwrap_or_default());
    for (name, value) in names.into_iter().zip(values) {
        response = response.with_header(name, value);
    }
    Ok(response)
}

/// The recovery point in columns `first` (phase) and `first + 1` (state),
/// checked by the same phase rules as a new one.
fn recovery_from(key: &Key, row: &Row, first: usize) -> Result<Option<RecoveryPoint>> {
    let phase: Option<String> = row.get(first);
    let state: Option<Vec<u8>> = row.get(first + 1);
    phase
        .map(|phase| {
            RecoveryPoint::new(&phase, state.unwrap_or_default()).map_err(|err| Error::Corrupted {
                detail: format!("the row of {key} has a bad recovery point: {err}"),
            })
        })
        .transpose()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Backend for PgBackend {
    type Claim = PgClaim;

    async fn begin(
        &self,
        key: &Key,
        fingerprint: Fingerprint,
        terms: Terms,
    ) -> Result<Begin<PgClaim>> {
        let (lease, retention) = self.terms(terms)?;
        let Some(timeout) = terms.wait_timeout() else {
            let answer = self
                .bounded(self.attempt(key, fingerprint, lease, retention))
                .await?;
            self.count(&answer);
            return Ok(answer);
        };
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut pause = self.inner.config.poll_min;
        let mut waited = false;
        let waiter = self.inner.wakeups.waiter(key);
        // Whether this wait has recorded its key for the holder's
        // completion to notify (push wake-ups).
        let mut announced = !self.inner.config.push_wakeups;
        loop {
            // Enabled before the look: a wake-up between the look and the
            // wait is kept, not missed.
            let woken = waiter.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let answer = self
                .bounded(self.attempt(key, fingerprint, lease, retention))
                .await?;
            let Begin::InProgress { retry_after } = answer else {
                self.count(&answer);
                return Ok(answer);
            };
            // A caller that asked to wait and found the key held is
            // counted as waiting, however long its first look took.
            if !waited && !timeout.is_zero() {
                waited = true;
                self.inner.counters.outcomes.waits.bump();
            }
            let now = tokio::time::Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                self.count(&answer);
                return Ok(answer);
            }
            if !announced {
                announced = true;
                // A failure here only costs the push: polling still answers.
                if self.announce_wait(key).await.is_ok() {
                    // Look again at once: the holder may have finished
                    // before the key was recorded, and then notified no one.
                    continue;
                }
            }
            // Woken by the holder's completion or release on any replica
            // (push wake-ups), or at the next look of the polling
            // schedule, the fallback while the listener is down.
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(pause.min(retry_after).min(left)) => {
                    pause = (pause * 2).min(self.inner.config.poll_max);
                }
            }
        }
    }

    async fn complete(
        &self,
        claim: PgClaim,
        response: StoredResponse,
    ) -> Result<(), CompleteError<PgClaim>> {
        if let Err(err) = response.check_size(self.inner.config.max_response_bytes) {
            return Err(CompleteError::refused(err, claim));
        }
        let status = i32::from(response.status());
        let names: Vec<&str> = response.headers().iter().map(|(n, _)| n.as_str()).collect();
        let values: Vec<&[u8]> = response
            .headers()
            .iter()
            .map(|(_, v)| v.as_slice())
            .collect();
        let body: &[u8] = response.body();
        let retention_ms = millis(claim.retention);
        let outcome = self
            .bounded(self.fenced(
                &self.inner.sql.complete,
                &claim,
                &[&status, &names, &values, &body, &retention_ms],
            ))
            .await;
        if outcome.is_ok() {
            self.inner.counters.outcomes.completions.bump();
        }
        hand_back(outcome, claim)
    }

    async fn release(&self, claim: PgClaim) -> Result<(), ReleaseError<PgClaim>> {
        let outcome = self
            .bounded(async {
                let client = self.client().await?;
                let (scope, idem) = (claim.key.scope(), claim.key.idempotency_key());
                let row = self
                    .query_opt(
                        &client,
                        &self.inner.sql.release,
                        &[&scope, &idem, &claim.token],
                    )
                    .await?
                    .ok_or_else(|| {
                        db_error(std::io::Error::other("the release answered no row"))
                    })?;
                let (released, live): (i64, bool) = (row.get(0), row.get(1));
                // Released now, or nothing live was left to release (a repeat
                // after a release that landed, an expired or removed record).
                if released == 0 && live {
                    self.inner.counters.outcomes.leases_lost.bump();
                    return Err(Error::LeaseLost);
                }
                Ok(())
            })
            .await;
        if outcome.is_ok() {
            self.inner.counters.outcomes.releases.bump();
        }
        hand_back(outcome, claim)
    }

    async fn renew(&self, claim: &PgClaim) -> Result<()> {
        let (lease_ms, retention_ms) = (millis(claim.lease), millis(claim.retention));
        self.bounded(self.fenced(&self.inner.sql.renew, claim, &[&lease_ms, &retention_ms]))
            .await?;
        self.inner.counters.outcomes.renewals.bump();
        Ok(())
    }

    async fn record_progress(&self, claim: &PgClaim, phase: &str, state: Bytes) -> Result<()> {
        let point =
            RecoveryPoint::within(phase, state, self.inner.config.max_recovery_point_bytes)?;
        let (lease_ms, retention_ms) = (millis(claim.lease), millis(claim.retention));
        let (phase, state): (&str, &[u8]) = (point.phase(), point.state());
        self.bounded(self.fenced(
            &self.inner.sql.record_progress,
            claim,
            &[&lease_ms, &retention_ms, &phase, &state],
        ))
        .await?;
        self.inner.counters.outcomes.recovery_points.bump();
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>> {
        self.bounded(async {
            let client = self.client().await?;
            let row = self
                .query_opt(
                    &client,
                    &self.inner.sql.get,
                    &[&key.scope(), &key.idempotency_key()],
                )
                .await?;
            row.map(|row| record_from(key, &row)).transpose()
        })
        .await
    }

    async fn remove(&self, key: &Key) -> Result<bool> {
        let row = self
            .bounded(async {
                let client = self.client().await?;
                self.query_opt(
                    &client,
                    &self.inner.sql.remove,
                    &[&key.scope(), &key.idempotency_key()],
                )
                .await
            })
            .await?;
        let live = row.is_some_and(|row| row.get::<_, bool>(0));
        if live {
            self.inner.counters.outcomes.removed.bump();
        }
        Ok(live)
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        self.inner.counters.outcomes.fill(&mut m);
        m
    }

    fn claim_info(claim: &PgClaim) -> ClaimInfo {
        claim.info()
    }

    fn lease(&self) -> Duration {
        self.inner.config.lease
    }

    fn max_response_bytes(&self) -> usize {
        self.inner.config.max_response_bytes
    }
}

/// A row of the `get` statement as a record.
fn record_from(key: &Key, row: &Row) -> Result<Record> {
    let fingerprint: Vec<u8> = row.get(0);
    let fingerprint: [u8; 32] = fingerprint.try_into().map_err(|_| Error::Corrupted {
        detail: format!("the row of {key} has a fingerprint that is not 32 bytes"),
    })?;
    let token: i64 = row.get(1);
    let in_flight: bool = row.get(2);
    let state = if in_flight {
        let lease_until: Option<SystemTime> = row.get(6);
        RecordState::InFlight {
            lease_until: lease_until.ok_or_else(|| Error::Corrupted {
                detail: format!("the in-flight row of {key} has no lease"),
            })?,
            recovery: recovery_from(key, row, 11)?,
        }
    } else {
        RecordState::Completed {
            response: response_from(row, 7)?,
        }
    };
    Ok(Record::from_parts(RecordParts {
        key: key.clone(),
        state,
        fingerprint: Fingerprint::from_bytes(fingerprint),
        token: token as u64,
        created_at: row.get(3),
        updated_at: row.get(4),
        expires_at: row.get(5),
    }))
}
