//! Shared by the comparison programs in `src/bin/`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::process::ExitCode;

/// Any error a comparison program stops on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a program's body and prints its error with `Display` (idemkv's
/// messages say what to do; `Debug` would hide that), exiting non-zero.
pub fn run_main(run: impl FnOnce() -> Result<(), BoxError>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

pub mod ceiling;
pub mod plot;

/// One begin → `Claimed` → complete on a fresh key `name` in `scope`, with
/// a 256-byte response; any other answer is an error.
pub fn fresh_cycle(store: &idemkv::Store, scope: &str, name: &str) -> Result<(), BoxError> {
    let key = idemkv::Key::new(scope, name)?;
    match store.begin(&key, idemkv::Fingerprint::of(name.as_bytes()))? {
        idemkv::Begin::Claimed(claim) => {
            Ok(store.complete(claim, idemkv::StoredResponse::new(201, vec![b'x'; 256]))?)
        }
        other => Err(format!("{name}: {other:?}").into()),
    }
}

/// The number after `name` on the command line, or `default` without one.
pub fn arg(name: &str, default: u64) -> Result<u64, BoxError> {
    let args: Vec<String> = std::env::args().collect();
    Ok(args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(default))
}

/// Uniformly spread indices below `n`, the same sequence on every call
/// (xorshift64), so that every pass of a program samples the same keys.
pub fn sample_indices(n: u64) -> impl Iterator<Item = u64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    })
}

/// The `p` quantile (0.0 to 1.0) of sorted nanosecond samples, by nearest
/// rank; zero for no samples.
pub fn percentile(sorted_ns: &[u64], p: f64) -> std::time::Duration {
    if sorted_ns.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    std::time::Duration::from_nanos(sorted_ns[rank])
}
