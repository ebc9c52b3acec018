//! A NATS JetStream consumer that performs each message's side effect
//! exactly once, however often JetStream delivers it.
//!
//! ```text
//! cargo run --release -p idemkv-consumers --example nats_consumer -- \
//!     --server 127.0.0.1:4222 --db ./consumer.redb --sink ./effects.jsonl
//! ```
//!
//! It reads the stream `--stream` (default `READINGS`, subjects
//! `readings.>`, created if missing) through the durable pull consumer
//! `--consumer` (default `idemkv`, explicit acks, `AckWait` 5 s). For each
//! message:
//!
//! 1. The message id is the `msg-id` header, else `Nats-Msg-Id`, else a
//!    `msg_id` field of the JSON payload. A message with none is keyed by a
//!    digest of its payload (`--missing-id fingerprint`, the default), or
//!    published to `deadletter.<subject>` and acknowledged
//!    (`--missing-id reject`); so is one whose id cannot be a key.
//! 2. `idemkv::once` claims `"nats <stream> <subject>"`/`<id>` and runs the
//!    effect only for a new claim: one JSON line appended (and synced) to the
//!    sink, then the payload published to `processed.<rest of the subject>`.
//! 3. The message is acknowledged only once its outcome is settled. A
//!    message whose key an attempt that died still holds is retried when
//!    that attempt's lease (`--lease-ms`, 5,000) runs out; the takeover first
//!    checks the sink for the line the dead attempt may have written.
//!
//! Killed with `kill -9` and started again on the same `--db` and `--sink`,
//! it resumes: JetStream redelivers what was not acknowledged once its
//! `AckWait` passes, and nothing is done twice. It prints `consuming` once
//! the consumer is ready, and stops cleanly on Ctrl-C, printing where its
//! time went (deliveries, effects, and the rest: idemkv and the ack).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use idemkv::{
    AsyncStore, ClaimInfo, Config, Fingerprint, Key, OnError, Once, Store, StoredResponse,
};
use idemkv_consumers::{ConsumerArgs, MissingId, Timings, append_line, hex, sink_has};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nats_consumer: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Consumer {
    client: async_nats::Client,
    store: AsyncStore,
    sink: PathBuf,
    stream: String,
    /// `--missing-id reject`: a message without an id is dead-lettered
    /// instead of keyed by its payload's digest.
    reject_missing_id: bool,
    timings: Timings,
}

/// A NATS JetStream consumer that appends each reading to a sink exactly
/// once, through crashes and redeliveries.
#[derive(clap::Parser)]
#[command(name = "nats_consumer")]
struct Args {
    /// The NATS server.
    #[arg(long, default_value = "127.0.0.1:4222", value_name = "HOST:PORT")]
    server: String,
    /// The idempotency store's file.
    #[arg(long, default_value = "./consumer.redb", value_name = "FILE")]
    db: PathBuf,
    // The sink, the lease and what to do without an id.
    #[command(flatten)]
    common: ConsumerArgs,
    /// The stream to read (created if missing).
    #[arg(long, default_value = "READINGS")]
    stream: String,
    /// The stream's subjects, when it is created.
    #[arg(long, default_value = "readings.>")]
    subjects: String,
    /// The durable consumer's name.
    #[arg(long, default_value = "idemkv")]
    consumer: String,
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    // Listening for SIGINT starts first, before `consuming` tells anyone
    // they may send it: a SIGINT that came before the listener would end
    // the process uncleanly, and one that came while the listener is set
    // up would be lost, leaving a process that never stops. One listener
    // serves the whole run: a SIGINT that comes while a message is being
    // handled waits in it, where a `ctrl_c()` made anew for each `select!`
    // would miss it.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let lease = Duration::from_millis(args.common.lease_ms);
    let store = Store::open(&args.db, Config::default().lease(lease))?;
    let client = async_nats::connect(args.server.as_str()).await?;
    let js = jetstream::new(client.clone());
    let stream_name = args.stream.clone();
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![args.subjects.clone()],
            ..Default::default()
        })
        .await?;
    let durable = args.consumer.clone();
    let pull = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = pull.messages().await?;
    let consumer = Consumer {
        client,
        store: store.to_async(),
        sink: args.common.sink.clone(),
        stream: stream_name,
        reject_missing_id: args.common.missing_id == MissingId::Reject,
        timings: Timings::default(),
    };
    println!("consuming");
    std::io::stdout().flush()?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = interrupt.recv() => None,
        };
        match next {
            Some(Ok(message)) => consumer.timings.delivery(consumer.handle(message)).await,
            Some(Err(err)) => eprintln!("nats_consumer: {err}"),
            None => break,
        }
    }
    eprintln!("{}", consumer.timings.report());
    consumer.client.flush().await?;
    Ok(())
}

impl Consumer {
    /// One delivery: acknowledged once settled, never before.
    async fn handle(&self, message: jetstream::Message) {
        let key = self.key_of(&message);
        let key = match key {
            Ok(key) => key,
            Err(why) => {
                // No usable id: to `deadletter.<subject>` with the reason,
                // and acknowledged (a redelivery could not do better).
                eprintln!("nats_consumer: {}: {why}; dead-lettered", message.subject);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("reason", why.as_str());
                let _ = self
                    .client
                    .publish_with_headers(
                        format!("deadletter.{}", message.subject),
                        headers,
                        message.payload.clone(),
                    )
                    .await;
                let _ = message.ack().await;
                return;
            }
        };
        let fingerprint = Fingerprint::of(&message.payload);
        let policy = OnError::KeepInFlight;
        loop {
            let outcome = idemkv::once(&self.store, &key, fingerprint, policy, |claim| {
                self.timings.effect(self.effect(claim, &message))
            })
            .await;
            match outcome {
                Ok(Once::InProgress { retry_after }) => {
                    tokio::time::sleep(retry_after.min(Duration::from_secs(1))).await;
                }
                Ok(Once::Mismatch) => {
                    eprintln!("nats_consumer: {key} was used before for another payload; dropped");
                    let _ = message.ack().await;
                    return;
                }
                Ok(outcome) if outcome.is_settled(policy) => {
                    if let Err(err) = message.ack().await {
                        eprintln!(
                            "nats_consumer: {key}: ack failed ({err}); it will come back and replay"
                        );
                    }
                    return;
                }
                Ok(outcome) => {
                    eprintln!("nats_consumer: {key}: {outcome:?}; left unacknowledged");
                    return;
                }
                Err(err) => {
                    eprintln!("nats_consumer: {key}: {err}; left unacknowledged");
                    return;
                }
            }
        }
    }

    fn key_of(&self, message: &jetstream::Message) -> Result<Key, String> {
        let header = |name: &str| {
            message
                .headers
                .as_ref()?
                .get(name)
                .map(|value| value.as_str().to_string())
        };
        let from_payload = || {
            serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()?
                .get("msg_id")?
                .as_str()
                .map(str::to_string)
        };
        let id = match header("msg-id")
            .or_else(|| header("Nats-Msg-Id"))
            .or_else(from_payload)
        {
            Some(id) => id,
            None if !self.reject_missing_id => hex(Fingerprint::of(&message.payload).as_bytes()),
            None => return Err("no msg-id or Nats-Msg-Id header and no msg_id field".into()),
        };
        Key::new(&format!("nats {} {}", self.stream, message.subject), &id)
            .map_err(|err| err.to_string())
    }

    /// The side effect: a synced line in the sink, then the payload
    /// published downstream. A takeover first looks for the line an attempt
    /// that died may have written.
    async fn effect(
        &self,
        claim: ClaimInfo,
        message: &jetstream::Message,
    ) -> Result<StoredResponse, std::io::Error> {
        let id = claim.key().idempotency_key();
        let already = claim.is_takeover() && sink_has(&self.sink, id)?;
        if !already {
            let line = serde_json::json!({
                "msg_id": id,
                "subject": message.subject.as_str(),
                "token": claim.token(),
                "payload": String::from_utf8_lossy(&message.payload),
            });
            // One write of the whole line, then a sync.
            append_line(&self.sink, &line.to_string())?;
        }
        let rest = message
            .subject
            .split_once('.')
            .map_or(message.subject.as_str(), |(_, rest)| rest);
        self.client
            .publish(format!("processed.{rest}"), message.payload.clone())
            .await
            .map_err(std::io::Error::other)?;
        Ok(StoredResponse::new(
            200,
            if already { "found" } else { "processed" },
        ))
    }
}
