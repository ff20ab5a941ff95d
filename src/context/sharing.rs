//! The shared-context protocol: how threads share one [`Context`]
//! (`Sharing`). A context entered through a shared borrow (`run`, a poll of
//! an `Arc<Context>`) has one *owner*, the thread that entered it, and may
//! have readers on other threads (`Context::get`, `copy`, `entries`), and
//! polls of other tasks waiting for their turn to enter it.
//!
//! **Invariant:** a context is entered on at most one thread at a time
//! ([`Sharing::try_enter`] takes `state` from 0 to the thread's token with
//! an acquire, [`Sharing::leave`] gives it back with a release), and its map
//! is never written by its owner while a reader on another thread reads it:
//! both hold [`Sharing::lock`] for the access. The rest of the core never
//! names these flags; it asks this type.
//!
//! [`Context`]: super::Context

use std::sync::Mutex;
use std::task::Waker;

use crate::sync::{AtomicBool, AtomicUsize, Ordering, spin_loop, yield_now};

/// Who has a context entered, who waits for it, and its lock.
pub(crate) struct Sharing {
    /// 0 for nobody, else the token of the thread that has the context
    /// entered through a shared borrow, with [`WAITING`] set while polls of
    /// other tasks wait for their turn.
    state: AtomicUsize,
    /// Held for every access to the map that another thread could see half
    /// done: a read from a thread that does not have the context entered,
    /// and each write of its owner.
    lock: AtomicBool,
}

/// The bit of `state` that says polls wait in [`WAITERS`] for the context
/// to be left. Thread tokens are addresses of a word-aligned thread-local,
/// so their low bit is free.
const WAITING: usize = 1;

/// Wakers of polls that found their `Arc<Context>` entered on another
/// thread, by context id: woken all at once when it is left. Touched only
/// when polls contend for one context.
static WAITERS: Mutex<Vec<(u64, Waker)>> = Mutex::new(Vec::new());

impl Sharing {
    /// Nobody has it entered; unlocked.
    pub(crate) fn new() -> Sharing {
        Sharing {
            state: AtomicUsize::new(0),
            lock: AtomicBool::new(false),
        }
    }

    /// Enters for the thread with `token` if nobody has the context
    /// entered. Acquire: the last owner's writes happen before this one's.
    #[inline]
    pub(crate) fn try_enter(&self, token: usize) -> bool {
        self.state
            .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends the entry. Release: the owner's writes happen before the next
    /// entry; wakes the polls that wait for the context (whose id `id`
    /// gives, asked only then) to be left.
    #[inline]
    pub(crate) fn leave(&self, id: impl FnOnce() -> u64) {
        if self.state.swap(0, Ordering::Release) & WAITING != 0 {
            wake_waiters(id());
        }
    }

    /// Whether the thread with `token` has the context entered.
    #[inline]
    pub(crate) fn entered_by(&self, token: usize) -> bool {
        self.state.load(Ordering::Relaxed) & !WAITING == token
    }

    /// Registers `waker` to be woken when context `id` is left; `false` if
    /// it was left meanwhile (try to enter again).
    #[cold]
    pub(crate) fn wait_turn(&self, id: u64, waker: &Waker) -> bool {
        let mut waiters = WAITERS.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state == 0 {
                return false;
            }
            // Under the `WAITERS` lock: `leave` clears the state first and
            // takes the lock after, so it either sees this bit and then our
            // waker, or has cleared the state and we try again.
            match self.state.compare_exchange_weak(
                state,
                state | WAITING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        let known = waiters
            .iter()
            .any(|(of, w)| *of == id && w.will_wake(waker));
        if !known {
            waiters.push((id, waker.clone()));
        }
        true
    }

    /// Takes the lock, until the guard drops. Holders never run user code
    /// under it, so it is held briefly: spin, then yield.
    #[inline]
    pub(crate) fn lock(&self) -> Locked<'_> {
        if !self.try_lock() {
            self.lock_contended();
        }
        Locked(&self.lock)
    }

    /// One attempt at the lock. Acquire: the last holder's accesses
    /// happen before this one's.
    #[inline]
    fn try_lock(&self) -> bool {
        self.lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// [`lock`](Sharing::lock) when the first attempt failed: out of line,
    /// so the uncontended lock is one compare-and-swap and no spin count.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        while !self.try_lock() {
            backoff(&mut spins);
        }
    }
}

/// A held [`Sharing::lock`]: a read by another thread, or a write by the
/// owner, is under way. Released on drop.
pub(crate) struct Locked<'a>(&'a AtomicBool);

impl Drop for Locked<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Waits a little longer each time: spinning first, then yielding.
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        spin_loop();
    } else {
        yield_now();
    }
}

/// Wakes the polls waiting for context `id` to be left.
#[cold]
#[inline(never)]
fn wake_waiters(id: u64) {
    #[cfg(test)]
    WAKE_WAITERS_CALLS.with(|n| n.set(n.get() + 1));
    let woken: Vec<Waker> = {
        let mut waiters = WAITERS.lock().unwrap_or_else(|e| e.into_inner());
        let mut woken = Vec::new();
        waiters.retain(|(of, waker)| {
            if *of == id {
                woken.push(waker.clone());
            }
            *of != id
        });
        woken
    };
    // Outside the lock: a waker is user code, and this runs as a context
    // is left, perhaps while unwinding: a panic must not escape (a second
    // panic aborts), nor stop the other wakers.
    for waker in woken {
        if let Err(what) = crate::report::contain(|| waker.wake()) {
            crate::report::warn(&format!(
                "contextvars: a waker panicked when its context was left ({what})"
            ));
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Calls of `wake_waiters` (the global `WAITERS` lock) on this thread.
    pub(super) static WAKE_WAITERS_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaving a context that no poll waits for takes no global lock
    /// (`WAITERS`): the exit looks at the context's own state word only.
    #[test]
    fn leaving_a_context_nobody_waits_for_takes_no_global_lock() {
        let calls = || WAKE_WAITERS_CALLS.with(std::cell::Cell::get);
        let ctx = crate::Context::new();
        let before = calls();
        for _ in 0..3 {
            ctx.run(|| ());
        }
        assert_eq!(calls(), before);
    }

    #[test]
    fn one_thread_enters_at_a_time_and_a_waiter_is_told_when_it_may_retry() {
        let sharing = Sharing::new();
        assert!(sharing.try_enter(8));
        assert!(!sharing.try_enter(16), "entered twice");
        assert!(sharing.entered_by(8) && !sharing.entered_by(16));
        assert!(sharing.wait_turn(1, Waker::noop()), "it is entered: wait");
        assert!(sharing.entered_by(8), "waiting keeps the owner");
        sharing.leave(|| 1);
        assert!(!sharing.wait_turn(1, Waker::noop()), "left: retry");
        assert!(sharing.try_enter(16));
    }
}
