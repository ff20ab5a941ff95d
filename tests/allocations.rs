//! What reaches the global allocator, counted per thread by a counting
//! allocator: small value boxes are recycled from the thread's spare blocks
//! (`src/spare.rs`), so a `set` and `reset` repeated in a loop allocates
//! nothing once the loop is warm, while big boxes go to the allocator each
//! time; and a thread that exits gives every block it kept back.
//!
//! Pure core (no runtime).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

use contextvars::{Context, ContextVar};

/// The system allocator, counting each thread's allocations, and the blocks
/// a tracked thread allocated and did not free.
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread's allocations and frees count in `TRACKED_LIVE`.
    /// (No destructor: readable until the thread is gone, also from the
    /// other thread-locals' destructors.)
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

/// Blocks allocated by tracked threads minus blocks they freed.
static TRACKED_LIVE: AtomicIsize = AtomicIsize::new(0);

fn track(change: isize) {
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        TRACKED_LIVE.fetch_add(change, Ordering::SeqCst);
    }
}

fn bump(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = counter.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards to `System`, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS);
        track(1);
        // SAFETY: as the caller promised.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-1);
        // SAFETY: as the caller promised.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

static SMALL: ContextVar<u64> = ContextVar::new("small");
static BIG: ContextVar<[u64; 32]> = ContextVar::new("big");

/// What 100 rounds of `set`, `get` and `reset` of `var` in the current
/// context allocate, after 4 rounds to warm (the map's nodes, the first
/// box); `value(i)` is round `i`'s value. Each round checks that `get` sees
/// the value set, and that the reset gives back what was there before.
fn allocs_of_set_reset_rounds<T>(var: &ContextVar<T>, value: impl Fn(u64) -> T) -> usize
where
    T: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    let outside = var.get().ok();
    let round = |i: u64| {
        let token = var.set(value(i));
        assert_eq!(var.get().ok(), Some(value(i)));
        var.reset(token).unwrap();
        assert_eq!(var.get().ok(), outside);
    };
    (0..4).for_each(round);
    let before = allocs();
    (0..100).for_each(round);
    allocs() - before
}

#[test]
fn small_boxes_are_recycled_and_big_ones_are_not() {
    std::thread::spawn(|| {
        let ctx = Context::new();
        ctx.run(|| {
            let small = allocs_of_set_reset_rounds(&SMALL, |i| i);
            let big = allocs_of_set_reset_rounds(&BIG, |i| [i; 32]);
            assert_eq!(
                (small, big),
                (0, 100),
                "allocations for 100 small and 100 big boxes"
            );
        });
    })
    .join()
    .unwrap();
}

static MEDIUM: ContextVar<[u64; 4]> = ContextVar::new("medium");

/// What a thread running `work` allocated and did not free, from the
/// moment it starts `work` to its exit.
fn left_allocated_by_a_thread(work: fn()) -> isize {
    // One tracked thread at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap();
    let before = TRACKED_LIVE.load(Ordering::SeqCst);
    std::thread::spawn(move || {
        TRACKED.with(|t| t.set(true));
        work();
    })
    .join()
    .unwrap();
    TRACKED_LIVE.load(Ordering::SeqCst) - before
}

/// The spare blocks a thread kept are freed when it exits: everything the
/// thread allocated (its contexts, maps, boxes and spare lists) is given
/// back by the time it is joined, as by a thread that does nothing.
#[test]
fn a_thread_that_exits_gives_back_every_block_it_kept() {
    // The thread frees what its spawner allocated for it (its closure): the
    // same for every thread.
    let idle = left_allocated_by_a_thread(|| {});
    let work = || {
        let ctx = Context::new();
        ctx.run(|| {
            for i in 0..20 {
                let small = SMALL.set(i);
                let medium = MEDIUM.set([i; 4]);
                MEDIUM.reset(medium).unwrap();
                SMALL.reset(small).unwrap();
            }
            SMALL.set(7);
        });
        drop(ctx);
        SMALL.set(8); // in the thread's base context
    };
    // Once untracked, for what lives as long as the process (the
    // variables' ids, registered on first use).
    std::thread::spawn(work).join().unwrap();
    assert_eq!(left_allocated_by_a_thread(work), idle, "blocks leaked");
}

/// Enough variables that the root is a branch (a flat root holds 4), few
/// enough that, with ids given out in turn, no two share a slot of it (32).
const MANY: usize = 12;
static MANY_VARS: [ContextVar<u64>; MANY] = [const { ContextVar::new("many") }; MANY];

/// A `set` and `reset` of a variable the context lacks, in a context big
/// enough for its root to be a branch: the branch keeps the room the
/// removal frees (`Child::Vacant`), so once warm the pair allocates
/// nothing, as in a flat root. (A variable whose slot another one holds
/// needs a node of the two each time: not this case.)
#[test]
fn adding_and_removing_a_variable_in_a_branch_allocates_nothing_once_warm() {
    std::thread::spawn(|| {
        let ctx = Context::new();
        ctx.run(|| {
            for (i, var) in MANY_VARS[1..].iter().enumerate() {
                var.set(i as u64);
            }
            let missing = &MANY_VARS[0];
            assert!(missing.get().is_err(), "set and removed each round");
            assert_eq!(
                allocs_of_set_reset_rounds(missing, |i| i),
                0,
                "allocations for 100 pairs"
            );
            assert_eq!(MANY_VARS[MANY - 1].get(), Ok(MANY as u64 - 2));
        });
    })
    .join()
    .unwrap();
}

/// A `scope` boxes its value as a `set` does: a small box is a spare block,
/// so once warm small scopes reach the allocator in no kind of context; a
/// big one goes to the allocator once a scope (and is not recycled).
#[test]
fn scopes_box_their_values_as_sets_do() {
    std::thread::spawn(|| {
        let big: [u64; 32] = std::array::from_fn(|i| i as u64);
        let small_scopes = |n: u64| {
            for i in 0..n {
                assert_eq!(SMALL.sync_scope(i, || SMALL.get()), Ok(i));
                assert_eq!(SMALL.sync_scope(i, || SMALL.with(|v| v.copied())), Some(i));
            }
        };
        small_scopes(4); // warm: the base context and the spare blocks
        let before = allocs();
        small_scopes(100);
        assert_eq!(allocs() - before, 0, "base context, small values");
        contextvars::wrap(|| {
            small_scopes(4);
            let before = allocs();
            small_scopes(100);
            assert_eq!(allocs() - before, 0, "a task's own context, small values");
        })();
        let shared = Context::new();
        shared.run(|| {
            small_scopes(4);
            let before = allocs();
            small_scopes(100);
            assert_eq!(allocs() - before, 0, "a shared context, small values");
            let before = allocs();
            for _ in 0..10 {
                assert_eq!(BIG.sync_scope(big, || BIG.get()), Ok(big));
            }
            assert_eq!(allocs() - before, 10, "a big value: one box a scope");
        });
    })
    .join()
    .unwrap();
}
