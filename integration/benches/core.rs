//! Core operations of `contextvars` side by side with their closest peers
//! (issue 4; BENCHMARKS.md shows the ratios, `bash integration/benches/run.sh` reproduces
//! them).
//!
//! Benchmark ids are `operation/implementation/size`, where size is the number
//! of variables (or values) in the current context; `integration/benches/report.py` reads
//! the medians back from `target/criterion/<operation>/<implementation>/<size>`.
//!
//! - `get`, `get_default`, `get_missing`, `with`, `get_or`: reads.
//! - `set_reset` (of a variable the context holds), `set_reset_new` (of one it
//!   lacks), `scope`, `copy_context`, `inherited_context` (the copy spawned
//!   work gets), `run_noop`: writes and switches.
//! - peers: `thread_local!` `Cell`/`RefCell`, `tokio::task_local!`,
//!   `opentelemetry::Context`.
//! - `floor`: an `Arc` clone+drop and a compare-and-swap+release store alone,
//!   the atomic operations `copy_context` and `run` cannot do without.
//! - `foreign_get`: `Context::get` on a shared context from a thread where it
//!   is not current: nobody has it entered (`idle`), another thread has it
//!   entered and is blocked (`parked`), or is running (`running`). What a
//!   reader pays so that the owner's writes take no locked instruction
//!   (`membarrier` on Linux, when the context is entered elsewhere).
//! - `read_threads`: reads of one variable from 1 and from 2 threads at once,
//!   as time per read of the aggregate (lower is better; linear scaling halves
//!   it).
//! - `map_*`: the persistent map against `rpds` and `imbl`.

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::{Barrier, LazyLock};
use std::time::{Duration, Instant};

use contextvars::map::{Garbage, Map, Value};
use contextvars::{Context, ContextVar, copy_context, inherited_context};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Context sizes: variables with a value in the current context.
const SIZES: [usize; 4] = [1, 10, 100, 1000];

static TARGET: ContextVar<u64> = ContextVar::new("target");
static DEFAULTED: ContextVar<u64> = ContextVar::with_default("defaulted", 7);
static MISSING: ContextVar<u64> = ContextVar::new("missing");
static LOCAL: ContextVar<u64> = ContextVar::new("local").not_inherited();

/// Variables that only fill contexts up to a size.
static FILLERS: LazyLock<Vec<ContextVar<u64>>> =
    LazyLock::new(|| (0..1000).map(|_| ContextVar::new("filler")).collect());

/// A fresh context holding `TARGET` and `n - 1` fillers.
fn context_of(n: usize) -> Context {
    // Assign ids in a fixed order, so every run lays the maps out alike.
    let _ = (TARGET.get_or(0), DEFAULTED.get_or(0), MISSING.get_or(0));
    let ctx = Context::new();
    ctx.run(|| {
        TARGET.set(1);
        for var in &FILLERS[..n - 1] {
            var.set(2);
        }
    });
    assert_eq!(ctx.len(), n);
    ctx
}

/// Runs each size's benchmark inside a context of that size.
fn per_size(c: &mut Criterion, group: &str, mut f: impl FnMut(&mut criterion::Bencher<'_>)) {
    let mut g = c.benchmark_group(group);
    for n in SIZES {
        let ctx = context_of(n);
        g.bench_function(BenchmarkId::new("contextvars", n), |b| ctx.run(|| f(b)));
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    per_size(c, "get", |b| b.iter(|| black_box(&TARGET).get()));
    per_size(c, "get_default", |b| b.iter(|| black_box(&DEFAULTED).get()));
    per_size(c, "get_missing", |b| b.iter(|| black_box(&MISSING).get()));
    per_size(c, "with", |b| {
        b.iter(|| black_box(&TARGET).with(|v| v.copied()))
    });
    per_size(c, "get_or", |b| b.iter(|| black_box(&TARGET).get_or(0)));
}

fn writes(c: &mut Criterion) {
    per_size(c, "set_reset", |b| {
        b.iter(|| {
            let token = TARGET.set(black_box(3));
            TARGET.reset(token).unwrap();
        })
    });
    // A variable the context lacks: the set adds an entry, the reset removes
    // it (CPython's HAMT allocates for both; here the context's own nodes
    // keep room for it after the first round).
    per_size(c, "set_reset_new", |b| {
        b.iter(|| {
            let token = MISSING.set(black_box(3));
            MISSING.reset(token).unwrap();
        })
    });
    // The same in the thread's own base context (no `run`): it is private to
    // the thread, so its writes skip the lock a shared context takes.
    let mut g = c.benchmark_group("set_reset");
    let tokens: Vec<_> = std::iter::once(TARGET.set(1))
        .chain(FILLERS[..9].iter().map(|var| var.set(2)))
        .collect();
    g.bench_function(BenchmarkId::new("contextvars_base", 10), |b| {
        b.iter(|| {
            let token = TARGET.set(black_box(3));
            TARGET.reset(token).unwrap();
        })
    });
    g.finish();
    for (i, token) in tokens.into_iter().enumerate().rev() {
        match i {
            0 => TARGET.reset(token).unwrap(),
            _ => FILLERS[i - 1].reset(token).unwrap(),
        }
    }
    per_size(c, "scope", |b| {
        b.iter(|| TARGET.sync_scope(black_box(3), || black_box(())))
    });
    per_size(c, "copy_context", |b| b.iter(copy_context));
    // The copy spawned work gets (issue 13 §2): with no variable declared
    // `not_inherited` in the context, one comparison more than `copy_context`.
    per_size(c, "inherited_context", |b| b.iter(inherited_context));
    // With one such variable among ten: the copy filters it out.
    let mut g = c.benchmark_group("inherited_context");
    let ctx = context_of(10);
    ctx.run(|| LOCAL.set(1));
    g.bench_function(BenchmarkId::new("contextvars_one_local", 11), |b| {
        ctx.run(|| b.iter(inherited_context))
    });
    g.finish();
    per_size(c, "run_noop", |b| {
        let other = copy_context();
        b.iter(|| other.run(|| black_box(())))
    });
}

thread_local! {
    static TL_CELL: Cell<u64> = const { Cell::new(1) };
    static TL_REFCELL: RefCell<u64> = const { RefCell::new(1) };
}

tokio::task_local! {
    static TASK_LOCAL: u64;
}

/// A value type for `opentelemetry::Context`, which keys values by type:
/// `Otel<0>` .. `Otel<9>` are ten different keys.
#[derive(Clone, Copy)]
struct Otel<const I: usize>(u64);

/// An `opentelemetry::Context` holding `Otel<0>` and `n - 1` other values.
fn otel_context_of(n: usize) -> opentelemetry::Context {
    let cx = opentelemetry::Context::new().with_value(Otel::<0>(1));
    match n {
        1 => cx,
        10 => cx
            .with_value(Otel::<1>(2))
            .with_value(Otel::<2>(2))
            .with_value(Otel::<3>(2))
            .with_value(Otel::<4>(2))
            .with_value(Otel::<5>(2))
            .with_value(Otel::<6>(2))
            .with_value(Otel::<7>(2))
            .with_value(Otel::<8>(2))
            .with_value(Otel::<9>(2)),
        _ => unreachable!("opentelemetry contexts of 1 and 10 values"),
    }
}

fn peers(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    g.bench_function(BenchmarkId::new("thread_local_cell", 1), |b| {
        b.iter(|| TL_CELL.with(|c| black_box(c).get()))
    });
    g.bench_function(BenchmarkId::new("thread_local_refcell", 1), |b| {
        b.iter(|| TL_REFCELL.with(|c| *black_box(c).borrow()))
    });
    g.bench_function(BenchmarkId::new("tokio_task_local", 1), |b| {
        TASK_LOCAL.sync_scope(1, || b.iter(|| black_box(&TASK_LOCAL).get()))
    });
    for n in [1, 10] {
        let _guard = otel_context_of(n).attach();
        g.bench_function(BenchmarkId::new("opentelemetry", n), |b| {
            b.iter(|| {
                opentelemetry::Context::current()
                    .get::<Otel<0>>()
                    .map(|v| v.0)
            })
        });
        // The cheaper read opentelemetry offers, without the `Arc` clone.
        g.bench_function(BenchmarkId::new("opentelemetry_map_current", n), |b| {
            b.iter(|| opentelemetry::Context::map_current(|cx| cx.get::<Otel<0>>().map(|v| v.0)))
        });
    }
    g.finish();

    // A write and its undoing: the peers' closest equivalent of set+reset.
    let mut g = c.benchmark_group("set_reset");
    g.bench_function(BenchmarkId::new("thread_local_cell", 1), |b| {
        b.iter(|| {
            TL_CELL.with(|c| {
                let old = c.replace(black_box(3));
                c.set(old);
            })
        })
    });
    g.bench_function(BenchmarkId::new("thread_local_refcell", 1), |b| {
        b.iter(|| {
            TL_REFCELL.with(|c| {
                let old = c.replace(black_box(3));
                *c.borrow_mut() = old;
            })
        })
    });
    for n in [1, 10] {
        let _guard = otel_context_of(n).attach();
        g.bench_function(BenchmarkId::new("opentelemetry", n), |b| {
            b.iter(|| {
                drop(opentelemetry::Context::current_with_value(Otel::<0>(black_box(3))).attach())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("scope");
    g.bench_function(BenchmarkId::new("tokio_task_local", 1), |b| {
        b.iter(|| TASK_LOCAL.sync_scope(black_box(3), || black_box(())))
    });
    g.finish();

    // `sync_scope` + a read inside it (issue 16), against `task_local!`'s
    // `sync_scope` + `get`, in the three kinds of context: the thread's base
    // context, a task's own (entered exclusively, as `in_context` with an
    // owned `Context` and the spawn helpers do; `wrap` here), and a shared
    // one (`run` on a `&Context`, which other threads may read).
    let mut g = c.benchmark_group("scope_get");
    g.bench_function(BenchmarkId::new("tokio_task_local", 1), |b| {
        b.iter(|| TASK_LOCAL.sync_scope(black_box(3), || TASK_LOCAL.get()))
    });
    g.bench_function(BenchmarkId::new("contextvars_base", 1), |b| {
        b.iter(|| TARGET.sync_scope(black_box(3), || TARGET.get_or(0)))
    });
    g.bench_function(BenchmarkId::new("contextvars_task", 1), |b| {
        contextvars::wrap(|| b.iter(|| TARGET.sync_scope(black_box(3), || TARGET.get_or(0))))()
    });
    let shared = context_of(1);
    g.bench_function(BenchmarkId::new("contextvars_shared", 1), |b| {
        shared.run(|| b.iter(|| TARGET.sync_scope(black_box(3), || TARGET.get_or(0))))
    });
    g.bench_function(BenchmarkId::new("opentelemetry", 1), |b| {
        b.iter(|| {
            let _guard =
                opentelemetry::Context::current_with_value(Otel::<0>(black_box(3))).attach();
            opentelemetry::Context::map_current(|cx| cx.get::<Otel<0>>().map(|v| v.0))
        })
    });
    g.finish();

    // The floor under `copy_context` and `run`, on this machine in this run:
    // what one shared reference count (an `Arc` clone and drop: two atomic
    // read-modify-writes) and one flag taken and released (a compare-and-swap
    // and a release store) cost with nothing else around them.
    let mut g = c.benchmark_group("floor");
    let shared = std::sync::Arc::new(1u64);
    g.bench_function(BenchmarkId::new("arc_clone_drop", 1), |b| {
        b.iter(|| drop(black_box(shared.clone())))
    });
    let flag = std::sync::atomic::AtomicBool::new(false);
    g.bench_function(BenchmarkId::new("cas_release", 1), |b| {
        b.iter(|| {
            use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
            let taken = black_box(&flag).compare_exchange(false, true, Acquire, Relaxed);
            flag.store(false, Release);
            taken
        })
    });
    g.finish();
}

/// `iters` reads of `TARGET` on each of `threads` threads at once, each in its
/// own copy of one context (so they share its map nodes and value); returns
/// the wall time of the slowest thread divided by `threads`: the aggregate
/// time per read.
fn parallel_reads(threads: usize, iters: u64, read: fn() -> u64) -> Duration {
    let parent = context_of(10);
    let start = Barrier::new(threads);
    let slowest = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let ctx = parent.copy();
                let start = &start;
                s.spawn(move || {
                    ctx.run(|| {
                        black_box(read());
                        start.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(read());
                        }
                        t.elapsed()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    });
    slowest / threads as u32
}

/// `Context::get` from this thread on a context entered on another one,
/// which meanwhile blocks on a channel (`running == false`) or spins; or on
/// a context nobody has entered (`idle`).
fn foreign_get(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut g = c.benchmark_group("foreign_get");
    let ctx = Arc::new(context_of(1));
    g.bench_function(BenchmarkId::new("contextvars_idle", 1), |b| {
        b.iter(|| black_box(&ctx).get(&TARGET))
    });
    for running in [false, true] {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let owner = {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            std::thread::spawn(move || {
                ctx.run(|| {
                    entered_tx.send(()).unwrap();
                    if running {
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    } else {
                        let _ = stop_rx.recv();
                    }
                })
            })
        };
        entered_rx.recv().unwrap();
        let name = if running {
            "contextvars_running"
        } else {
            "contextvars_parked"
        };
        g.bench_function(BenchmarkId::new(name, 1), |b| {
            b.iter(|| black_box(&ctx).get(&TARGET))
        });
        stop.store(true, Ordering::Relaxed);
        drop(stop_tx);
        owner.join().unwrap();
    }
    g.finish();
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_threads");
    let ours: fn() -> u64 = || black_box(&TARGET).get().unwrap();
    let cell: fn() -> u64 = || TL_CELL.with(|c| black_box(c).get());
    for threads in [1, 2] {
        g.bench_function(BenchmarkId::new("contextvars", threads), |b| {
            b.iter_custom(|iters| parallel_reads(threads, iters, ours))
        });
        g.bench_function(BenchmarkId::new("thread_local_cell", threads), |b| {
            b.iter_custom(|iters| parallel_reads(threads, iters, cell))
        });
    }
    g.finish();
}

fn value(v: u64) -> Value {
    Value::new(v)
}

/// The map against `rpds` and `imbl`, all holding the same `Value`s under
/// ids `1..=n`: `get` of a present id, `insert` of a new id into a copy,
/// `remove` of a present id from a copy, and `clone`.
fn maps(c: &mut Criterion) {
    for n in [10u64, 1000] {
        let v = value(9);
        let mut ours = Map::default();
        let mut garbage = Garbage::new();
        let mut rpds = rpds::HashTrieMapSync::new_sync();
        let mut imbl = imbl::HashMap::new();
        for id in 1..=n {
            ours.insert(id, value(id), &mut garbage);
            rpds.insert_mut(id, value(id));
            imbl.insert(id, value(id));
        }
        drop(garbage);
        let mid = n / 2 + 1;
        let new = n + 1;

        let mut g = c.benchmark_group("map_get");
        g.bench_function(BenchmarkId::new("contextvars", n), |b| {
            b.iter(|| black_box(&ours).get(black_box(mid)).is_some())
        });
        g.bench_function(BenchmarkId::new("rpds", n), |b| {
            b.iter(|| black_box(&rpds).get(&black_box(mid)).is_some())
        });
        g.bench_function(BenchmarkId::new("imbl", n), |b| {
            b.iter(|| black_box(&imbl).get(&black_box(mid)).is_some())
        });
        g.finish();

        let mut g = c.benchmark_group("map_insert");
        g.bench_function(BenchmarkId::new("contextvars", n), |b| {
            b.iter(|| {
                let mut copy = ours.clone();
                let mut garbage = Garbage::new();
                copy.insert(black_box(new), v.clone(), &mut garbage);
                (copy, garbage)
            })
        });
        g.bench_function(BenchmarkId::new("rpds", n), |b| {
            b.iter(|| rpds.insert(black_box(new), v.clone()))
        });
        g.bench_function(BenchmarkId::new("imbl", n), |b| {
            b.iter(|| imbl.update(black_box(new), v.clone()))
        });
        g.finish();

        let mut g = c.benchmark_group("map_remove");
        g.bench_function(BenchmarkId::new("contextvars", n), |b| {
            b.iter(|| {
                let mut copy = ours.clone();
                let mut garbage = Garbage::new();
                copy.remove(black_box(mid), &mut garbage);
                (copy, garbage)
            })
        });
        g.bench_function(BenchmarkId::new("rpds", n), |b| {
            b.iter(|| rpds.remove(&black_box(mid)))
        });
        g.bench_function(BenchmarkId::new("imbl", n), |b| {
            b.iter(|| imbl.without(&black_box(mid)))
        });
        g.finish();

        let mut g = c.benchmark_group("map_clone");
        g.bench_function(BenchmarkId::new("contextvars", n), |b| {
            b.iter(|| black_box(&ours).clone())
        });
        g.bench_function(BenchmarkId::new("rpds", n), |b| {
            b.iter(|| black_box(&rpds).clone())
        });
        g.bench_function(BenchmarkId::new("imbl", n), |b| {
            b.iter(|| black_box(&imbl).clone())
        });
        g.finish();
    }
}

mod common;
use common::config;

criterion_group! {
    name = benches;
    config = config();
    targets = reads, writes, peers, foreign_get, threads, maps
}
criterion_main!(benches);
