//! rayon's `join`, `scope`, `spawn`, `broadcast`, `ThreadPool::install`
//! and parallel iterators, with every closure in a copy of the caller's
//! context (feature `rayon`).
//!
//! The copy is taken on the calling thread when the helper is called; each
//! closure (each `join` half, each `spawn`ed job, each parallel item, each
//! thread of a broadcast) runs in its own copy of it, so workers never
//! contend on one context and no closure's `set` is seen by the caller or by
//! another closure.
//!
//! **Work stealing and plain rayon calls.** A rayon worker that waits (in
//! `join`, at the end of a `scope`, in `yield_now`) runs other jobs on the
//! same stack meanwhile, and they may be unrelated jobs from a plain
//! `rayon::spawn`, `rayon::join` or a plain parallel iterator. Such a job
//! runs in whatever context is current there: the waiting helper
//! closure's. It reads that closure's values, and its `set`s land in that
//! closure's context. Nothing outside rayon can prevent this. A job started
//! through these helpers always enters its own copy first, so a program
//! that starts rayon work only through this module never mixes contexts;
//! every plain rayon call in the same pool is a way in for the mix. The
//! helpers here cover what rayon offers: [`spawn`], [`spawn_fifo`],
//! [`join`], [`scope`], [`scope_fifo`], [`in_place_scope`],
//! [`in_place_scope_fifo`], [`broadcast`], [`spawn_broadcast`],
//! [`ThreadPoolExt`] and [`ParallelIteratorExt`].
//!
//! ```
//! use contextvars::ContextVar;
//! use contextvars::prelude::*;
//! use rayon::prelude::*;
//!
//! static FACTOR: ContextVar<u64> = ContextVar::new("factor");
//!
//! FACTOR.set(10);
//! let (a, b) = contextvars::rayon::join(|| FACTOR.get(), || {
//!     FACTOR.set(0); // this closure's own copy
//!     FACTOR.get()
//! });
//! assert_eq!((a, b), (Ok(10), Ok(0)));
//! let scaled: Vec<u64> = (1..=3u64).into_par_iter().map_in_current_context(|x| x * FACTOR.get().unwrap()).collect();
//! assert_eq!(scaled, [10, 20, 30]);
//! ```
//!
//! **Invariant:** a closure run by a rayon worker through these helpers
//! never runs in the worker thread's own context nor in another closure's.

use rayon::BroadcastContext;
use rayon::iter::ParallelIterator;

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

/// `rayon::scope`: `op` and every job it spawns through the [`Scope`] run
/// in copies of the current context.
///
/// ```
/// use std::sync::Mutex;
/// use contextvars::ContextVar;
///
/// static JOB: ContextVar<&'static str> = ContextVar::new("job");
/// JOB.set("batch-7");
/// let seen = Mutex::new(Vec::new());
/// contextvars::rayon::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|_| seen.lock().unwrap().push(JOB.get().unwrap()));
///     }
/// });
/// assert_eq!(seen.into_inner().unwrap(), ["batch-7"; 4]);
/// ```
pub fn scope<'scope, OP, R>(op: OP) -> R
where
    OP: FnOnce(&Scope<'_, 'scope>) -> R + Send,
    R: Send,
{
    let mut ctx = inherited_context();
    let carried = carry::capture();
    rayon::scope(move |s| within(&carried, || ctx.run_exclusive(|| op(&Scope { inner: s }))))
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

/// `rayon::scope_fifo`: `op` and every job it spawns through the
/// [`ScopeFifo`] run in copies of the current context.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(2);
/// let seen = std::sync::Mutex::new(Vec::new());
/// contextvars::rayon::scope_fifo(|s| {
///     s.spawn_fifo(|_| seen.lock().unwrap().push(N.get().unwrap()));
/// });
/// assert_eq!(seen.into_inner().unwrap(), [2]);
/// ```
pub fn scope_fifo<'scope, OP, R>(op: OP) -> R
where
    OP: FnOnce(&ScopeFifo<'_, 'scope>) -> R + Send,
    R: Send,
{
    let mut ctx = inherited_context();
    let carried = carry::capture();
    rayon::scope_fifo(move |s| {
        within(&carried, || {
            ctx.run_exclusive(|| op(&ScopeFifo { inner: s }))
        })
    })
}

/// `rayon::in_place_scope`: `op` runs right here, in the current context (it
/// is a plain call on this thread); every job it spawns through the
/// [`Scope`] runs in a copy of the context as of its spawn.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// let seen = std::sync::Mutex::new(None);
/// contextvars::rayon::in_place_scope(|s| {
///     N.set(4); // the caller's own context: a plain call
///     s.spawn(|_| *seen.lock().unwrap() = Some(N.get()));
/// });
/// assert_eq!(seen.into_inner().unwrap(), Some(Ok(4)));
/// assert_eq!(N.get(), Ok(4));
/// ```
pub fn in_place_scope<'scope, OP, R>(op: OP) -> R
where
    OP: FnOnce(&Scope<'_, 'scope>) -> R,
{
    rayon::in_place_scope(move |s| op(&Scope { inner: s }))
}

/// `rayon::in_place_scope_fifo`: as [`in_place_scope`], with FIFO jobs.
///
/// ```
/// use contextvars::ContextVar;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(8);
/// let seen = std::sync::Mutex::new(None);
/// contextvars::rayon::in_place_scope_fifo(|s| {
///     s.spawn_fifo(|_| *seen.lock().unwrap() = Some(N.get()));
/// });
/// assert_eq!(seen.into_inner().unwrap(), Some(Ok(8)));
/// ```
pub fn in_place_scope_fifo<'scope, OP, R>(op: OP) -> R
where
    OP: FnOnce(&ScopeFifo<'_, 'scope>) -> R,
{
    rayon::in_place_scope_fifo(move |s| op(&ScopeFifo { inner: s }))
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

/// `ThreadPool` methods that carry the current context into the pool.
///
/// (`ThreadPool::install` itself runs `op` on a pool thread in that
/// thread's own context; `install_in_current_context` runs it in a copy of the
/// caller's.)
///
/// ```
/// use contextvars::ContextVar;
/// use contextvars::rayon::ThreadPoolExt;
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
/// N.set(1);
/// assert_eq!(pool.install_in_current_context(|| N.get()), Ok(1));
/// assert!(pool.install(|| N.get()).is_err());
/// ```
pub trait ThreadPoolExt {
    /// `ThreadPool::install`, with `op` in a copy of the current context.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::rayon::ThreadPoolExt;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    /// N.set(7);
    /// let seen = pool.install_in_current_context(|| {
    ///     N.set(8); // the copy's
    ///     N.get()
    /// });
    /// assert_eq!((seen, N.get()), (Ok(8), Ok(7)));
    /// ```
    fn install_in_current_context<OP, R>(&self, op: OP) -> R
    where
        OP: FnOnce() -> R + Send,
        R: Send;

    /// `ThreadPool::spawn`, the job in a copy of the current context.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::rayon::ThreadPoolExt;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    /// N.set(2);
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.spawn_in_current_context(move || tx.send(N.get()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), Ok(2));
    /// ```
    fn spawn_in_current_context<OP>(&self, op: OP)
    where
        OP: FnOnce() + Send + 'static;
}

impl ThreadPoolExt for rayon::ThreadPool {
    fn install_in_current_context<OP, R>(&self, op: OP) -> R
    where
        OP: FnOnce() -> R + Send,
        R: Send,
    {
        let mut ctx = inherited_context();
        let carried = carry::capture();
        self.install(move || within(&carried, || ctx.run_exclusive(op)))
    }

    fn spawn_in_current_context<OP>(&self, op: OP)
    where
        OP: FnOnce() + Send + 'static,
    {
        self.spawn(wrap(op));
    }
}

/// A rayon scope whose spawned jobs start in a copy of the spawner's
/// context; see [`scope`].
///
/// ```
/// contextvars::rayon::scope(|s| s.spawn(|_| ()));
/// ```
pub struct Scope<'a, 'scope> {
    inner: &'a rayon::Scope<'scope>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

impl<'scope> Scope<'_, 'scope> {
    /// `rayon::Scope::spawn`, the job in a copy of the current context,
    /// taken now.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// contextvars::rayon::scope(|s| {
    ///     N.set(3);
    ///     s.spawn(|_| assert_eq!(N.get(), Ok(3)));
    /// });
    /// ```
    pub fn spawn<BODY>(&self, body: BODY)
    where
        BODY: FnOnce(&Scope<'_, 'scope>) + Send + 'scope,
    {
        let mut ctx = inherited_context();
        let carried = carry::capture();
        self.inner
            .spawn(move |s| within(&carried, || ctx.run_exclusive(|| body(&Scope { inner: s }))));
    }

    /// `rayon::Scope::spawn_broadcast`: `body` runs once on every thread of
    /// the pool, each time in its own copy of the current context (taken
    /// now).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<usize> = ContextVar::new("n");
    /// let sum = AtomicUsize::new(0);
    /// contextvars::rayon::scope(|s| {
    ///     N.set(1);
    ///     s.spawn_broadcast(|_, _| {
    ///         sum.fetch_add(N.get().unwrap(), Ordering::Relaxed);
    ///         N.set(10); // this thread's copy only
    ///     });
    /// });
    /// assert_eq!(sum.into_inner(), rayon::current_num_threads());
    /// ```
    pub fn spawn_broadcast<BODY>(&self, body: BODY)
    where
        BODY: Fn(&Scope<'_, 'scope>, BroadcastContext<'_>) + Send + Sync + 'scope,
    {
        let ctx = inherited_context();
        let carried = carry::capture();
        self.inner.spawn_broadcast(move |s, b| {
            within(&carried, || {
                ctx.copy().run_exclusive(|| body(&Scope { inner: s }, b))
            })
        });
    }
}

/// A FIFO rayon scope whose spawned jobs start in a copy of the spawner's
/// context; see [`scope_fifo`].
///
/// ```
/// contextvars::rayon::scope_fifo(|s| s.spawn_fifo(|_| ()));
/// ```
pub struct ScopeFifo<'a, 'scope> {
    inner: &'a rayon::ScopeFifo<'scope>,
}

impl std::fmt::Debug for ScopeFifo<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeFifo").finish_non_exhaustive()
    }
}

impl<'scope> ScopeFifo<'_, 'scope> {
    /// `rayon::ScopeFifo::spawn_fifo`, the job in a copy of the current
    /// context, taken now.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// contextvars::rayon::scope_fifo(|s| {
    ///     N.set(3);
    ///     s.spawn_fifo(|_| assert_eq!(N.get(), Ok(3)));
    /// });
    /// ```
    pub fn spawn_fifo<BODY>(&self, body: BODY)
    where
        BODY: FnOnce(&ScopeFifo<'_, 'scope>) + Send + 'scope,
    {
        let mut ctx = inherited_context();
        let carried = carry::capture();
        self.inner.spawn_fifo(move |s| {
            within(&carried, || {
                ctx.run_exclusive(|| body(&ScopeFifo { inner: s }))
            })
        });
    }
}

/// Parallel-iterator adapters that run every item's closure in a copy of
/// the caller's context.
///
/// ```
/// use contextvars::ContextVar;
/// use contextvars::rayon::ParallelIteratorExt;
/// use rayon::prelude::*;
///
/// static FACTOR: ContextVar<u64> = ContextVar::new("factor");
/// FACTOR.set(10);
/// let v: Vec<u64> = (1..=4u64).into_par_iter().map_in_current_context(|x| x * FACTOR.get().unwrap()).collect();
/// assert_eq!(v, [10, 20, 30, 40]);
/// ```
pub trait ParallelIteratorExt: ParallelIterator {
    /// `map`, with `f` called in a fresh copy of the caller's context (as
    /// of this call) for every item.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::rayon::ParallelIteratorExt;
    /// use rayon::prelude::*;
    ///
    /// static N: ContextVar<u32> = ContextVar::with_default("n", 0);
    /// // Each item sees the caller's value, never another item's set.
    /// let seen: Vec<u32> = (0..100).into_par_iter().map_in_current_context(|_| {
    ///     let before = N.get().unwrap();
    ///     N.set(before + 1);
    ///     before
    /// }).collect();
    /// assert!(seen.iter().all(|&n| n == 0));
    /// ```
    fn map_in_current_context<F, R>(self, f: F) -> impl ParallelIterator<Item = R>
    where
        F: Fn(Self::Item) -> R + Sync + Send,
        R: Send,
    {
        let base = inherited_context();
        let carried = carry::capture();
        // One locked copy per rayon split, then lock-free copies per item.
        self.map_init(
            move || base.copy(),
            move |split: &mut Context, item| {
                within(&carried, || {
                    split.copy_exclusive().run_exclusive(|| f(item))
                })
            },
        )
    }

    /// `for_each`, with `f` called in a fresh copy of the caller's context
    /// (as of this call) for every item.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use contextvars::ContextVar;
    /// use contextvars::rayon::ParallelIteratorExt;
    /// use rayon::prelude::*;
    ///
    /// static WEIGHT: ContextVar<u64> = ContextVar::new("weight");
    /// WEIGHT.set(2);
    /// let total = AtomicU64::new(0);
    /// (0..10u64).into_par_iter().for_each_in_current_context(|x| {
    ///     total.fetch_add(x * WEIGHT.get().unwrap(), Ordering::Relaxed);
    /// });
    /// assert_eq!(total.into_inner(), 90);
    /// ```
    fn for_each_in_current_context<F>(self, f: F)
    where
        F: Fn(Self::Item) + Sync + Send,
    {
        self.map_in_current_context(f).for_each(drop);
    }

    /// `filter_map`, with `f` called in a fresh copy of the caller's context
    /// (as of this call) for every item.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::rayon::ParallelIteratorExt;
    /// use rayon::prelude::*;
    ///
    /// static LIMIT: ContextVar<u32> = ContextVar::new("limit");
    /// LIMIT.set(3);
    /// let mut small: Vec<u32> = (0..10u32)
    ///     .into_par_iter()
    ///     .filter_map_in_current_context(|x| (x < LIMIT.get().unwrap()).then_some(x))
    ///     .collect();
    /// small.sort();
    /// assert_eq!(small, [0, 1, 2]);
    /// ```
    fn filter_map_in_current_context<F, R>(self, f: F) -> impl ParallelIterator<Item = R>
    where
        F: Fn(Self::Item) -> Option<R> + Sync + Send,
        R: Send,
    {
        self.map_in_current_context(f).filter_map(|r| r)
    }

    /// `try_for_each` for `Result`s, with `f` called in a fresh copy of the
    /// caller's context (as of this call) for every item.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::rayon::ParallelIteratorExt;
    /// use rayon::prelude::*;
    ///
    /// static MAX: ContextVar<u32> = ContextVar::new("max");
    /// MAX.set(5);
    /// let checked = (0..10u32).into_par_iter().try_for_each_in_current_context(|x| {
    ///     if x > MAX.get().unwrap() { Err(x) } else { Ok(()) }
    /// });
    /// assert!(checked.is_err());
    /// ```
    fn try_for_each_in_current_context<F, E>(self, f: F) -> Result<(), E>
    where
        F: Fn(Self::Item) -> Result<(), E> + Sync + Send,
        E: Send,
    {
        self.map_in_current_context(f).try_for_each(|r| r)
    }
}

impl<I: ParallelIterator> ParallelIteratorExt for I {}
