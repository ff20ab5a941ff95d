//! rayon's scopes: [`scope`], [`scope_fifo`], [`in_place_scope`] and
//! [`in_place_scope_fifo`], and the handles their closures get, [`Scope`]
//! and [`ScopeFifo`], whose `spawn`s carry the spawner's context.
//!
//! **Invariant:** every job spawned through a handle starts in a copy of
//! the spawner's context taken at the spawn, so a job's `set` is seen by
//! neither the spawner nor another job.

use rayon::BroadcastContext;

use crate::carry::{self, within};
use crate::context::inherited_context;

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
