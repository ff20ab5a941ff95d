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

#[cfg(test)]
mod tests {
    use std::alloc::Layout;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{CLASSES, KEEP, STEP, alloc, class_of, free, layout};
    use crate::{Context, ContextVar};

    #[test]
    fn classes_cover_small_boxes_aligned_up_to_16() {
        assert_eq!(class_of(Layout::new::<[u8; 1]>()), Some(0));
        assert_eq!(class_of(Layout::new::<[u8; 16]>()), Some(0));
        assert_eq!(class_of(Layout::new::<[u8; 17]>()), Some(1));
        assert_eq!(class_of(Layout::new::<[u8; 64]>()), Some(CLASSES - 1));
        assert_eq!(class_of(Layout::new::<[u8; 65]>()), None, "too big");
        assert_eq!(class_of(Layout::new::<()>()), None, "zero-sized");
        let over_aligned = Layout::from_size_align(16, 2 * STEP).unwrap();
        assert_eq!(class_of(over_aligned), None);
        for class in 0..CLASSES {
            let l = layout(class);
            assert_eq!(class_of(l), Some(class), "a class's own layout");
        }
    }

    #[test]
    fn freed_blocks_are_handed_out_again_and_extra_ones_go_back() {
        for class in 0..CLASSES {
            // More than a list keeps (which also empties whatever an earlier
            // test left in this thread's list): the extra ones go back to
            // the allocator, and Miri checks each with its layout.
            let blocks: Vec<_> = (0..KEEP + 4).map(|_| alloc(class)).collect();
            for block in &blocks {
                assert_eq!(block.as_ptr().addr() % STEP, 0, "aligned to 16");
                // SAFETY: the block is `layout(class)` big, and ours.
                unsafe { block.as_ptr().write_bytes(0xA5, layout(class).size()) };
            }
            let kept_last = blocks[4];
            for block in blocks.into_iter().rev() {
                // SAFETY: from `alloc(class)`, holding nothing, not used again.
                unsafe { free(class, block) };
            }
            // The list is a stack: of the blocks freed in reverse, `[4]` was
            // the last one it had room for, so it comes back first.
            let again = alloc(class);
            assert_eq!(again, kept_last);
            // SAFETY: as above.
            unsafe { free(class, again) };
        }
    }

    /// A block handed to another thread.
    struct Block(std::ptr::NonNull<u8>);
    // SAFETY: a spare block is plain memory owned by whoever holds it.
    unsafe impl Send for Block {}

    #[test]
    fn a_block_freed_on_another_thread_joins_that_threads_list() {
        let block = Block(alloc(1));
        std::thread::spawn(move || {
            let block = block;
            // SAFETY: from `alloc(1)` on the spawning thread, holding nothing.
            unsafe { free(1, block.0) };
            // It is freed with the thread's list when the thread exits:
            // Miri reports a leak otherwise.
        })
        .join()
        .unwrap();
    }

    /// A counted value with `N` bytes of payload and the alignment of `A`.
    struct Sized<const N: usize, A: Copy + Default + Send + Sync + 'static> {
        _payload: [u8; N],
        _align: A,
        _counted: Counted,
    }

    /// Counts its live instances.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[repr(align(32))]
    #[derive(Clone, Copy, Default)]
    struct Align32;

    fn values_of_size_are_dropped_once<const N: usize, A>()
    where
        A: Copy + Default + Send + Sync + 'static,
    {
        let var: ContextVar<Sized<N, A>> = ContextVar::new("sized");
        let live = Arc::new(AtomicUsize::new(0));
        let make = || {
            live.fetch_add(1, Ordering::SeqCst);
            Sized {
                _payload: [7; N],
                _align: A::default(),
                _counted: Counted(live.clone()),
            }
        };
        let ctx = Context::new();
        ctx.run(|| {
            // Boxes made and freed on this thread, over and over (recycled).
            for _ in 0..50 {
                let token = var.set(make());
                var.reset(token).unwrap();
            }
            var.set(make());
        });
        assert_eq!(live.load(Ordering::SeqCst), 1);
        // The last value is freed on another thread, which then exits.
        std::thread::spawn(move || drop(ctx)).join().unwrap();
        assert_eq!(live.load(Ordering::SeqCst), 0, "size {N}: nothing leaked");
    }

    /// Moved from `tests/core.rs`.
    #[test]
    fn values_of_every_size_and_alignment_are_dropped_exactly_once() {
        // Small boxes come from per-thread spare blocks, big or over-aligned
        // ones from the global allocator; Miri checks each is freed with the
        // layout it was allocated with.
        values_of_size_are_dropped_once::<0, u8>();
        values_of_size_are_dropped_once::<8, u64>();
        values_of_size_are_dropped_once::<24, u8>();
        values_of_size_are_dropped_once::<40, u16>();
        values_of_size_are_dropped_once::<41, u8>();
        values_of_size_are_dropped_once::<200, u64>();
        values_of_size_are_dropped_once::<8, Align32>();
    }
}
