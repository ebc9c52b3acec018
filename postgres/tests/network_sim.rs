//! A seeded simulation of the network under the PostgreSQL backend: two
//! replicas share one table, each through a proxy the simulation controls
//! (support/proxy.rs), and one caller drives them. Each step draws from the
//! seed a fault of the network, on one replica's proxy or on the server:
//!
//! - a request cut with its connection (nothing of it lands);
//! - an answer lost after the commit (the write landed, the caller hears
//!   an error);
//! - every replica connection ended by the server (`pg_terminate_backend`,
//!   as a failover or a restart would);
//! - a partition: no byte goes either way for longer than the backend's
//!   call timeout, then the network heals;
//!
//! then one operation on one replica: a claim, a completion, a release, a
//! renewal or a recovery point by the holder or by a stale claim (kept
//! after a takeover or a removal), a removal, or the clock moving on (the
//! table's clock is the test clock, so leases run out on the simulation's
//! time). Every answer is checked against the oracle the embedded store's
//! simulator uses (tests/support/oracle.rs): nothing acknowledged is lost,
//! never two live holders, replays byte for byte, mismatches, tokens grow
//! per key, stale holders fenced and holders not, and an operation that
//! failed landed or not, which a read through the other replica settles.
//!
//! A seed fixes the faults and the operations, in order (each step draws
//! from a stream of its own); the server's and the network's timing are
//! real, so where a fault meets the pool reconnecting, two runs of a seed
//! can differ. A failure prints its trace and the line that runs the seed
//! again, then is minimized: each step in turn is left out, and kept out
//! while the run still fails; the minimized trace and the line that runs
//! it again follow.
//!
//! `IDEMKV_PG_SIM_SEEDS=N` runs `N` seeds (default 4) from
//! `IDEMKV_PG_SIM_FIRST` (default 0); `IDEMKV_PG_SIM_SEED=S` runs seed `S`
//! alone and prints its trace; `IDEMKV_PG_SIM_SKIP=3,7` leaves those steps
//! out. Uses the server at 127.0.0.1:5432 (database
//! `test`; `IDEMKV_PG_URL` overrides), a schema per seed. Unreachable: a
//! failure with `CI=true`, a printed skip otherwise.

mod support;

#[path = "../../tests/support/oracle.rs"]
mod oracle;
#[path = "../../tests/support/rng.rs"]
mod rng;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use idemkv::{Backend, Begin, CompleteError, Fingerprint, Key, StoredResponse, Terms};
use idemkv_conformance::BoxError;
use idemkv_postgres::{PgBackend, PgClaim, PgConfig};
use oracle::{Heard, Known, Oracle, TokenScope};
use rng::Rng;
use support::proxy::{Proxy, upstream, url_via};

const KEYS: u64 = 3;
const STEPS: u64 = 40;
/// The replicas' lease, on the test clock the simulation moves.
const LEASE: Duration = Duration::from_secs(1);
/// How long a call may take before it answers `Unavailable`; a partition
/// lasts longer. Long enough that a loaded machine rarely meets it
/// without a partition (a call that does is an error the oracle allows).
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a read that settles a key after a failure is repeated while
/// the pool reconnects, and how long the replicas' setup is.
const PATIENCE: Duration = Duration::from_secs(60);

type Outcome = Result<(), String>;

fn key(k: u64) -> Key {
    Key::new("sim", &format!("k{k}")).expect("simulation keys are valid")
}

fn fp(payload: u8) -> Fingerprint {
    Fingerprint::of(&[payload])
}

/// One replica: its backend, through its own proxy.
struct Replica {
    backend: PgBackend,
    proxy: Proxy,
}

struct Sim {
    seed: u64,
    rng: Rng,
    schema: String,
    application: String,
    admin: tokio_postgres::Client,
    replicas: Vec<Replica>,
    /// Claims the caller holds or held, with their key, payload and the
    /// replica that granted them, oldest first: a stale one is kept so that
    /// its writes test the fencing.
    claims: Vec<(u64, u8, usize, PgClaim)>,
    oracle: Oracle,
    trace: Vec<String>,
}

impl Sim {
    async fn new(seed: u64) -> Result<Sim, BoxError> {
        let admin = support::connect().await?;
        let schema = support::fresh_schema();
        let application = format!("idemkv_sim_{}", std::process::id());
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let proxy = Proxy::start(upstream(&support::url()).await?).await?;
            let url = format!(
                "{} application_name={application}",
                url_via(&support::url(), proxy.addr())?
            );
            let config = PgConfig::default()
                .schema(schema.clone())
                .lease(LEASE)
                .retention(Duration::from_secs(3600))
                .pool_size(2)
                .call_timeout(CALL_TIMEOUT)
                .connect_timeout(CALL_TIMEOUT);
            let backend = connect(&url, config).await?;
            if replicas.is_empty() {
                support::install_test_clock(&admin, &schema, &backend).await?;
            }
            replicas.push(Replica { backend, proxy });
        }
        Ok(Sim {
            seed,
            rng: Rng::new(seed),
            schema,
            application,
            admin,
            replicas,
            claims: Vec::new(),
            oracle: Oracle::new(KEYS, TokenScope::Key, 0),
            trace: Vec::new(),
        })
    }

    async fn step(&mut self, i: u64) -> Outcome {
        self.rng = Rng::stream(self.seed, i);
        let r = self.rng.below(2) as usize;
        let partitioned = self.rng.one_in(3) && self.fault(i, r).await?;
        let k = self.rng.below(KEYS);
        let payload = self.rng.below(2) as u8;
        match self.rng.below(10) {
            0..=3 => self.begin(i, r, k, payload).await?,
            4..=5 => self.complete(i, k).await?,
            6 => self.release(i, k).await?,
            7 => {
                let progress = self.rng.one_in(2);
                self.renew(i, k, progress).await?;
            }
            8 => {
                let ms = [300, 700, 1_100][self.rng.below(3) as usize];
                support::advance(&self.admin, &self.schema, Duration::from_millis(ms))
                    .await
                    .map_err(|err| format!("moving the test clock: {err}"))?;
                self.oracle.now += ms;
                self.trace.push(format!("{i}: time passes {ms} ms"));
            }
            _ => self.remove(i, r, k).await?,
        }
        // A partition ends with the replicas' connections reset (as the
        // keepalives of a long one would end them), so that a statement
        // the partition held never lands after its caller was answered.
        // A fault no statement took is called off, and the network heals:
        // the reads that settle keys, and the next step, start clean.
        if partitioned {
            self.terminate().await?;
        }
        for replica in &self.replicas {
            replica.proxy.pass();
            replica.proxy.end_stall();
        }
        self.settle(r).await
    }

    /// Sets a fault on replica `r`'s proxy or on the server; true for a
    /// partition.
    async fn fault(&mut self, i: u64, r: usize) -> Result<bool, String> {
        let proxy = &self.replicas[r].proxy;
        match self.rng.below(4) {
            0 => {
                proxy.cut_next_request();
                self.trace
                    .push(format!("{i}: replica {r}'s next request is cut"));
            }
            1 => {
                proxy.lose_next_answer();
                self.trace
                    .push(format!("{i}: replica {r}'s next answer is lost"));
            }
            2 => {
                self.terminate().await?;
                self.trace
                    .push(format!("{i}: the server ends every replica connection"));
            }
            _ => {
                proxy.stall(Duration::from_secs(3600));
                self.trace.push(format!("{i}: replica {r} is partitioned"));
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The server ends every connection of the replicas.
    async fn terminate(&self) -> Outcome {
        let terminate = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{}'",
            self.application
        );
        self.admin
            .simple_query(&terminate)
            .await
            .map_err(|err| format!("ending the replicas' connections: {err}"))?;
        Ok(())
    }

    async fn begin(&mut self, i: u64, r: usize, k: u64, payload: u8) -> Outcome {
        let answer = self.replicas[r]
            .backend
            .begin(&key(k), fp(payload), Terms::default())
            .await;
        self.trace.push(format!(
            "{i}: begin k{k} payload {payload} on replica {r}: {}",
            brief(&answer)
        ));
        let lease_ms = LEASE.as_millis() as u64;
        match answer {
            Ok(Begin::Claimed(claim)) => {
                let (token, takeover) = (claim.token(), claim.is_takeover());
                let recovered = claim.recovered().map(|point| point.phase());
                self.oracle
                    .granted(k, payload, token, takeover, recovered, lease_ms)?;
                self.claims.push((k, payload, r, claim));
                Ok(())
            }
            Ok(other) => self.oracle.check_answer(k, payload, &other),
            // A claim whose answer was lost may have landed.
            Err(err) if err.is_transient() => {
                self.oracle.begin_failed(k, payload, lease_ms);
                Ok(())
            }
            Err(err) => Err(format!("begin k{k}: {err}")),
        }
    }

    /// The oldest claim of `k` the caller has, stale or not.
    fn take_claim(&mut self, k: u64) -> Option<(u8, usize, PgClaim)> {
        let at = self.claims.iter().position(|(key, ..)| *key == k)?;
        let (_, payload, r, claim) = self.claims.remove(at);
        Some((payload, r, claim))
    }

    async fn complete(&mut self, i: u64, k: u64) -> Outcome {
        let Some((payload, r, claim)) = self.take_claim(k) else {
            return Ok(());
        };
        let token = claim.token();
        let response = StoredResponse::new(200, format!("seed {} step {i}", self.seed));
        let result = self.replicas[r]
            .backend
            .complete(claim, response.clone())
            .await;
        self.trace.push(format!(
            "{i}: complete k{k} (token {token}) on replica {r}: {:?}",
            result.as_ref().map_err(|e| e.error().to_string())
        ));
        let heard = Heard::of(result.as_ref().err().map(|e| e.error()))
            .map_err(|err| format!("complete k{k}: {err}"))?;
        self.oracle.completion(k, token, payload, response, heard)?;
        self.hand_back(k, payload, r, heard, result.err());
        Ok(())
    }

    async fn release(&mut self, i: u64, k: u64) -> Outcome {
        let Some((payload, r, claim)) = self.take_claim(k) else {
            return Ok(());
        };
        let token = claim.token();
        let result = self.replicas[r].backend.release(claim).await;
        self.trace.push(format!(
            "{i}: release k{k} (token {token}) on replica {r}: {:?}",
            result.as_ref().map_err(|e| e.error().to_string())
        ));
        let heard = Heard::of(result.as_ref().err().map(|e| e.error()))
            .map_err(|err| format!("release k{k}: {err}"))?;
        self.oracle.release(k, token, heard)?;
        self.hand_back(k, payload, r, heard, result.err());
        Ok(())
    }

    /// A claim a failed completion or release handed back stays the
    /// caller's, to repeat it.
    fn hand_back(
        &mut self,
        k: u64,
        payload: u8,
        r: usize,
        heard: Heard,
        error: Option<CompleteError<PgClaim>>,
    ) {
        if heard == Heard::Failed
            && let Some(claim) = error.and_then(CompleteError::into_claim)
        {
            self.claims.push((k, payload, r, claim));
        }
    }

    async fn renew(&mut self, i: u64, k: u64, progress: bool) -> Outcome {
        let Some((_, _, r, claim)) = self.claims.iter().find(|(key, ..)| *key == k) else {
            return Ok(());
        };
        let (r, token) = (*r, claim.token());
        let backend = &self.replicas[r].backend;
        let phase = format!("step_{i}");
        let (what, result) = if progress {
            let state = Bytes::from(phase.clone().into_bytes());
            (
                "record_progress",
                backend.record_progress(claim, &phase, state).await,
            )
        } else {
            ("renew", backend.renew(claim).await)
        };
        self.trace.push(format!(
            "{i}: {what} k{k} (token {token}) on replica {r}: {result:?}"
        ));
        let heard =
            Heard::of(result.as_ref().err()).map_err(|err| format!("{what} k{k}: {err}"))?;
        let point = progress.then_some(phase.as_str());
        self.oracle
            .renewal(k, token, LEASE.as_millis() as u64, point, heard)
    }

    async fn remove(&mut self, i: u64, r: usize, k: u64) -> Outcome {
        let result = self.replicas[r].backend.remove(&key(k)).await;
        self.trace
            .push(format!("{i}: remove k{k} on replica {r}: {result:?}"));
        let heard =
            Heard::of(result.as_ref().err()).map_err(|err| format!("remove k{k}: {err}"))?;
        self.oracle.removal(k, heard)
    }

    /// Reads every key a failure left open through the replica other than
    /// `r`, repeating a read the reconnecting pool fails, and settles it.
    async fn settle(&mut self, r: usize) -> Outcome {
        let other = &self.replicas[(r + 1) % 2].backend;
        for k in 0..KEYS {
            if !matches!(self.oracle.known(k), Known::Either(_)) {
                continue;
            }
            let started = std::time::Instant::now();
            let record = loop {
                match other.get(&key(k)).await {
                    Ok(record) => break record,
                    Err(err) if err.is_transient() && started.elapsed() < PATIENCE => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(err) => return Err(format!("get k{k} to settle it: {err}")),
                }
            };
            let found =
                oracle::found(record.as_ref(), fp(0)).map_err(|err| format!("k{k}: {err}"))?;
            self.oracle.settle(k, found, "read after a failure:")?;
        }
        Ok(())
    }
}

/// A replica's backend; a connection the loaded machine made too slow is
/// tried again (the setup is not what the simulation tests).
async fn connect(url: &str, config: PgConfig) -> Result<PgBackend, BoxError> {
    let started = std::time::Instant::now();
    loop {
        match PgBackend::connect(url, config.clone()).await {
            Ok(backend) => return Ok(backend),
            Err(err) if err.is_transient() && started.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn brief(answer: &idemkv::Result<Begin<PgClaim>>) -> String {
    match answer {
        Ok(Begin::Claimed(claim)) => format!("Claimed(token {})", claim.token()),
        Ok(Begin::Replay(r)) => format!("Replay({:?})", String::from_utf8_lossy(r.body())),
        Ok(Begin::InProgress { .. }) => "InProgress".into(),
        Ok(Begin::Mismatch) => "Mismatch".into(),
        Err(err) => format!("Err({err})"),
    }
}

/// One seed's run without the steps in `skip`: the error that failed it
/// (`Ok(Err)`) and its trace, or the error that kept it from running.
async fn play(seed: u64, skip: &BTreeSet<u64>) -> Result<(Outcome, Vec<String>), BoxError> {
    let mut sim = Sim::new(seed).await?;
    let mut outcome = Ok(());
    for i in (1..=STEPS).filter(|i| !skip.contains(i)) {
        outcome = sim.step(i).await;
        if outcome.is_err() {
            break;
        }
    }
    support::drop_schema(&sim.schema);
    Ok((outcome, sim.trace))
}

/// Plays `seed` without the steps in `skip` as a conformance case (on
/// its own runtime, bounded; a server that cannot be reached is a skip, or
/// a failure under `CI=true`): its outcome and trace, `None` if skipped.
fn play_case(seed: u64, skip: &BTreeSet<u64>) -> Option<(Outcome, Vec<String>)> {
    let played = std::sync::Mutex::new(None);
    idemkv_conformance::run(async {
        let result = play(seed, skip).await?;
        *played.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        Ok(())
    });
    played.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// One seed's run; a failure is minimized and panics with the commands
/// that run it again.
fn run(seed: u64, skip: &BTreeSet<u64>) {
    let Some((outcome, trace)) = play_case(seed, skip) else {
        return;
    };
    let alone = std::env::var_os("IDEMKV_PG_SIM_SEED").is_some();
    if alone || outcome.is_err() {
        for line in &trace {
            eprintln!("  {line}");
        }
    }
    let Err(err) = outcome else {
        return;
    };
    eprintln!("seed {seed}: {err}");
    // Each step in turn left out, and kept out while the run still fails
    // (with any error: the timing is real, so a run can fail otherwise).
    let mut minimal = skip.clone();
    for i in 1..=STEPS {
        if minimal.insert(i)
            && play_case(seed, &minimal).is_some_and(|(outcome, _)| outcome.is_ok())
        {
            minimal.remove(&i);
        }
    }
    let (minimal_outcome, minimal_trace) =
        play_case(seed, &minimal).unwrap_or_else(|| (Ok(()), Vec::new()));
    eprintln!(
        "minimized to {} of {STEPS} steps:",
        STEPS - minimal.len() as u64
    );
    for line in &minimal_trace {
        eprintln!("  {line}");
    }
    let skipped: Vec<String> = minimal.iter().map(u64::to_string).collect();
    panic!(
        "seed {seed}: {err}\nminimized: {}\nrun it again: IDEMKV_PG_SIM_SEED={seed} cargo test -p idemkv-postgres --test network_sim -- --nocapture\nrun the minimized steps again: IDEMKV_PG_SIM_SEED={seed} IDEMKV_PG_SIM_SKIP={} cargo test -p idemkv-postgres --test network_sim -- --nocapture",
        minimal_outcome
            .err()
            .unwrap_or_else(|| "the minimized run passed this time".into()),
        skipped.join(",")
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn seeded_network_faults_keep_every_acknowledged_answer() {
    let seeds: Vec<u64> = match env_u64("IDEMKV_PG_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("IDEMKV_PG_SIM_FIRST").unwrap_or(0);
            let count = env_u64("IDEMKV_PG_SIM_SEEDS").unwrap_or(4);
            (first..first.saturating_add(count)).collect()
        }
    };
    let skip: BTreeSet<u64> = std::env::var("IDEMKV_PG_SIM_SKIP")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for &seed in &seeds {
        run(seed, &skip);
    }
    eprintln!("{} seeds of {STEPS} steps", seeds.len());
}
