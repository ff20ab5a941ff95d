//! rayon's `join`, `scope` and parallel iterators, with every closure in a
//! copy of the caller's context (feature `rayon`).
//!
//! The copy is taken on the calling thread when the helper is called; each
//! closure (each `join` half, each `spawn`ed job, each parallel item) runs in
//! its own copy of it, so workers never contend on one context and no
//! closure's `set` is seen by the caller or by another closure.
//!
//! **Invariant:** a closure run by a rayon worker through these helpers
//! never runs in the worker thread's own context.

use rayon::iter::ParallelIterator;

use crate::context::{Context, copy_context};

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
    let (mut ca, mut cb) = (copy_context(), copy_context());
    rayon::join(move || ca.run_exclusive(a), move || cb.run_exclusive(b))
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
    let mut ctx = copy_context();
    rayon::scope(move |s| ctx.run_exclusive(|| op(&Scope { inner: s })))
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
        let mut ctx = copy_context();
        self.inner
            .spawn(move |s| ctx.run_exclusive(|| body(&Scope { inner: s })));
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
/// let v: Vec<u64> = (1..=4u64).into_par_iter().map_with_context(|x| x * FACTOR.get().unwrap()).collect();
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
    /// let seen: Vec<u32> = (0..100).into_par_iter().map_with_context(|_| {
    ///     let before = N.get().unwrap();
    ///     N.set(before + 1);
    ///     before
    /// }).collect();
    /// assert!(seen.iter().all(|&n| n == 0));
    /// ```
    fn map_with_context<F, R>(self, f: F) -> impl ParallelIterator<Item = R>
    where
        F: Fn(Self::Item) -> R + Sync + Send,
        R: Send,
    {
        let base = copy_context();
        // One locked copy per rayon split, then lock-free copies per item.
        self.map_init(
            move || base.copy(),
            move |split: &mut Context, item| split.copy_exclusive().run_exclusive(|| f(item)),
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
    /// (0..10u64).into_par_iter().for_each_with_context(|x| {
    ///     total.fetch_add(x * WEIGHT.get().unwrap(), Ordering::Relaxed);
    /// });
    /// assert_eq!(total.into_inner(), 90);
    /// ```
    fn for_each_with_context<F>(self, f: F)
    where
        F: Fn(Self::Item) + Sync + Send,
    {
        self.map_with_context(f).for_each(drop);
    }
}

impl<I: ParallelIterator> ParallelIteratorExt for I {}
