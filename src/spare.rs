//! Spare memory for small value boxes, kept per thread: a `set` allocates a
//! box and the matching `reset` frees one, so a short list of freed blocks
//! turns that pair into two thread-local pushes and pops instead of a trip
//! through the global allocator (measured: about a third of a `set`+`reset`
//! with glibc's `malloc`; see BENCHMARKS.md).
//!
//! Blocks come in four size classes (16, 32, 48 and 64 bytes, all aligned to
//! 16); larger or more aligned boxes go straight to the global allocator.
//! Each thread keeps at most [`KEEP`] blocks per class and frees the rest, and
//! its list is freed when the thread exits.
//!
//! **Invariant:** every block in a list, and every block `alloc` hands out for
//! a class, was allocated with exactly that class's layout; so a block can be
//! returned to the global allocator with [`layout`] of its class, whichever
//! thread and path it ends on.

use std::alloc::{Layout, alloc as global_alloc, dealloc, handle_alloc_error};
use std::cell::Cell;
use std::ptr::{self, NonNull};

const STEP: usize = 16;
const CLASSES: usize = 4;
/// Blocks kept per class per thread.
const KEEP: usize = 16;

/// The class a box of `layout` is allocated in, if it is small enough.
pub(crate) const fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() <= STEP && layout.size() > 0 && layout.size() <= STEP * CLASSES {
        Some((layout.size() - 1) / STEP)
    } else {
        None
    }
}

/// The layout of every block of `class`.
pub(crate) const fn layout(class: usize) -> Layout {
    match Layout::from_size_align((class + 1) * STEP, STEP) {
        Ok(layout) => layout,
        Err(_) => panic!("size classes are valid layouts"),
    }
}

/// A thread's lists. No destructor, so the thread-local is reached without
/// a liveness check on the hot path; blocks are listed only while
/// [`Release`] (which has one) is registered to free them at thread exit.
struct Lists {
    blocks: [[Cell<*mut u8>; KEEP]; CLASSES],
    len: [Cell<usize>; CLASSES],
    /// [`UNREGISTERED`], [`KEEPING`] or [`EXITED`].
    state: Cell<u8>,
}

/// No block kept yet: `Release` is not registered.
const UNREGISTERED: u8 = 0;
/// `Release` is registered: freed blocks may be kept.
const KEEPING: u8 = 1;
/// `Release` has run (the thread is exiting): nothing is kept any more.
const EXITED: u8 = 2;

/// Frees the thread's listed blocks when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        LISTS.with(|lists| {
            lists.state.set(EXITED);
            for (class, (blocks, len)) in lists.blocks.iter().zip(&lists.len).enumerate() {
                for block in &blocks[..len.get()] {
                    // SAFETY: a listed block was allocated with its class's
                    // layout (module invariant) and is owned by the list.
                    unsafe { dealloc(block.get(), layout(class)) };
                }
                len.set(0);
            }
        });
    }
}

thread_local! {
    static LISTS: Lists = const {
        Lists {
            blocks: [const { [const { Cell::new(ptr::null_mut()) }; KEEP] }; CLASSES],
            len: [const { Cell::new(0) }; CLASSES],
            state: Cell::new(UNREGISTERED),
        }
    };
    static RELEASE: Release = const { Release };
}

/// A block of `class`'s layout: a spare one if this thread has one.
#[inline]
pub(crate) fn alloc(class: usize) -> NonNull<u8> {
    let spare = LISTS.with(|lists| {
        let len = lists.len[class].get();
        let n = len.checked_sub(1)?;
        lists.len[class].set(n);
        Some(lists.blocks[class][n].get())
    });
    match spare.and_then(NonNull::new) {
        Some(block) => block,
        None => fresh(class),
    }
}

#[cold]
fn fresh(class: usize) -> NonNull<u8> {
    let layout = layout(class);
    // SAFETY: class layouts have a non-zero size.
    let block = unsafe { global_alloc(layout) };
    NonNull::new(block).unwrap_or_else(|| handle_alloc_error(layout))
}

/// Gives back a block that `alloc(class)` handed out.
///
/// # Safety
///
/// `block` must come from `alloc(class)`, hold no live value, and not be
/// used again.
#[inline]
pub(crate) unsafe fn free(class: usize, block: NonNull<u8>) {
    let kept = LISTS.with(|lists| {
        let len = lists.len[class].get();
        if len == KEEP || (lists.state.get() != KEEPING && !start_keeping(lists)) {
            return false;
        }
        lists.blocks[class][len].set(block.as_ptr());
        lists.len[class].set(len + 1);
        true
    });
    if !kept {
        // SAFETY: `alloc(class)` allocates with this layout (invariant).
        unsafe { dealloc(block.as_ptr(), layout(class)) };
    }
}

/// Registers `Release`, so blocks can be kept; `false` once the thread is
/// exiting (blocks kept now would never be freed).
#[cold]
#[inline(never)]
fn start_keeping(lists: &Lists) -> bool {
    if lists.state.get() == UNREGISTERED && RELEASE.try_with(|_| ()).is_ok() {
        lists.state.set(KEEPING);
        return true;
    }
    lists.state.set(EXITED);
    false
}
