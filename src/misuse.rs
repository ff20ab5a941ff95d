//! The misuse check: catching a `set` that would leak from one task into the
//! next one run on the same thread, in debug and release builds.
//!
//! A future spawned with plain `tokio::spawn` (on a runtime without
//! [`isolate_tasks`](crate::tokio::BuilderExt::isolate_tasks)) has no
//! context of its own, so its `set` writes the worker thread's *base*
//! context, where every other such task polled on that thread reads it: one
//! request's value in another request. A plain `spawn_blocking` job's `set`
//! leaks the same way into the next job on its pooled thread. Such a write
//! is reported as [`set_misuse_policy`] says: by default a panic in debug
//! builds and, in release builds, one warning per variable (through
//! `tracing` with feature `tracing`, else on stderr).
//!
//! Writes to a base context outside a task (a plain thread, `main`, the
//! body of `Runtime::block_on`, a worker's `on_thread_start`) are correct and
//! never reported, nor is anything inside a task that runs in its own
//! context, nor [`ContextVar::sync_scope`](crate::ContextVar::sync_scope) or
//! [`ContextVar::scope`](crate::ContextVar::scope), balanced by construction.
//!
//! How a task is recognised: with feature `tokio`, by tokio's own task id
//! (`tokio::task::try_id`), which also covers `spawn_blocking` jobs. Without
//! it, by the thread's name: a thread named `tokio-runtime-worker` (tokio's
//! default for worker and blocking threads) counts as running tasks. That
//! fallback misses runtimes with custom thread names and tasks of a
//! current-thread runtime (they run on the thread calling `block_on`), and
//! also reports writes made on a worker thread outside any task.
//!
//! **Invariant:** the check never fires for a write into a context that a
//! task, thread or closure entered for itself, and costs one relaxed load
//! when the policy is [`Misuse::Off`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::ids::VarId;

/// What to do about a `set` that would leak between tasks (see
/// [`set_misuse_policy`]).
///
/// ```
/// use contextvars::Misuse;
///
/// assert_ne!(Misuse::Panic, Misuse::Warn);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// Panic inside the offending task (the default in debug builds): the
    /// task's `JoinHandle` returns the panic, naming the variable and the fix.
    Panic,
    /// Report once per variable and let the write happen (the default in
    /// release builds): through `tracing` (target `contextvars`, level
    /// `WARN`) with feature `tracing`, else on stderr.
    Warn,
    /// No check at all.
    Off,
}

const DEFAULT: u8 = 0;
const PANIC: u8 = 1;
const WARN: u8 = 2;
const OFF: u8 = 3;

static POLICY: AtomicU8 = AtomicU8::new(DEFAULT);

/// Chooses what happens when a `set` inside a tokio task that has no context
/// of its own would write the worker thread's base context (and so leak into
/// other tasks): see [`Misuse`]. Process-wide; takes effect at once.
///
/// The default is [`Misuse::Panic`] in debug builds and [`Misuse::Warn`] in
/// release builds.
///
/// ```
/// use contextvars::{set_misuse_policy, Misuse};
///
/// // A service that would rather log than crash on a misconfigured spawn:
/// set_misuse_policy(Misuse::Warn);
/// # set_misuse_policy(if cfg!(debug_assertions) { Misuse::Panic } else { Misuse::Warn });
/// ```
pub fn set_misuse_policy(policy: Misuse) {
    let raw = match policy {
        Misuse::Panic => PANIC,
        Misuse::Warn => WARN,
        Misuse::Off => OFF,
    };
    POLICY.store(raw, Ordering::Relaxed);
}

/// Called for every write into a thread's base context, with the id of
/// the variable written (its name is looked up only for a report).
#[inline]
pub(crate) fn check_base_write(var: VarId) {
    let policy = POLICY.load(Ordering::Relaxed);
    if policy == OFF || !in_task() {
        return;
    }
    misuse(crate::ids::name_of(var), policy);
}

/// Whether this thread is running a task right now (see the module docs).
#[cfg(feature = "tokio")]
#[inline]
fn in_task() -> bool {
    ::tokio::task::try_id().is_some()
}

#[cfg(not(feature = "tokio"))]
#[inline]
fn in_task() -> bool {
    thread_local! {
        /// 0: not looked at yet; 1: not a tokio thread; 2: a tokio thread.
        static TOKIO_THREAD: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
    }
    TOKIO_THREAD.with(|t| {
        if t.get() == 0 {
            let named = std::thread::current().name() == Some("tokio-runtime-worker");
            t.set(if named { 2 } else { 1 });
        }
        t.get() == 2
    })
}

/// The report: names the variable, says what to do.
fn message(var: &'static str) -> String {
    #[cfg(feature = "tokio")]
    let task = match ::tokio::task::try_id() {
        Some(id) => format!("tokio task {id}"),
        None => "a tokio task".to_owned(),
    };
    #[cfg(not(feature = "tokio"))]
    let task = "a task on a tokio worker thread";
    format!(
        "contextvars: `{var}` was set inside {task} that has no context of its own; \
         the value would leak into every other task polled on this worker thread \
         (for a `spawn_blocking` job, into the next job on its thread). \
         Spawn the task with `contextvars::tokio::spawn` (or `spawn_blocking`/`spawn_local`, \
         `JoinSetExt::spawn_in_current_context`), wrap its future with \
         `.in_current_context()` before `tokio::spawn`, build the runtime with \
         `contextvars::tokio::BuilderExt::isolate_tasks()` (RUSTFLAGS=\"--cfg tokio_unstable\") \
         so that every task gets its own context, or use `ContextVar::scope` (a future) or `sync_scope` (a closure) for a value that \
         ends with it. (The spawn site is not visible from inside the task; tokio's \
         `tracing` spans and tokio-console show where task ids were spawned. \
         `contextvars::set_misuse_policy` chooses panic, warn or off.)"
    )
}

#[cold]
#[inline(never)]
fn misuse(var: &'static str, policy: u8) {
    let panic = match policy {
        PANIC => true,
        WARN => false,
        _ => cfg!(debug_assertions),
    };
    if panic {
        panic!("{}", message(var));
    }
    /// Names of the variables reported so far: once each.
    static REPORTED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    {
        let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
        if reported.contains(&var) {
            return;
        }
        reported.push(var);
    }
    let msg = message(var);
    // Where the `set` is, when the user asked for backtraces
    // (`RUST_BACKTRACE` / `RUST_LIB_BACKTRACE`).
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    crate::report::warn_var(var, &format!("{msg}{backtrace}"));
}
