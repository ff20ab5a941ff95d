//! The helpers that hand rayon jobs without a scope: [`join`], [`spawn`],
//! [`spawn_fifo`], [`spawn_detached`], [`broadcast`] and
//! [`spawn_broadcast`].
//!
//! **Invariant:** every job runs in its own copy of the caller's context,
//! taken on the calling thread when the helper is called (an empty context
//! for `spawn_detached`), never in the worker's own.

use rayon::BroadcastContext;

use crate::carry::{self, within};
use crate::context::{Context, inherited_context, wrap};

/// `rayon::join`, each closure in its own copy of the current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(1);
/// let (a, b) = contextvars::rayon::join(|| N.get(), || {
///     N.set(2);
///     N.get()
/// });
/// assert_eq!((a, b), (Ok(1), Ok(2)));
/// assert_eq!(N.get(), Ok(1));
/// ```
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let (mut ca, mut cb) = (inherited_context(), inherited_context());
    let carried = &carry::capture();
    rayon::join(
        move || within(carried, || ca.run_exclusive(a)),
        move || within(carried, || cb.run_exclusive(b)),
    )
}

/// `rayon::spawn`, the job in a copy of the current context, taken now.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(5);
/// let (tx, rx) = std::sync::mpsc::channel();
/// contextvars::rayon::spawn(move || tx.send(N.get()).unwrap());
/// assert_eq!(rx.recv().unwrap(), Ok(5));
/// ```
pub fn spawn<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    rayon::spawn(wrap(f));
}

/// `rayon::spawn`, with the job running in a new, empty context, on
/// purpose: *detached* from the caller's context. .NET's
/// `ExecutionContext.SuppressFlow`.
///
/// Use it for long-running jobs started from inside a request: a copy of
/// the request's context would keep every value of that request alive (its
/// buffers, its transaction, its trace span) for as long as the job runs,
/// and would tag all its work with a request it does not belong to.
///
/// ```
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// REQUEST_ID.set(42);
/// let (tx, rx) = std::sync::mpsc::channel();
/// contextvars::rayon::spawn_detached(move || tx.send(REQUEST_ID.get().ok()).unwrap());
/// assert_eq!(rx.recv().unwrap(), None);
/// ```
pub fn spawn_detached<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    let mut ctx = Context::new();
    rayon::spawn(move || ctx.run_exclusive(f));
}

/// `rayon::spawn_fifo`, the job in a copy of the current context, taken
/// now.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(6);
/// let (tx, rx) = std::sync::mpsc::channel();
/// contextvars::rayon::spawn_fifo(move || tx.send(N.get()).unwrap());
/// assert_eq!(rx.recv().unwrap(), Ok(6));
/// ```
pub fn spawn_fifo<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    rayon::spawn_fifo(wrap(f));
}

/// `rayon::broadcast`: `op` runs once on every thread of the current pool,
/// each time in its own copy of the current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(3);
/// let seen = contextvars::rayon::broadcast(|_| {
///     let inherited = N.get().unwrap();
///     N.set(100); // this thread's copy only
///     inherited
/// });
/// assert!(seen.iter().all(|&n| n == 3));
/// assert_eq!(N.get(), Ok(3));
/// ```
pub fn broadcast<OP, R>(op: OP) -> Vec<R>
where
    OP: Fn(BroadcastContext<'_>) -> R + Sync,
    R: Send,
{
    let ctx = inherited_context();
    let carried = carry::capture();
    rayon::broadcast(|b| within(&carried, || ctx.copy().run_exclusive(|| op(b))))
}

/// `rayon::spawn_broadcast`: `op` runs once on every thread of the current
/// pool, in the background, each time in its own copy of the current
/// context (taken now).
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(9);
/// let (tx, rx) = std::sync::mpsc::channel();
/// let tx = std::sync::Mutex::new(tx);
/// contextvars::rayon::spawn_broadcast(move |_| tx.lock().unwrap().send(N.get()).unwrap());
/// assert_eq!(rx.recv().unwrap(), Ok(9));
/// ```
pub fn spawn_broadcast<OP>(op: OP)
where
    OP: Fn(BroadcastContext<'_>) + Send + Sync + 'static,
{
    let ctx = inherited_context();
    let carried = carry::capture();
    rayon::spawn_broadcast(move |b| within(&carried, || ctx.copy().run_exclusive(|| op(b))));
}
