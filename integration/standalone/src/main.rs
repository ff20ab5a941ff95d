//! One core operation of `contextvars`, or of a peer, run `N` times in a
//! loop: `contextvars-standalone <operation> <N>` for callgrind (the
//! instructions of one operation are the difference between the totals at
//! two `N`, which cancels start-up), and `contextvars-standalone <operation>
//! <N> time <repeats>` to time the same loop with `Instant` (prints the
//! median nanoseconds per operation of `repeats` loops).
//!
//! Invariant: every operation runs in the same loop (`repeat`), with its
//! input and output passed through `black_box`, so that the compiler can
//! neither hoist it out of the loop nor drop it, and all operations pay the
//! same loop overhead (the `empty` operation shows it).

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use contextvars::{ContextVar, copy_context};

/// The variable every operation reads or writes.
static VAR: ContextVar<u64> = ContextVar::new("var");

thread_local! {
    static TL_CELL: Cell<u64> = const { Cell::new(1) };
}

/// The value type of the OpenTelemetry peer (its contexts key values by
/// type).
struct Otel(#[expect(dead_code, reason = "attached, never read back")] u64);

tokio::task_local! {
    static KEY: u64;
}

/// The closure form of a scoped write: `ContextVar::scope`, or
/// `ContextVar::sync_scope` where the crate calls it that (the
/// `sync_scope_name` feature, which `run.sh` turns on by looking at the
/// crate). The one place that names it.
#[inline(always)]
fn scope(var: &'static ContextVar<u64>, value: u64, f: impl FnOnce() -> u64) -> u64 {
    #[cfg(not(feature = "sync_scope_name"))]
    return var.scope(value, f);
    #[cfg(feature = "sync_scope_name")]
    return var.sync_scope(value, f);
}

/// Runs `op` `n` times. Not inlined, so that every operation's loop is a
/// function of its own, laid out alike.
#[inline(never)]
fn repeat<R>(n: u64, mut op: impl FnMut() -> R) {
    for _ in 0..n {
        black_box(op());
    }
}

/// The operations, by name (`run` has one arm each).
const OPERATIONS: &[&str] = &[
    "empty",
    "copy_context",
    "run_noop",
    "scope_get",
    "scope_get_shared",
    "scope_get_opaque",
    "get",
    "get_opaque",
    "set_reset",
    "set_reset_shared",
    "task_local_sync_scope_get",
    "task_local_sync_scope_get_opaque",
    "task_local_get",
    "task_local_get_opaque",
    "thread_local_get",
    "otel_attach_drop",
    "arc_clone_drop",
    "cas_release",
];

/// An operation's loop: runs it the number of times given.
type Loop<'a> = &'a mut dyn FnMut(u64);

/// Sets the stage for `name`, then hands `looped` the loop of that
/// operation, to run with the counts it chooses.
fn run(name: &str, looped: &mut dyn FnMut(Loop<'_>)) {
    match name {
        // The loop alone.
        "empty" => looped(&mut |n| repeat(n, || black_box(()))),
        // A copy of the thread's base context (one variable set), dropped.
        "copy_context" => {
            let _token = VAR.set(1);
            looped(&mut |n| repeat(n, copy_context));
        }
        // Enter and leave another context (a copy of the base context).
        "run_noop" => {
            let _token = VAR.set(1);
            let other = copy_context();
            looped(&mut |n| repeat(n, || other.run(|| black_box(()))));
        }
        // A scope and a read inside it, in the thread's base context (empty).
        "scope_get" => {
            looped(&mut |n| repeat(n, || scope(&VAR, black_box(3), || VAR.get_or(0))));
        }
        // The same in a context entered with `run` (shared: other threads may
        // read it).
        "scope_get_shared" => {
            let ctx = copy_context();
            ctx.run(|| looped(&mut |n| repeat(n, || scope(&VAR, black_box(3), || VAR.get_or(0)))));
        }
        // `scope_get` with the read through a reference the compiler cannot
        // see through, as a read in code that is not inlined into the scope
        // would be.
        "scope_get_opaque" => {
            looped(&mut |n| {
                repeat(n, || {
                    scope(&VAR, black_box(3), || black_box(&VAR).get_or(0))
                })
            });
        }
        // A read of a variable set in the base context.
        "get" => {
            let _token = VAR.set(1);
            looped(&mut |n| repeat(n, || VAR.get()));
        }
        // The same through a reference the compiler cannot see through (the
        // form of the criterion benchmark).
        "get_opaque" => {
            let _token = VAR.set(1);
            looped(&mut |n| repeat(n, || black_box(&VAR).get()));
        }
        // A write and its undoing, in the base context, the variable set before.
        "set_reset" => {
            let _token = VAR.set(1);
            looped(&mut |n| {
                repeat(n, || {
                    let token = VAR.set(black_box(3));
                    VAR.reset(token).unwrap();
                })
            });
        }
        // The same in a context entered with `run`.
        "set_reset_shared" => {
            let ctx = copy_context();
            ctx.run(|| {
                let _token = VAR.set(1);
                looped(&mut |n| {
                    repeat(n, || {
                        let token = VAR.set(black_box(3));
                        VAR.reset(token).unwrap();
                    })
                });
            });
        }
        // Peers.
        "task_local_sync_scope_get" => {
            looped(&mut |n| repeat(n, || KEY.sync_scope(black_box(3), || KEY.get())));
        }
        // With the read opaque, the compiler cannot drop the write and the
        // restore of the thread-local that `sync_scope` does.
        "task_local_sync_scope_get_opaque" => {
            looped(&mut |n| repeat(n, || KEY.sync_scope(black_box(3), || black_box(&KEY).get())));
        }
        "task_local_get" => KEY.sync_scope(1, || {
            looped(&mut |n| repeat(n, || KEY.get()));
        }),
        "task_local_get_opaque" => KEY.sync_scope(1, || {
            looped(&mut |n| repeat(n, || black_box(&KEY).get()));
        }),
        "thread_local_get" => looped(&mut |n| repeat(n, || TL_CELL.with(|c| black_box(c).get()))),
        // OpenTelemetry's write and its undoing, the peer of `set_reset`: a
        // context with the new value attached, and the guard dropped, in a
        // context that holds the value already.
        "otel_attach_drop" => {
            let _base = opentelemetry::Context::new().with_value(Otel(1)).attach();
            looped(&mut |n| {
                repeat(n, || {
                    drop(opentelemetry::Context::current_with_value(Otel(black_box(3))).attach())
                })
            });
        }
        "arc_clone_drop" => {
            let shared = Arc::new(1u64);
            looped(&mut |n| repeat(n, || drop(black_box(shared.clone()))));
        }
        "cas_release" => {
            let flag = AtomicBool::new(false);
            looped(&mut |n| {
                repeat(n, || {
                    let taken = black_box(&flag).compare_exchange(
                        false,
                        true,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    );
                    flag.store(false, Ordering::Release);
                    taken
                })
            });
        }
        _ => {
            eprintln!(
                "unknown operation {name:?}; one of: {}",
                OPERATIONS.join(" ")
            );
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: contextvars-standalone <operation|list> <N> [time <repeats>]";
    let Some(name) = args.first() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    if name == "list" {
        println!("{}", OPERATIONS.join("\n"));
        return;
    }
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    match args.get(2).map(String::as_str) {
        None => run(name, &mut |looped| looped(n)),
        Some("time") => {
            let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(7);
            let mut per_op = Vec::with_capacity(repeats);
            run(name, &mut |looped| {
                looped(n / 10); // warm up
                for _ in 0..repeats {
                    let start = Instant::now();
                    looped(n);
                    per_op.push(start.elapsed().as_secs_f64() * 1e9 / n as f64);
                }
            });
            per_op.sort_by(f64::total_cmp);
            println!("{:.3}", per_op[per_op.len() / 2]);
        }
        Some(_) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
