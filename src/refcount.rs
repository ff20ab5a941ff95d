//! The reference count of the crate's own shared allocations, value boxes
//! (`value`) and map nodes (`map`): the protocol of `std::sync::Arc`
//! without a weak count, and with a check for the last handle that costs a
//! load rather than an atomic decrement when there is no other.
//!
//! **Invariant:** the count is the number of live handles, and [`release`]
//! answers `true` to exactly one of them, the last, after every other
//! handle's accesses (release decrements, then an acquire load), so that
//! it alone may free, reuse or drop what the allocation holds.

use crate::sync::{AtomicUsize, Ordering};

/// Counts one more handle, made from an existing one.
#[inline]
pub(crate) fn retain(strong: &AtomicUsize) {
    // Relaxed, as in `Arc`: a new handle comes from an existing one, which
    // already orders the allocation's creation before this thread's
    // accesses.
    let old = strong.fetch_add(1, Ordering::Relaxed);
    if old > isize::MAX as usize {
        // Leaked handles by the billion; wrapping would free a live
        // allocation.
        std::process::abort();
    }
}

/// Lets go of one handle: `true` if it was the last, which then owns the
/// allocation alone (the count is left at 1 or 0: the caller frees it, or
/// puts 1 back to keep it as a handle); `false` if another handle is left.
#[inline]
pub(crate) fn release(strong: &AtomicUsize) -> bool {
    // A count of 1 is this handle alone, and no other can appear (a new
    // handle is cloned from an existing one), so the last handle needs no
    // decrement: an atomic read-modify-write costs about 2 ns, a load next
    // to nothing. That is the common case, a value replaced or reset in the
    // only context that held it. The acquire load pairs with the release
    // decrements of the handles dropped before, as the one in `decrement`
    // does.
    strong.load(Ordering::Acquire) == 1 || decrement(strong)
}

/// [`release`] for a handle that is rarely the last (a map's root let go
/// of by a copy): the decrement, without the load that would spare it.
/// `true` if it was the last (the count is then 0).
#[inline]
pub(crate) fn decrement(strong: &AtomicUsize) -> bool {
    if strong.fetch_sub(1, Ordering::Release) != 1 {
        return false;
    }
    // Pairs with the release decrements of the other handles, so their
    // accesses happen before ours: this load reads our own decrement, which
    // continues their release sequences. An acquire load rather than
    // `fence(Acquire)`, as `std::sync::Arc` does under ThreadSanitizer,
    // which does not model fences.
    strong.load(Ordering::Acquire);
    true
}
