//! Streams and sinks in a context, and streams with their own layer of
//! context (PEP 568 for async generators), with feature `futures`.
//!
//! `stream.in_context(ctx)` polls `stream` inside `ctx`, as
//! [`FutureExt::in_context`](crate::future::FutureExt::in_context) does a
//! future: every `poll_next`, and its drop, runs inside `ctx`, whichever
//! thread polls it; `stream.in_current_context()` does the same in a copy
//! of the current context, taken now. A sink (`futures-sink`'s `Sink`) runs
//! in a context the same way, wrapped with [`InContext::new`]; a type that
//! is both a stream and a sink (a framed connection) is both once wrapped.
//!
//! `stream.isolated()` polls `stream` in a context made of the caller's
//! *current* values with the stream's own layer on top, exactly as
//! [`IteratorExt::isolated`](crate::iter::IteratorExt::isolated) does for
//! iterators: the stream's `set`s persist across its polls and are never seen
//! by the caller.
//!
//! ```
//! use contextvars::stream::StreamExt as _;
//! use contextvars::{Context, ContextVar};
//! use futures::StreamExt as _;
//!
//! static TENANT: ContextVar<&'static str> = ContextVar::new("tenant");
//!
//! let ctx = Context::new();
//! ctx.run(|| TENANT.set("acme"));
//! let events = futures::stream::repeat_with(|| TENANT.get()).take(2).in_context(ctx);
//! let seen: Vec<_> = futures::executor::block_on(events.collect());
//! assert_eq!(seen, [Ok("acme"), Ok("acme")]);
//! assert!(TENANT.get().is_err());
//! ```
//!
//! **Invariant:** the caller's context is the same before and after every
//! `poll_next` (and every call of a sink), and after the drop, whatever the
//! stream does.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use pin_project_lite::pin_project;

use crate::context::{Context, inherited_context};
use crate::future::{ContextHandle, InContext};
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
///     contextvars::stream::StreamExt::isolated(stream).take(3).collect(),
/// );
/// assert_eq!(firsts, [1, 2, 3]);
/// assert_eq!(SEEN.get(), Ok(0));
/// ```
pub trait StreamExt: Stream + Sized {
    /// Gives this stream its own layer of context; see the module docs.
    ///
    /// ```
    /// use contextvars::stream::StreamExt as _;
    ///
    /// let _s = futures::stream::iter([1, 2, 3]).isolated();
    /// ```
    fn isolated(self) -> IsolatedStream<Self> {
        IsolatedStream {
            stream: Some(self),
            generator: Generator::new(),
        }
    }

    /// Polls this stream inside `ctx`: an owned [`Context`], or a shared
    /// `Arc<Context>` (then the stream's changes are visible through the
    /// `Arc`), as [`FutureExt::in_context`](crate::future::FutureExt::in_context)
    /// does a future. Dropping the result drops the stream inside `ctx`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use contextvars::stream::StreamExt as _;
    /// use contextvars::{Context, ContextVar};
    /// use futures::StreamExt as _;
    ///
    /// static SENT: ContextVar<u32> = ContextVar::with_default("sent", 0);
    ///
    /// let ctx = Arc::new(Context::new());
    /// let counted = futures::stream::iter([1, 2, 3])
    ///     .inspect(|_| { SENT.set(SENT.get().unwrap() + 1); })
    ///     .in_context(ctx.clone());
    /// let items: Vec<u32> = futures::executor::block_on(counted.collect());
    /// assert_eq!(items, [1, 2, 3]);
    /// assert_eq!(ctx.get(&SENT), Some(3));
    /// assert_eq!(SENT.get(), Ok(0));
    /// ```
    fn in_context<C: ContextHandle>(self, ctx: C) -> InContext<Self, C> {
        InContext::new(self, ctx)
    }

    /// Polls this stream inside a copy of the current context, taken now
    /// (without the variables declared
    /// [`not_inherited`](crate::ContextVar::not_inherited)), as
    /// [`FutureExt::in_current_context`](crate::future::FutureExt::in_current_context)
    /// does a future.
    ///
    /// ```
    /// use contextvars::stream::StreamExt as _;
    /// use contextvars::ContextVar;
    /// use futures::StreamExt as _;
    ///
    /// static USER: ContextVar<&'static str> = ContextVar::new("user");
    ///
    /// USER.set("ada");
    /// let greetings = futures::stream::repeat_with(|| USER.get()).take(1).in_current_context();
    /// USER.set("grace");
    /// let seen: Vec<_> = futures::executor::block_on(greetings.collect());
    /// assert_eq!(seen, [Ok("ada")]);
    /// ```
    fn in_current_context(self) -> InContext<Self, Context> {
        self.in_context(inherited_context())
    }
}

impl<S: Stream, C: ContextHandle> Stream for InContext<S, C> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let (stream, ctx) = self.pinned_parts();
        ctx.poll_in(cx.waker(), || stream.poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.get_ref().size_hint()
    }
}

/// Every call of the sink runs inside the context; `start_send`, which
/// cannot return `Pending`, waits (blocking) for a shared context entered on
/// another thread, as a drop does.
///
/// ```
/// use contextvars::future::InContext;
/// use contextvars::{Context, ContextVar};
/// use futures::SinkExt as _;
///
/// static TENANT: ContextVar<&'static str> = ContextVar::new("tenant");
///
/// let ctx = Context::new();
/// ctx.run(|| TENANT.set("acme"));
/// let mut seen = Vec::new();
/// let sink = futures::sink::drain().with(|n: u32| {
///     seen.push(TENANT.get());
///     std::future::ready(Ok::<_, std::convert::Infallible>(n))
/// });
/// let mut sink = InContext::new(sink, ctx);
/// futures::executor::block_on(sink.send(1)).unwrap();
/// drop(sink);
/// assert_eq!(seen, [Ok("acme")]);
/// ```
impl<S: Sink<Item>, Item, C: ContextHandle> Sink<Item> for InContext<S, C> {
    type Error = S::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        let (sink, ctx) = self.pinned_parts();
        ctx.poll_in(cx.waker(), || sink.poll_ready(cx))
    }

    fn start_send(self: Pin<&mut Self>, item: Item) -> Result<(), S::Error> {
        let (sink, ctx) = self.pinned_parts();
        ctx.run_in(|| sink.start_send(item))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        let (sink, ctx) = self.pinned_parts();
        ctx.poll_in(cx.waker(), || sink.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        let (sink, ctx) = self.pinned_parts();
        ctx.poll_in(cx.waker(), || sink.poll_close(cx))
    }
}

impl<S: Stream> StreamExt for S {}

pin_project! {
    /// A stream with its own layer of context; made by [`StreamExt::isolated`].
    ///
    /// ```
    /// use contextvars::stream::StreamExt as _;
    /// use contextvars::stream::IsolatedStream;
    ///
    /// let _s: IsolatedStream<_> = futures::stream::empty::<()>().isolated();
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct IsolatedStream<S> {
        // `None` only once the drop dropped it, inside the generator's own
        // context.
        #[pin]
        stream: Option<S>,
        generator: Generator,
    }

    impl<S> PinnedDrop for IsolatedStream<S> {
        /// Drops the stream inside its own layer, as one more resumption (see
        /// `Isolated`'s drop).
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut stream = this.stream;
            if stream.is_some() {
                this.generator.resume(|| stream.set(None));
            }
        }
    }
}

/// Why the stream is present wherever it is read: only the drop empties it.
const HELD: &str = "an IsolatedStream holds its stream until it is dropped";

impl<S: Stream> Stream for IsolatedStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let stream = this.stream.as_pin_mut().expect(HELD);
        this.generator.resume(|| stream.poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.as_ref().expect(HELD).size_hint()
    }
}

impl<S> std::fmt::Debug for IsolatedStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolatedStream").finish_non_exhaustive()
    }
}
