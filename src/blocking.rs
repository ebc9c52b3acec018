//! Runs the store's async implementation for the blocking API.
//!
//! Most answers need no write (a replay, a mismatch, an answer in
//! progress): their futures are ready on the first poll. That poll uses a
//! no-op waker and costs nothing beyond the work itself; only a future that
//! must wait (a commit, a waiting `begin`) goes on to `pollster::block_on`,
//! which parks the thread until it is woken.
//!
//! While it polls, [`in_block_on`] is true on this thread: the caller runs
//! the moment it is woken, so the committer may hand it other callers'
//! answers to pass on (never to an async task, which runs when its runtime
//! gets to it).

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

// Under `shuttle` the store's threads are coroutines that share OS
// threads: the flag must be shuttle's thread-local, one per thread it runs.
#[cfg(not(feature = "shuttle"))]
std::thread_local! {
    static IN_BLOCK_ON: Cell<bool> = const { Cell::new(false) };
}
#[cfg(feature = "shuttle")]
shuttle::thread_local! {
    static IN_BLOCK_ON: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`block_on`]: a blocking caller, free to
/// pass answers on.
pub(crate) fn in_block_on() -> bool {
    IN_BLOCK_ON.with(Cell::get)
}

/// Clears the flag when `block_on` returns or unwinds.
struct Marked(bool);

impl Marked {
    fn set() -> Marked {
        Marked(IN_BLOCK_ON.with(|flag| flag.replace(true)))
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        IN_BLOCK_ON.with(|flag| flag.set(self.0));
    }
}

/// Runs `future` to completion on the calling thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let _marked = Marked::set();
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    // Every future here keeps the waker of its latest poll, so polling on
    // with a real waker is enough.
    crate::sync::park_on(future)
}
