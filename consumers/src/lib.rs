//! Shared by the consumer examples: the command line, and the sink file
//! their side effect writes to.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The value after `--name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Whether the sink (JSON lines with a `msg_id` field) holds a line for
/// `id`: what a takeover checks before repeating the effect of an attempt
/// that died.
///
/// # Errors
///
/// Reading the file failed (a missing file holds nothing).
pub fn sink_has(sink: &std::path::Path, id: &str) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(sink) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    Ok(text.lines().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("msg_id").and_then(|m| m.as_str()).map(|m| m == id))
            .unwrap_or(false)
    }))
}

/// Lower-case hex, for a payload digest used as a message id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
