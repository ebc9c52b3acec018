//! The NATS consumer over the local nats-server with JetStream
//! (127.0.0.1:4222): 1,000 messages published to a stream of this run's
//! own, 200 of them sent twice (the same `msg-id`, a new stream message:
//! JetStream's `Nats-Msg-Id` window would drop a resend that reused that
//! header, which covers the publisher, not the consumer); the consumer
//! killed with SIGKILL three times mid-stream and started again on the same
//! store and sink. At the end the sink holds each message's effect exactly
//! once, and the durable consumer has nothing pending or unacknowledged.
//!
//! When the server is unreachable the test fails if `CI=true` and is
//! skipped with the reason otherwise.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use idemkv_consumers::KillOnDrop;
use std::time::{Duration, Instant};

use async_nats::jetstream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SERVER: &str = "127.0.0.1:4222";
const MESSAGES: usize = 1000;
const RESENT: usize = 200;

fn consumer_binary() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    Ok(profile.join("examples").join("nats_consumer"))
}

struct Run {
    dir: tempfile::TempDir,
    stream: String,
    prefix: String,
}

impl Run {
    fn sink(&self) -> PathBuf {
        self.dir.path().join("effects.jsonl")
    }

    /// Starts the consumer and waits until it is consuming.
    fn start(&self) -> Result<KillOnDrop, Box<dyn std::error::Error>> {
        let mut child = Command::new(consumer_binary()?)
            .args([
                "--server",
                SERVER,
                "--stream",
                &self.stream,
                "--consumer",
                "idemkv-test",
            ])
            .args([
                "--subjects",
                &format!("{}.>", self.prefix),
                "--lease-ms",
                "1000",
            ])
            .args([
                "--db".as_ref(),
                self.dir.path().join("consumer.redb").as_os_str(),
            ])
            .args(["--sink".as_ref(), self.sink().as_os_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map(KillOnDrop)?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        match BufReader::new(stdout).lines().next() {
            Some(Ok(line)) if line == "consuming" => Ok(child),
            // Dropping the handle kills the process.
            other => Err(format!("the consumer did not start: {other:?}").into()),
        }
    }

    fn effects(&self) -> Vec<String> {
        idemkv_consumers::sink_ids(&self.sink())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_takes_effect_once_across_kills_and_redeliveries() -> TestResult {
    if let Err(err) = std::net::TcpStream::connect(SERVER) {
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err(format!("nats-server at {SERVER} is unreachable: {err}").into());
        }
        let _ = writeln!(
            std::io::stderr(),
            "skipped: nats-server at {SERVER} is unreachable ({err}); CI=true makes this a failure"
        );
        return Ok(());
    }
    let run = Run {
        dir: tempfile::tempdir()?,
        stream: format!("IDEMKV_TEST_{}", std::process::id()),
        prefix: format!("idemkv_test_{}", std::process::id()),
    };
    let mut consumer = run.start()?;

    let client = async_nats::connect(SERVER).await?;
    let js = jetstream::new(client);
    let publishing = {
        let (js, prefix) = (js.clone(), run.prefix.clone());
        tokio::spawn(async move {
            for i in 0..MESSAGES + RESENT {
                let n = if i < MESSAGES { i } else { (i - MESSAGES) * 5 };
                let id = format!("{prefix}-{n}");
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("msg-id", id.as_str());
                let payload = format!("{{\"msg_id\":\"{id}\",\"amount\":{}}}", n % 90);
                js.publish_with_headers(format!("{prefix}.dev-{}", n % 7), headers, payload.into())
                    .await?
                    .await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    };

    let mut kills = Vec::new();
    for threshold in [200, 450, 700] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while run.effects().len() < threshold {
            assert!(Instant::now() < deadline, "stuck below {threshold} effects");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        consumer.kill()?; // SIGKILL
        consumer.wait()?;
        kills.push(run.effects().len());
        consumer = run.start()?;
    }
    publishing.await?.map_err(|e| e.to_string())?;

    // Everything consumed and acknowledged: JetStream redelivers what the
    // killed consumers left unacknowledged once its AckWait (5 s) passes.
    let mut stream = js.get_stream(&run.stream).await?;
    let mut durable: jetstream::consumer::PullConsumer = stream
        .get_consumer("idemkv-test")
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = durable.info().await?;
        let distinct = run.effects().into_iter().collect::<HashSet<_>>().len();
        if distinct == MESSAGES && info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{distinct} effects; {} pending, {} unacknowledged",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idemkv_consumers::stop(&mut consumer)?;
    let messages = stream.info().await?.state.messages;
    js.delete_stream(&run.stream).await?;

    let effects = run.effects();
    let distinct: HashSet<_> = effects.iter().collect();
    assert_eq!(
        effects.len(),
        MESSAGES,
        "every effect exactly once: {kills:?}"
    );
    assert_eq!(distinct.len(), MESSAGES);
    assert_eq!(
        messages as usize,
        MESSAGES + RESENT,
        "the resends reached the stream"
    );
    assert!(
        kills.iter().all(|at| *at < MESSAGES),
        "the kills came mid-stream: {kills:?}"
    );
    Ok(())
}
