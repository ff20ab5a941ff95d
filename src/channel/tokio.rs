//! `tokio::sync::mpsc` with each message carrying its sender's context
//! (feature `tokio`).
//!
//! ```
//! use contextvars::{ContextVar, channel::tokio::channel};
//!
//! static REQUEST: ContextVar<u64> = ContextVar::new("request");
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (tx, mut rx) = channel(8);
//! REQUEST.set(1);
//! tx.send("job").await.unwrap();
//! let envelope = rx.recv().await.unwrap();
//! REQUEST.set(2);
//! let seen = envelope.run_async(|job| async move { (job, REQUEST.get().unwrap()) }).await;
//! assert_eq!(seen, ("job", 1));
//! # });
//! ```
//!
//! **Invariant:** every message goes into the channel inside an
//! [`Envelope`] made at the send, so none reaches the
//! receiver without the context it was sent with.

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
