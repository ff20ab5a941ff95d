//! [`ThreadPoolExt`]: a `ThreadPool`'s `install` and `spawn`, carrying the
//! caller's context into the pool.
//!
//! **Invariant:** `op` runs in a copy of the caller's context taken before
//! it is handed to the pool, never in the pool thread's own.

use crate::carry::{self, within};
use crate::context::{inherited_context, wrap};

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
