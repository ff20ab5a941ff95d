//! A tour of `contextvars`: run with `cargo run --release --example showcase`.
//!
//! Every number printed is measured while the example runs.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, ResetError, copy_context};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");
static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42);

fn section(title: &str) {
    println!("\n== {title}");
}

fn walk_through() {
    section("1. define, set, get, reset (Python's PEP 567, in Rust)");
    match REQUEST_ID.get() {
        Ok(v) => println!("request_id = {v}"),
        Err(e) => println!("REQUEST_ID.get() before any set -> Err: {e}"),
    }
    println!("LEVEL.get() falls back to its default -> {:?}", LEVEL.get());
    println!("REQUEST_ID.get_or(7) -> {}", REQUEST_ID.get_or(7));

    let token = REQUEST_ID.set(1001);
    println!(
        "after REQUEST_ID.set(1001): get() -> {:?}, token.old_value() -> {:?}",
        REQUEST_ID.get(),
        token.old_value()
    );
    let inner = REQUEST_ID.set(1002);
    println!(
        "after a second set: get() -> {:?}, old_value -> {:?}",
        REQUEST_ID.get(),
        inner.old_value()
    );
    REQUEST_ID
        .reset(inner)
        .expect("same variable, same context");
    println!("reset(second token): get() -> {:?}", REQUEST_ID.get());
    REQUEST_ID
        .reset(token)
        .expect("same variable, same context");
    println!(
        "reset(first token): get() -> {:?} (removed again)",
        REQUEST_ID.get().map_err(|e| e.var_name())
    );

    let seen = REQUEST_ID.sync_scope(7, || format!("inside scope: {:?}", REQUEST_ID.get()));
    println!("{seen}; after scope: {:?}", REQUEST_ID.get().ok());
}

fn contexts() {
    section("2. contexts: O(1) copies that never see each other's changes");
    USER.set("ada".to_string());
    let ctx = copy_context();
    USER.set("grace".to_string());
    println!(
        "copy taken while user=ada; caller now has user={:?}",
        USER.get()
    );
    ctx.run(|| {
        println!("  inside ctx.run: user={:?}", USER.get());
        USER.set("linus".to_string());
    });
    println!(
        "ctx after run keeps its own change: {:?}; caller still {:?}",
        ctx.get(&USER),
        USER.get()
    );
    println!("Debug of the context lists its variables: {ctx:?}");
    let refused = ctx.run(|| ctx.try_run(|| ()).unwrap_err());
    println!("entering it again while entered -> Err: {refused}");
}

fn reset_errors() {
    section("3. the three reset errors");
    static OTHER: ContextVar<u64> = ContextVar::new("other");
    let token = REQUEST_ID.set(5);
    let wrong_var = OTHER.set(1);
    match REQUEST_ID.reset(wrong_var) {
        Err(e @ ResetError::DifferentVar { .. }) => println!("token of another variable -> {e}"),
        other => println!("UNEXPECTED: {other:?}"),
    }
    match Context::new().run(|| REQUEST_ID.reset(token)) {
        Err(e @ ResetError::DifferentContext { .. }) => println!("token of another context -> {e}"),
        other => println!("UNEXPECTED: {other:?}"),
    }
    // Python's third error, "Token has already been used once", cannot
    // happen: `reset` takes the token by value, so reuse is a compile error
    // (a `compile_fail` doctest on `Token` keeps that true).
    println!("a token used twice -> compile error: `reset` takes the token by value");
}

fn threads() {
    section("4. threads each see their own value");
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                // A new thread starts with an empty context of its own.
                let started_empty = REQUEST_ID.get().is_err();
                REQUEST_ID.set(i);
                let mut wrong = 0;
                for _ in 0..10_000 {
                    if REQUEST_ID.get() != Ok(i) {
                        wrong += 1;
                    }
                    std::thread::yield_now();
                }
                (started_empty, wrong)
            })
        })
        .collect();
    let results: Vec<(bool, u32)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let empty = results.iter().filter(|(e, _)| *e).count();
    let wrong: u32 = results.iter().map(|(_, w)| w).sum();
    println!("8 threads x 10,000 reads: {empty}/8 started empty, {wrong} wrong reads");
}

const TASKS: u64 = 10_000;

/// Spawns `TASKS` tasks on a 2-worker runtime; each stores its own id with
/// `store`, yields a few times (so tasks interleave on the workers) and
/// counts the reads of `load` that are not its id.
fn interleaved<S, L, W>(store: S, load: L, wrap_task: W) -> u64
where
    S: Fn(u64) + Copy + Send + 'static,
    L: Fn() -> u64 + Copy + Send + 'static,
    W: Fn(
        std::pin::Pin<Box<dyn Future<Output = u64> + Send>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    interleaved_on(rt, store, load, wrap_task)
}

/// `interleaved`, on the given runtime.
fn interleaved_on<S, L, W>(rt: tokio::runtime::Runtime, store: S, load: L, wrap_task: W) -> u64
where
    S: Fn(u64) + Copy + Send + 'static,
    L: Fn() -> u64 + Copy + Send + 'static,
    W: Fn(
        std::pin::Pin<Box<dyn Future<Output = u64> + Send>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>>,
{
    rt.block_on(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|id| {
                let task = Box::pin(async move {
                    store(id);
                    let mut wrong = 0;
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                        wrong += u64::from(load() != id);
                    }
                    wrong
                });
                tokio::spawn(wrap_task(task))
            })
            .collect();
        let mut wrong = 0;
        for h in handles {
            wrong += h.await.unwrap();
        }
        wrong
    })
}

fn tasks() {
    section("5. 10,000 interleaved tasks on 2 workers: whose value does each task read back?");
    static GLOBAL: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static LOCAL: Cell<u64> = const { Cell::new(0) };
    }
    static TASK_ID: ContextVar<u64> = ContextVar::new("task_id");
    let reads = TASKS * 3;
    let global = interleaved(
        |id| GLOBAL.store(id, Ordering::Relaxed),
        || GLOBAL.load(Ordering::Relaxed),
        |t| t,
    );
    let local = interleaved(|id| LOCAL.set(id), || LOCAL.get(), |t| t);
    // Each task polled in its own copy of the spawner's context: what
    // `contextvars::tokio::spawn` (feature `tokio`) does.
    let ctxvar = interleaved(
        |id| {
            TASK_ID.set(id);
        },
        || TASK_ID.get().unwrap_or(u64::MAX),
        |t| Box::pin(t.in_current_context()),
    );
    println!("global static   : {global:>6} of {reads} reads saw another task's value");
    println!("thread_local!   : {local:>6} of {reads} reads saw another task's value");
    println!("ContextVar      : {ctxvar:>6} of {reads} reads saw another task's value");
}

/// A value held for a whole future by `ContextVar::scope`, as
/// `tokio::task_local!`'s `scope` holds one: tasks spawned with plain
/// `tokio::spawn`, each inside a scope of its own id, interleaved on two
/// workers, and timed.
fn future_scope() {
    section(
        "5a. ContextVar::scope over a future: held across every .await, as task_local!'s scope",
    );
    static SCOPED_ID: ContextVar<u64> = ContextVar::new("scoped_id");
    tokio::task_local! {
        static TASK_LOCAL_ID: u64;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let reads = TASKS * 3;
    let run = |load: fn() -> u64, scoped: fn(u64, BoxedTask) -> BoxedTask| {
        let start = std::time::Instant::now();
        let wrong = rt.block_on(async {
            let handles: Vec<_> = (0..TASKS)
                .map(|id| {
                    let task: BoxedTask = Box::pin(async move {
                        let mut wrong = 0;
                        for _ in 0..3 {
                            tokio::task::yield_now().await;
                            wrong += u64::from(load() != id);
                        }
                        wrong
                    });
                    tokio::spawn(scoped(id, task))
                })
                .collect();
            let mut wrong = 0;
            for h in handles {
                wrong += h.await.unwrap();
            }
            wrong
        });
        (wrong, start.elapsed())
    };
    let (cv_wrong, cv_time) = run(
        || SCOPED_ID.get().unwrap_or(u64::MAX),
        |id, task| Box::pin(SCOPED_ID.scope(id, task)),
    );
    let (tl_wrong, tl_time) = run(
        || TASK_LOCAL_ID.try_with(|v| *v).unwrap_or(u64::MAX),
        |id, task| Box::pin(TASK_LOCAL_ID.scope(id, task)),
    );
    println!(
        "ContextVar::scope      : {cv_wrong:>6} of {reads} reads saw another task's value ({cv_time:.1?} in all)"
    );
    println!(
        "task_local!'s scope    : {tl_wrong:>6} of {reads} reads saw another task's value ({tl_time:.1?} in all)"
    );
    println!(
        "after the tasks, the spawner's own value: {:?}",
        SCOPED_ID.get().ok()
    );
}

/// A task of the interleaving sections.
type BoxedTask = std::pin::Pin<Box<dyn Future<Output = u64> + Send>>;

/// Section 5's tasks once more, spawned with plain `tokio::spawn` and no
/// wrapper, on a runtime whose task hooks give every task its own copy.
#[cfg(all(feature = "tokio", tokio_unstable))]
fn plain_spawn_under_hooks() {
    use contextvars::tokio::BuilderExt;
    section("5b. the same tasks with plain tokio::spawn, on a runtime built with .isolate_tasks()");
    static TASK_ID: ContextVar<u64> = ContextVar::new("task_id");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .isolate_tasks()
        .build()
        .unwrap();
    let wrong = interleaved_on(
        rt,
        |id| {
            TASK_ID.set(id);
        },
        || TASK_ID.get().unwrap_or(u64::MAX),
        |t| t, // no wrapper at the spawn site
    );
    println!(
        "ContextVar, plain tokio::spawn: {wrong:>6} of {} reads saw another task's value",
        TASKS * 3
    );
}

#[cfg(not(all(feature = "tokio", tokio_unstable)))]
fn plain_spawn_under_hooks() {
    section("5b. the same tasks with plain tokio::spawn, on a runtime built with .isolate_tasks()");
    println!("tokio's task hooks need tokio_unstable; to see this section, run:");
    println!(
        "  RUSTFLAGS=\"--cfg tokio_unstable\" CARGO_TARGET_DIR=target/unstable \\\n    cargo run --release --features tokio --example showcase"
    );
}

fn inheritance() {
    section("6. spawned work starts with a copy of the spawner's context");
    static TRACE: ContextVar<String> = ContextVar::new("trace");
    TRACE.set("trace-42".to_string());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (seen, after) = rt.block_on(async {
        let task = tokio::spawn(
            async {
                let seen = TRACE.get();
                TRACE.set("changed by the task".to_string());
                seen
            }
            .in_current_context(),
        );
        (task.await.unwrap(), TRACE.get())
    });
    println!(
        "tokio task      : saw {seen:?}; its change stayed its own, spawner still has {after:?}"
    );

    let seen = contextvars::thread::spawn(|| TRACE.get()).join().unwrap();
    let plain = std::thread::spawn(|| TRACE.get().is_err()).join().unwrap();
    println!(
        "thread          : contextvars::thread::spawn saw {seen:?}; plain std::thread starts empty: {plain}"
    );

    use rayon::prelude::*;
    let base = copy_context();
    let items = 1_000;
    // Each item runs in its own copy, as `ParallelIteratorExt::map_in_current_context`
    // (feature `rayon`) does.
    let saw: usize = (0..items)
        .into_par_iter()
        .map(|i| {
            base.copy().run(|| {
                let ok = TRACE.get().as_deref() == Ok("trace-42");
                TRACE.set(format!("item {i}"));
                usize::from(ok)
            })
        })
        .sum();
    println!(
        "rayon           : {saw} of {items} parallel items saw the caller's trace; caller still has {:?}",
        TRACE.get()
    );
}

fn generator() {
    section(
        "7. an isolated generator (PEP 568): its sets persist across resumptions, the caller never sees them",
    );
    static DEPTH: ContextVar<u32> = ContextVar::with_default("depth", 0);
    static USER: ContextVar<&'static str> = ContextVar::new("user");
    USER.set("ada");
    let mut walker = std::iter::from_fn(|| {
        let depth = DEPTH.get().unwrap() + 1;
        DEPTH.set(depth);
        Some((depth, USER.get().unwrap()))
    })
    .isolated();
    println!(
        "resume 1 -> {:?}; caller's depth {:?}",
        walker.next().unwrap(),
        DEPTH.get()
    );
    USER.set("grace");
    println!("caller sets user=grace between resumptions");
    println!(
        "resume 2 -> {:?}; caller's depth {:?}",
        walker.next().unwrap(),
        DEPTH.get()
    );
}

fn guards_inheritance_merging() {
    section(
        "8. guards, a variable spawned work does not inherit, and merging a child's changes back",
    );
    static DEPTH: ContextVar<u32> = ContextVar::with_default("depth", 0);
    static TRANSACTION: ContextVar<&'static str> = ContextVar::new("transaction").not_inherited();
    static USER_ID: ContextVar<u64> = ContextVar::new("user_id").debuggable();

    Context::new().run(|| {
        let outer = DEPTH.set_scoped(1);
        let inner = DEPTH.set_scoped(2);
        drop(outer); // out of order: restores what was there before its own set
        let after_outer = DEPTH.get().unwrap();
        drop(inner);
        println!(
            "guards          : outer dropped first -> depth {after_outer}; then inner -> depth {} \
             (each restores its own old value, as reset does)",
            DEPTH.get().unwrap()
        );

        TRANSACTION.set("tx-9");
        let seen = contextvars::thread::spawn(|| TRANSACTION.get().ok())
            .join()
            .unwrap();
        println!(
            "not_inherited   : the spawner holds {:?}; a spawned thread sees {seen:?}; copy_context() keeps it: {:?}",
            TRANSACTION.get().ok(),
            copy_context().get(&TRANSACTION)
        );

        let mut fork = contextvars::Fork::new();
        fork.run(|| USER_ID.set(42)); // the handler, deep inside `call_next`
        let before = USER_ID.get().ok();
        let changes = fork.merge().unwrap();
        println!(
            "merge           : before the merge the middleware sees {before:?}; merged {:?}; now {:?}",
            changes.set,
            USER_ID.get().ok()
        );
        println!("entries         : {:?}", copy_context().entries().collect::<Vec<_>>());
    });
}

/// A `par_iter` inside a request, logging from rayon's threads: with
/// `carry_spans(true)` every line sits under the request's span.
#[cfg(all(feature = "tracing", feature = "rayon"))]
fn span_follows_par_iter() {
    use std::sync::{Arc, Mutex};

    use contextvars::rayon::ParallelIteratorExt;
    use rayon::prelude::*;

    section("9. the request's tracing span follows its par_iter (carry_spans)");
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    // Global: rayon's threads log to it too (the last section, so nothing
    // else in the tour logs through it).
    tracing_subscriber::fmt()
        .without_time()
        .with_ansi(false)
        .with_target(false)
        .with_level(false)
        .with_writer(move || writer.clone())
        .init();

    let request = |id: u64| {
        let span = tracing::info_span!("request", id);
        let _entered = span.enter();
        let _: Vec<()> = ["a.png", "b.png", "c.png", "d.png"]
            .into_par_iter()
            .map_in_current_context(
                |image| tracing::info!(image, thread = ?std::thread::current().id(), "resized"),
            )
            .collect();
    };
    for (id, on) in [(1, false), (2, true)] {
        contextvars::tracing::carry_spans(on);
        lines.0.lock().unwrap().clear();
        request(id);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let under = text
            .lines()
            .filter(|l| l.starts_with(&format!("request{{id={id}}}")))
            .count();
        println!(
            "{:<18}: {under} of {} lines, logged on rayon's threads, under request{{id={id}}}:",
            format!("carry_spans({on})"),
            text.lines().count()
        );
        for line in text.lines() {
            println!("    {}", line.trim_start());
        }
    }
    contextvars::tracing::carry_spans(false);
}

#[cfg(not(all(feature = "tracing", feature = "rayon")))]
fn span_follows_par_iter() {
    section("9. the request's tracing span follows its par_iter (carry_spans)");
    println!("needs features tracing and rayon; to see this section, run:");
    println!("  cargo run --release --features tracing,rayon --example showcase");
}

fn main() {
    walk_through();
    contexts();
    reset_errors();
    threads();
    tasks();
    future_scope();
    plain_spawn_under_hooks();
    inheritance();
    generator();
    guards_inheritance_merging();
    span_follows_par_iter();
}
