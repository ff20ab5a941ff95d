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

/// `std::sync::mpsc` with each message carrying its sender's context.
///
/// ```
/// use contextvars::{ContextVar, channel::mpsc};
///
/// static REQUEST: ContextVar<u64> = ContextVar::new("request");
///
/// let (tx, rx) = mpsc::channel();
/// let worker = std::thread::spawn(move || {
///     // Each job runs in its producer's context.
///     rx.iter().map(|job| job.run(|n: u32| (n, REQUEST.get().unwrap()))).collect::<Vec<_>>()
/// });
/// for request in [1, 2] {
///     REQUEST.set(request);
///     tx.send(request as u32 * 10).unwrap();
/// }
/// drop(tx);
/// assert_eq!(worker.join().unwrap(), [(10, 1), (20, 2)]);
/// ```
pub mod mpsc {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    pub use std::sync::mpsc::{RecvError, RecvTimeoutError, SendError, TryRecvError};

    use super::Envelope;

    /// An unbounded channel (`std::sync::mpsc::channel`).
    ///
    /// ```
    /// let (tx, rx) = contextvars::channel::mpsc::channel();
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.recv().unwrap().run(|n| n), 1);
    /// ```
    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let (tx, rx) = std_mpsc::channel();
        (Sender(tx), Receiver(rx))
    }

    /// A bounded channel (`std::sync::mpsc::sync_channel`).
    ///
    /// ```
    /// let (tx, rx) = contextvars::channel::mpsc::sync_channel(1);
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.recv().unwrap().into_parts().1, 1);
    /// ```
    pub fn sync_channel<T>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
        let (tx, rx) = std_mpsc::sync_channel(bound);
        (SyncSender(tx), Receiver(rx))
    }

    /// The sending half of [`channel`].
    #[derive(Debug)]
    pub struct Sender<T>(std_mpsc::Sender<Envelope<T>>);

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            Sender(self.0.clone())
        }
    }

    impl<T> Sender<T> {
        /// Sends `msg` with a copy of the current context.
        ///
        /// # Errors
        ///
        /// The receiver is gone; the message comes back in the error.
        ///
        /// ```
        /// let (tx, rx) = contextvars::channel::mpsc::channel();
        /// drop(rx);
        /// assert_eq!(tx.send(3).unwrap_err().0, 3);
        /// ```
        pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
            self.0
                .send(Envelope::new(msg))
                .map_err(|e| SendError(e.0.into_message()))
        }
    }

    /// The sending half of [`sync_channel`].
    #[derive(Debug)]
    pub struct SyncSender<T>(std_mpsc::SyncSender<Envelope<T>>);

    impl<T> Clone for SyncSender<T> {
        fn clone(&self) -> Self {
            SyncSender(self.0.clone())
        }
    }

    impl<T> SyncSender<T> {
        /// Sends `msg` with a copy of the current context, waiting for room.
        ///
        /// # Errors
        ///
        /// The receiver is gone; the message comes back in the error.
        ///
        /// ```
        /// let (tx, rx) = contextvars::channel::mpsc::sync_channel(1);
        /// tx.send("m").unwrap();
        /// assert_eq!(*rx.recv().unwrap().message(), "m");
        /// ```
        pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
            self.0
                .send(Envelope::new(msg))
                .map_err(|e| SendError(e.0.into_message()))
        }
    }

    /// The receiving half: it yields [`Envelope`]s.
    #[derive(Debug)]
    pub struct Receiver<T>(std_mpsc::Receiver<Envelope<T>>);

    impl<T> Receiver<T> {
        /// Waits for the next message.
        ///
        /// # Errors
        ///
        /// Every sender is gone.
        ///
        /// ```
        /// let (tx, rx) = contextvars::channel::mpsc::channel::<u8>();
        /// drop(tx);
        /// assert!(rx.recv().is_err());
        /// ```
        pub fn recv(&self) -> Result<Envelope<T>, RecvError> {
            self.0.recv()
        }

        /// The next message, if one is waiting.
        ///
        /// # Errors
        ///
        /// None is waiting, or every sender is gone.
        ///
        /// ```
        /// let (_tx, rx) = contextvars::channel::mpsc::channel::<u8>();
        /// assert!(rx.try_recv().is_err());
        /// ```
        pub fn try_recv(&self) -> Result<Envelope<T>, TryRecvError> {
            self.0.try_recv()
        }

        /// Waits at most `timeout` for the next message.
        ///
        /// # Errors
        ///
        /// Timed out, or every sender is gone.
        ///
        /// ```
        /// let (_tx, rx) = contextvars::channel::mpsc::channel::<u8>();
        /// assert!(rx.recv_timeout(std::time::Duration::from_millis(1)).is_err());
        /// ```
        pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope<T>, RecvTimeoutError> {
            self.0.recv_timeout(timeout)
        }

        /// Every message until all senders are gone.
        ///
        /// ```
        /// let (tx, rx) = contextvars::channel::mpsc::channel();
        /// tx.send(1).unwrap();
        /// drop(tx);
        /// assert_eq!(rx.iter().map(|e| e.run(|n| n)).sum::<i32>(), 1);
        /// ```
        pub fn iter(&self) -> impl Iterator<Item = Envelope<T>> + '_ {
            self.0.iter()
        }
    }
}

/// `tokio::sync::mpsc` with each message carrying its sender's context
/// (feature `tokio`).
///
/// ```
/// use contextvars::{ContextVar, channel::tokio::channel};
///
/// static REQUEST: ContextVar<u64> = ContextVar::new("request");
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (tx, mut rx) = channel(8);
/// REQUEST.set(1);
/// tx.send("job").await.unwrap();
/// let envelope = rx.recv().await.unwrap();
/// REQUEST.set(2);
/// let seen = envelope.run_async(|job| async move { (job, REQUEST.get().unwrap()) }).await;
/// assert_eq!(seen, ("job", 1));
/// # });
/// ```
#[cfg(feature = "tokio")]
pub mod tokio {
    use ::tokio::sync::mpsc as tokio_mpsc;

    pub use ::tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

    use super::Envelope;

    /// A bounded channel (`tokio::sync::mpsc::channel`).
    ///
    /// ```
    /// let (tx, mut rx) = contextvars::channel::tokio::channel(1);
    /// tx.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv().unwrap().run(|n| n), 1);
    /// ```
    pub fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
        let (tx, rx) = tokio_mpsc::channel(bound);
        (Sender(tx), Receiver(rx))
    }

    /// An unbounded channel (`tokio::sync::mpsc::unbounded_channel`).
    ///
    /// ```
    /// let (tx, mut rx) = contextvars::channel::tokio::unbounded_channel();
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_recv().unwrap().run(|n| n), 1);
    /// ```
    pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        (UnboundedSender(tx), UnboundedReceiver(rx))
    }

    /// The sending half of [`channel`].
    #[derive(Debug)]
    pub struct Sender<T>(tokio_mpsc::Sender<Envelope<T>>);

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            Sender(self.0.clone())
        }
    }

    impl<T> Sender<T> {
        /// Sends `msg` with a copy of the current context (taken now, before
        /// waiting for room).
        ///
        /// # Errors
        ///
        /// The receiver is gone; the message comes back in the error.
        ///
        /// ```
        /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
        /// let (tx, rx) = contextvars::channel::tokio::channel(1);
        /// drop(rx);
        /// assert_eq!(tx.send(3).await.unwrap_err().0, 3);
        /// # });
        /// ```
        pub fn send(&self, msg: T) -> impl Future<Output = Result<(), SendError<T>>> + '_ {
            let envelope = Envelope::new(msg);
            async move {
                self.0
                    .send(envelope)
                    .await
                    .map_err(|e| SendError(e.0.into_message()))
            }
        }

        /// Sends `msg` with a copy of the current context if there is room.
        ///
        /// # Errors
        ///
        /// No room, or the receiver is gone; the message comes back in the
        /// error.
        ///
        /// ```
        /// let (tx, _rx) = contextvars::channel::tokio::channel(1);
        /// tx.try_send(1).unwrap();
        /// assert!(tx.try_send(2).is_err());
        /// ```
        pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
            self.0.try_send(Envelope::new(msg)).map_err(|e| match e {
                TrySendError::Full(e) => TrySendError::Full(e.into_message()),
                TrySendError::Closed(e) => TrySendError::Closed(e.into_message()),
            })
        }
    }

    /// The receiving half of [`channel`]: it yields [`Envelope`]s.
    #[derive(Debug)]
    pub struct Receiver<T>(tokio_mpsc::Receiver<Envelope<T>>);

    impl<T> Receiver<T> {
        /// Waits for the next message; `None` once every sender is gone.
        ///
        /// ```
        /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
        /// let (tx, mut rx) = contextvars::channel::tokio::channel::<u8>(1);
        /// drop(tx);
        /// assert!(rx.recv().await.is_none());
        /// # });
        /// ```
        pub async fn recv(&mut self) -> Option<Envelope<T>> {
            self.0.recv().await
        }

        /// The next message, if one is waiting.
        ///
        /// # Errors
        ///
        /// None is waiting, or every sender is gone.
        ///
        /// ```
        /// let (_tx, mut rx) = contextvars::channel::tokio::channel::<u8>(1);
        /// assert!(rx.try_recv().is_err());
        /// ```
        pub fn try_recv(&mut self) -> Result<Envelope<T>, TryRecvError> {
            self.0.try_recv()
        }
    }

    /// The sending half of [`unbounded_channel`].
    #[derive(Debug)]
    pub struct UnboundedSender<T>(tokio_mpsc::UnboundedSender<Envelope<T>>);

    impl<T> Clone for UnboundedSender<T> {
        fn clone(&self) -> Self {
            UnboundedSender(self.0.clone())
        }
    }

    impl<T> UnboundedSender<T> {
        /// Sends `msg` with a copy of the current context.
        ///
        /// # Errors
        ///
        /// The receiver is gone; the message comes back in the error.
        ///
        /// ```
        /// let (tx, rx) = contextvars::channel::tokio::unbounded_channel();
        /// drop(rx);
        /// assert_eq!(tx.send(3).unwrap_err().0, 3);
        /// ```
        pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
            self.0
                .send(Envelope::new(msg))
                .map_err(|e| SendError(e.0.into_message()))
        }
    }

    /// The receiving half of [`unbounded_channel`]: it yields [`Envelope`]s.
    #[derive(Debug)]
    pub struct UnboundedReceiver<T>(tokio_mpsc::UnboundedReceiver<Envelope<T>>);

    impl<T> UnboundedReceiver<T> {
        /// Waits for the next message; `None` once every sender is gone.
        ///
        /// ```
        /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
        /// let (tx, mut rx) = contextvars::channel::tokio::unbounded_channel();
        /// tx.send(1).unwrap();
        /// assert_eq!(rx.recv().await.unwrap().run(|n| n), 1);
        /// # });
        /// ```
        pub async fn recv(&mut self) -> Option<Envelope<T>> {
            self.0.recv().await
        }

        /// The next message, if one is waiting.
        ///
        /// # Errors
        ///
        /// None is waiting, or every sender is gone.
        ///
        /// ```
        /// let (_tx, mut rx) = contextvars::channel::tokio::unbounded_channel::<u8>();
        /// assert!(rx.try_recv().is_err());
        /// ```
        pub fn try_recv(&mut self) -> Result<Envelope<T>, TryRecvError> {
            self.0.try_recv()
        }
    }
}
