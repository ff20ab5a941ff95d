//! Iterators with their own layer of context (PEP 568's generators, which
//! Python deferred).
//!
//! `iter.isolated()` runs every `next` of `iter` in a context made of the
//! caller's *current* values with the iterator's own layer on top. What the
//! iterator sets persists across its resumptions and is never seen by the
//! caller; what the caller changes between resumptions is seen by the next
//! one, unless the iterator has set that variable itself.
//!
//! ```
//! use contextvars::prelude::*;
//! use contextvars::ContextVar;
//!
//! static COUNT: ContextVar<u32> = ContextVar::with_default("count", 0);
//!
//! let mut counter = std::iter::repeat_with(|| {
//!     let n = COUNT.get().unwrap() + 1;
//!     COUNT.set(n); // the iterator's own layer
//!     n
//! })
//! .isolated();
//! assert_eq!((counter.next(), counter.next()), (Some(1), Some(2)));
//! assert_eq!(COUNT.get(), Ok(0), "the caller never sees the iterator's sets");
//! ```
//!
//! **Invariant:** the caller's context is the same before and after every
//! `next`, and after its drop, whatever the iterator does (see `generator`).

use crate::generator::Generator;

/// Extension methods for iterators.
///
/// ```
/// use contextvars::prelude::*;
/// use contextvars::ContextVar;
///
/// static DEPTH: ContextVar<u32> = ContextVar::with_default("depth", 0);
///
/// let mut counter = std::iter::from_fn(|| {
///     let next = DEPTH.get().unwrap() + 1;
///     DEPTH.set(next); // persists across resumptions, invisible outside
///     Some(next)
/// })
/// .isolated();
/// assert_eq!(counter.next(), Some(1));
/// assert_eq!(counter.next(), Some(2));
/// assert_eq!(DEPTH.get(), Ok(0));
/// ```
pub trait IteratorExt: Iterator + Sized {
    /// Gives this iterator its own layer of context; see the module docs.
    ///
    /// ```
    /// use contextvars::prelude::*;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<&'static str> = ContextVar::new("user");
    /// USER.set("ada");
    /// let mut names = std::iter::repeat_with(|| USER.get().unwrap()).isolated();
    /// assert_eq!(names.next(), Some("ada"));
    /// USER.set("grace"); // the caller's change is seen by the next resumption
    /// assert_eq!(names.next(), Some("grace"));
    /// ```
    fn isolated(self) -> Isolated<Self> {
        Isolated {
            iter: Some(self),
            generator: Generator::new(),
        }
    }
}

impl<I: Iterator> IteratorExt for I {}

/// An iterator with its own layer of context; made by
/// [`IteratorExt::isolated`].
///
/// ```
/// use contextvars::prelude::*;
///
/// let doubled: Vec<i32> = [1, 2].into_iter().map(|x| x * 2).isolated().collect();
/// assert_eq!(doubled, [2, 4]);
/// ```
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Isolated<I> {
    /// `None` only once the drop dropped it, inside the generator's own
    /// context.
    iter: Option<I>,
    generator: Generator,
}

/// Why the iterator is present wherever it is read: only the drop empties
/// it.
const HELD: &str = "an Isolated iterator holds its iterator until it is dropped";

impl<I: Iterator> Iterator for Isolated<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let iter = self.iter.as_mut().expect(HELD);
        self.generator.resume(|| iter.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.as_ref().expect(HELD).size_hint()
    }
}

impl<I> Drop for Isolated<I> {
    /// Drops the iterator inside its own layer, as one more resumption: its
    /// destructors see the generator's values and the caller's, and what
    /// they set or reset stays in the layer.
    fn drop(&mut self) {
        let iter = &mut self.iter;
        self.generator.resume(|| *iter = None);
    }
}

impl<I: std::fmt::Debug> std::fmt::Debug for Isolated<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolated")
            .field("iter", self.iter.as_ref().expect(HELD))
            .finish_non_exhaustive()
    }
}
