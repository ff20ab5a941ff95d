//! Bleed detection: catching a `set` that would leak from one task into the
//! next one polled on the same worker thread.
//!
//! A future spawned with plain `tokio::spawn` has no context of its own, so
//! its `set` writes the worker thread's *base* context, where every other
//! such task polled on that thread will read it: one request's value in
//! another request. With feature `tokio`, debug builds panic on such a write,
//! naming the variable and the fix. Writes to a base context outside a tokio
//! task (a plain thread, `main`, the body of `Runtime::block_on`) are
//! correct and never flagged, nor is anything inside a task that runs in its
//! own context (spawned with [`contextvars::tokio::spawn`](crate::tokio) or
//! wrapped with `FutureExt::with_current_context`).
//!
//! Release builds do not check: the write goes to the worker thread's base
//! context, as in Python when a callback runs without its own context.
//!
//! **Invariant:** the check never fires for a write into a context that a
//! task, thread or closure entered for itself.

/// Called for every write into a thread's base context.
#[inline]
#[allow(unused_variables)]
pub(crate) fn check_base_write(var: &'static str) {
    #[cfg(all(debug_assertions, feature = "tokio"))]
    if ::tokio::task::try_id().is_some() {
        bleed(var);
    }
}

#[cfg(all(debug_assertions, feature = "tokio"))]
#[cold]
#[inline(never)]
#[track_caller]
fn bleed(var: &'static str) -> ! {
    panic!(
        "contextvars: `{var}` was set inside a tokio task that has no context of its own; \
         the value would leak into every other task polled on this worker thread. \
         Spawn the task with `contextvars::tokio::spawn` (or `spawn_blocking`/`spawn_local`), \
         or wrap its future with `.with_current_context()` before `tokio::spawn`"
    )
}
