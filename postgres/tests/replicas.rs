//! Several replicas on one table: two pools in one process, two processes,
//! and a replica killed with SIGKILL while it holds claims. Exactly one
//! winner per key; every loser gets the winner's response; a dead replica's
//! claims are taken over after their lease, with larger tokens.
//!
//! The child processes are this test binary run again with
//! `IDEMKV_PG_CHILD` set: the `replica_child` test then acts as a replica
//! and prints what it did, one `RESULT` or `CLAIMED` line each.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idemkv::{Backend, Begin, Fingerprint, Key, StoredResponse, Terms};
use idemkv_conformance::{BoxError, Skipped};
use idemkv_postgres::PgBackend;

type TestResult = Result<(), BoxError>;

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs a test body, turning an unreachable server into a printed skip
/// (never under `CI=true`: `support::connect` fails then).
async fn run(body: impl std::future::Future<Output = TestResult>) -> TestResult {
    match body.await {
        Err(err) if err.downcast_ref::<Skipped>().is_some() => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: {err}");
            Ok(())
        }
        other => other,
    }
}

fn key(i: usize) -> Key {
    Key::new("replicas", &format!("order-{i}")).expect("test keys are valid")
}

fn fp() -> Fingerprint {
    Fingerprint::of(b"{\"amount\":1200}")
}

/// Races `racers` tasks for `key` on `backends` (in turn): each waits for
/// the key, and the one that claims completes with a response naming itself.
/// Returns (won, response body) per racer.
async fn race(
    backends: &[PgBackend],
    key: Key,
    racers: usize,
    who: &str,
) -> Result<Vec<(bool, Vec<u8>)>, BoxError> {
    let mut tasks = Vec::new();
    for racer in 0..racers {
        let backend = backends[racer % backends.len()].clone();
        let (key, who) = (key.clone(), format!("{who} racer {racer}"));
        tasks.push(tokio::spawn(async move {
            match backend
                .begin(&key, fp(), Terms::default().wait(PATIENCE))
                .await?
            {
                Begin::Claimed(claim) => {
                    tokio::task::yield_now().await;
                    let body = format!("{who} with token {}", claim.token());
                    backend
                        .complete(claim, StoredResponse::new(201, body.clone()))
                        .await?;
                    Ok::<_, BoxError>((true, body.into_bytes()))
                }
                Begin::Replay(response) => Ok((false, response.into_body())),
                other => Err(format!("{key}: expected a claim or a replay, got {other:?}").into()),
            }
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await??);
    }
    Ok(answers)
}

/// One winner per key, and every answer is the winner's response.
fn check_one_winner(answers: &BTreeMap<String, Vec<(bool, Vec<u8>)>>) {
    for (key, answers) in answers {
        let winners: Vec<_> = answers.iter().filter(|(won, _)| *won).collect();
        assert_eq!(winners.len(), 1, "{key}: {} winners", winners.len());
        let winning = &winners[0].1;
        assert!(
            answers.iter().all(|(_, body)| body == winning),
            "{key}: a loser got another response"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_race_and_every_loser_gets_the_winners_response() -> TestResult {
    run(async {
        let client = support::connect().await?;
        let schema = support::fresh_schema();
        let a = support::backend(&schema, 4).await?;
        support::install_test_clock(&client, &schema, &a).await?;
        let b = support::backend(&schema, 4).await?;
        let mut answers = BTreeMap::new();
        for i in 0..20 {
            answers.insert(
                key(i).to_string(),
                race(&[a.clone(), b.clone()], key(i), 16, "pool").await?,
            );
        }
        check_one_winner(&answers);
        let claims = a.metrics().claims + b.metrics().claims;
        assert_eq!(claims, 20, "one claim per key over both pools");
        support::drop_schema(&schema);
        Ok(())
    })
    .await
}

/// A replica process, killed and reaped when dropped: a test that fails
/// or returns early must not leave a replica running, holding claims and
/// the test harness's output pipe.
struct Replica(Child);

impl std::ops::Deref for Replica {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Replica {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Both fail harmlessly on a replica that has exited and been reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This test binary as a replica process.
fn spawn_replica(mode: &str, schema: &str) -> Result<Replica, BoxError> {
    Ok(Replica(
        Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "replica_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("IDEMKV_PG_CHILD", mode)
            .env("IDEMKV_PG_CHILD_SCHEMA", schema)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    ))
}

/// The `RESULT`/`CLAIMED` lines a replica printed, read as they come (the
/// first may follow the test harness's own "test replica_child ... " on
/// the same line).
fn lines_of(child: &mut Child) -> Result<impl Iterator<Item = String> + use<>, BoxError> {
    let stdout = child.stdout.take().ok_or("the replica has no stdout")?;
    Ok(BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            ["RESULT ", "CLAIMED "]
                .iter()
                .find_map(|tag| line.find(tag))
                .map(|at| line[at..].to_string())
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_and_every_loser_gets_the_winners_response() -> TestResult {
    run(async {
        let client = support::connect().await?;
        let schema = support::fresh_schema();
        let backend = support::backend(&schema, 2).await?;
        support::install_test_clock(&client, &schema, &backend).await?;
        let mut children = [
            spawn_replica("race", &schema)?,
            spawn_replica("race", &schema)?,
        ];
        let outputs: Vec<_> = children
            .iter_mut()
            .map(|child| lines_of(child))
            .collect::<Result<_, _>>()?;
        let reading = tokio::task::spawn_blocking(move || {
            // Read concurrently, so neither replica blocks on a full pipe.
            let readers: Vec<_> = outputs
                .into_iter()
                .map(|lines| std::thread::spawn(move || lines.collect::<Vec<_>>()))
                .collect();
            readers
                .into_iter()
                .flat_map(|reader| reader.join().unwrap_or_default())
                .collect::<Vec<_>>()
        });
        let outputs = match tokio::time::timeout(Duration::from_secs(120), reading).await {
            Ok(read) => read?,
            Err(_) => {
                for child in &mut children {
                    let _ = child.kill();
                }
                return Err("the replicas did not finish in 120 s".into());
            }
        };
        for child in &mut children {
            let status = child.wait()?;
            assert!(status.success(), "a replica failed: {status}");
        }
        let mut answers: BTreeMap<String, Vec<(bool, Vec<u8>)>> = BTreeMap::new();
        for line in outputs {
            // RESULT <key> <won|lost> <body>
            let mut parts = line.splitn(4, ' ');
            let (_, key, outcome, body) = (parts.next(), parts.next(), parts.next(), parts.next());
            let (Some(key), Some(outcome), Some(body)) = (key, outcome, body) else {
                return Err(format!("a malformed line: {line}").into());
            };
            answers
                .entry(key.to_string())
                .or_default()
                .push((outcome == "won", body.as_bytes().to_vec()));
        }
        assert_eq!(answers.len(), 30, "every key was raced");
        assert!(
            answers.values().all(|a| a.len() == 16),
            "8 racers per key in each process"
        );
        check_one_winner(&answers);
        support::drop_schema(&schema);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_claims_are_taken_over_with_fencing() -> TestResult {
    run(async {
        let client = support::connect().await?;
        let schema = support::fresh_schema();
        let backend = support::backend(&schema, 2).await?;
        support::install_test_clock(&client, &schema, &backend).await?;
        let mut child = spawn_replica("hold", &schema)?;
        let mut lines = lines_of(&mut child)?;
        let reading = tokio::task::spawn_blocking(move || {
            let mut held = BTreeMap::new();
            for line in lines.by_ref() {
                // CLAIMED <index> <token>
                let fields: Vec<&str> = line.split(' ').collect();
                if let [_, index, token] = fields[..] {
                    held.insert(index.parse::<usize>()?, token.parse::<u64>()?);
                }
                if held.len() == 10 {
                    break;
                }
            }
            Ok::<_, BoxError>(held)
        });
        let held = match tokio::time::timeout(Duration::from_secs(60), reading).await {
            Ok(read) => read??,
            Err(_) => {
                let _ = child.kill();
                return Err("the replica did not claim its keys in 60 s".into());
            }
        };
        assert_eq!(held.len(), 10, "the replica claimed its keys");
        child.kill()?; // SIGKILL: no chance to release anything
        child.wait()?;

        // Its claims still hold the keys, for the rest of their lease.
        for i in held.keys() {
            let answer = backend.begin(&key(*i), fp(), Terms::default()).await?;
            assert!(matches!(answer, Begin::InProgress { .. }), "{answer:?}");
        }
        support::advance(&client, &schema, Duration::from_secs(60)).await?;
        let mut tokens = HashSet::new();
        for (i, dead_token) in &held {
            let Begin::Claimed(claim) = backend.begin(&key(*i), fp(), Terms::default()).await?
            else {
                return Err(format!("key {i} was not taken over").into());
            };
            assert!(claim.is_takeover());
            assert!(
                claim.token() > *dead_token,
                "the takeover fences the dead holder"
            );
            tokens.insert(claim.token());
            backend
                .complete(claim, StoredResponse::new(201, "resumed"))
                .await?;
            let record = backend.get(&key(*i)).await?.ok_or("the record is gone")?;
            assert!(tokens.contains(&record.token()));
        }
        assert_eq!(backend.metrics().takeovers, 10);
        support::drop_schema(&schema);
        Ok(())
    })
    .await
}

/// A replica process, when run by the tests above; nothing otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_child() -> TestResult {
    let (Ok(mode), Ok(schema)) = (
        std::env::var("IDEMKV_PG_CHILD"),
        std::env::var("IDEMKV_PG_CHILD_SCHEMA"),
    ) else {
        return Ok(());
    };
    let backend = support::backend(&schema, 4).await?;
    match mode.as_str() {
        "race" => {
            let who = format!("process {}", std::process::id());
            for i in 0..30 {
                for (won, body) in race(std::slice::from_ref(&backend), key(i), 8, &who).await? {
                    let outcome = if won { "won" } else { "lost" };
                    println!(
                        "RESULT {} {outcome} {}",
                        key(i),
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        }
        "hold" => {
            let mut claims = Vec::new();
            for i in 0..10 {
                let Begin::Claimed(claim) = backend.begin(&key(i), fp(), Terms::default()).await?
                else {
                    return Err(format!("key {i} was not free").into());
                };
                println!("CLAIMED {i} {}", claim.token());
                claims.push(claim);
            }
            // Holds them until killed.
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        other => return Err(format!("unknown replica mode {other}").into()),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sweeper_deletes_what_expired() -> TestResult {
    run(async {
        let client = support::connect().await?;
        let schema = support::fresh_schema();
        let backend = support::backend(&schema, 2).await?;
        support::install_test_clock(&client, &schema, &backend).await?;
        for i in 0..30 {
            let Begin::Claimed(claim) = backend.begin(&key(i), fp(), Terms::default()).await?
            else {
                return Err(format!("key {i} was not free").into());
            };
            backend
                .complete(claim, StoredResponse::new(201, "x"))
                .await?;
        }
        support::advance(&client, &schema, Duration::from_secs(3600)).await?;
        let sweeper = backend.spawn_sweeper(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let count = format!("SELECT count(*) FROM \"{schema}\".idemkv_records");
        // The sweeper counts a sweep once its delete has committed, so the
        // table empties a moment before the count reaches 30: wait for both.
        while client.query_one(&count, &[]).await?.get::<_, i64>(0) > 0
            || backend.metrics().expired < 30
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sweeper never deleted them all and counted them: {} counted",
                backend.metrics().expired
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sweeper.abort();
        assert_eq!(backend.metrics().expired, 30);
        support::drop_schema(&schema);
        Ok(())
    })
    .await
}
