//! An MQTT gateway that performs each reading's side effect exactly once,
//! however often the broker or the devices deliver it.
//!
//! ```text
//! cargo run --release -p idemkv-consumers --example mqtt_gateway -- \
//!     --broker 127.0.0.1:1883 --db ./gateway.redb --sink ./effects.jsonl
//! ```
//!
//! It subscribes with QoS 1 to `sensors/+/readings` (`--root` replaces
//! `sensors`) on a persistent MQTT 5 session with manual acknowledgements.
//! For each message:
//!
//! 1. The message id comes from the `msg-id` user property, or else from a
//!    `msg_id` field of the JSON payload. A message with neither is keyed by
//!    a digest of its payload (`--missing-id fingerprint`, the default: two
//!    identical payloads are one reading) or sent to `deadletter/<device>`
//!    and acknowledged (`--missing-id reject`).
//! 2. `idemkv::once` claims `"mqtt <device>"`/`<id>` and runs the effect only
//!    for a new claim: one JSON line appended (and synced) to the sink file,
//!    then the reading published to `processed/<device>`.
//! 3. The message is acknowledged only once its outcome is settled: the
//!    effect happened and its result is stored (or it happened before). A
//!    message whose key is still held by an attempt that died is retried
//!    when that attempt's lease (`--lease-ms`, 5,000) runs out; the takeover
//!    first checks the sink for the line the dead attempt may have written.
//!
//! Killed with `kill -9` and started again on the same `--db` and `--sink`,
//! it resumes: the broker redelivers what was not acknowledged, and nothing
//! is done twice. `--client-id` names the MQTT session (default
//! `idemkv-gateway`). It prints `subscribed` once the subscription is
//! acknowledged, and stops cleanly on Ctrl-C, printing where its time went
//! (deliveries, effects, and the rest: idemkv and the ack hand-off).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use idemkv::{
    AsyncStore, ClaimInfo, Config, Fingerprint, Key, OnError, Once, Store, StoredResponse,
};
use idemkv_consumers::{ConsumerArgs, MissingId, Timings, append_line, hex, sink_has};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::signal::unix::{SignalKind, signal};

/// Unacknowledged messages the broker may send at once (MQTT 5 Receive
/// Maximum), which bounds the worker's queue.
const RECEIVE_MAXIMUM: u16 = 64;

struct Gateway {
    client: AsyncClient,
    store: AsyncStore,
    sink: PathBuf,
    missing_id: MissingId,
    /// `--root` and a slash: what comes before a topic's device.
    topic_root: String,
    timings: Timings,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mqtt_gateway: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An MQTT gateway that appends each reading to a sink exactly once,
/// through crashes and redeliveries.
#[derive(clap::Parser)]
#[command(name = "mqtt_gateway")]
struct Args {
    /// The MQTT broker.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT")]
    broker: String,
    /// The idempotency store's file.
    #[arg(long, default_value = "./gateway.redb", value_name = "FILE")]
    db: PathBuf,
    // The sink, the lease and what to do without an id.
    #[command(flatten)]
    common: ConsumerArgs,
    /// The MQTT session's client id (a persistent session).
    #[arg(long, default_value = "idemkv-gateway")]
    client_id: String,
    /// The topics' first levels: readings come on `ROOT/<device>/readings`.
    #[arg(long, default_value = "sensors")]
    root: String,
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    // Listening for SIGINT starts first, before `subscribed` tells anyone
    // they may send it: a SIGINT that came before the listener would end
    // the process uncleanly, and one that came while the listener is set
    // up would be lost, leaving a process that never stops. One listener
    // serves the whole run: a SIGINT that comes while a message is being
    // handled waits in it, where a `ctrl_c()` made anew for each `select!`
    // would miss it.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .ok_or("--broker takes HOST:PORT")?;
    let lease = Duration::from_millis(args.common.lease_ms);
    let missing_id = args.common.missing_id;
    let store = Store::open(&args.db, Config::default().lease(lease))?;

    let mut options = MqttOptions::new(args.client_id.as_str(), host, port.parse()?);
    options
        .set_keep_alive(Duration::from_secs(5))
        // A persistent session: what is not acknowledged is redelivered
        // after a crash and reconnect.
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_manual_acks(true)
        // At most this many unacknowledged messages from the broker: what
        // waits in the worker's queue stays bounded.
        .set_receive_maximum(Some(RECEIVE_MAXIMUM));
    let (client, mut events) = AsyncClient::new(options, 256);
    client
        .subscribe(format!("{}/+/readings", args.root), QoS::AtLeastOnce)
        .await?;
    let gateway = Gateway {
        client: client.clone(),
        store: store.to_async(),
        sink: args.common.sink.clone(),
        missing_id,
        topic_root: format!("{}/", args.root),
        timings: Timings::default(),
    };

    // The event loop runs on its own task and never waits for the worker
    // (the queue between them is unbounded; the broker's flow control
    // bounds it), so the connection's keep-alive and the acknowledgements
    // and publishes the worker sends are always serviced. Messages reach
    // the worker in order, and it handles one at a time.
    let (deliveries, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Publish>();
    let polling = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(message))) => {
                    if deliveries.send(message).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    println!("subscribed");
                    let _ = std::io::stdout().flush();
                }
                Ok(_) => {}
                Err(err) => {
                    eprintln!("mqtt_gateway: connection: {err}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    loop {
        let message = tokio::select! {
            message = inbox.recv() => message,
            _ = interrupt.recv() => None,
        };
        match message {
            Some(message) => gateway.timings.delivery(gateway.handle(message)).await,
            None => break,
        }
    }
    eprintln!("{}", gateway.timings.report());
    client.disconnect().await?;
    // Let the disconnect go out before the process ends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    polling.abort();
    Ok(())
}

impl Gateway {
    /// One delivery: acknowledged once settled, never before.
    async fn handle(&self, message: Publish) {
        let topic = String::from_utf8_lossy(&message.topic).to_string();
        let device = topic
            .strip_prefix(self.topic_root.as_str())
            .and_then(|rest| rest.strip_suffix("/readings"))
            .unwrap_or("unknown")
            .to_string();
        let key = match self.key_of(&device, &message) {
            Ok(key) => key,
            Err(why) => {
                self.dead_letter(&device, &message, &why).await;
                return;
            }
        };
        let fingerprint = Fingerprint::of(&message.payload);
        let policy = OnError::KeepInFlight;
        loop {
            let outcome = idemkv::once(&self.store, &key, fingerprint, policy, |claim| {
                self.timings.effect(self.effect(claim, &device, &message))
            })
            .await;
            match outcome {
                Ok(Once::InProgress { retry_after }) => {
                    // An attempt that died holds the key: its lease ends.
                    tokio::time::sleep(retry_after.min(Duration::from_secs(1))).await;
                }
                Ok(Once::Mismatch) => {
                    let why = format!("{key} was used before for another payload");
                    self.dead_letter(&device, &message, &why).await;
                    return;
                }
                Ok(outcome) if outcome.is_settled(policy) => {
                    let _ = self.client.ack(&message).await;
                    return;
                }
                Ok(outcome) => {
                    // Failed and kept in flight: not acknowledged, so the
                    // broker redelivers it after the next reconnect.
                    eprintln!("mqtt_gateway: {key}: {outcome:?}; left unacknowledged");
                    return;
                }
                Err(err) => {
                    eprintln!("mqtt_gateway: {key}: {err}; left unacknowledged");
                    return;
                }
            }
        }
    }

    /// The message's key: its scope is its device, its id the `msg-id` user
    /// property or the payload's `msg_id`.
    fn key_of(&self, device: &str, message: &Publish) -> Result<Key, String> {
        let from_property = message.properties.as_ref().and_then(|p| {
            p.user_properties
                .iter()
                .find(|(name, _)| name == "msg-id")
                .map(|(_, value)| value.clone())
        });
        let from_payload = || {
            serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()?
                .get("msg_id")?
                .as_str()
                .map(str::to_string)
        };
        let id = match from_property.or_else(from_payload) {
            Some(id) => id,
            None if self.missing_id == MissingId::Fingerprint => {
                hex(Fingerprint::of(&message.payload).as_bytes())
            }
            None => return Err("no msg-id user property and no msg_id field".into()),
        };
        Key::new(&format!("mqtt {device}"), &id).map_err(|err| err.to_string())
    }

    /// The side effect: a synced line in the sink, then the reading
    /// published downstream. A takeover first looks for the line an attempt
    /// that died may have written.
    async fn effect(
        &self,
        claim: ClaimInfo,
        device: &str,
        message: &Publish,
    ) -> Result<StoredResponse, std::io::Error> {
        let id = claim.key().idempotency_key();
        let already = claim.is_takeover() && sink_has(&self.sink, id)?;
        if !already {
            let line = serde_json::json!({
                "msg_id": id,
                "device": device,
                "token": claim.token(),
                "payload": String::from_utf8_lossy(&message.payload),
            });
            // One write of the whole line, then a sync.
            append_line(&self.sink, &line.to_string())?;
        }
        let properties = PublishProperties {
            user_properties: vec![("msg-id".into(), id.to_string())],
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(
                format!("processed/{device}"),
                QoS::AtLeastOnce,
                false,
                message.payload.clone(),
                properties,
            )
            .await
            .map_err(std::io::Error::other)?;
        Ok(StoredResponse::new(
            200,
            if already { "found" } else { "processed" },
        ))
    }

    /// A message that cannot be processed: published to
    /// `deadletter/<device>` with the reason, and acknowledged.
    async fn dead_letter(&self, device: &str, message: &Publish, why: &str) {
        eprintln!("mqtt_gateway: dead letter from {device}: {why}");
        let properties = PublishProperties {
            user_properties: vec![("reason".into(), why.to_string())],
            ..PublishProperties::default()
        };
        let _ = self
            .client
            .publish_with_properties(
                format!("deadletter/{device}"),
                QoS::AtLeastOnce,
                false,
                message.payload.clone(),
                properties,
            )
            .await;
        let _ = self.client.ack(message).await;
    }
}
