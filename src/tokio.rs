//! Spawning tokio tasks that start in a copy of the spawner's context, with
//! feature `tokio`.
//!
//! Each helper copies the current context *at the call* (O(1)) and runs the
//! task in that copy: a task's `set`s are its own, never seen by the spawner
//! or by sibling tasks — what `asyncio.create_task` does. Plain
//! `tokio::spawn` gives the task no context; in debug builds a `set` inside
//! such a task panics with directions here (see the crate's bleed check).
//!
//! **Invariant:** every task spawned here is polled only inside its own
//! context, so no two tasks ever write the same context.

use std::future::Future;

use ::tokio::task::{AbortHandle, JoinHandle, JoinSet};

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
    ::tokio::spawn(future.with_current_context())
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
    ::tokio::task::spawn_local(future.with_current_context())
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
///     set.spawn_with_current_context(async { N.get().unwrap() });
/// }
/// let mut seen = set.join_all().await;
/// seen.sort();
/// assert_eq!(seen, [0, 1, 2]);
/// # });
/// ```
pub trait JoinSetExt<T> {
    /// Like `JoinSet::spawn`, with the task running in a copy of the current
    /// context, taken now.
    fn spawn_with_current_context<F>(&mut self, future: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send;
}

impl<T: 'static> JoinSetExt<T> for JoinSet<T> {
    #[track_caller]
    fn spawn_with_current_context<F>(&mut self, future: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send,
    {
        self.spawn(future.with_current_context())
    }
}
