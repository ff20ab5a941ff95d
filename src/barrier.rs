//! The asymmetric barrier between the thread that has a shared context
//! entered (its *owner*, the only writer) and another thread that reads it
//! (`Context::get`, `copy` from elsewhere): a [`light`] side that costs the
//! owner nothing at run time, and a [`heavy`] side, paid by the reader only.
//!
//! A pair of them orders like a pair of `SeqCst` fences: of an owner that
//! stores a flag, runs [`light`], then loads another, and a reader that
//! stores the other, runs [`heavy`], then loads the first, at least one sees
//! the other's store. On Linux the heavy side is `membarrier(2)`'s
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (the kernel runs a full barrier on
//! every CPU that runs a thread of this process, and a thread not running
//! went through one when it was switched out) and the light side a compiler
//! fence: the scheme of liburcu's `memb` flavour and folly's
//! `asymmetricLightBarrier`. Under loom and Miri both sides are `SeqCst`
//! fences, which is what the pair stands for, so the models check the
//! protocol built on it.
//!
//! **Invariant:** [`enabled`] gives one answer for the life of the process
//! (the first stored: a seccomp filter may apply to some threads only), and
//! while it is `true` every [`heavy`] call is a barrier or panics (the
//! process is registered before the first `true` is given; a thread whose
//! own filter forbids the call cannot read a context entered elsewhere,
//! and says so). Where it is `false` (not
//! Linux, or a kernel or sandbox without the command), nothing uses the two
//! sides and the owner takes the context's lock as a reader does.

#[cfg(any(loom, miri))]
mod imp {
    use crate::sync::{Ordering, fence};

    #[inline(always)]
    pub(crate) fn enabled() -> bool {
        true
    }

    #[inline(always)]
    pub(crate) fn light() {
        fence(Ordering::SeqCst);
    }

    pub(crate) fn heavy() {
        fence(Ordering::SeqCst);
    }
}

#[cfg(all(target_os = "linux", not(any(loom, miri))))]
mod imp {
    use std::sync::atomic::{AtomicU8, Ordering, compiler_fence};

    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;

    /// Whether the heavy side works here: [`UNKNOWN`] until the first call
    /// of [`enabled`] asks the kernel.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    #[inline(always)]
    pub(crate) fn enabled() -> bool {
        match STATE.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => probe(),
        }
    }

    /// Only the compiler may not move memory accesses across it: the
    /// hardware's reordering is what [`heavy`] undoes.
    #[inline(always)]
    pub(crate) fn light() {
        compiler_fence(Ordering::SeqCst);
    }

    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: `membarrier` reads no memory of ours; the flags argument
        // is 0 and the third (CPU id) is ignored for these commands.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
    }

    /// Asks whether this kernel has the private expedited command and
    /// registers the process for it (both are needed before the first
    /// `heavy`). Two threads may race here: both get the same answer, and
    /// registering twice is harmless.
    #[cold]
    #[inline(never)]
    fn probe() -> bool {
        let wanted = libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED
            | libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
        let commands = membarrier(libc::MEMBARRIER_CMD_QUERY);
        let works = commands >= 0
            && commands & libc::c_long::from(wanted) == libc::c_long::from(wanted)
            && membarrier(libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
        // One answer for all: the first one stored wins (a seccomp filter
        // may apply to some threads only, so two probes can differ).
        // Release: whoever sees `YES` sees a registered process.
        let answer = if works { YES } else { NO };
        match STATE.compare_exchange(UNKNOWN, answer, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => works,
            Err(first) => first == YES,
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn heavy() {
        if membarrier(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 {
            // Only a process whose registration was lost (a child of
            // `fork`, say) gets here: register again once.
            let again = membarrier(libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
                && membarrier(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
            // A thread under a seccomp filter of its own that forbids the
            // call also gets here: it cannot read such a context safely,
            // and says so rather than read.
            assert!(
                again,
                "contextvars: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed on this thread \
                 after it worked in this process (a seccomp filter on this thread?); reading a \
                 context entered on another thread is not safe without it"
            );
        }
    }
}

#[cfg(not(any(target_os = "linux", loom, miri)))]
mod imp {
    #[inline(always)]
    pub(crate) fn enabled() -> bool {
        false
    }

    #[inline(always)]
    pub(crate) fn light() {}

    pub(crate) fn heavy() {}
}

/// Whether owners may use [`light`] and readers must use [`heavy`] (else
/// both take the context's lock).
#[inline(always)]
pub(crate) fn enabled() -> bool {
    imp::enabled()
}

/// The owner's side: keeps the compiler from moving a load above a store.
#[inline(always)]
pub(crate) fn light() {
    imp::light()
}

/// The reader's side: a full barrier on every thread of the process.
pub(crate) fn heavy() {
    imp::heavy()
}
