//! The cost of one resumption of an `isolated()` generator that writes,
//! against the size of its caller's context: a resumption
//! must cost O(the generator's own changes), not O(the caller's map).
//!
//! - `resume_writing/contextvars/N`: one `next` of an isolated iterator that
//!   sets and resets one variable of its own, with `N` variables set in the
//!   caller's context (0 and 20,000).
//! - `resume_reading/contextvars/N`: the same resumption reading only.
//! - `resume_writing/plain_iterator/0`: the same closure without `isolated()`
//!   (its writes go to the caller), the floor a layer adds to.

use std::hint::black_box;
use std::sync::LazyLock;

use contextvars::prelude::*;
use contextvars::{Context, ContextVar};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

static OWN: ContextVar<u64> = ContextVar::with_default("own", 0);

static CALLER_VARS: LazyLock<Vec<ContextVar<u64>>> =
    LazyLock::new(|| (0..20_000).map(|_| ContextVar::new("caller")).collect());

fn caller_of(n: usize) -> Context {
    let ctx = Context::new();
    ctx.run(|| CALLER_VARS[..n].iter().for_each(|var| drop(var.set(1))));
    assert_eq!(ctx.len(), n);
    ctx
}

fn resumptions(c: &mut Criterion) {
    let mut g = c.benchmark_group("resume_writing");
    for n in [0, 20_000] {
        let caller = caller_of(n);
        g.bench_function(BenchmarkId::new("contextvars", n), |b| {
            caller.run(|| {
                let mut generator = std::iter::repeat_with(|| {
                    let token = OWN.set(black_box(3));
                    OWN.reset(token).unwrap();
                })
                .isolated();
                b.iter(|| generator.next())
            })
        });
    }
    let caller = caller_of(0);
    g.bench_function(BenchmarkId::new("plain_iterator", 0), |b| {
        caller.run(|| {
            let mut plain = std::iter::repeat_with(|| {
                let token = OWN.set(black_box(3));
                OWN.reset(token).unwrap();
            });
            b.iter(|| plain.next())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("resume_reading");
    for n in [0, 20_000] {
        let caller = caller_of(n);
        g.bench_function(BenchmarkId::new("contextvars", n), |b| {
            caller.run(|| {
                let mut generator = std::iter::repeat_with(|| OWN.get_or(1)).isolated();
                b.iter(|| generator.next())
            })
        });
    }
    g.finish();
}

mod common;
use common::config;

criterion_group! {
    name = benches;
    config = config();
    targets = resumptions
}
criterion_main!(benches);
