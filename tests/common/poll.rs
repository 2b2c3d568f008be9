//! Driving the in-memory store's futures without a runtime, for tests and benches that count
//! what one decision costs (allocations, nanoseconds) and want nothing else in the measurement.
//!
//! Standalone (std only), so a bench can include it with `#[path]`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls a future that never waits (the in-memory store's) to completion.
pub fn ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the in-memory store never waits"),
    }
}
