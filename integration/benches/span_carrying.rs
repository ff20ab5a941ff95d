//! `tracing::carry_spans`, side by side in one run, with a real registry
//! subscriber installed (spans are entered and exited for real):
//!
//! - `span_poll_1000/*`: a task that returns `Pending` 1,000 times (waking
//!   itself), spawned from inside a span with `contextvars::tokio::spawn`
//!   and awaited, on a current-thread runtime: carrying off, carrying on,
//!   and off with the task wrapped in `tracing::Instrument` (the peer). The
//!   per-poll cost of carrying is `(on - off) / 1001`, of `Instrument`
//!   `(instrument - off) / 1001`.
//! - `span_spawn/*`: a no-op task, `contextvars::tokio::spawn` with carrying
//!   off against what it spawned before carrying existed,
//!   `tokio::spawn(fut.in_current_context())`: off costs nothing.
//! - `span_wrap/*`: `contextvars::wrap(f)()` off and on.
//! - `span_hooks_poll_1000/*` (with `--cfg tokio_unstable` only): the
//!   `span_poll_1000` task spawned with plain `tokio::spawn` on a runtime
//!   built with `isolate_tasks()`, whose hooks carry the span: off, on, and
//!   off with `tracing::Instrument` (the peer).
//! - `span_envelope/*`: a message sent from inside a span and handled
//!   (`Envelope::new(m).run(f)`), carrying off and on.

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use contextvars::prelude::*;
use contextvars::tracing::carry_spans;
use criterion::{Criterion, criterion_group, criterion_main};
use tracing::Instrument;

#[path = "common/spin.rs"]
mod spin;
use spin::{PENDINGS, Spin, spawn_and_await};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

/// Runs `iters` spawns made by `spawn` from inside a `request` span, each
/// awaited; returns the time they took.
fn spawn_loop<H>(rt: &tokio::runtime::Runtime, iters: u64, spawn: impl Fn() -> H) -> Duration
where
    H: Future<Output = Result<(), tokio::task::JoinError>>,
{
    rt.block_on(spawn_and_await(iters, spawn).instrument(tracing::info_span!("request", id = 7)))
}

fn polls(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("span_poll_1000");
    carry_spans(false);
    g.bench_function("off", |b| {
        b.iter_custom(|iters| {
            spawn_loop(&rt, iters, || {
                contextvars::tokio::spawn(Spin { left: PENDINGS })
            })
        })
    });
    g.bench_function("instrument", |b| {
        b.iter_custom(|iters| {
            spawn_loop(&rt, iters, || {
                contextvars::tokio::spawn(Spin { left: PENDINGS }.in_current_span())
            })
        })
    });
    carry_spans(true);
    g.bench_function("on", |b| {
        b.iter_custom(|iters| {
            spawn_loop(&rt, iters, || {
                contextvars::tokio::spawn(Spin { left: PENDINGS })
            })
        })
    });
    carry_spans(false);
    g.finish();
}

fn spawns(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("span_spawn");
    carry_spans(false);
    g.bench_function("tokio_in_current_context", |b| {
        b.iter_custom(|iters| {
            spawn_loop(&rt, iters, || tokio::spawn(async {}.in_current_context()))
        })
    });
    g.bench_function("contextvars_off", |b| {
        b.iter_custom(|iters| spawn_loop(&rt, iters, || contextvars::tokio::spawn(async {})))
    });
    carry_spans(true);
    g.bench_function("contextvars_on", |b| {
        b.iter_custom(|iters| spawn_loop(&rt, iters, || contextvars::tokio::spawn(async {})))
    });
    carry_spans(false);
    g.finish();
}

fn wraps(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_wrap");
    let span = tracing::info_span!("request", id = 7);
    let _entered = span.enter();
    for on in [false, true] {
        carry_spans(on);
        g.bench_function(if on { "on" } else { "off" }, |b| {
            b.iter(|| contextvars::wrap(|| black_box(1))())
        });
    }
    carry_spans(false);
    g.finish();
}

/// Plain `tokio::spawn` under the task hooks.
#[cfg(tokio_unstable)]
fn hooked_polls(c: &mut Criterion) {
    use contextvars::tokio::BuilderExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .isolate_tasks()
        .build()
        .expect("a tokio runtime");
    let mut g = c.benchmark_group("span_hooks_poll_1000");
    carry_spans(false);
    g.bench_function("off", |b| {
        b.iter_custom(|iters| spawn_loop(&rt, iters, || tokio::spawn(Spin { left: PENDINGS })))
    });
    g.bench_function("instrument", |b| {
        b.iter_custom(|iters| {
            spawn_loop(&rt, iters, || {
                tokio::spawn(Spin { left: PENDINGS }.in_current_span())
            })
        })
    });
    carry_spans(true);
    g.bench_function("on", |b| {
        b.iter_custom(|iters| spawn_loop(&rt, iters, || tokio::spawn(Spin { left: PENDINGS })))
    });
    carry_spans(false);
    g.finish();
}

#[cfg(not(tokio_unstable))]
fn hooked_polls(_: &mut Criterion) {}

fn envelopes(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_envelope");
    let span = tracing::info_span!("request", id = 7);
    let _entered = span.enter();
    for on in [false, true] {
        carry_spans(on);
        g.bench_function(if on { "on" } else { "off" }, |b| {
            b.iter(|| contextvars::channel::Envelope::new(black_box(1)).run(black_box))
        });
    }
    carry_spans(false);
    g.finish();
}

fn benches(c: &mut Criterion) {
    // A real subscriber: spans are registered, entered and exited.
    tracing::subscriber::set_global_default(tracing_subscriber::registry())
        .expect("the only subscriber of this benchmark");
    polls(c);
    spawns(c);
    wraps(c);
    hooked_polls(c);
    envelopes(c);
}

mod common;

criterion_group! {
    name = span_benches;
    config = common::config();
    targets = benches
}
criterion_main!(span_benches);
