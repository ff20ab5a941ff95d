//! Observers (issue 13 §5): the cost of `run`, `set`+`reset` and
//! `scope`+`get` with no observer installed (one relaxed load of a global
//! flag on each switch and write), with an observer installed on something
//! else (a variable the operation does not touch), and with one observing
//! the operation, all measured in one run.
//!
//! Ids: `observers/<operation>/<none|unrelated|observed>`.

use std::hint::black_box;

use contextvars::observe::{self, Change};
use contextvars::{Context, ContextVar};
use criterion::{Criterion, criterion_group, criterion_main};

static TARGET: ContextVar<u64> = ContextVar::new("target");
static OTHER: ContextVar<u64> = ContextVar::new("other");

fn ops(c: &mut Criterion, label: &str) {
    let mut g = c.benchmark_group("observers");
    let ctx = Context::new();
    ctx.run(|| TARGET.set(1));
    g.bench_function(format!("run_noop/{label}"), |b| {
        b.iter(|| ctx.run(|| black_box(())))
    });
    ctx.run(|| {
        g.bench_function(format!("set_reset/{label}"), |b| {
            b.iter(|| TARGET.reset(TARGET.set(black_box(2))).unwrap())
        });
    });
    // A private context (a callback's own): `scope` does not write the map.
    let mut scope_get = |b: &mut criterion::Bencher<'_>| {
        b.iter(|| TARGET.sync_scope(black_box(3), || TARGET.get_or(0)))
    };
    contextvars::wrap(|| g.bench_function(format!("scope_get/{label}"), &mut scope_get))();
    g.finish();
}

fn observers(c: &mut Criterion) {
    ops(c, "none");
    {
        let _other = OTHER.observe(|c: &Change<'_, u64>| {
            black_box(c.current());
        });
        ops(c, "unrelated");
    }
    {
        let _switch = observe::on_switch("bench", |s| {
            black_box(s);
            black_box(TARGET.get_or(0));
        });
        let _var = TARGET.observe(|c: &Change<'_, u64>| {
            black_box(c.current());
        });
        ops(c, "observed");
    }
}

criterion_group!(benches, observers);
criterion_main!(benches);
