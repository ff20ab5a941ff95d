//! [`FutureExt`]: run every poll of a future inside a context, on any
//! executor.
//!
//! `fut.in_context(ctx)` enters `ctx` around each `poll` and leaves it when
//! `poll` returns (or unwinds), so the future sees its own context whichever
//! worker thread polls it, and the worker's own context is untouched between
//! polls. `fut.in_current_context()` does the same with a copy of the
//! caller's context taken at the call — what Python's `asyncio.create_task`
//! does. A future awaited inline, without either, simply runs in whatever
//! context its parent is polled in, and its `set`s are its parent's.
//!
//! Dropping an `InContext` (cancellation, `abort`, a losing `select!`
//! branch, runtime shutdown) drops the inner future inside its context too,
//! so its destructors see the task's values and write the task's context.
//!
//! Many tasks may share one `Arc<Context>`: a poll that finds it entered on
//! another thread waits its turn (it returns `Pending` and is woken when the
//! context is left), as asyncio's tasks sharing a context take turns.
//!
//! ```
//! use std::sync::Arc;
//! use contextvars::prelude::*;
//! use contextvars::{Context, ContextVar};
//!
//! static USER: ContextVar<&'static str> = ContextVar::new("user");
//!
//! # futures::executor::block_on(async {
//! USER.set("ada");
//! let copied = async { USER.get() }.in_current_context(); // a copy, taken now
//! let shared = Arc::new(Context::new());
//! let writes = async { USER.set("grace"); }.in_context(shared.clone());
//! USER.set("alan");
//! assert_eq!(copied.await, Ok("ada"));
//! writes.await;
//! assert_eq!(shared.get(&USER), Some("grace"));
//! assert_eq!(USER.get(), Ok("alan"));
//! # });
//! ```
//!
//! **Invariant:** the context is entered only for the duration of one `poll`
//! (or the drop), never across a suspension point.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use pin_project_lite::pin_project;

use crate::ContextVar;
use crate::context::{Context, inherited_context};
use crate::map::Value;

/// What a [`InContext`] future can be polled in: an owned [`Context`]
/// (entered exclusively: no other handle to it can exist, so entering it
/// takes no atomic flag and writes to it take no lock; a `&mut Context`
/// likewise), or a shared
/// `Arc<Context>` (entered like [`Context::run`]; a poll that finds it
/// entered on another thread waits its turn); or the
/// [`SentContext`](crate::channel::SentContext) a message was sent with,
/// for [`Envelope::run_async`](crate::channel::Envelope::run_async).
///
/// This trait is sealed; it is implemented for exactly those types.
///
/// ```
/// use std::sync::Arc;
/// use contextvars::future::ContextHandle;
/// use contextvars::Context;
///
/// fn len_of(handle: &impl ContextHandle) -> usize {
///     handle.context().len()
/// }
/// assert_eq!(len_of(&Context::new()), 0);
/// assert_eq!(len_of(&Arc::new(Context::new())), 0);
/// ```
pub trait ContextHandle: sealed::Sealed {
    /// The context itself.
    fn context(&self) -> &Context;

    /// Runs one poll, `f`, inside the context (or arranges for `waker` to
    /// be woken when it is this poll's turn).
    #[doc(hidden)]
    fn poll_in<R>(&mut self, waker: &Waker, f: impl FnOnce() -> Poll<R>) -> Poll<R>;

    /// Runs `f` inside the context, waiting (blocking the thread) while
    /// another thread has a shared one entered: for the drop of the future
    /// and a sink's `start_send`, which cannot return `Pending`.
    #[doc(hidden)]
    fn run_in<R>(&mut self, f: impl FnOnce() -> R) -> R;
}

/// The handles [`ContextHandle`] is implemented for: these three, and the
/// channel's `SentContext` (which implements it where it is defined).
pub(crate) mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Context {}
    impl Sealed for std::sync::Arc<crate::Context> {}
    impl Sealed for &mut crate::Context {}
}

/// A unique borrow is entered exclusively, as an owned context is (for
/// [`Fork::run_future`](crate::Fork::run_future)).
impl ContextHandle for &mut Context {
    fn context(&self) -> &Context {
        self
    }

    #[inline]
    fn poll_in<R>(&mut self, waker: &Waker, f: impl FnOnce() -> Poll<R>) -> Poll<R> {
        (**self).poll_in(waker, f)
    }

    fn run_in<R>(&mut self, f: impl FnOnce() -> R) -> R {
        (**self).run_in(f)
    }
}

impl ContextHandle for Context {
    fn context(&self) -> &Context {
        self
    }

    #[inline]
    fn poll_in<R>(&mut self, _: &Waker, f: impl FnOnce() -> Poll<R>) -> Poll<R> {
        self.run_exclusive(f)
    }

    fn run_in<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.run_exclusive(f)
    }
}

impl ContextHandle for Arc<Context> {
    fn context(&self) -> &Context {
        self
    }

    #[inline]
    fn poll_in<R>(&mut self, waker: &Waker, f: impl FnOnce() -> Poll<R>) -> Poll<R> {
        match self.run_or_wait(waker, f) {
            Ok(Some(poll)) => poll,
            Ok(None) => Poll::Pending,
            Err(e) => panic!(
                "contextvars: cannot poll a future inside a context this thread has entered \
                 already (it would wait for itself): {e}"
            ),
        }
    }

    /// Waits (blocking) while another thread has the context entered: a drop
    /// cannot return `Pending`, and polls hold a context only briefly.
    fn run_in<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.run_blocking(f)
    }
}

/// Extension methods that attach a [`Context`] to a future.
///
/// ```
/// use contextvars::prelude::*;
/// use contextvars::{Context, ContextVar};
///
/// static USER: ContextVar<&'static str> = ContextVar::new("user");
///
/// USER.set("ada");
/// let task = async { USER.get() }.in_current_context();
/// USER.set("grace");
/// // The copy was taken when `in_current_context` was called.
/// let seen = futures_lite_block_on(task);
/// assert_eq!(seen, Ok("ada"));
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// ```
pub trait FutureExt: Future + Sized {
    /// Polls this future inside `ctx`: an owned [`Context`], or a shared
    /// `Arc<Context>` (then the future's changes are visible through the
    /// `Arc` afterwards, as with `asyncio.create_task(coro, context=ctx)`).
    ///
    /// A poll that finds a shared `ctx` entered on another thread returns
    /// `Pending` and is woken when it is left; one that finds it entered on
    /// its own thread (a nested entry, which would wait for itself) panics
    /// with the [`AlreadyEntered`](crate::AlreadyEntered) message. Dropping
    /// the returned future drops `self` inside `ctx` as well.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use contextvars::prelude::*;
    /// use contextvars::{Context, ContextVar};
    ///
    /// static HITS: ContextVar<u32> = ContextVar::new("hits");
    ///
    /// let ctx = Arc::new(Context::new());
    /// let task = async { HITS.set(1); }.in_context(ctx.clone());
    /// # let mut task = std::pin::pin!(task);
    /// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// # assert!(task.as_mut().poll(&mut cx).is_ready());
    /// // ... once the task has run:
    /// assert_eq!(ctx.get(&HITS), Some(1));
    /// assert!(HITS.get().is_err());
    /// ```
    fn in_context<C: ContextHandle>(self, ctx: C) -> InContext<Self, C> {
        InContext::new(self, ctx)
    }

    /// Polls this future inside a copy of the current context, taken now
    /// (without the variables declared
    /// [`not_inherited`](crate::ContextVar::not_inherited): see
    /// [`inherited_context`]).
    ///
    /// ```
    /// use contextvars::prelude::*;
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// N.set(1);
    /// let task = async {
    ///     N.set(2); // the task's own copy
    ///     N.get()
    /// }
    /// .in_current_context();
    /// # let mut task = std::pin::pin!(task);
    /// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// # let std::task::Poll::Ready(seen) = task.as_mut().poll(&mut cx) else { panic!() };
    /// # assert_eq!(seen, Ok(2));
    /// assert_eq!(N.get(), Ok(1));
    /// ```
    fn in_current_context(self) -> InContext<Self, Context> {
        self.in_context(inherited_context())
    }
}

impl<F: Future> FutureExt for F {}

pin_project! {
    /// A future polled inside a [`Context`]; made by
    /// [`FutureExt::in_context`] and [`FutureExt::in_current_context`]. With
    /// feature `futures` it is also a stream or a sink inside the context when
    /// what it wraps is one (`StreamExt::in_context`, [`InContext::new`]).
    ///
    /// ```
    /// use contextvars::prelude::*;
    /// use contextvars::future::InContext;
    /// use contextvars::Context;
    ///
    /// let task: InContext<_, Context> = async { 1 }.in_context(Context::new());
    /// assert_eq!(task.context().len(), 0);
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct InContext<F, C: ContextHandle> {
        // `None` only once `into_parts` took it, or once the drop dropped it
        // inside `ctx`.
        #[pin]
        future: Option<F>,
        // `None` only once `into_parts` took it: a type with a destructor
        // cannot be taken apart otherwise.
        ctx: Option<C>,
    }

    impl<F, C: ContextHandle> PinnedDrop for InContext<F, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut future = this.future;
            if let (Some(ctx), true) = (this.ctx, future.is_some()) {
                ctx.run_in(|| future.set(None));
            }
        }
    }
}

/// Why an `InContext` field is present wherever it is read: only
/// `into_parts`, which consumes the wrapper, and the drop empty them.
const HELD: &str = "an InContext holds its future and context until it is taken apart";

impl<F, C: ContextHandle> InContext<F, C> {
    /// `inner` (a future, a stream, a sink) run inside `ctx`: what
    /// [`FutureExt::in_context`] and the stream adapters make, for any of
    /// them, e.g. a sink (`futures-sink`'s `Sink`, with feature `futures`).
    ///
    /// ```
    /// use contextvars::future::InContext;
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let ctx = Context::new();
    /// ctx.run(|| N.set(1));
    /// let task = InContext::new(async { N.get() }, ctx);
    /// assert_eq!(futures::executor::block_on(task), Ok(1));
    /// ```
    pub fn new(inner: F, ctx: C) -> Self {
        InContext {
            future: Some(inner),
            ctx: Some(ctx),
        }
    }

    /// The inner future, pinned, and the context, for one call of it.
    #[inline]
    pub(crate) fn pinned_parts(self: Pin<&mut Self>) -> (Pin<&mut F>, &mut C) {
        let this = self.project();
        (
            this.future.as_pin_mut().expect(HELD),
            this.ctx.as_mut().expect(HELD),
        )
    }

    /// The inner future (or stream, or sink).
    ///
    /// ```
    /// use contextvars::future::InContext;
    /// use contextvars::Context;
    ///
    /// let wrapped = InContext::new(std::future::ready(5), Context::new());
    /// assert!(format!("{:?}", wrapped.get_ref()).contains('5'));
    /// ```
    pub fn get_ref(&self) -> &F {
        self.future.as_ref().expect(HELD)
    }

    /// The context the future is polled in.
    ///
    /// ```
    /// use contextvars::prelude::*;
    /// use contextvars::Context;
    ///
    /// assert!(async {}.in_context(Context::new()).context().is_empty());
    /// ```
    pub fn context(&self) -> &Context {
        self.ctx.as_ref().expect(HELD).context()
    }

    /// Takes the future and its context apart, e.g. to read the context
    /// after the future has completed.
    ///
    /// ```
    /// use contextvars::prelude::*;
    /// use contextvars::Context;
    ///
    /// let (_future, ctx) = async {}.in_context(Context::new()).into_parts();
    /// assert!(ctx.is_empty());
    /// ```
    pub fn into_parts(mut self) -> (F, C) {
        // Both taken: the drop then finds nothing to drop inside the context.
        (
            self.future.take().expect(HELD),
            self.ctx.take().expect(HELD),
        )
    }
}

impl<F: Future, C: ContextHandle> Future for InContext<F, C> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let (future, ctx) = self.pinned_parts();
        ctx.poll_in(cx.waker(), || future.poll(cx))
    }
}

impl<F, C: ContextHandle> fmt::Debug for InContext<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InContext")
            .field("ctx", self.context())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A future that runs with a variable set to a value: during every poll and
    /// its drop. Made by [`ContextVar::scope`](crate::ContextVar::scope), as
    /// `tokio::task_local!`'s `scope` makes a `TaskLocalFuture`.
    ///
    /// ```
    /// use contextvars::ContextVar;
    /// use contextvars::future::ScopeFuture;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let task: ScopeFuture<'_, u32, _> = N.scope(1, async { N.get() });
    /// assert_eq!(futures::executor::block_on(task), Ok(1));
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ScopeFuture<'a, T, F>
    where
        T: Send,
        T: Sync,
        T: 'static,
    {
        // Borrowed, not copied: every read of a variable goes through the
        // read-cache slot of its address, so it must not move meanwhile.
        var: &'a ContextVar<T>,
        // The value's handle, lent to each poll's scope and given back at
        // its end (`None` only while it is lent).
        value: Option<Value>,
        // `None` only once the drop dropped it, inside the scope.
        #[pin]
        future: Option<F>,
    }

    impl<'a, T, F> PinnedDrop for ScopeFuture<'a, T, F>
    where
        T: Send,
        T: Sync,
        T: 'static,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut future = this.future;
            if future.is_some() {
                this.var.scope_lent(this.value, || future.set(None));
            }
        }
    }
}

impl<'a, T: Send + Sync + 'static, F> ScopeFuture<'a, T, F> {
    /// `value` is a `T`, boxed by `var`'s `scope`.
    pub(crate) fn new(var: &'a ContextVar<T>, value: Value, future: F) -> Self {
        ScopeFuture {
            var,
            value: Some(value),
            future: Some(future),
        }
    }

    /// The variable this future sets.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// assert_eq!(N.scope(1, async {}).var().name(), "n");
    /// ```
    pub fn var(&self) -> &'a ContextVar<T> {
        self.var
    }

    /// The value the future runs with.
    ///
    /// ```
    /// use contextvars::ContextVar;
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// assert_eq!(N.scope(1, async {}).value(), &1);
    /// ```
    pub fn value(&self) -> &T {
        let value = self.value.as_ref().expect("lent only inside a poll");
        value
            .downcast::<T>()
            .expect("made by the variable's `scope` from a `T`")
    }
}

impl<T: Send + Sync + 'static, F: Future> Future for ScopeFuture<'_, T, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this
            .future
            .as_pin_mut()
            .expect("a ScopeFuture holds its future until it is dropped");
        this.var.scope_lent(this.value, || future.poll(cx))
    }
}

impl<T: Send + Sync + 'static, F> fmt::Debug for ScopeFuture<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeFuture")
            .field("var", &self.var.name())
            .finish_non_exhaustive()
    }
}
