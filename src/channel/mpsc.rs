//! `std::sync::mpsc` with each message carrying its sender's context.
//!
//! ```
//! use contextvars::{ContextVar, channel::mpsc};
//!
//! static REQUEST: ContextVar<u64> = ContextVar::new("request");
//!
//! let (tx, rx) = mpsc::channel();
//! let worker = std::thread::spawn(move || {
//!     // Each job runs in its producer's context.
//!     rx.iter().map(|job| job.run(|n: u32| (n, REQUEST.get().unwrap()))).collect::<Vec<_>>()
//! });
//! for request in [1, 2] {
//!     REQUEST.set(request);
//!     tx.send(request as u32 * 10).unwrap();
//! }
//! drop(tx);
//! assert_eq!(worker.join().unwrap(), [(10, 1), (20, 2)]);
//! ```
//!
//! **Invariant:** every message goes into the channel inside an
//! [`Envelope`] made at the send, so none reaches the
//! receiver without the context it was sent with.

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
