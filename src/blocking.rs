//! Runs the store's async implementation for the blocking API.
//!
//! Most answers need no write (a replay, a mismatch, an answer in
//! progress): their futures are ready on the first poll. That poll uses a
//! no-op waker and costs nothing beyond the work itself; only a future that
//! must wait (a commit, a `begin_wait`) goes on to `pollster::block_on`,
//! which parks the thread until it is woken.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs `future` to completion on the calling thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    // Every future here keeps the waker of its latest poll, so polling on
    // with a real waker is enough.
    pollster::block_on(future)
}
