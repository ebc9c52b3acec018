//! Named points in the store's file lifecycle where a test can stop the
//! process, to prove that a crash at that exact step leaves a store that
//! opens with every acknowledged write.
//!
//! Built only with the `fault-injection` feature, which the crate's own
//! tests turn on; without it [`reached`] is an empty inline function and
//! costs nothing. With it, a process started with
//! `IDEMKV_CRASH_AT=<point>[:<n>]` aborts (as a kill would: no destructor,
//! no flush, nothing synced that was not synced already) the `n`-th time
//! (default: the first) it reaches `<point>`. The points are listed in
//! [`POINTS`] and in docs/design.md's journal lifecycle table.

/// Every point, in the order a segment's life reaches them.
#[cfg(feature = "fault-injection")]
pub const POINTS: &[&str] = &[
    // Creating a new segment file under a temporary name.
    "segment.temp_created",
    "segment.temp_half_filled",
    "segment.temp_synced",
    "segment.renamed",
    "segment.dir_synced",
    // Activating a segment (new or reused): its header, then its frames.
    "segment.header_written",
    "segment.header_synced",
    "segment.frame_written",
    "segment.frame_synced",
    // A checkpoint's durable commit, after which covered segments are free.
    "checkpoint.committed",
];

/// Aborts the process if the environment asks for a crash at `point` and
/// this is the asked-for arrival there.
#[cfg(feature = "fault-injection")]
pub fn reached(point: &'static str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static ARRIVALS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("IDEMKV_CRASH_AT").ok()?;
        match spec.split_once(':') {
            Some((name, n)) => Some((name.to_string(), n.parse().ok()?)),
            None => Some((spec, 1)),
        }
    });
    if let Some((name, n)) = target
        && name == point
        && ARRIVALS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        eprintln!("idemkv: crashing at {point} (arrival {n}), as IDEMKV_CRASH_AT asks");
        std::process::abort();
    }
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn reached(_point: &'static str) {}
