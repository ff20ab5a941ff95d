//! The edges of a task's life, each against its peer in the same
//! run:
//!
//! - `misuse_check`: `set`+`reset` in the thread's base context with the
//!   misuse check off and on (`set_misuse_policy`): what the release-build
//!   check costs a write that is not a misuse.
//! - `poll` (with `--cfg tokio_unstable`): one task yielding, per poll, on a
//!   current-thread runtime with `isolate_tasks()` against the same runtime
//!   without it: what the task hooks cost each poll.
//! - `spawn_await` (with `--cfg tokio_unstable`): spawning and awaiting a
//!   no-op plain `tokio::spawn` task with the hooks against without them
//!   (and `contextvars::tokio::spawn` without them).
//!
//! Run: `RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR=target/unstable
//! cargo bench --features tokio --bench edges`.

use std::hint::black_box;

use contextvars::{ContextVar, Misuse, set_misuse_policy};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

static TARGET: ContextVar<u64> = ContextVar::new("target");

fn misuse_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("misuse_check");
    for (name, policy) in [("off", Misuse::Off), ("on", Misuse::Warn)] {
        set_misuse_policy(policy);
        g.bench_function(BenchmarkId::new("set_reset_base", name), |b| {
            b.iter(|| {
                let token = TARGET.set(black_box(3));
                TARGET.reset(token).unwrap();
            })
        });
    }
    g.finish();
}

#[cfg(tokio_unstable)]
mod hooked {
    use std::time::{Duration, Instant};

    use contextvars::tokio::BuilderExt;
    use criterion::{BenchmarkId, Criterion};

    fn runtime(hooks: bool) -> tokio::runtime::Runtime {
        let mut b = tokio::runtime::Builder::new_current_thread();
        if hooks {
            b.isolate_tasks();
        }
        b.build().unwrap()
    }

    /// One plain task polled `iters` times (it yields each time).
    fn yielding(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
        rt.block_on(async move {
            super::TARGET.set(1);
            tokio::spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
            .await
            .unwrap()
        })
    }

    pub fn polls(c: &mut Criterion) {
        let mut g = c.benchmark_group("poll");
        for (name, hooks) in [("plain", false), ("isolate_tasks", true)] {
            let rt = runtime(hooks);
            g.bench_function(BenchmarkId::new("yield", name), |b| {
                b.iter_custom(|iters| yielding(&rt, iters))
            });
        }
        g.finish();
    }

    pub fn spawns(c: &mut Criterion) {
        let mut g = c.benchmark_group("spawn_await");
        for (name, hooks) in [("plain", false), ("isolate_tasks", true)] {
            let rt = runtime(hooks);
            g.bench_function(BenchmarkId::new("tokio_spawn", name), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async move {
                        super::TARGET.set(1);
                        let start = Instant::now();
                        for _ in 0..iters {
                            tokio::spawn(async {}).await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
        }
        let rt = runtime(false);
        g.bench_function(BenchmarkId::new("contextvars_spawn", "plain"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async move {
                    super::TARGET.set(1);
                    let start = Instant::now();
                    for _ in 0..iters {
                        contextvars::tokio::spawn(async {}).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
    }
}

#[cfg(tokio_unstable)]
fn tokio_hooks(c: &mut Criterion) {
    hooked::polls(c);
    hooked::spawns(c);
}

#[cfg(not(tokio_unstable))]
fn tokio_hooks(_: &mut Criterion) {
    eprintln!(
        "edges: the task-hook benchmarks need RUSTFLAGS=\"--cfg tokio_unstable\" \
         CARGO_TARGET_DIR=target/unstable cargo bench --features tokio --bench edges"
    );
}

mod common;
use common::config;

criterion_group! {
    name = benches;
    config = config();
    targets = misuse_check, tokio_hooks
}
criterion_main!(benches);
