//! Streams with their own layer of context (PEP 568 for async generators),
//! with feature `futures`.
//!
//! `stream.isolated()` polls `stream` in a context made of the caller's
//! *current* values with the stream's own layer on top, exactly as
//! [`IteratorExt::isolated`](crate::prelude::IteratorExt::isolated) does for
//! iterators: the stream's `set`s persist across its polls and are never seen
//! by the caller.
//!
//! **Invariant:** the caller's context is the same before and after every
//! `poll_next`, and after its drop, whatever the stream does.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_core::Stream;

use std::mem::ManuallyDrop;

use crate::generator::Generator;

/// Extension methods for streams.
///
/// ```
/// use contextvars::prelude::*;
/// use contextvars::ContextVar;
/// use futures::StreamExt as _;
///
/// static SEEN: ContextVar<u32> = ContextVar::with_default("seen", 0);
///
/// let stream = futures::stream::repeat(()).map(|()| {
///     let n = SEEN.get().unwrap() + 1;
///     SEEN.set(n);
///     n
/// });
/// let firsts: Vec<u32> = futures::executor::block_on(
///     contextvars::prelude::StreamExt::isolated(stream).take(3).collect(),
/// );
/// assert_eq!(firsts, [1, 2, 3]);
/// assert_eq!(SEEN.get(), Ok(0));
/// ```
pub trait StreamExt: Stream + Sized {
    /// Gives this stream its own layer of context; see the module docs.
    ///
    /// ```
    /// use contextvars::prelude::StreamExt as _;
    ///
    /// let _s = futures::stream::iter([1, 2, 3]).isolated();
    /// ```
    fn isolated(self) -> IsolatedStream<Self> {
        IsolatedStream {
            stream: ManuallyDrop::new(self),
            generator: Generator::new(),
        }
    }
}

impl<S: Stream> StreamExt for S {}

/// A stream with its own layer of context; made by [`StreamExt::isolated`].
///
/// ```
/// use contextvars::prelude::StreamExt as _;
/// use contextvars::stream::IsolatedStream;
///
/// let _s: IsolatedStream<_> = futures::stream::empty::<()>().isolated();
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct IsolatedStream<S> {
    /// Dropped by hand, inside the generator's own context.
    stream: ManuallyDrop<S>,
    generator: Generator,
}

impl<S: Stream> Stream for IsolatedStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        // SAFETY: `stream` is structurally pinned: `IsolatedStream` never
        // moves it out or hands out `&mut` to it except pinned, here, and
        // drops it in place (`Drop`); `generator` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let stream = unsafe { Pin::new_unchecked(&mut *this.stream) };
        this.generator.resume(|| stream.poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl<S> Drop for IsolatedStream<S> {
    /// Drops the stream inside its own layer, as one more resumption (see
    /// `Isolated`'s drop).
    fn drop(&mut self) {
        let stream = &mut self.stream;
        // SAFETY: dropped once, here, in place (so a pinned stream is
        // dropped where it was pinned), and not used after.
        self.generator
            .resume(|| unsafe { ManuallyDrop::drop(stream) });
    }
}

impl<S> std::fmt::Debug for IsolatedStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolatedStream").finish_non_exhaustive()
    }
}
