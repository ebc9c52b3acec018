//! Progress display for the commands that walk the file, on standard error
//! and only when it is a terminal (scripts and pipes see nothing).
//!
//! Three shapes: a bar when the total is known (`stats`, `export`), a
//! counter when items arrive one by one without a known total (`list`,
//! `stuck`, `import`), and a bare spinner with the elapsed time for work the
//! store does in one call (`verify`, `sweep`, `compact`, `backup`), where a
//! count would stay at zero. Rates are whole items per second.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a spinner or counter redraws without new progress.
const TICK: Duration = Duration::from_millis(120);

/// A bar counting records up to `total`.
pub fn records(total: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {human_pos}/{human_len} records ({rate}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> ").with_key("rate", whole_rate));
    }
    bar.set_message(message);
    bar
}

/// A spinner that counts `unit`s as they arrive, with their rate.
pub fn counter(message: &'static str, unit: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    let template = format!("{{spinner}} {{msg}} {{human_pos}} {unit} ({{rate}}, {{elapsed}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.with_key("rate", whole_rate));
    }
    bar.set_message(message);
    bar.enable_steady_tick(TICK);
    bar
}

/// A spinner for one long call whose progress is not reported: what runs
/// and for how long.
pub fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(TICK);
    bar
}

/// `{rate}`: items per second as a whole number ("52,469/s").
fn whole_rate(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let rate = state.per_sec();
    let whole = if rate.is_finite() && rate > 0.0 {
        rate.round() as u64
    } else {
        0
    };
    let _ = write!(out, "{}/s", indicatif::HumanCount(whole));
}

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
