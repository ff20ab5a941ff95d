//! Spare memory for small value boxes, kept per thread: a `set` allocates a
//! box and the matching `reset` frees one, so a short list of freed blocks
//! turns that pair into two thread-local pushes and pops instead of a trip
//! through the global allocator (measured: about a third of a `set`+`reset`
//! with glibc's `malloc`; see BENCHMARKS.md).
//!
//! Blocks come in four size classes (16, 32, 48 and 64 bytes, all aligned to
//! 16); larger or more aligned boxes go straight to the global allocator.
//! Each thread keeps one block per class in a hot cell and at most [`KEEP`]
//! more in a list, frees the rest, and frees what it kept when it exits.
//! The hot cell is taken first and filled first, so a box freed and one made
//! right after (a scope after a scope, a `reset` then a `set`) pass through
//! one cell; the list's length is touched only when the cell is empty or
//! full.
//!
//! The lists live in a thread-local of their own without a destructor,
//! reached through a tiny closure that inlines to a thread-pointer access
//! ([`lists`]); callers that hold them already pass them in ([`alloc`],
//! [`free`]).
//!
//! **Invariant:** every block in a list, and every block `alloc` hands out for
//! a class, was allocated with exactly that class's layout; so a block can be
//! returned to the global allocator with [`layout`] of its class, whichever
//! thread and path it ends on.

use std::alloc::{Layout, alloc as global_alloc, dealloc, handle_alloc_error};
use std::cell::Cell;
use std::ptr::NonNull;

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

/// A thread's lists. No destructor, so the thread-local that holds them is
/// reached without a liveness check; blocks are listed only while
/// [`Release`] (which has one) is registered to free them at thread exit.
pub(crate) struct Lists {
    /// Listed blocks are the first `len[class]`; the rest are stale (a
    /// dangling pointer at first), never read.
    blocks: [[Cell<NonNull<u8>>; KEEP]; CLASSES],
    /// One more block per class, in front of the list: a `free` followed
    /// by an `alloc` (a scope, a `set` and `reset`, over and over) then
    /// passes the block through one cell, without the length's round trip.
    hot: [Cell<Option<NonNull<u8>>>; CLASSES],
    len: [Cell<usize>; CLASSES],
    /// How many blocks a list may hold: 0 until [`Release`] is registered
    /// and again once it has run, [`KEEP`] in between (so this also says
    /// whether blocks are kept). One comparison on the hot path covers both
    /// "full" and "not keeping".
    cap: Cell<usize>,
    /// Whether `Release` has run, or could not be registered (the thread is
    /// exiting): with `cap` at 0, this tells "not yet" from "never again".
    exited: Cell<bool>,
}

/// Frees the thread's listed blocks when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let lists = lists();
        lists.exited.set(true);
        lists.cap.set(0);
        let classes = lists.blocks.iter().zip(&lists.len).zip(&lists.hot);
        for (class, ((blocks, len), hot)) in classes.enumerate() {
            let listed = blocks[..len.get()].iter().map(Cell::get);
            for block in listed.chain(hot.take()) {
                // SAFETY: a kept block was allocated with its class's layout
                // (module invariant) and is owned by the lists.
                unsafe { dealloc(block.as_ptr(), layout(class)) };
            }
            len.set(0);
        }
    }
}

impl Lists {
    /// Empty lists, keeping nothing yet.
    pub(crate) const fn new() -> Lists {
        Lists {
            blocks: [const { [const { Cell::new(NonNull::dangling()) }; KEEP] }; CLASSES],
            hot: [const { Cell::new(None) }; CLASSES],
            len: [const { Cell::new(0) }; CLASSES],
            cap: Cell::new(0),
            exited: Cell::new(false),
        }
    }
}

thread_local! {
    static RELEASE: Release = const { Release };
}

thread_local! {
    static LISTS: Lists = const { Lists::new() };
}

/// This thread's lists, reached through a tiny closure so that
/// `LocalKey::with` inlines to a thread-pointer access.
#[inline(always)]
pub(crate) fn lists() -> &'static Lists {
    let lists = LISTS.with(std::ptr::from_ref);
    // SAFETY: `LISTS` has no destructor, so it lives as long as the thread,
    // and the reference never leaves it (`Lists` is not `Sync`).
    unsafe { &*lists }
}

/// A block of `class`'s layout: a spare one if this thread has one.
/// `lists` are this thread's ([`lists`]; a caller that already holds them
/// passes them, which spares a thread-local access that does not always
/// inline).
#[inline]
pub(crate) fn alloc(lists: &Lists, class: usize) -> NonNull<u8> {
    if let Some(block) = lists.hot[class].take() {
        return block;
    }
    let len = lists.len[class].get();
    if len == 0 {
        return fresh(class);
    }
    lists.len[class].set(len - 1);
    // `len` is at most `KEEP` (`free`), so the mask changes nothing but
    // the bounds check it saves.
    lists.blocks[class][(len - 1) % KEEP].get()
}

#[cold]
fn fresh(class: usize) -> NonNull<u8> {
    let layout = layout(class);
    // SAFETY: class layouts have a non-zero size.
    let block = unsafe { global_alloc(layout) };
    NonNull::new(block).unwrap_or_else(|| handle_alloc_error(layout))
}

/// Gives back a block that `alloc(class)` handed out, to this thread's
/// `lists`.
///
/// # Safety
///
/// `block` must come from `alloc(_, class)` (on any thread), hold no live
/// value, and not be used again.
#[inline]
pub(crate) unsafe fn free(lists: &Lists, class: usize, block: NonNull<u8>) {
    if lists.hot[class].get().is_none() && lists.cap.get() != 0 {
        lists.hot[class].set(Some(block));
        return;
    }
    let len = lists.len[class].get();
    if len < lists.cap.get() {
        // `cap` is at most `KEEP`: the mask saves the bounds check.
        lists.blocks[class][len % KEEP].set(block);
        lists.len[class].set(len + 1);
        return;
    }
    if lists.cap.get() == 0 && start_keeping(lists) {
        // The first block this thread keeps: nothing was kept before.
        lists.hot[class].set(Some(block));
        return;
    }
    // SAFETY: `alloc(class)` allocates with this layout (invariant).
    unsafe { dealloc(block.as_ptr(), layout(class)) };
}

/// Registers `Release`, so blocks can be kept; `false` once the thread is
/// exiting (blocks kept now would never be freed).
#[cold]
#[inline(never)]
fn start_keeping(lists: &Lists) -> bool {
    // Under loom the lists live in loom's thread-local (`context`'s
    // `CURRENT`), which `Release`, a `std` one, cannot reach when it runs:
    // nothing is kept there.
    if !cfg!(loom) && !lists.exited.get() && RELEASE.try_with(|_| ()).is_ok() {
        lists.cap.set(KEEP);
        return true;
    }
    lists.exited.set(true);
    false
}

#[cfg(test)]
mod tests {
    use std::alloc::Layout;

    use super::{CLASSES, KEEP, STEP, alloc, class_of, free, layout, lists};
    use crate::counted::{Counted, Counter};
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
            let blocks: Vec<_> = (0..KEEP + 4).map(|_| alloc(lists(), class)).collect();
            for block in &blocks {
                assert_eq!(block.as_ptr().addr() % STEP, 0, "aligned to 16");
                // SAFETY: the block is `layout(class)` big, and ours.
                unsafe { block.as_ptr().write_bytes(0xA5, layout(class).size()) };
            }
            let (freed_first, kept_last) = (blocks[KEEP + 3], blocks[3]);
            for block in blocks.into_iter().rev() {
                // SAFETY: from `alloc(class)`, holding nothing, not used again.
                unsafe { free(lists(), class, block) };
            }
            // Of the blocks freed in reverse, the first fills the hot cell,
            // the next `KEEP` the list (a stack, down to `[3]`), and the
            // last three go back. They come out hot cell first, then the
            // list from its top.
            let again = alloc(lists(), class);
            assert_eq!(again, freed_first);
            let next = alloc(lists(), class);
            assert_eq!(next, kept_last);
            // SAFETY: as above.
            unsafe { free(lists(), class, next) };
            // SAFETY: as above.
            unsafe { free(lists(), class, again) };
        }
    }

    /// A block handed to another thread.
    struct Block(std::ptr::NonNull<u8>);
    // SAFETY: a spare block is plain memory owned by whoever holds it.
    unsafe impl Send for Block {}

    #[test]
    fn a_block_freed_on_another_thread_joins_that_threads_list() {
        let block = Block(alloc(lists(), 1));
        std::thread::spawn(move || {
            let block = block;
            // SAFETY: from `alloc(1)` on the spawning thread, holding nothing.
            unsafe { free(lists(), 1, block.0) };
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

    #[repr(align(32))]
    #[derive(Clone, Copy, Default)]
    struct Align32;

    fn values_of_size_are_dropped_once<const N: usize, A>()
    where
        A: Copy + Default + Send + Sync + 'static,
    {
        let var: ContextVar<Sized<N, A>> = ContextVar::new("sized");
        let live = Counter::new();
        let make = || Sized {
            _payload: [7; N],
            _align: A::default(),
            _counted: Counted::new(&live),
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
        assert_eq!(live.live(), 1);
        // The last value is freed on another thread, which then exits.
        std::thread::spawn(move || drop(ctx)).join().unwrap();
        assert_eq!(live.live(), 0, "size {N}: nothing leaked");
    }

    /// Boxes of every size and alignment class, and bigger ones, are each
    /// freed once, with their own layout.
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
