//! Thread state: what each thread keeps of its current context
//! ([`Current`]: the context, the read cache, the count of `with`
//! borrows), and the map versions parked for those borrows.
//! Switching contexts is `switch`'s, reading `read`'s, writing `write`'s.
//!
//! **Invariant:** the read cache answers only for the current context's
//! map as it is: its version moves on (`refresh`) after every switch and
//! every write, before anything the write let go of is dropped. The thread-locals here have no destructor,
//! so they work until the thread's last moment (in other thread-locals'
//! destructors too).

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ptr;

use super::state::Context;
use crate::map::Map;
use crate::read_cache::ReadCache;

pub(super) struct Current {
    pub(super) ctx: Cell<*const Context>,
    /// Recent lookups in the current map, moved to a new version at every
    /// switch and every write.
    pub(super) cache: ReadCache,
    /// Twice the number of `ContextVar::with` borrows live in the current
    /// entry (while any is, writes must copy rather than mutate in place),
    /// plus [`PARKED_BIT`] if `PARKED` holds anything: one word, so ending
    /// a borrow is one decrement and one comparison. An entry of another
    /// context sets it aside (`Current::enter`).
    pub(super) readers: Cell<usize>,
}

/// The bit of `Current::readers` that says `PARKED` holds something.
pub(super) const PARKED_BIT: usize = 1;
/// One borrow in `Current::readers`.
pub(super) const READER: usize = 2;

crate::sync::thread_local! {
    static CURRENT: Current = const {
        Current {
            ctx: Cell::new(ptr::null()),
            cache: ReadCache::new(),
            readers: Cell::new(0),
        }
    };
    /// Map versions kept alive for `with` borrows of the current entry that
    /// may still point into them; emptied when the last borrow ends. No
    /// destructor (it is empty whenever no borrow is live), so it works
    /// during thread teardown too.
    pub(super) static PARKED: Cell<ManuallyDrop<Vec<Map>>> = const { Cell::new(ManuallyDrop::new(Vec::new())) };
    /// The parked versions of the entries under the current one, set aside
    /// while it runs (see `Current::enter`): one list per such entry that
    /// had any. Empty when no entry is; no destructor, as `PARKED`.
    pub(super) static STASHED: Cell<ManuallyDrop<Vec<Vec<Map>>>> = const { Cell::new(ManuallyDrop::new(Vec::new())) };
}

/// This thread's `Current`, reached through a tiny closure so that
/// `LocalKey::with` inlines to a thread-pointer access (a bigger closure was
/// left out of line on the read path: twice the instructions).
#[inline(always)]
pub(super) fn current() -> &'static Current {
    let cur = CURRENT.with(ptr::from_ref);
    // SAFETY: `CURRENT` has no destructor, so it lives as long as the
    // thread, and the reference never leaves it (`Current` is not `Sync`).
    unsafe { &*cur }
}

/// This thread's token for `Sharing`: the address of its `CURRENT`,
/// unique among live threads, never 0, and with its low bit clear.
#[inline]
pub(super) fn token(cur: &Current) -> usize {
    ptr::from_ref(cur).addr()
}

impl Current {
    /// Brings the read cache in step with the current context's map: a
    /// new version, so that no slot filled before answers. (A miss reads
    /// the map itself; the hits never needed more.)
    #[inline]
    pub(super) fn refresh(&self) {
        self.cache.bump();
    }
}
