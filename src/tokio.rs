//! Spawning tokio tasks that start in a copy of the spawner's context, with
//! feature `tokio`.
//!
//! Each helper copies the current context *at the call* (O(1)) and runs the
//! task in that copy: a task's `set`s are its own, never seen by the spawner
//! or by sibling tasks — what `asyncio.create_task` does. Plain
//! `tokio::spawn` gives the task no context; in debug builds a `set` inside
//! such a task panics with directions here (see the crate's misuse check, `set_misuse_policy`).
//!
//! ```
//! use contextvars::ContextVar;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! REQUEST_ID.scope(7, async {
//!     let child = contextvars::tokio::spawn(async {
//!         let inherited = REQUEST_ID.get();
//!         REQUEST_ID.set(8); // the task's own copy
//!         inherited
//!     });
//!     assert_eq!(child.await.unwrap(), Ok(7));
//!     assert_eq!(REQUEST_ID.get(), Ok(7));
//!     let blocking = contextvars::tokio::spawn_blocking(|| REQUEST_ID.get());
//!     assert_eq!(blocking.await.unwrap(), Ok(7));
//! })
//! .await;
//! # });
//! ```
//!
//! **Invariant:** every task spawned here is polled only inside its own
//! context, so no two tasks ever write the same context.

use std::future::Future;

use ::tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::Context;
use crate::carry::{self, Carrying};
use crate::future::FutureExt;

/// `tokio::spawn`, with the task running in a copy of the current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
/// REQUEST_ID.set(42);
/// let seen = contextvars::tokio::spawn(async {
///     let inherited = REQUEST_ID.get();
///     REQUEST_ID.set(7); // the task's own copy
///     inherited
/// })
/// .await
/// .unwrap();
/// assert_eq!(seen, Ok(42));
/// assert_eq!(REQUEST_ID.get(), Ok(42));
/// # });
/// ```
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let future = future.in_current_context();
    match carry::capture() {
        Some(carried) => {
            carry::spawning_carrying(|| ::tokio::spawn(Carrying::new(future, carried)))
        }
        None => ::tokio::spawn(future),
    }
}

/// `tokio::spawn`, with the task running in a new, empty context, on
/// purpose: *detached* from the spawner's context (not from its
/// `JoinHandle`, which works as usual). .NET's `ExecutionContext.SuppressFlow`.
///
/// Use it for long-lived tasks started from inside a request (a background
/// flusher, a metrics loop, a connection's keep-alive): a copy of the
/// request's context would keep every value of that request alive (its
/// buffers, its transaction, its trace span) for as long as the loop runs,
/// and would tag all the loop's work with a request it does not belong to.
/// Unlike a plain `tokio::spawn`, the task has a context of its own (so its
/// `set`s are its own, with or without the task hooks, and the misuse
/// check stays quiet), dropped inside itself when the task ends.
///
/// ```
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
/// REQUEST_ID.set(42);
/// let seen = contextvars::tokio::spawn_detached(async {
///     let inherited = REQUEST_ID.get().ok();
///     REQUEST_ID.set(7); // the task's own context
///     inherited
/// })
/// .await
/// .unwrap();
/// assert_eq!(seen, None); // the request's values did not follow
/// assert_eq!(REQUEST_ID.get(), Ok(42));
/// # });
/// ```
#[track_caller]
pub fn spawn_detached<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let future = future.in_context(Context::new());
    // Under the task hooks too: no span goes along.
    carry::spawning_detached(|| ::tokio::spawn(future))
}

/// `tokio::task::spawn_local`, with the task running in a copy of the
/// current context. Must be called inside a `LocalSet`.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let local = tokio::task::LocalSet::new();
/// local.block_on(&rt, async {
///     N.set(1);
///     let seen = contextvars::tokio::spawn_local(async { N.get() }).await.unwrap();
///     assert_eq!(seen, Ok(1));
/// });
/// ```
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let future = future.in_current_context();
    match carry::capture() {
        Some(carried) => {
            carry::spawning_carrying(|| ::tokio::task::spawn_local(Carrying::new(future, carried)))
        }
        None => ::tokio::task::spawn_local(future),
    }
}

/// `tokio::task::spawn_blocking`, with the closure running in a copy of the
/// current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static USER: ContextVar<&'static str> = ContextVar::new("user");
///
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
/// USER.set("ada");
/// let seen = contextvars::tokio::spawn_blocking(|| USER.get()).await.unwrap();
/// assert_eq!(seen, Ok("ada"));
/// # });
/// ```
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    ::tokio::task::spawn_blocking(crate::wrap(f))
}

/// Spawning into a [`JoinSet`] with the task in a copy of the current
/// context.
///
/// ```
/// use contextvars::ContextVar;
/// use contextvars::tokio::JoinSetExt;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
///
/// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
/// let mut set = tokio::task::JoinSet::new();
/// for i in 0..3 {
///     N.set(i);
///     set.spawn_in_current_context(async { N.get().unwrap() });
/// }
/// let mut seen = set.join_all().await;
/// seen.sort();
/// assert_eq!(seen, [0, 1, 2]);
/// # });
/// ```
pub trait JoinSetExt<T> {
    /// Like `JoinSet::spawn`, with the task running in a copy of the current
    /// context, taken now.
    fn spawn_in_current_context<F>(&mut self, future: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send;
}

impl<T: 'static> JoinSetExt<T> for JoinSet<T> {
    #[track_caller]
    fn spawn_in_current_context<F>(&mut self, future: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send,
    {
        let future = future.in_current_context();
        match carry::capture() {
            Some(carried) => {
                carry::spawning_carrying(|| self.spawn(Carrying::new(future, carried)))
            }
            None => self.spawn(future),
        }
    }
}

#[cfg(all(tokio_unstable, not(loom)))]
#[cfg_attr(docsrs, doc(cfg(tokio_unstable)))]
pub mod hooks;

/// Isolating every task of a runtime, plain `tokio::spawn` included, with
/// tokio's task hooks.
///
/// **Needs `RUSTFLAGS="--cfg tokio_unstable"`** (tokio's task hooks are an
/// unstable tokio API). Without it, calling
/// [`isolate_tasks`](BuilderExt::isolate_tasks) is a compile error that says
/// so; use this module's [`spawn`] helpers instead, or
/// `.in_current_context()` on the future.
pub trait BuilderExt: sealed::Builder {
    /// Installs tokio's task hooks so that every task of the runtime runs in
    /// its own copy of its spawner's context: what `asyncio` does for every
    /// task, with no change at spawn sites.
    ///
    /// A task spawned with plain `tokio::spawn`, by a library, into a
    /// `JoinSet` or with `Handle::spawn` starts in a copy of the context
    /// current on the spawning thread at the spawn; it is polled inside that
    /// copy, and its `set`s are its own, never seen by the spawner or by
    /// other tasks. The copy is dropped when the task ends (completion,
    /// panic, abort), after the task's future.
    ///
    /// With [`carry_spans`](crate::tracing::carry_spans) on, each task also
    /// carries the tracing span current at its spawn, entered around every
    /// poll (see `contextvars::tokio::hooks` for how, and for the one place it
    /// is not: a drop
    /// at runtime shutdown).
    ///
    /// Costs (BENCHMARKS.md): a copy and a small allocation per spawn, and
    /// two hook calls per poll.
    ///
    /// # Limits (tokio's, not this crate's)
    ///
    /// - **`RUSTFLAGS="--cfg tokio_unstable"`** is needed (also for
    ///   `cargo test`/`cargo doc`: set `RUSTDOCFLAGS` to the same). Without
    ///   it this method does not compile: the error is "`isolate_tasks`
    ///   needs `RUSTFLAGS="--cfg tokio_unstable"`".
    /// - **One hook of each kind per runtime.** Calling tokio's
    ///   `on_task_spawn`, `on_before_task_poll`, `on_after_task_poll` or
    ///   `on_task_terminate` after this replaces the hook installed here. To
    ///   keep your own hooks, install them yourself and call the functions
    ///   of `contextvars::tokio::hooks` from them (that module shows how).
    /// - **`spawn_blocking` and `LocalSet`/`spawn_local` tasks** get no hook
    ///   calls from tokio. A plain `spawn_blocking` job runs in its pooled
    ///   thread's own context (a `set` there leaks into the next job on that
    ///   thread; the misuse check reports it): use [`spawn_blocking`]. A
    ///   `LocalSet` task runs in the context of whatever polls the
    ///   `LocalSet` (under the hooks, the task that runs it): use
    ///   [`spawn_local`] to give it its own.
    /// - **Runtime shutdown.** A task that is idle when the runtime shuts
    ///   down is dropped by tokio outside the poll hooks, on the thread doing
    ///   the shutdown (a worker thread of a multi-thread runtime, whose own
    ///   context the hooks keep empty; the thread dropping a current-thread
    ///   runtime). Its future's destructors run in that thread's current
    ///   context, not the task's; the task's context is dropped right after.
    ///   (A task being polled at that moment is dropped at the end of that
    ///   poll, inside its own context, as on abort.) Tasks spawned with this module's helpers
    ///   (which also work under the hooks) drop their future inside their own
    ///   context at shutdown too.
    /// - A task spawned into a runtime that has already shut down keeps its
    ///   copy filed (one small allocation) until the process ends: tokio
    ///   calls the terminate hook before the spawn hook then.
    ///
    /// ```
    /// # #[cfg(tokio_unstable)] {
    /// use contextvars::ContextVar;
    /// use contextvars::tokio::BuilderExt;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    ///
    /// let rt = tokio::runtime::Builder::new_multi_thread()
    ///     .isolate_tasks()
    ///     .build()
    ///     .unwrap();
    /// rt.block_on(async {
    ///     REQUEST_ID.set(1);
    ///     let seen = tokio::spawn(async {
    ///         let inherited = REQUEST_ID.get();
    ///         REQUEST_ID.set(2); // the task's own copy
    ///         inherited
    ///     })
    ///     .await
    ///     .unwrap();
    ///     assert_eq!(seen, Ok(1));
    ///     assert_eq!(REQUEST_ID.get(), Ok(1));
    /// });
    /// # }
    /// ```
    fn isolate_tasks(&mut self) -> &mut Self
    where
        Self: TokioUnstable;
}

/// Implemented for `tokio::runtime::Builder` only when the crate is built
/// with `RUSTFLAGS="--cfg tokio_unstable"`, which tokio's task hooks need;
/// it makes [`BuilderExt::isolate_tasks`] a compile error with that advice
/// otherwise.
///
/// ```
/// # #[cfg(tokio_unstable)] {
/// fn needs(_: &impl contextvars::tokio::TokioUnstable) {}
/// needs(&tokio::runtime::Builder::new_current_thread());
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`isolate_tasks` needs tokio's unstable task hooks: build with RUSTFLAGS=\"--cfg tokio_unstable\"",
    label = "needs RUSTFLAGS=\"--cfg tokio_unstable\"",
    note = "without it, spawn with `contextvars::tokio::spawn` or `.in_current_context()`"
)]
pub trait TokioUnstable: sealed::Builder {}

#[cfg(all(tokio_unstable, not(loom)))]
impl TokioUnstable for ::tokio::runtime::Builder {}

impl<B: sealed::Builder> BuilderExt for B {
    fn isolate_tasks(&mut self) -> &mut Self
    where
        Self: TokioUnstable,
    {
        #[cfg(all(tokio_unstable, not(loom)))]
        self.as_builder()
            .on_task_spawn(hooks::on_task_spawn)
            .on_before_task_poll(hooks::on_before_task_poll)
            .on_after_task_poll(hooks::on_after_task_poll)
            .on_task_terminate(hooks::on_task_terminate);
        self
    }
}

mod sealed {
    pub trait Builder {
        fn as_builder(&mut self) -> &mut ::tokio::runtime::Builder;
    }

    impl Builder for ::tokio::runtime::Builder {
        fn as_builder(&mut self) -> &mut ::tokio::runtime::Builder {
            self
        }
    }
}
