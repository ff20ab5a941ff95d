//! [`ParallelIteratorExt`]: parallel-iterator adapters whose closure runs,
//! for every item, in a fresh copy of the caller's context.
//!
//! **Invariant:** an item's closure never sees another item's `set`: each
//! runs in a copy of its split's copy, made for it alone.

use rayon::iter::ParallelIterator;

use crate::carry::{self, within};
use crate::context::{Context, inherited_context};

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
