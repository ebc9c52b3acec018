//! How results are printed: aligned tables and labelled lines for people,
//! JSON for scripts; sizes, times and body previews.

use std::io::{self, Write};
use std::time::SystemTime;

use serde::Serialize;

/// Prints `value` as one line of JSON.
pub fn json(value: &impl Serialize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Prints `label  value` lines with the labels aligned.
pub fn fields(pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    let mut out = io::stdout().lock();
    for (label, value) in pairs {
        writeln!(out, "{label:<width$}  {value}")?;
    }
    Ok(())
}

/// A time as RFC 3339 in UTC, to the second.
pub fn time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A time with how far it is from now: `2026-11-28T12:00:00Z (5m ago)`.
pub fn time_from_now(at: SystemTime, now: SystemTime) -> String {
    let relative = match now.duration_since(at) {
        Ok(past) => format!("{} ago", rounded(past)),
        Err(future) => format!("in {}", rounded(future.duration())),
    };
    format!("{} ({relative})", time(at))
}

fn rounded(duration: std::time::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(duration.as_secs()))
}

/// A byte count in binary units.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The first `limit` bytes of a body as text, with anything unprintable
/// escaped, and how much was left out.
pub fn preview(body: &[u8], limit: usize) -> String {
    let shown = &body[..body.len().min(limit)];
    let text: String = String::from_utf8_lossy(shown).escape_debug().collect();
    if body.len() > limit {
        format!("\"{text}\" … ({} more bytes)", body.len() - limit)
    } else {
        format!("\"{text}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_previews_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(preview(b"ok\n\x00", 10), "\"ok\\n\\0\"");
        assert_eq!(preview(b"abcdef", 3), "\"abc\" … (3 more bytes)");
    }
}
