//! The async side of `contextvars` (see BENCHMARKS.md):
//!
//! - `poll_1000/*`: a future that returns `Pending` 1,000 times (waking
//!   itself) before it completes, polled to completion by hand with a no-op
//!   waker: bare, and wrapped with `in_context` (an owned `Context`, entered
//!   exclusively, and a shared `Arc<Context>`). The wrapper's per-poll
//!   overhead is the difference divided by the 1,001 polls.
//! - `scope_poll_1000/*`: the same future inside a scope over it, polled
//!   in the thread's base context: `ContextVar::scope` against
//!   `tokio::task_local!`'s `scope`, bare (nothing set) for the floor; and
//!   the same with one read of the variable in every poll (`*_get`). The
//!   scope's cost per poll is the difference from the floor divided by the
//!   1,001 polls.
//! - `spawn/*`: spawning and awaiting a no-op task, `tokio::spawn` against
//!   `contextvars::tokio::spawn` (which also copies the current context), from
//!   a task whose context holds 10 variables, on a current-thread and on a
//!   multi-thread runtime; and `tokio::spawn` of a no-op padded to the size
//!   of a `Context`, to tell tokio's cost of a bigger task from ours.

use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::{Arc, LazyLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use contextvars::prelude::*;
use contextvars::{Context, ContextVar};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "common/spin.rs"]
mod spin;
use spin::{PENDINGS, Spin, spawn_and_await};

static FILLERS: LazyLock<Vec<ContextVar<u64>>> =
    LazyLock::new(|| (0..10).map(|_| ContextVar::new("filler")).collect());

/// A context holding 10 variables.
fn context_of_10() -> Context {
    let ctx = Context::new();
    ctx.run(|| {
        for var in FILLERS.iter() {
            var.set(1);
        }
    });
    ctx
}

/// Polls `fut` to completion on this thread.
fn drive<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = TaskContext::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn polls(c: &mut Criterion) {
    let ctx = context_of_10();
    let shared = Arc::new(context_of_10());
    let mut g = c.benchmark_group("poll_1000");
    g.bench_function(BenchmarkId::new("bare", 10), |b| {
        b.iter_batched(|| Spin { left: PENDINGS }, drive, BatchSize::SmallInput)
    });
    g.bench_function(BenchmarkId::new("in_context_owned", 10), |b| {
        b.iter_batched(
            || Spin { left: PENDINGS }.in_context(ctx.copy()),
            drive,
            BatchSize::SmallInput,
        )
    });
    g.bench_function(BenchmarkId::new("in_context_arc", 10), |b| {
        b.iter_batched(
            || Spin { left: PENDINGS }.in_context(shared.clone()),
            drive,
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

static SCOPED: ContextVar<u64> = ContextVar::new("scoped");

tokio::task_local! {
    static TASK_LOCAL: u64;
}

/// `Spin` that reads a value in every poll, through `read`.
struct SpinReading<R> {
    spin: Spin,
    read: R,
}

impl<R: Fn() -> u64 + Unpin> Future for SpinReading<R> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        black_box((self.read)());
        Pin::new(&mut self.spin).poll(cx)
    }
}

fn scope_polls(c: &mut Criterion) {
    let mut g = c.benchmark_group("scope_poll_1000");
    let spin = || Spin { left: PENDINGS };
    g.bench_function(BenchmarkId::new("bare", 1), |b| {
        b.iter_batched(spin, drive, BatchSize::SmallInput)
    });
    g.bench_function(BenchmarkId::new("contextvars", 1), |b| {
        b.iter_batched(
            || SCOPED.scope(black_box(3), spin()),
            drive,
            BatchSize::SmallInput,
        )
    });
    g.bench_function(BenchmarkId::new("tokio_task_local", 1), |b| {
        b.iter_batched(
            || TASK_LOCAL.scope(black_box(3), spin()),
            drive,
            BatchSize::SmallInput,
        )
    });
    let bare_read = || SpinReading {
        spin: Spin { left: PENDINGS },
        read: || black_box(3),
    };
    let cv_read = || SpinReading {
        spin: Spin { left: PENDINGS },
        read: || SCOPED.get_or(0),
    };
    let tl_read = || SpinReading {
        spin: Spin { left: PENDINGS },
        read: || TASK_LOCAL.get(),
    };
    g.bench_function(BenchmarkId::new("bare_get", 1), |b| {
        b.iter_batched(bare_read, drive, BatchSize::SmallInput)
    });
    g.bench_function(BenchmarkId::new("contextvars_get", 1), |b| {
        b.iter_batched(
            || SCOPED.scope(black_box(3), cv_read()),
            drive,
            BatchSize::SmallInput,
        )
    });
    g.bench_function(BenchmarkId::new("tokio_task_local_get", 1), |b| {
        b.iter_batched(
            || TASK_LOCAL.scope(black_box(3), tl_read()),
            drive,
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn runtime(flavor: &str) -> tokio::runtime::Runtime {
    match flavor {
        "current_thread" => tokio::runtime::Builder::new_current_thread().build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build(),
    }
    .expect("a tokio runtime")
}

/// Spawns and awaits `iters` no-op tasks with `spawn`, from a task running
/// in a context of 10 variables; returns the time they took.
fn spawn_loop<H>(rt: &tokio::runtime::Runtime, iters: u64, spawn: fn() -> H) -> Duration
where
    H: Future<Output = Result<(), tokio::task::JoinError>> + Send + 'static,
{
    rt.block_on(async move {
        let task = spawn_and_await(iters, spawn);
        tokio::spawn(task.in_context(context_of_10()))
            .await
            .unwrap()
    })
}

fn spawns(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn");
    for flavor in ["current_thread", "multi_thread"] {
        let rt = runtime(flavor);
        g.bench_function(BenchmarkId::new("tokio", flavor), |b| {
            b.iter_custom(|iters| spawn_loop(&rt, iters, || tokio::spawn(async {})))
        });
        // The same no-op carrying as many bytes as a `Context`: how much of
        // the difference is tokio moving and allocating a bigger task.
        g.bench_function(BenchmarkId::new("tokio_padded", flavor), |b| {
            b.iter_custom(|iters| {
                spawn_loop(&rt, iters, || {
                    let pad = [0u8; std::mem::size_of::<contextvars::Context>()];
                    tokio::spawn(async move {
                        black_box(&pad);
                    })
                })
            })
        });
        // Needs the `tokio` feature (`integration/benches/run.sh` enables every feature);
        // the rest of this file measures without it.
        #[cfg(feature = "tokio")]
        g.bench_function(BenchmarkId::new("contextvars", flavor), |b| {
            b.iter_custom(|iters| spawn_loop(&rt, iters, || contextvars::tokio::spawn(async {})))
        });
    }
    g.finish();
}

mod common;
use common::config;

criterion_group! {
    name = benches;
    config = config();
    targets = polls, scope_polls, spawns
}
criterion_main!(benches);
