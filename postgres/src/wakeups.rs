//! Push wake-ups: one connection per backend `LISTEN`s on the table's
//! channel, and each notification (a completion, release or removal of an
//! in-flight row, on any replica; schema version 3's triggers) wakes the
//! waiting `begin` callers of this replica waiting on that key, at once.
//!
//! Polling stays underneath as the fallback: a waiter also looks again on
//! its polling schedule, so a notification missed while the listening
//! connection is down (it reconnects with backoff, and wakes every waiter
//! when it is back) costs latency, never an answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Socket};

use idemkv::Key;

/// The first pause before the listener reconnects; each failure doubles
/// it, up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The waiters of one backend, by key.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Whether the listening connection is up (for tests and metrics).
    listening: AtomicBool,
}

/// How a key appears in a notification's payload after the table prefix:
/// the scope's length in characters, a colon, the scope, the key.
pub(crate) fn payload_id(key: &Key) -> String {
    format!(
        "{}:{}{}",
        key.scope().chars().count(),
        key.scope(),
        key.idempotency_key()
    )
}

/// One waiter's registration; dropping it removes the key's entry once no
/// other waiter holds it.
pub(crate) struct Waiter<'a> {
    wakeups: &'a Wakeups,
    id: String,
    notify: Arc<Notify>,
}

impl Waiter<'_> {
    /// Resolves at the next wake-up for this key (create it, and enable it,
    /// before looking at the key, so that none is missed in between).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.wakeups.lock();
        // The map's and ours: nobody else waits on this key.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.id);
        }
    }
}

impl Wakeups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter on `key`.
    pub fn waiter(&self, key: &Key) -> Waiter<'_> {
        let id = payload_id(key);
        let notify = Arc::clone(self.lock().entry(id.clone()).or_default());
        Waiter {
            wakeups: self,
            id,
            notify,
        }
    }

    /// Wakes the waiters on the key a payload names.
    fn wake(&self, id: &str) {
        if let Some(notify) = self.lock().get(id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (after the listener was down: they look again).
    fn wake_all(&self) {
        for notify in self.lock().values() {
            notify.notify_waiters();
        }
    }

    /// Whether the listening connection is up.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }
}

/// Listens on `channel` over its own connection until aborted, reconnecting
/// with backoff; wakes `wakeups`' waiters on every payload that starts with
/// `prefix`.
pub(crate) async fn listen<T>(
    config: tokio_postgres::Config,
    tls: T,
    channel: String,
    prefix: String,
    wakeups: Arc<Wakeups>,
) where
    T: MakeTlsConnect<Socket> + Clone,
    T::Stream: Send,
{
    let mut pause = RECONNECT_FIRST;
    loop {
        if let Ok((client, mut connection)) = config.connect(tls.clone()).await {
            let messages = async {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(AsyncMessage::Notification(note)) if note.channel() == channel => {
                            if let Some(id) = note.payload().strip_prefix(prefix.as_str()) {
                                wakeups.wake(id);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            };
            let listen = async {
                if client
                    .batch_execute(&format!("LISTEN \"{channel}\""))
                    .await
                    .is_ok()
                {
                    wakeups.listening.store(true, Ordering::SeqCst);
                    // Anything that finished while nobody listened.
                    wakeups.wake_all();
                    pause = RECONNECT_FIRST;
                    std::future::pending::<()>().await;
                }
            };
            // The connection is driven by `messages`; `listen` only sends
            // the LISTEN and then holds the client open.
            tokio::select! {
                () = messages => {}
                () = listen => {}
            }
            wakeups.listening.store(false, Ordering::SeqCst);
            wakeups.wake_all();
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}
