//! What the async benchmarks (`async.rs`, `span_carrying.rs`,
//! `span_carrying_counts.rs`) share: a future that spins through a given
//! number of polls, and the timed loop that spawns tasks and awaits each,
//! so all of them measure the same work.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

/// How many times a `Spin` of the benchmarks returns `Pending`.
pub const PENDINGS: u32 = 1000;

/// Returns `Pending` `left` times, waking itself each time, then `Ready`.
pub struct Spin {
    pub left: u32,
}

impl Future for Spin {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let left = black_box(self.left);
        if left == 0 {
            return Poll::Ready(());
        }
        self.left = left - 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Spawns `iters` tasks with `spawn`, awaiting each before the next; the
/// time they took.
pub async fn spawn_and_await<H>(iters: u64, spawn: impl Fn() -> H) -> Duration
where
    H: Future<Output = Result<(), tokio::task::JoinError>>,
{
    let start = Instant::now();
    for _ in 0..iters {
        spawn().await.unwrap();
    }
    start.elapsed()
}
