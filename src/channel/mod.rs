//! Channels that carry the sender's context with each message: the
//! receiver handles every message inside the context it was sent with, as a
//! callback handed to a pool does through [`wrap`](crate::wrap).
//!
//! Each `send` takes an O(1) copy of the sender's current context and puts
//! it, with the message, in an [`Envelope`]. A message is spawned work, as
//! a wrapped callback is: the copy is [`inherited_context`], without the
//! variables declared [`not_inherited`](crate::ContextVar::not_inherited)
//! (a transaction handle, a per-request cache stay with the sender, whose
//! flow of work they belong to; [`Envelope::in_context`] sends any other
//! context, a [`copy_context`](crate::copy_context) included).
//! the receiver gets envelopes and runs its handler in the envelope's
//! context ([`Envelope::run`], [`Envelope::run_async`]). [`mpsc`] wraps
//! `std::sync::mpsc`; [`tokio`] wraps `tokio::sync::mpsc`
//! (feature `tokio`).
//!
//! With [`carry_spans`](crate::tracing::carry_spans) on (feature
//! `tracing`), an envelope also carries the tracing span current at the
//! send (and, with feature `opentelemetry`, OpenTelemetry's current
//! `Context`), entered while the receiver handles the message, as spawned
//! work carries it; [`Envelope::into_parts`] leaves it behind.
//!
//! ```
//! use contextvars::{ContextVar, channel::mpsc};
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//!
//! let (tx, rx) = mpsc::channel();
//! REQUEST_ID.sync_scope(7, || tx.send("job").unwrap());
//! let handled = rx.recv().unwrap().run(|job| format!("{job} of request {}", REQUEST_ID.get_or(0)));
//! assert_eq!(handled, "job of request 7");
//! assert!(REQUEST_ID.get().is_err(), "the receiver's own context is untouched");
//! ```
//!
//! **Invariant:** a message is handled, or dropped, only inside the context
//! it was sent with: the envelope's context is a copy no other handle
//! reaches, entered exclusively around the handler, and an envelope dropped
//! unopened drops its message inside that context too. The receiver's own
//! context is never written by a handler.

use std::fmt;
use std::future::Future;

use std::task::{Poll, Waker};

use crate::carry::{self, Carried, within};
use crate::future::{ContextHandle, FutureExt, InContext};
use crate::{Context, inherited_context};

/// A message and the context it was sent with.
///
/// ```
/// use contextvars::{ContextVar, channel::Envelope};
///
/// static REQUEST: ContextVar<u64> = ContextVar::new("request");
/// REQUEST.set(7);
/// let envelope = Envelope::new("hello"); // captures the context now
/// REQUEST.set(8);
/// let seen = envelope.run(|msg| format!("{msg} from {}", REQUEST.get().unwrap()));
/// assert_eq!(seen, "hello from 7");
/// ```
pub struct Envelope<T> {
    ctx: Context,
    /// The span current at the send, when carrying is on.
    carried: Option<Carried>,
    /// `None` only once taken out (the drop then has nothing to do).
    msg: Option<T>,
}

impl<T> Envelope<T> {
    /// `msg` with a copy of the current context, as spawned work gets it
    /// ([`inherited_context`]: without the variables declared
    /// [`not_inherited`](crate::ContextVar::not_inherited)).
    ///
    /// ```
    /// use contextvars::{ContextVar, channel::Envelope};
    ///
    /// static USER: ContextVar<&str> = ContextVar::new("user");
    /// static TRANSACTION: ContextVar<u64> = ContextVar::new("transaction").not_inherited();
    /// USER.set("ada");
    /// TRANSACTION.set(7);
    /// let e = Envelope::new(1);
    /// assert_eq!(*e.message(), 1);
    /// assert_eq!(e.run(|_| (USER.get().ok(), TRANSACTION.get().ok())), (Some("ada"), None));
    /// ```
    pub fn new(msg: T) -> Envelope<T> {
        Envelope::in_context(inherited_context(), msg)
    }

    /// `msg` with the given context (and, with
    /// [`carry_spans`](crate::tracing::carry_spans) on, the span current
    /// now).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar, channel::Envelope};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let ctx = Context::new();
    /// ctx.run(|| N.set(3));
    /// assert_eq!(Envelope::in_context(ctx, ()).run(|()| N.get()), Ok(3));
    /// ```
    pub fn in_context(ctx: Context, msg: T) -> Envelope<T> {
        Envelope {
            ctx,
            carried: carry::capture(),
            msg: Some(msg),
        }
    }

    /// Runs `f` on the message inside the context it was sent with (and
    /// the span it carries, entered); the caller's context is current again
    /// afterwards, also if `f` panics.
    ///
    /// ```
    /// use contextvars::{ContextVar, channel::Envelope};
    ///
    /// static USER: ContextVar<&str> = ContextVar::new("user");
    /// USER.set("ada");
    /// let e = Envelope::new(2);
    /// USER.set("bob");
    /// assert_eq!(e.run(|n| (n, USER.get().unwrap())), (2, "ada"));
    /// assert_eq!(USER.get(), Ok("bob"));
    /// ```
    pub fn run<R>(mut self, f: impl FnOnce(T) -> R) -> R {
        let msg = self.msg.take().expect("an envelope holds its message");
        let ctx = &mut self.ctx;
        within(&self.carried, || ctx.run_exclusive(|| f(msg)))
    }

    /// Makes a future from the message inside the context it was sent with
    /// and returns it bound to that context: every poll (and its drop) runs
    /// inside it, as [`FutureExt::in_context`] does, with the span the
    /// envelope carries entered (see [`SentContext`]).
    ///
    /// ```
    /// use contextvars::{ContextVar, channel::Envelope};
    ///
    /// static USER: ContextVar<&str> = ContextVar::new("user");
    /// USER.set("ada");
    /// let e = Envelope::new(5);
    /// let handled = e.run_async(|n| async move { (n, USER.get().unwrap()) });
    /// assert_eq!(futures::executor::block_on(handled), (5, "ada"));
    /// ```
    pub fn run_async<F, Fut>(mut self, f: F) -> InContext<Fut, SentContext>
    where
        F: FnOnce(T) -> Fut,
        Fut: Future,
    {
        let msg = self.msg.take().expect("an envelope holds its message");
        let mut sent = SentContext {
            ctx: std::mem::take(&mut self.ctx),
            carried: self.carried.take(),
        };
        let fut = sent.run_in(|| f(msg));
        fut.in_context(sent)
    }

    /// The message, without entering its context.
    ///
    /// ```
    /// assert_eq!(*contextvars::channel::Envelope::new("m").message(), "m");
    /// ```
    pub fn message(&self) -> &T {
        self.msg.as_ref().expect("an envelope holds its message")
    }

    /// The context the message was sent with.
    ///
    /// ```
    /// use contextvars::{ContextVar, channel::Envelope};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// N.set(1);
    /// assert_eq!(Envelope::new(()).context().get(&N), Some(1));
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The context and the message, apart (a carried span is dropped: a
    /// [`Context`] holds variables only).
    ///
    /// ```
    /// use contextvars::{ContextVar, channel::Envelope};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// N.set(1);
    /// let (ctx, msg) = Envelope::new("m").into_parts();
    /// assert_eq!((ctx.get(&N), msg), (Some(1), "m"));
    /// ```
    pub fn into_parts(mut self) -> (Context, T) {
        let msg = self.msg.take().expect("an envelope holds its message");
        (std::mem::take(&mut self.ctx), msg)
    }

    fn into_message(self) -> T {
        self.into_parts().1
    }
}

impl<T> Drop for Envelope<T> {
    /// An envelope dropped unopened drops its message inside its context.
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            let ctx = &mut self.ctx;
            within(&self.carried, || ctx.run_exclusive(|| drop(msg)));
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Envelope");
        d.field("ctx", &self.ctx);
        if self.carried.is_some() {
            d.field("carries_span", &true);
        }
        d.field("msg", &self.msg).finish()
    }
}

/// The context a message was sent with, and the span it carries (with
/// [`carry_spans`](crate::tracing::carry_spans) on): what the future of
/// [`Envelope::run_async`] is polled in. Each poll (and the drop) enters
/// the span, then the context, as `tracing::Instrument` and
/// [`FutureExt::in_context`] do; the span is let go with the future.
///
/// ```
/// use contextvars::{ContextVar, channel::Envelope};
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(4);
/// let handling = Envelope::new(()).run_async(|()| async { N.get() });
/// assert_eq!(handling.context().get(&N), Some(4));
/// assert_eq!(futures::executor::block_on(handling), Ok(4));
/// ```
pub struct SentContext {
    ctx: Context,
    carried: Option<Carried>,
}

impl crate::future::sealed::Sealed for SentContext {}

impl ContextHandle for SentContext {
    fn context(&self) -> &Context {
        &self.ctx
    }

    #[inline]
    fn poll_in<R>(&mut self, waker: &Waker, f: impl FnOnce() -> Poll<R>) -> Poll<R> {
        let ctx = &mut self.ctx;
        within(&self.carried, || ctx.poll_in(waker, f))
    }

    fn run_in<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let ctx = &mut self.ctx;
        within(&self.carried, || ctx.run_in(f))
    }
}

impl fmt::Debug for SentContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentContext")
            .field("ctx", &self.ctx)
            .field("carries_span", &self.carried.is_some())
            .finish()
    }
}

pub mod mpsc;
#[cfg(feature = "tokio")]
pub mod tokio;
