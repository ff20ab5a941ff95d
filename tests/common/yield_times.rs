//! `YieldTimes`: a future that suspends a given number of times before it
//! completes, for the tests of what holds across `.await` points.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// A future that is `Pending` the first `n` times it is polled (waking
/// itself), then ready.
pub struct YieldTimes(pub u32);

impl Future for YieldTimes {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
