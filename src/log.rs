//! Events for operators, through `tracing` when the `tracing` feature is on
//! and compiled away when it is off.
//!
//! Levels: `error` for what loses the write path or a final sync, `warn` for
//! what an operator should look at (a failed reopen attempt, a failed
//! sweep, a slow commit), `info` for what happens rarely and explains later
//! behaviour (open and recovery, a takeover, healing, a sweep that deleted
//! records). Nothing is logged at `info` or above for the ordinary outcome
//! of a request. Every event has the target `idemkv`.
//!
//! The macro takes `tracing`'s syntax after the level. Without the feature
//! its arguments are not evaluated, so compute nothing outside it for it
//! alone.

/// An event at `$level` (`error`, `warn`, `info`, `debug`), target `idemkv`.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        tracing::$level!(target: "idemkv", $($arg)+)
    };
}

/// Compiled away: the `tracing` feature is off.
#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        ()
    };
}

pub(crate) use event;

/// Enters a span (`$level` is `info_span`, `debug_span`, ...), target
/// `idemkv`, until the returned guard drops; a guard that does nothing
/// without the feature.
#[cfg(feature = "tracing")]
macro_rules! span {
    ($level:ident, $($arg:tt)+) => {
        tracing::$level!(target: "idemkv", $($arg)+).entered()
    };
}

/// Compiled away: the `tracing` feature is off.
#[cfg(not(feature = "tracing"))]
macro_rules! span {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::NoSpan
    };
}

/// What [`span!`] gives without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NoSpan;

pub(crate) use span;
