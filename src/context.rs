//! [`Context`], the per-thread *current context*, and the switch between them
//! ([`Context::run`]).
//!
//! Every thread has a pointer to its current context. It starts null, which
//! reads as an empty context; the first write creates the thread's private
//! *base* context. `run` points it at another context for the duration of a
//! closure and points it back when the closure returns or unwinds.
//!
//! **Invariant:** a context's map is written only by the one thread on which
//! that context is current, and only while it holds the context's write lock.
//! So that thread may read the map without any lock or atomic (the fast read
//! path of [`ContextVar`](crate::ContextVar)), and every other reader takes
//! the lock. A context is current on at most one thread because entering it
//! takes its `entered` flag, which `run` releases on the way out.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::hint::spin_loop;
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;

use crate::ContextVar;
use crate::error::AlreadyEntered;
use crate::map::{Garbage, Map, RawRoot, Value, VarId};
use crate::sync::{AtomicBool, Ordering};

/// A mapping from context variables to values: the state one logical flow of
/// work (a request, a task, a job) carries with it.
///
/// A `Context` is entered with [`run`](Context::run); while it is entered,
/// [`ContextVar::set`](crate::ContextVar::set) writes into it, and the change
/// stays visible through the `Context` afterwards. Copies are O(1)
/// ([`copy`](Context::copy), [`copy_context`]) and independent: changing one
/// never changes another.
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
    id: u64,
    entered: AtomicBool,
    lock: AtomicBool,
    /// The thread's base context is never reachable from another thread, so
    /// its writes skip the lock.
    private: bool,
    /// Whether this is a thread's base context (see `bleed`).
    base: bool,
    map: UnsafeCell<Map>,
    /// For a generator's layer (see `layer`): the caller's map that the
    /// layer's own values sit on; `None` for every other context.
    outer: Option<Box<Map>>,
}

// SAFETY: `map` is the only field without its own synchronisation. It is
// written only by the thread on which this context is current, holding `lock`
// (or, for a `private` base context, by the one thread that can reach it at
// all); every reader on another thread takes `lock` first; and `entered` (an
// acquire/release flag) makes a context current on one thread at a time and
// orders one thread's writes before the next thread's entry. The values in the
// map are `Send + Sync`.
unsafe impl Sync for Context {}

struct Current {
    ctx: Cell<*const Context>,
    /// The current context's map root, kept in step with it (by `enter` and
    /// after every write), so a read goes from here straight to the root.
    root: Cell<RawRoot>,
    /// The version of `root`, in the high 32 bits (the low ones are 0),
    /// bumped whenever `root` is: a lookup cached under an older version is
    /// stale. Never 0.
    version: Cell<u64>,
    /// Recent lookups, by variable id (direct-mapped).
    cache: [Cell<Cached>; CACHE_SLOTS],
    /// Twice the number of `ContextVar::with` borrows into the current map
    /// live on this thread (while any is, writes must copy rather than
    /// mutate in place), plus [`MOURNING`] if `GRAVEYARD` holds anything: one
    /// word, so ending a borrow is one decrement and one comparison.
    readers: Cell<usize>,
}

/// The bit of `Current::readers` that says `GRAVEYARD` holds something.
const MOURNING: usize = 1;
/// One borrow in `Current::readers`.
const READER: usize = 2;

thread_local! {
    static CURRENT: Current = const {
        Current {
            ctx: Cell::new(ptr::null()),
            root: Cell::new(RawRoot::EMPTY),
            version: Cell::new(FIRST_VERSION),
            cache: [const { Cell::new(Cached::NONE) }; CACHE_SLOTS],
            readers: Cell::new(0),
        }
    };
    static BASE: Base = Base(Context { base: true, ..Context::from_map(next_id(), Map::default(), true) });
    /// Map versions kept alive for `with` borrows that may still point into
    /// them; emptied when the last borrow ends.
    static GRAVEYARD: RefCell<Vec<Map>> = const { RefCell::new(Vec::new()) };
}

/// How many lookups each thread remembers.
const CACHE_SLOTS: usize = 16;

/// `Current::version` counts in steps of this, so that a version and an id
/// below 2^32 combine into one word with an `|`.
const VERSION_STEP: u64 = 1 << 32;
const FIRST_VERSION: u64 = VERSION_STEP;

/// One remembered lookup: the value box (`None`: no value) that the variable
/// with id `tag & 0xffff_ffff` has in the current map as of version
/// `tag & !0xffff_ffff`. (Variable ids stay below 2^32; see `var`.)
///
/// This is CPython's `ContextVar` cache (`var_cached_tsver`), kept per thread
/// instead of per variable: a hit reads the thread-local and then the value,
/// skipping the map, whatever its size. Two words, so a slot is found with a
/// mask and checked with one comparison.
#[derive(Clone, Copy)]
struct Cached {
    tag: u64,
    value: Option<NonNull<()>>,
}

impl Cached {
    /// Matches no lookup: versions are never 0.
    const NONE: Cached = Cached {
        tag: 0,
        value: None,
    };
}

impl Current {
    /// Makes `ctx` (null: none) current; returns the one it replaces.
    #[inline]
    fn enter(&self, ctx: *const Context) -> *const Context {
        let prev = self.ctx.replace(ctx);
        self.refresh();
        prev
    }

    /// Brings the read cache in step with the current context's map.
    #[inline]
    fn refresh(&self) {
        let ctx = self.ctx.get();
        let root = if ctx.is_null() {
            RawRoot::EMPTY
        } else {
            // SAFETY: a current context is alive (see `with_value`) and only
            // this thread writes its map.
            unsafe { (*(*ctx).map.get()).raw_root() }
        };
        self.root.set(root);
        let next = self.version.get().wrapping_add(VERSION_STEP);
        if next == 0 {
            // Versions wrapped (after 2^32 switches and writes): forget all,
            // so that no slot from the last round can match again.
            wrap_versions(self);
        } else {
            self.version.set(next);
        }
    }
}

/// The thread's base context, dropped at thread exit.
struct Base(Context);

impl Drop for Base {
    fn drop(&mut self) {
        let this: *const Context = &self.0;
        let _ = CURRENT.try_with(|cur| {
            if cur.ctx.get() == this {
                cur.enter(ptr::null());
            }
        });
    }
}

/// Context ids are handed out in blocks per thread so creating a context does
/// not contend on a shared counter.
#[inline]
pub(crate) fn next_id() -> u64 {
    const BLOCK: u64 = 1024;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    IDS.with(|ids| {
        let (next, end) = ids.get();
        if next < end {
            ids.set((next + 1, end));
            next
        } else {
            let start = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            ids.set((start + 1, start + BLOCK));
            start
        }
    })
}

/// Holds a context's write lock; released on drop.
struct WriteLock<'a>(Option<&'a AtomicBool>);

impl Drop for WriteLock<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(lock) = self.0 {
            lock.store(false, Ordering::Release);
        }
    }
}

impl Context {
    /// A new, empty context.
    ///
    /// ```
    /// let ctx = contextvars::Context::new();
    /// assert!(ctx.is_empty());
    /// ```
    pub fn new() -> Context {
        Context::from_map(next_id(), Map::default(), false)
    }

    #[inline]
    pub(crate) fn from_map(id: u64, map: Map, private: bool) -> Context {
        Context {
            id,
            entered: AtomicBool::new(false),
            lock: AtomicBool::new(false),
            private,
            base: false,
            map: UnsafeCell::new(map),
            outer: None,
        }
    }

    /// A context for one resumption of a generator's layer: `map` is `outer`
    /// with the layer's own values on top.
    pub(crate) fn layered(id: u64, map: Map, outer: Map) -> Context {
        Context {
            outer: Some(Box::new(outer)),
            ..Context::from_map(id, map, false)
        }
    }

    /// An independent copy, O(1): it starts with this context's current
    /// values, and changes to either are never seen by the other.
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let a = Context::new();
    /// a.run(|| N.set(1));
    /// let b = a.copy();
    /// b.run(|| N.set(2));
    /// assert_eq!((a.get(&N), b.get(&N)), (Some(1), Some(2)));
    /// ```
    pub fn copy(&self) -> Context {
        Context::from_map(next_id(), self.read(Map::clone), false)
    }

    /// Runs `f` with this context as the current one, then restores the
    /// previous context, also if `f` panics.
    ///
    /// # Panics
    ///
    /// If this context is already entered, on this thread or another (see
    /// [`try_run`](Context::try_run) for the fallible form).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let ctx = Context::new();
    /// let seen = ctx.run(|| {
    ///     N.set(5);
    ///     N.get()
    /// });
    /// assert_eq!(seen, Ok(5));
    /// assert!(N.get().is_err());
    /// ```
    #[track_caller]
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`run`](Context::run), but returns [`AlreadyEntered`] instead of
    /// panicking when this context is already entered.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use contextvars::Context;
    ///
    /// let ctx = Arc::new(Context::new());
    /// let other = ctx.clone();
    /// ctx.run(|| {
    ///     // Entered here, so another thread cannot enter it either.
    ///     let refused = std::thread::spawn(move || other.try_run(|| ()).is_err());
    ///     assert!(refused.join().unwrap());
    /// });
    /// ```
    pub fn try_run<R>(&self, f: impl FnOnce() -> R) -> Result<R, AlreadyEntered> {
        if self
            .entered
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(AlreadyEntered { context: self.id });
        }
        let prev = CURRENT.with(|cur| cur.enter(self));
        let _exit = Exit { ctx: self, prev };
        Ok(f())
    }

    /// Runs `f` inside this context through a unique borrow: no other handle
    /// can reach the context meanwhile, so entering takes no `entered` flag
    /// and writes take no lock (the context is private for the duration).
    #[inline]
    pub(crate) fn run_exclusive<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let was_private = std::mem::replace(&mut self.private, true);
        let this: *mut Context = self;
        let prev = CURRENT.with(|cur| cur.enter(this));
        let _exit = ExitExclusive {
            ctx: this,
            prev,
            was_private,
        };
        f()
    }

    /// An independent copy, through a unique borrow (so without the lock).
    #[cfg(feature = "rayon")]
    pub(crate) fn copy_exclusive(&mut self) -> Context {
        Context::from_map(next_id(), self.map.get_mut().clone(), false)
    }

    /// The value of `var` in this context, without the variable's default.
    ///
    /// If the context is entered on another thread right now, this shows its
    /// live state (taking its lock for the moment of the read).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static LEVEL: ContextVar<u8> = ContextVar::with_default("level", 3);
    /// let ctx = Context::new();
    /// assert_eq!(ctx.get(&LEVEL), None); // defaults are not context values
    /// ctx.run(|| LEVEL.set(9));
    /// assert_eq!(ctx.get(&LEVEL), Some(9));
    /// ```
    pub fn get<T: Clone + Send + Sync + 'static>(&self, var: &ContextVar<T>) -> Option<T> {
        let id = var.id();
        // Clone the `Arc` under the lock, the `T` outside it: `T::clone` is
        // user code and may itself touch contexts.
        let value: Option<Value> = self.read(|map| map.get(id).cloned());
        value.map(|v| {
            v.downcast::<T>()
                .expect("a variable's id always maps to its type")
                .clone()
        })
    }

    /// Whether `var` has a value in this context (defaults do not count).
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static N: ContextVar<u32> = ContextVar::new("n");
    /// let ctx = Context::new();
    /// assert!(!ctx.contains(&N));
    /// ctx.run(|| N.set(1));
    /// assert!(ctx.contains(&N));
    /// ```
    pub fn contains<T>(&self, var: &ContextVar<T>) -> bool {
        let id = var.id();
        self.read(|map| map.contains(id))
    }

    /// How many variables have a value in this context.
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static A: ContextVar<u32> = ContextVar::new("a");
    /// static B: ContextVar<u32> = ContextVar::new("b");
    /// let ctx = Context::new();
    /// ctx.run(|| {
    ///     A.set(1);
    ///     B.set(2);
    /// });
    /// assert_eq!(ctx.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.read(Map::len)
    }

    /// Whether no variable has a value in this context.
    ///
    /// ```
    /// assert!(contextvars::Context::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of the variables that have a value in this context, in no
    /// particular order. (Values are typed by their variable, so they are
    /// read with [`get`](Context::get).)
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let ctx = Context::new();
    /// ctx.run(|| USER.set("ada".into()));
    /// assert_eq!(ctx.names(), vec!["user"]);
    /// ```
    pub fn names(&self) -> Vec<&'static str> {
        let ids: Vec<VarId> = self.read(|map| map.iter().map(|(id, _)| id).collect());
        ids.into_iter().map(crate::var::name_of).collect()
    }

    /// Runs `f` on this context's map: lock-free on the thread where the
    /// context is current (the only writer), under the lock elsewhere.
    fn read<R>(&self, f: impl FnOnce(&Map) -> R) -> R {
        let current = CURRENT.with(|cur| std::ptr::eq(cur.ctx.get(), self));
        let _lock = if current {
            None
        } else {
            Some(self.write_lock())
        };
        // SAFETY: see the invariant on `Sync`: either this thread is the only
        // writer, or we hold the lock every writer takes.
        f(unsafe { &*self.map.get() })
    }

    /// Takes the map out of a context that is not entered anywhere.
    pub(crate) fn into_map(self) -> Map {
        self.map.into_inner()
    }

    #[inline]
    fn write_lock(&self) -> WriteLock<'_> {
        if self.private {
            return WriteLock(None);
        }
        let mut spins = 0u32;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Holders never run user code under the lock, so it is short.
            spins += 1;
            if spins < 64 {
                spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        WriteLock(Some(&self.lock))
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl fmt::Debug for Context {
    /// Lists the context's variables by name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = self.names();
        names.sort_unstable();
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("vars", &names)
            .finish()
    }
}

/// Restores the previous context when `run` ends, returns or unwinds.
struct Exit<'a> {
    ctx: &'a Context,
    prev: *const Context,
}

impl Drop for Exit<'_> {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|cur| cur.enter(self.prev));
        self.ctx.entered.store(false, Ordering::Release);
    }
}

/// Restores the previous context when `run_exclusive` ends, returns or
/// unwinds.
struct ExitExclusive {
    ctx: *mut Context,
    prev: *const Context,
    was_private: bool,
}

impl Drop for ExitExclusive {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|cur| cur.enter(self.prev));
        // SAFETY: `ctx` comes from the `&mut Context` that `run_exclusive`
        // holds for as long as this guard lives, and the thread-local no
        // longer points at it.
        unsafe { (*self.ctx).private = self.was_private };
    }
}

/// Marks a `with` borrow on this thread for its lifetime; when the last one
/// ends, drops the map versions kept alive for it.
///
/// The thread-local is touched through tiny closures so that `LocalKey::with`
/// inlines to a direct thread-pointer access on the read path.
struct Reading;

impl Reading {
    #[inline]
    fn start() -> Reading {
        CURRENT.with(|cur| cur.readers.set(cur.readers.get() + READER));
        Reading
    }
}

impl Drop for Reading {
    #[inline]
    fn drop(&mut self) {
        let bury = CURRENT.with(|cur| {
            let left = cur.readers.get() - READER;
            cur.readers.set(left);
            left == MOURNING
        });
        if bury {
            bury_parked_versions();
        }
    }
}

#[cold]
#[inline(never)]
fn bury_parked_versions() {
    CURRENT.with(|cur| cur.readers.set(cur.readers.get() & !MOURNING));
    let dead = GRAVEYARD.with(|g| std::mem::take(&mut *g.borrow_mut()));
    drop(dead);
}

/// Calls `f` with the current context's value for `id`, without locks,
/// atomics or clones. The reference stays valid for all of `f`, even if `f`
/// writes to the context: while `f` runs, writes copy instead of mutating.
///
/// `id` may be 0, for a variable not given an id yet: that never hits the
/// cache (no slot's tag holds id 0), and `assign` then gives it one.
#[inline]
pub(crate) fn with_value<R>(
    id: VarId,
    hint: usize,
    assign: impl FnOnce() -> VarId,
    f: impl FnOnce(Option<&Value>) -> R,
) -> R {
    let found = CURRENT.with(|cur| {
        // `hint` (the variable's address) only picks the slot, so finding
        // it does not wait for `id` to load; `id` decides a hit.
        let slot = &cur.cache[(hint >> 4) % CACHE_SLOTS];
        let cached = slot.get();
        if cached.tag == cur.version.get() | id {
            cached.value
        } else {
            look_up(cur, slot, if id == 0 { assign() } else { id })
        }
    });
    let _reading = Reading::start();
    // SAFETY: `found` is in the current map as of the current version: the
    // map holds a handle to it until it is written, and every write bumps
    // the version. The `readers` count makes every write during `f` copy the
    // nodes and park the old version in `GRAVEYARD`, so the box `f` borrows
    // is neither mutated nor freed until `f` returns.
    let value = found.map(|raw| unsafe { Value::borrow_raw(raw) });
    f(value.as_deref())
}

/// A cache miss: looks `id` up in the current map and remembers the answer
/// in `slot`.
#[cold]
#[inline(never)]
fn look_up(cur: &Current, slot: &Cell<Cached>, id: VarId) -> Option<NonNull<()>> {
    // SAFETY: `root` is the current map's (or an empty one), and the current
    // context is alive (`run` borrows it until it resets the pointer; the
    // base context clears the pointer when it is dropped).
    let value = unsafe { cur.root.get().get(id) }.map(Value::as_raw);
    let tag = cur.version.get() | id;
    slot.set(Cached { tag, value });
    value
}

/// The current context, opened for one write.
pub(crate) struct Target<'a> {
    /// The context's id, which tokens record.
    pub(crate) id: u64,
    pub(crate) map: &'a mut Map,
    /// For a generator's layer, the caller's map under it.
    pub(crate) outer: Option<&'a Map>,
    /// Nodes the write lets go of, dropped after the lock is released.
    pub(crate) garbage: &'a mut Garbage,
}

/// Runs `f` on the current context for writing, creating the thread's base
/// context if there is no current context yet. Everything `f` returns or
/// leaves in the garbage is dropped only after the lock is released, so no
/// value's destructor runs under it.
#[inline]
pub(crate) fn with_current_mut<R>(var: &'static str, f: impl FnOnce(Target<'_>) -> R) -> R {
    // Tiny closures around the thread-local, so each access inlines to a
    // thread-pointer load (as on the read path).
    let mut ctx = CURRENT.with(|cur| cur.ctx.get());
    if ctx.is_null() {
        ctx = enter_base();
    }
    // SAFETY: as in `with_value`, a current context is alive.
    let ctx = unsafe { &*ctx };
    if ctx.base {
        crate::bleed::check_base_write(var);
    }
    if CURRENT.with(|cur| cur.readers.get()) >= READER {
        park_current_version(ctx);
    }
    // Declared in this order so that, also on unwinding, the read cache is
    // refreshed before the garbage (perhaps the old root) is dropped.
    let mut garbage = Garbage::new();
    let refresh = Refresh;
    let result = {
        let _lock = ctx.write_lock();
        // SAFETY: this thread is the only writer (the context is current
        // here) and holds the lock that other readers take.
        let map = unsafe { &mut *ctx.map.get() };
        f(Target {
            id: ctx.id,
            map,
            outer: ctx.outer.as_deref(),
            garbage: &mut garbage,
        })
    };
    drop(refresh);
    drop(garbage);
    result
}

#[cold]
#[inline(never)]
fn wrap_versions(cur: &Current) {
    for slot in &cur.cache {
        slot.set(Cached::NONE);
    }
    cur.version.set(FIRST_VERSION);
}

/// Refreshes the read cache after a write, when dropped.
struct Refresh;

impl Drop for Refresh {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(Current::refresh);
    }
}

/// Makes the thread's base context current (creating it on first use).
#[cold]
#[inline(never)]
fn enter_base() -> *const Context {
    let base = BASE
        .try_with(|base| &base.0 as *const Context)
        .expect("contextvars: cannot set a context variable while this thread is being torn down");
    CURRENT.with(|cur| cur.enter(base));
    base
}

/// Keeps the current version of `ctx`'s map alive while `with` borrows
/// into it are live; the write that follows then copies instead of mutating.
#[cold]
#[inline(never)]
fn park_current_version(ctx: &Context) {
    // SAFETY: this thread is the only writer of its current context.
    let version = unsafe { (*ctx.map.get()).clone() };
    GRAVEYARD.with(|g| g.borrow_mut().push(version));
    CURRENT.with(|cur| cur.readers.set(cur.readers.get() | MOURNING));
}

/// The id of the current context, if the thread has one yet.
#[inline]
pub(crate) fn current_id() -> Option<u64> {
    CURRENT.with(|cur| {
        let ctx = cur.ctx.get();
        // SAFETY: as in `with_value`, a current context is alive.
        (!ctx.is_null()).then(|| unsafe { (*ctx).id })
    })
}

/// An O(1) copy of the current context: what a task, thread or callback
/// should start from to see the values the caller sees now.
///
/// ```
/// use contextvars::{copy_context, ContextVar};
///
/// static N: ContextVar<u32> = ContextVar::new("n");
/// N.set(1);
/// let ctx = copy_context();
/// N.set(2);
/// assert_eq!(ctx.get(&N), Some(1));
/// assert_eq!(ctx.run(|| N.get()), Ok(1));
/// ```
#[inline]
pub fn copy_context() -> Context {
    Context::from_map(next_id(), current_map(), false)
}

/// An O(1) copy of the current context's map.
#[inline]
pub(crate) fn current_map() -> Map {
    CURRENT.with(|cur| {
        let ctx = cur.ctx.get();
        if ctx.is_null() {
            Map::default()
        } else {
            // SAFETY: a current context is alive and only this thread writes
            // it, so reading it here needs no lock.
            unsafe { (*(*ctx).map.get()).clone() }
        }
    })
}

/// Captures a copy of the current context now and returns a closure that runs
/// `f` in it: the way to hand a callback to any pool or executor.
///
/// The closure is `Send + 'static` when `f` is.
///
/// ```
/// use contextvars::{wrap, ContextVar};
///
/// static REQUEST: ContextVar<u64> = ContextVar::new("request");
/// REQUEST.set(7);
/// let job = wrap(|| REQUEST.get());
/// let seen = std::thread::spawn(job).join().unwrap();
/// assert_eq!(seen, Ok(7));
/// ```
pub fn wrap<F, R>(f: F) -> impl FnOnce() -> R
where
    F: FnOnce() -> R,
{
    let mut ctx = copy_context();
    move || ctx.run_exclusive(f)
}

// ---- Task hooks (`crate::tokio::hooks`): entering a context by pointer. ----
// This block is the only part of this file that the task hooks use, apart
// from `Context::from_map`, `next_id` and `current_map`. A hook cannot wrap
// the poll in a closure (tokio calls "before poll" and "after poll" as two
// separate functions), so it enters and leaves by hand, as `run_exclusive`
// does inside one call.

/// Makes `ctx` the thread's current context and returns the one it replaces,
/// to be handed back to [`leave_raw`] when the poll ends.
///
/// # Safety
///
/// `ctx` must be alive and unreachable from every other thread (a private
/// context the caller owns, as `run_exclusive`'s `&mut` guarantees) until
/// [`leave_raw`] is called with the returned pointer on this same thread,
/// and every enter/leave pair on this thread must nest.
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
#[inline]
pub(crate) unsafe fn enter_raw(ctx: *const Context) -> *const Context {
    CURRENT.with(|cur| cur.enter(ctx))
}

/// Restores `prev`, the context [`enter_raw`] returned.
///
/// # Safety
///
/// `prev` must be what the matching [`enter_raw`] on this thread returned,
/// and still alive (it is: a context stays alive while it is entered under
/// another, see `Exit`, `ExitExclusive` and `Base`).
#[cfg(all(feature = "tokio", tokio_unstable, not(loom)))]
#[inline]
pub(crate) unsafe fn leave_raw(prev: *const Context) {
    CURRENT.with(|cur| cur.enter(prev));
}

// ---- end of the task hooks block ----

#[cfg(test)]
mod tests {
    use super::*;

    /// After 2^32 bumps the version wraps; every cached lookup must be
    /// forgotten then, or a slot from the last round could match again.
    #[test]
    fn wrapping_versions_forget_every_cached_lookup() {
        static V: ContextVar<u32> = ContextVar::new("v");
        let ctx = Context::new();
        ctx.run(|| {
            V.set(1);
            CURRENT.with(|cur| cur.version.set(0u64.wrapping_sub(VERSION_STEP)));
            assert_eq!(V.get(), Ok(1)); // cached under the last version
            V.set(2); // bumps the version: wraps
            CURRENT.with(|cur| {
                assert_eq!(cur.version.get(), FIRST_VERSION);
                assert!(cur.cache.iter().all(|slot| slot.get().tag == 0));
            });
            assert_eq!(V.get(), Ok(2));
        });
    }
}
