//! Shared by the consumer examples and their tests: the command line, the
//! sink file their side effect writes to, and stopping (or, when a test
//! fails, killing) their processes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The flags both consumer examples take besides their broker and their
/// store's file.
#[derive(clap::Args, Debug)]
pub struct ConsumerArgs {
    /// The effects: one JSON line per reading processed.
    #[arg(long, default_value = "./effects.jsonl", value_name = "FILE")]
    pub sink: std::path::PathBuf,
    /// How long a claim is exclusive, in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub lease_ms: u64,
    /// What to do with a message without an id (`msg_id`, or the NATS
    /// message-id headers).
    #[arg(long, value_enum, default_value = "fingerprint")]
    pub missing_id: MissingId,
}

/// What a consumer does with a message that carries no id of its own
/// (`--missing-id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MissingId {
    /// Key it by a digest of its payload: two identical readings without
    /// ids count once.
    Fingerprint,
    /// Dead-letter it and acknowledge it.
    Reject,
}

/// The `msg_id` of every whole line in the sink, in order (a torn line is
/// not an effect and is left out).
pub fn sink_ids(sink: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| v.get("msg_id")?.as_str().map(str::to_string))
        .collect()
}

/// Whether the sink holds a line for `id`: what a takeover checks before
/// repeating the effect of an attempt that died.
///
/// # Errors
///
/// Reading the file failed (a missing file holds nothing).
pub fn sink_has(sink: &std::path::Path, id: &str) -> std::io::Result<bool> {
    match std::fs::metadata(sink) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
        Ok(_) => {}
    }
    Ok(sink_ids(sink).iter().any(|found| found == id))
}

/// How long [`stop`] waits for a consumer to end after its SIGINT: the
/// message in hand may wait out a dead attempt's lease first (seconds),
/// and a loaded machine is slow; a consumer still running after this
/// lost the signal.
pub const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Stops a consumer process cleanly (SIGINT: it finishes the message in
/// hand, reports its timings and disconnects), and waits for it, at most
/// [`STOP_WITHIN`].
///
/// # Errors
///
/// Sending the signal or waiting failed; the process ended otherwise than
/// with success (a SIGINT it did not catch ends it by the signal); or it
/// was still running [`STOP_WITHIN`] after the signal: it is then killed
/// (SIGKILL), and the error says so.
pub fn stop(child: &mut std::process::Child) -> std::io::Result<()> {
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    let deadline = std::time::Instant::now() + STOP_WITHIN;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            return Err(std::io::Error::other(format!(
                "the consumer (pid {}) did not stop cleanly after its SIGINT: {status}",
                child.id()
            )));
        }
        if std::time::Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            return Err(std::io::Error::other(format!(
                "the consumer (pid {}) was still running {} s after its SIGINT: it lost \
                 the signal; killed",
                child.id(),
                STOP_WITHIN.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A child process that is killed (SIGKILL) and reaped when this handle is
/// dropped, so that a test failing half-way leaves no process running.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A process already waited for refuses the kill (the standard
        // library never signals a reaped pid); either way it is gone once
        // the wait returns.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lower-case hex, for a payload digest used as a message id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `line` and a newline to the sink in one write, then syncs it.
/// A line that a killed process left without its newline is ended first, so
/// the torn line stays alone on its own and the new one is whole.
///
/// # Errors
///
/// Opening, reading, writing or syncing the file failed.
pub fn append_line(sink: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(sink)?;
    let mut text = String::with_capacity(line.len() + 2);
    if file.seek(SeekFrom::End(0))? > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(line);
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// Where a consumer's time goes, for the report it prints when it stops:
/// whole deliveries, and the side effect inside them. The rest of a
/// delivery is idemkv's (the claim, or the replay; the completion) and the
/// acknowledgement's hand-off to the client.
#[derive(Debug, Default)]
pub struct Timings {
    deliveries: std::sync::atomic::AtomicU64,
    delivery_nanos: std::sync::atomic::AtomicU64,
    effects: std::sync::atomic::AtomicU64,
    effect_nanos: std::sync::atomic::AtomicU64,
}

impl Timings {
    /// Runs a delivery's handling and counts its time.
    pub async fn delivery<T>(&self, handling: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = handling.await;
        Self::add(&self.deliveries, &self.delivery_nanos, started);
        out
    }

    /// Runs a side effect and counts its time.
    pub async fn effect<T>(&self, effect: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = effect.await;
        Self::add(&self.effects, &self.effect_nanos, started);
        out
    }

    fn add(
        count: &std::sync::atomic::AtomicU64,
        nanos: &std::sync::atomic::AtomicU64,
        started: std::time::Instant,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        count.fetch_add(1, Relaxed);
        nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// One line: deliveries, effects, and the share of delivery time that
    /// was not the effect.
    pub fn report(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let (deliveries, effects) = (self.deliveries.load(Relaxed), self.effects.load(Relaxed));
        let total = self.delivery_nanos.load(Relaxed) as f64 / 1e6;
        let effect = self.effect_nanos.load(Relaxed) as f64 / 1e6;
        let rest = (total - effect).max(0.0);
        let share = if total > 0.0 {
            rest / total * 100.0
        } else {
            0.0
        };
        format!(
            "timings: {deliveries} deliveries in {total:.1} ms, {effects} effects in {effect:.1} ms; \
             idemkv and the ack hand-off: {rest:.1} ms ({share:.0}% of delivery time)"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_torn_last_line_is_ended_before_the_next_is_appended() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sink = dir.path().join("sink.jsonl");
        append_line(&sink, r#"{"msg_id":"a"}"#)?;
        // A process killed in the middle of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&sink)?
            .write_all(br#"{"msg_id":"b""#)?;
        append_line(&sink, r#"{"msg_id":"c"}"#)?;
        assert!(sink_has(&sink, "a")? && sink_has(&sink, "c")?);
        assert!(!sink_has(&sink, "b")?, "the torn line is not an effect");
        Ok(())
    }
}
