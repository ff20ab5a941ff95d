//! What threads share or keep apart in the context code, `std`'s normally
//! and loom's under `--cfg loom`, so that `tests/loom.rs` explores the real
//! code rather than a replica of it: the atomics of a context's `state`,
//! `lock` and `scoped` words and of a value's reference count (`value`); the
//! [`UnsafeCell`]s of a context's map and generator frame, whose accesses
//! loom checks for data races; the thread-locals of each thread's current
//! context (`context`) and context ids (`ids`), since loom runs its threads
//! on one OS thread, where `std`'s thread-locals would be shared by all of
//! them; and the spin loop's hints (a loom thread that spins must tell loom
//! so, or the model never ends). In the normal build each item is `std`'s
//! own, or a wrapper that inlines to it. The thread-locals left on `std`,
//! and why, and what loom covers and does not: `RELIABILITY.md`.

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

/// loom's `thread_local!`, which also takes `std`'s `const { .. }`
/// initialisers: loom's own matches them as `expr`s in its 2018 edition,
/// where a `const` block is not one, but one matched here (2024) is passed
/// on whole.
#[cfg(loom)]
macro_rules! loom_thread_local {
    ($($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;)*) => {
        $(loom::thread_local! { $(#[$attr])* $vis static $name: $t = $init; })*
    };
}
#[cfg(loom)]
pub(crate) use loom_thread_local as thread_local;

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;
#[cfg(not(loom))]
pub(crate) use std::thread_local;

/// An `UnsafeCell` reached through closures, as loom's is: `with` to read,
/// `with_mut` to write. Under loom each call is an access that loom checks
/// against the other threads' (a read and a write, or two writes, that
/// happen-before does not order are a reported data race).
///
/// A caller may keep the reference it makes from the pointer beyond the
/// closure: loom then checks the access where it began. That stands for
/// the whole use as long as the thread does not release anything to
/// another thread before the reference dies (loom orders accesses by
/// happens-before, not by time), which holds for every such use in
/// `context` (a write's map reference dies before the write lock is
/// released).
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline(always)]
    pub(crate) fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a pointer to read through.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer to write through.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}

#[cfg(loom)]
impl<T> UnsafeCell<T> {
    #[track_caller]
    pub(crate) fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(loom::cell::UnsafeCell::new(value))
    }

    #[track_caller]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        self.0.with(f)
    }

    #[track_caller]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        self.0.with_mut(f)
    }

    /// A write, for loom: `&mut self` rules out every other access now, but
    /// loom still checks that the other threads' earlier ones happen before
    /// it (a context dropped by the last of its owners, say).
    #[track_caller]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` is the only way to the value for as long as
        // the returned borrow lives.
        self.0.with_mut(|value| unsafe { &mut *value })
    }
}
