//! Threads that start in a copy of the spawner's context.
//!
//! [`spawn`] and [`spawn_scoped`] copy the caller's current context at the
//! call (O(1)) and run the thread's closure in that copy — what Python 3.14
//! does with `thread_inherit_context`. The thread's `set`s go into its copy
//! and are never seen by the spawner or its siblings. A plain
//! `std::thread::spawn` still starts with an empty context, as a new Python
//! thread does by default.
//!
//! [`spawn_detached`] starts the thread in a new, empty context on purpose
//! (see its docs for why).
//!
//! ```
//! use contextvars::ContextVar;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! REQUEST_ID.set(7);
//! let child = contextvars::thread::spawn(|| {
//!     let inherited = REQUEST_ID.get();
//!     REQUEST_ID.set(8); // the thread's own copy
//!     inherited
//! });
//! assert_eq!(child.join().unwrap(), Ok(7));
//! assert_eq!(REQUEST_ID.get(), Ok(7));
//! assert!(std::thread::spawn(|| REQUEST_ID.get()).join().unwrap().is_err(), "a plain thread starts empty");
//! ```
//!
//! **Invariant:** the copy is taken on the spawning thread, before the new
//! thread exists, so it holds exactly what the spawner saw at the call.

use std::thread::{JoinHandle, Scope, ScopedJoinHandle};

use crate::context::{Context, inherited_context};

/// Spawns a thread that runs `f` in a copy of the current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static TENANT: ContextVar<&'static str> = ContextVar::new("tenant");
///
/// TENANT.set("acme");
/// let seen = contextvars::thread::spawn(|| {
///     let inherited = TENANT.get();
///     TENANT.set("other"); // stays in the thread's copy
///     inherited
/// })
/// .join()
/// .unwrap();
/// assert_eq!(seen, Ok("acme"));
/// assert_eq!(TENANT.get(), Ok("acme"));
///
/// // A plain std thread starts empty.
/// assert!(std::thread::spawn(|| TENANT.get().is_err()).join().unwrap());
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(crate::wrap(f))
}

/// Spawns a scoped thread (see [`std::thread::scope`]) that runs `f` in a
/// copy of the current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(7);
/// let mut results = Vec::new();
/// std::thread::scope(|s| {
///     let h = contextvars::thread::spawn_scoped(s, || N.get());
///     results.push(h.join().unwrap());
/// });
/// assert_eq!(results, [Ok(7)]);
/// ```
pub fn spawn_scoped<'scope, 'env, F, T>(
    scope: &'scope Scope<'scope, 'env>,
    f: F,
) -> ScopedJoinHandle<'scope, T>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    let mut ctx = inherited_context();
    let carried = crate::carry::capture();
    scope.spawn(move || crate::carry::within(&carried, || ctx.run_exclusive(f)))
}

/// Spawns a thread that runs `f` in a new, empty context, on purpose:
/// *detached* from the spawner's context (not from its `JoinHandle`, which
/// works as usual). .NET's `ExecutionContext.SuppressFlow`.
///
/// Use it for long-lived work started from inside a request (a background
/// flusher, a connection pool's reaper, a cache refresher): a copy of the
/// request's context would keep every value of that request alive (its
/// buffers, its transaction, its trace span) for as long as the loop runs,
/// and would tag all the loop's work with a request it does not belong to.
/// The thread's values are dropped inside its context when it ends.
///
/// ```
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// REQUEST_ID.set(42);
/// let seen = contextvars::thread::spawn_detached(|| REQUEST_ID.get().ok())
///     .join()
///     .unwrap();
/// assert_eq!(seen, None); // the request's values did not follow
/// ```
pub fn spawn_detached<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || Context::new().run_exclusive(f))
}
