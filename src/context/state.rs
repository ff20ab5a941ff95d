//! A context's state: the [`Context`] struct (its identity, map, generator
//! frame, fork link, list of scoped values and sharing flags), how it is
//! made, and how an access to its map is opened ([`Context::lock`]). What
//! the public type does with it is `api`'s.
//!
//! **Invariant:** a context's map (and frame) is written only by the one
//! thread on which that context is current, and never while a reader on
//! another thread reads it: both hold the context's lock for the access
//! ([`Context::lock`]); a private context (a thread's base
//! context, or one entered through a unique borrow) is reachable from one
//! thread only and takes no lock. So the owner may read the map without any
//! lock or atomic (the read path).

use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::{Arc, OnceLock};

use super::frame::Frame;
use super::scoped::Scoped;
use super::sharing::{Locked, Sharing};
use crate::ids::next_id;
use crate::map::{Map, Value, VarId};
use crate::sync::{AtomicPtr, AtomicU64, Ordering};

/// A mapping from context variables to values: the state one logical flow of
/// work (a request, a task, a job) carries with it.
///
/// A `Context` is entered with [`run`](Context::run); while it is entered,
/// [`ContextVar::set`](crate::ContextVar::set) writes into it, and the change
/// stays visible through the `Context` afterwards. Copies are O(1)
/// ([`copy`](Context::copy), [`copy_context`](crate::copy_context)) and
/// independent: changing one never changes another.
///
/// `Context` is deliberately not `Clone`, because a clone could mean a copy or
/// a second handle to the same state. Copy it with `copy()`; share one context
/// between owners with `Arc<Context>`.
///
/// ```
/// use contextvars::{Context, ContextVar};
///
/// static TENANT: ContextVar<&'static str> = ContextVar::new("tenant");
///
/// let ctx = Context::new();
/// ctx.run(|| TENANT.set("acme"));
/// assert_eq!(ctx.get(&TENANT), Some("acme"));
/// assert!(TENANT.get().is_err()); // the caller's context is untouched
/// ```
pub struct Context {
    /// The context's identity (tokens record it), 0 until first asked for:
    /// most copies are entered, read and dropped without anyone asking,
    /// and a fresh id costs a thread-local round trip (see [`Context::id`]).
    id: AtomicU64,
    /// Who has it entered through a shared borrow, who waits, and the lock.
    pub(super) sharing: Sharing,
    /// Whether no other thread can reach this context now: a thread's base
    /// context always, any other while entered through a unique borrow
    /// (`run_exclusive`). Accesses to a private context take no lock.
    pub(super) private: bool,
    /// Whether this is a thread's base context (see `misuse`).
    pub(super) base: bool,
    /// The values. Never dropped as a field, nor are `frame` and `fork`:
    /// the drop of a context lets go of each itself (see `Drop for
    /// Context`), so that the drop of a plain copy has no field to look at
    /// after it.
    pub(super) map: ManuallyDrop<crate::sync::UnsafeCell<Map>>,
    /// For a resumption of a generator (see `generator`): its own values
    /// and the caller's map under them; `None` for every other context.
    /// `Context::release` takes it out (a context with a frame always
    /// releases).
    pub(super) frame: ManuallyDrop<crate::sync::UnsafeCell<Option<Box<Frame>>>>,
    /// For the child of a [`Fork`](crate::Fork): the fork it belongs to,
    /// which says which tokens cross between it and its parent (tokens
    /// made in it record it).
    pub(super) fork: ManuallyDrop<Option<Arc<ForkLink>>>,
    /// The newest `scope`d value not yet written into `map` (see
    /// `scoped`), or null; each links to the one before. Written only by
    /// the thread that has the context entered: a push with a release store,
    /// anything that unlinks entries inside `lock` (unless
    /// `private`). Read by other threads inside `lock`.
    pub(super) scoped: AtomicPtr<Scoped>,
}

// SAFETY: `map` and `frame` are the only fields without their own
// synchronisation. They are written only by the thread on which this context
// is current, inside `lock` (or, while `private`, by the one thread
// that can reach the context at all); every reader on another thread reads
// inside `lock`, which excludes such a write (both take
// `Sharing::lock`); and `Sharing`'s entry (acquire/release) makes a context
// current on one thread at a time and orders one thread's writes before
// the next thread's entry. The values in the map are `Send + Sync`.
unsafe impl Sync for Context {}

/// What ties a fork's child to its parent, shared by the fork, the child's
/// context and every token made in the child: which context the fork was
/// made in, and, once merged, which variables the merge applied. A token
/// made in the child resets in the parent exactly for those; a token made
/// in the parent resets in the child.
pub(crate) struct ForkLink {
    /// The id of the context the fork was made in.
    pub(crate) parent: u64,
    /// Set by the merge that applied the child's changes: their variables.
    applied: OnceLock<Vec<VarId>>,
}

impl ForkLink {
    /// A link to the context with id `parent`, not merged yet.
    pub(crate) fn new(parent: u64) -> ForkLink {
        ForkLink {
            parent,
            applied: OnceLock::new(),
        }
    }

    /// Records what the merge applied: the child's tokens of these
    /// variables now reset in the parent.
    pub(crate) fn merged(&self, applied: Vec<VarId>) {
        let _ = self.applied.set(applied);
    }

    /// Whether the merge of this fork applied the child's value of `var`.
    pub(crate) fn applied(&self, var: VarId) -> bool {
        self.applied.get().is_some_and(|vars| vars.contains(&var))
    }
}

impl Context {
    /// A context with map `map`, entered nowhere; its id is drawn when
    /// first asked for.
    #[inline]
    pub(crate) fn from_map(map: Map, private: bool) -> Context {
        Context {
            id: AtomicU64::new(0),
            sharing: Sharing::new(),
            private,
            base: false,
            map: ManuallyDrop::new(crate::sync::UnsafeCell::new(map)),
            frame: ManuallyDrop::new(crate::sync::UnsafeCell::new(None)),
            fork: ManuallyDrop::new(None),
            scoped: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// A context with map `map` and the id `id` (from `next_id`), which
    /// something outside it already records.
    pub(crate) fn with_id(id: u64, map: Map) -> Context {
        let ctx = Context::from_map(map, false);
        ctx.id.store(id, Ordering::Relaxed);
        ctx
    }

    /// A new, empty context whose map has room for `room` entries without
    /// growing (see `Map::with_room`).
    #[cfg(feature = "http")]
    pub(crate) fn with_room(room: usize) -> Context {
        Context::from_map(Map::with_room(room), false)
    }

    /// The child context of a fork: an identity of its own, the parent's
    /// values (`map`), and the fork's link.
    pub(crate) fn for_fork(map: Map, link: Arc<ForkLink>) -> Context {
        let mut ctx = Context::from_map(map, false);
        *ctx.fork = Some(link);
        ctx
    }

    /// A thread's base context: private, and marked for the misuse check.
    pub(super) fn base() -> Context {
        let mut base = Context::from_map(Map::default(), true);
        base.base = true;
        base
    }

    /// A context for one resumption of a generator with id `id`: `map` is
    /// the generator's own values, `frame` holds the caller's under them.
    pub(crate) fn for_generator(id: u64, map: Map, frame: Frame) -> Context {
        let mut ctx = Context::with_id(id, map);
        *ctx.frame.get_mut() = Some(Box::new(frame));
        ctx
    }

    /// A generator's resumption context: the caller's value of `id`, which
    /// reads fall through to when the generator has none of its own.
    ///
    /// # Safety
    ///
    /// Only on the thread where the context is current (the frame's writer).
    #[cold]
    pub(super) unsafe fn outer_value(&self, id: VarId) -> Option<&Value> {
        // SAFETY: caller.
        unsafe { self.frame.with(|frame| &*frame) }
            .as_deref()
            .and_then(|frame| frame.outer_value(id))
    }

    /// The context's id: unique among all contexts for the life of the
    /// process, and the same every time it is asked for.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        match self.id.load(Ordering::Relaxed) {
            0 => self.draw_id(),
            id => id,
        }
    }

    /// Whether the context's id is `id` (never 0), without drawing one: a
    /// context whose id was never drawn has been recorded nowhere, so it is
    /// no context that anything holding an id means.
    #[inline]
    pub(crate) fn has_id(&self, id: u64) -> bool {
        self.id.load(Ordering::Relaxed) == id
    }

    /// Draws the id on first use. Two threads may ask at once (a reader of a
    /// shared context, and its owner): the first to store wins, and the
    /// other takes its id (ids are never 0).
    #[cold]
    #[inline(never)]
    fn draw_id(&self) -> u64 {
        let fresh = next_id();
        match self
            .id
            .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            Err(drawn) => drawn,
        }
    }

    /// The head of the list of scoped values, as the thread that has this
    /// context entered (the list's only writer) sees it.
    #[inline]
    pub(super) fn own_scoped(&self) -> *const Scoped {
        self.scoped.load(Ordering::Relaxed)
    }

    /// The map of a context not entered anywhere.
    pub(crate) fn map_mut(&mut self) -> &mut Map {
        self.map.get_mut()
    }

    /// The generator frame of a context made by `for_generator`.
    pub(crate) fn frame_mut(&mut self) -> Option<&mut Frame> {
        self.frame.get_mut().as_deref_mut()
    }

    /// Opens the context for an access another thread could see half done:
    /// a write by its owner (the thread on which it is current), or a read
    /// from a thread where it is not current. Both take the one lock, so
    /// neither meets the other mid-way; a private context, which no other
    /// thread can reach, takes nothing.
    #[inline(always)]
    pub(super) fn lock(&self) -> Option<Locked<'_>> {
        (!self.private).then(|| self.sharing.lock())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_drawn_once_and_no_two_contexts_share_one() {
        let (a, b) = (Context::from_map(Map::default(), false), Context::default());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), a.id(), "the id stays");
        assert_eq!(Context::with_id(a.id(), Map::default()).id(), a.id());
        // Threads that ask at once for the id of a context nobody asked
        // before all get the same one.
        for _ in 0..50 {
            let shared = Context::from_map(Map::default(), false);
            let seen: Vec<u64> = std::thread::scope(|s| {
                let asks: Vec<_> = (0..4).map(|_| s.spawn(|| shared.id())).collect();
                asks.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert!(seen.iter().all(|&id| id == seen[0] && id != 0), "{seen:?}");
            assert_eq!(shared.id(), seen[0]);
        }
    }
}
