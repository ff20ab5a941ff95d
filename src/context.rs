//! [`Context`], the per-thread *current context*, and the switch between them
//! ([`Context::run`]).
//!
//! Every thread has a pointer to its current context. It starts null, which
//! reads as an empty context; the first write creates the thread's private
//! *base* context. `run` points it at another context for the duration of a
//! closure and points it back when the closure returns or unwinds.
//!
//! **Invariant:** a context's map is written only by the one thread on which
//! that context is current, and never while a reader on another thread reads
//! it: the writer opens each write with `Context::owner_lock` and the reader
//! its read with `Context::read_lock`, which exclude each other (through the
//! lock, or, where the asymmetric barrier of `barrier` is on, through the
//! owner's `busy` flag, so that the owner's write takes no locked
//! instruction). So that thread may read the map without any lock or atomic
//! (the fast read path of [`ContextVar`](crate::ContextVar)). A context is
//! current on at most one thread because entering it takes its `state`
//! word, which `run` releases on the way out.
//!
//! A context's values are dropped inside the context itself
//! (`Context::release`), so no destructor writes into the context of
//! whoever drops it; and the thread-locals reached at thread exit have no
//! destructor, so variables work in other thread-locals' destructors too.

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::Mutex;
use std::task::Waker;

use crate::ContextVar;
use crate::error::AlreadyEntered;
use crate::generator::Frame;
pub(crate) use crate::ids::next_id;
use crate::map::{Garbage, Map, RawRoot, Value, VarId};
use crate::read_cache::{ReadCache, Slot};
use crate::sync::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, spin_loop, yield_now};

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
    /// Who has this context entered through a shared borrow (`run`, a poll
    /// of an `Arc<Context>`): 0 for nobody, else that thread's [`token`],
    /// with [`WAITING`] set while polls of other tasks wait for their turn.
    state: AtomicUsize,
    /// Taken by every reader on another thread, and by the owner's writes
    /// where the asymmetric barrier is not [`enabled`](crate::barrier).
    lock: AtomicBool,
    /// Set by the owner (the thread that has the context entered through a
    /// shared borrow) for the length of each write, where the asymmetric
    /// barrier is enabled: a reader that holds `lock` waits for it to
    /// clear, and an owner that finds `lock` held clears it and takes the
    /// lock instead (see [`Context::owner_lock`]).
    busy: AtomicBool,
    /// Set by a reader on another thread that met the owner (the heavy
    /// side of the barrier) and cleared when the owner leaves: until then
    /// the owner takes the lock for every write, and later readers need no
    /// barrier. So a reader that reads in a loop pays the barrier once per
    /// entry, not once per read, and the owner no more than the lock.
    contended: AtomicBool,
    /// Whether no other thread can reach this context now: a thread's base
    /// context always, any other while entered through a unique borrow
    /// (`run_exclusive`). Writes to a private context skip `owner_lock`.
    private: bool,
    /// Whether this is a thread's base context (see `misuse`).
    base: bool,
    map: crate::sync::UnsafeCell<Map>,
    /// For a resumption of a generator (see `generator`): its own values
    /// and the caller's map under them; `None` for every other context.
    frame: crate::sync::UnsafeCell<Option<Box<Frame>>>,
    /// The newest `scope`d value not yet written into `map` (see
    /// [`scoped`]), or null; each links to the one before. Written only by
    /// the thread that has the context entered: a push with a release store,
    /// anything that unlinks entries inside `owner_lock` (unless
    /// `private`). Read by other threads inside `read_lock`.
    scoped: AtomicPtr<Scoped>,
}

// SAFETY: `map` and `frame` are the only fields without their own
// synchronisation. They are written only by the thread on which this context
// is current, inside `owner_lock` (or, while `private`, by the one thread
// that can reach the context at all); every reader on another thread reads
// inside `read_lock`, which excludes such a write (see `owner_lock`); and
// `state` (acquire/release) makes a context current on one thread at a time
// and orders one thread's writes before the next thread's entry.
// The values in the map are `Send + Sync`.
unsafe impl Sync for Context {}

/// The bit of `Context::state` that says polls wait in [`WAITERS`] for the
/// context to be left. Thread tokens are addresses of a word-aligned
/// thread-local, so their low bit is free.
const WAITING: usize = 1;

/// Wakers of polls that found their `Arc<Context>` entered on another thread,
/// by context id: woken all at once when it is left. Touched only when
/// polls contend for one context.
static WAITERS: Mutex<Vec<(u64, Waker)>> = Mutex::new(Vec::new());

/// How many times dropping a context empties it again when destructors of
/// its values keep setting new values in it (see `Context::release`).
const RELEASE_ROUNDS: usize = 16;

struct Current {
    ctx: Cell<*const Context>,
    /// The current context's map root, kept in step with it (by `enter` and
    /// after every write), so a read goes from here straight to the root.
    root: Cell<RawRoot>,
    /// Recent lookups in `root`, moved to a new version whenever `root` is.
    cache: ReadCache,
    /// Twice the number of `ContextVar::with` borrows into the current map
    /// live on this thread (while any is, writes must copy rather than
    /// mutate in place), plus [`PARKED_BIT`] if `PARKED` holds anything: one
    /// word, so ending a borrow is one decrement and one comparison.
    readers: Cell<usize>,
    /// The thread's spare value boxes (module `spare`): here rather than in
    /// a thread-local of their own, so that reaching them inlines.
    spare: crate::spare::Lists,
}

/// The bit of `Current::readers` that says `PARKED` holds something.
const PARKED_BIT: usize = 1;
/// One borrow in `Current::readers`.
const READER: usize = 2;

crate::sync::thread_local! {
    static CURRENT: Current = const {
        Current {
            ctx: Cell::new(ptr::null()),
            root: Cell::new(RawRoot::EMPTY),
            cache: ReadCache::new(),
            readers: Cell::new(0),
            spare: crate::spare::Lists::new(),
        }
    };
    static BASE: Base = Base(Context::base());
    /// A base context made after `BASE` was torn down (see `enter_base`).
    static LATE_BASE: LateBase = const { LateBase(Cell::new(ptr::null_mut())) };
    /// Map versions kept alive for `with` borrows that may still point into
    /// them; emptied when the last borrow ends. No destructor (it is empty
    /// whenever no borrow is live), so it works during thread teardown too.
    static PARKED: Cell<ManuallyDrop<Vec<Map>>> = const { Cell::new(ManuallyDrop::new(Vec::new())) };
}

impl Current {
    /// Makes `ctx` (null: none) current; returns the one it replaces.
    #[inline]
    fn enter(&self, ctx: *const Context) -> *const Context {
        if crate::observe::active() {
            return enter_observed(self, ctx);
        }
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
            // SAFETY: a current context is alive (see `read_current`) and only
            // this thread writes its map.
            unsafe { (*ctx).map.with(|map| (*map).raw_root()) }
        };
        self.root.set(root);
        self.cache.bump();
    }
}

/// This thread's token for `Context::state`: the address of its `CURRENT`,
/// unique among live threads, never 0, and with the [`WAITING`] bit clear.
#[inline]
fn token(cur: &Current) -> usize {
    ptr::from_ref(cur).addr()
}

/// The thread's base context, dropped at thread exit.
struct Base(Context);

impl Drop for Base {
    fn drop(&mut self) {
        // `CURRENT` has no destructor, so it is still there; after this the
        // context's own `Drop` releases its values inside it (see
        // `Context::release`), so their destructors can use variables.
        let this: *const Context = &self.0;
        CURRENT.with(|cur| {
            if cur.ctx.get() == this {
                // The same address, with a provenance this drop's `&mut`
                // allows: observers read the context being left, and the
                // pointer `enter_base` stored came from a shared borrow that
                // the thread-local's destructor has since invalidated.
                cur.ctx.set(this);
                cur.enter(ptr::null());
            }
        });
    }
}

/// A base context made on the heap for writes that come after the thread's
/// `BASE` was torn down (from another thread-local's destructor); freed by
/// this thread-local's own destructor, if it can still register one.
struct LateBase(Cell<*mut Context>);

impl Drop for LateBase {
    fn drop(&mut self) {
        let ctx = self.0.replace(ptr::null_mut());
        if ctx.is_null() {
            return;
        }
        CURRENT.with(|cur| {
            if cur.ctx.get() == ctx.cast_const() {
                cur.enter(ptr::null());
            }
        });
        // SAFETY: made by `Box::into_raw` in `enter_base`, and no longer
        // current, so nothing else points at it.
        drop(unsafe { Box::from_raw(ctx) });
    }
}

/// Holds a context's lock, or its owner's `busy` flag (see
/// [`Context::owner_lock`]); released on drop.
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

    /// A new, empty context whose map has room for `room` entries without
    /// growing (see `Map::with_room`).
    #[cfg(feature = "http")]
    pub(crate) fn with_room(room: usize) -> Context {
        Context::from_map(next_id(), Map::with_room(room), false)
    }

    #[inline]
    pub(crate) fn from_map(id: u64, map: Map, private: bool) -> Context {
        Context {
            id,
            state: AtomicUsize::new(0),
            lock: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            contended: AtomicBool::new(false),
            private,
            base: false,
            map: crate::sync::UnsafeCell::new(map),
            frame: crate::sync::UnsafeCell::new(None),
            scoped: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// A thread's base context: private, and marked for the misuse check.
    fn base() -> Context {
        let mut base = Context::from_map(next_id(), Map::default(), true);
        base.base = true;
        base
    }

    /// A context for one resumption of a generator with id `id`: `map` is
    /// the generator's own values, `frame` holds the caller's under them.
    pub(crate) fn for_generator(id: u64, map: Map, frame: Frame) -> Context {
        let mut ctx = Context::from_map(id, map, false);
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
    unsafe fn outer_value(&self, id: VarId) -> Option<&Value> {
        // SAFETY: caller.
        unsafe { self.frame.with(|frame| &*frame) }
            .as_deref()
            .and_then(|frame| frame.outer_value(id))
    }

    /// The head of the list of scoped values, as the thread that has this
    /// context entered (the list's only writer) sees it.
    #[inline]
    fn own_scoped(&self) -> *const Scoped {
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
    #[must_use = "a copy does nothing unless it is run or kept"]
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
        let Some(_exit) = self.try_enter() else {
            return Err(AlreadyEntered { context: self.id });
        };
        Ok(f())
    }

    /// Enters the context through a shared borrow, if nobody has it entered;
    /// the guard leaves it.
    #[inline]
    fn try_enter(&self) -> Option<Exit<'_>> {
        CURRENT.with(|cur| {
            self.state
                // SeqCst: see `read_lock`.
                .compare_exchange(0, token(cur), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
                .then(|| Exit {
                    ctx: self,
                    prev: cur.enter(self),
                })
        })
    }

    /// For a poll of a shared context: runs `f` inside it if it is free
    /// (`Ok(Some)`); if another thread has it entered, arranges for `waker`
    /// to be woken when it is left and returns `Ok(None)`; if this thread
    /// has it entered already, that is the `AlreadyEntered` error (waiting
    /// would never end).
    pub(crate) fn run_or_wait<R>(
        &self,
        waker: &Waker,
        f: impl FnOnce() -> R,
    ) -> Result<Option<R>, AlreadyEntered> {
        loop {
            if let Some(_exit) = self.try_enter() {
                return Ok(Some(f()));
            }
            if self.entered_here() {
                return Err(AlreadyEntered { context: self.id });
            }
            if self.wait_turn(waker) {
                return Ok(None);
            }
        }
    }

    /// Runs `f` inside this shared context, waiting (blocking the thread)
    /// while another thread has it entered; for drops, which cannot return
    /// `Pending`. If this thread has it entered already, `f` runs as it is:
    /// the context is this thread's (and, normally, the current one).
    pub(crate) fn run_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut spins = 0u32;
        loop {
            if let Some(_exit) = self.try_enter() {
                return f();
            }
            if self.entered_here() {
                return f();
            }
            backoff(&mut spins);
        }
    }

    /// Whether this thread has the context entered through a shared borrow.
    fn entered_here(&self) -> bool {
        let state = self.state.load(Ordering::Relaxed);
        CURRENT.with(|cur| state & !WAITING == token(cur))
    }

    /// Registers `waker` to be woken when the context is left; `false` if it
    /// was left meanwhile (try to enter again).
    #[cold]
    fn wait_turn(&self, waker: &Waker) -> bool {
        let mut waiters = WAITERS.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state == 0 {
                return false;
            }
            // Under the `WAITERS` lock: `Exit` clears the state first and
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
            .any(|(id, w)| *id == self.id && w.will_wake(waker));
        if !known {
            waiters.push((self.id, waker.clone()));
        }
        true
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
        ids.into_iter().map(crate::ids::name_of).collect()
    }

    /// The variables that have a value in this context, each with its name
    /// and its value as `Debug` shows it, sorted by name: for debugging and
    /// logs. A variable shows its value if it was declared
    /// [`debuggable`](ContextVar::debuggable) (its `T: Debug`), else `None`.
    ///
    /// The values are read under the context's lock where one is needed
    /// (only reference counts are taken), and formatted after it is
    /// released: a `Debug` impl is user code.
    ///
    /// ```
    /// use contextvars::{Context, ContextVar};
    ///
    /// static USER: ContextVar<&'static str> = ContextVar::new("user").debuggable();
    /// static SECRET: ContextVar<String> = ContextVar::new("secret");
    /// let ctx = Context::new();
    /// ctx.run(|| {
    ///     USER.set("ada");
    ///     SECRET.set("hunter2".into());
    /// });
    /// let entries: Vec<_> = ctx.entries().collect();
    /// assert_eq!(entries, [("secret", None), ("user", Some(r#""ada""#.to_string()))]);
    /// ```
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, Option<String>)> + use<> {
        let values: Vec<(VarId, Value)> =
            self.read(|map| map.iter().map(|(id, v)| (id, v.clone())).collect());
        let mut entries: Vec<(&'static str, Option<String>)> = values
            .iter()
            .map(|(id, value)| {
                let (name, fmt) = crate::ids::debug_info_of(*id);
                let shown = fmt.map(|fmt| format!("{:?}", ShowValue(value, fmt)));
                (name, shown)
            })
            .collect();
        entries.sort_unstable();
        entries.into_iter()
    }

    /// Runs `f` on this context's map: lock-free on the thread where the
    /// context is current (the only writer), under the lock elsewhere.
    fn read<R>(&self, f: impl FnOnce(&Map) -> R) -> R {
        let cur = current();
        if std::ptr::eq(cur.ctx.get(), self) {
            if !self.own_scoped().is_null() {
                write_scoped(cur);
            }
            // SAFETY: see the invariant on `Sync`: this thread is the only
            // writer.
            return self.map.with(|map| f(unsafe { &*map }));
        }
        let lock = self.read_lock();
        // SAFETY: as above: we hold the lock, and the owner is not writing
        // (`read_lock`).
        let map = self.map.with(|map| unsafe { &*map });
        // Acquire: the entries were linked without the lock (see `scoped`).
        let scoped = self.scoped.load(Ordering::Acquire);
        if scoped.is_null() {
            return f(map);
        }
        // Entered elsewhere, inside `scope`s: their values over a copy of
        // the map (only the thread that has the context entered writes it).
        let merged = with_scoped(map, scoped);
        drop(lock);
        f(&merged)
    }

    /// Opens the context for a write by its owner, the thread on which it is
    /// current: the lock, or only the `busy` flag where the asymmetric
    /// barrier is enabled, no reader holds the lock and none has met the
    /// owner in this entry (`contended`). Dekker's protocol: the owner
    /// stores `busy` and then loads `lock`, a reader stores `lock` and then
    /// loads `busy`, with the barrier's two sides between, so at least one
    /// of them sees the other; an owner that sees the lock held backs off
    /// and waits for it, a reader that sees `busy` waits for the write to
    /// end. So the owner's write costs plain stores and loads, and only a
    /// foreign reader pays (`membarrier`, once per entry).
    #[inline(always)]
    fn owner_lock(&self) -> WriteLock<'_> {
        if self.private {
            return WriteLock(None);
        }
        if crate::barrier::enabled() {
            // No write runs user code, so none nests in another (where one
            // did, the inner end would clear `busy` under the outer write).
            debug_assert!(
                !self.busy.load(Ordering::Relaxed),
                "a context's writes never nest"
            );
            self.busy.store(true, Ordering::Relaxed);
            crate::barrier::light();
            // SeqCst (a plain load on x86, a load-acquire on Arm): also
            // ordered after this thread's entry (`try_enter`, SeqCst) for
            // a reader that finds the context not entered (`read_lock`).
            // Acquire: the last reader's accesses happen before our write,
            // and so does its `contended`.
            if !self.lock.load(Ordering::SeqCst) && !self.contended.load(Ordering::Relaxed) {
                return WriteLock(Some(&self.busy));
            }
            self.busy.store(false, Ordering::Release);
        }
        self.take_lock()
    }

    /// Opens the context for a read from a thread where it is not current:
    /// the lock, and then, where the asymmetric barrier is enabled and the
    /// context is entered on another thread, the end of the owner's write
    /// under way (see [`owner_lock`](Context::owner_lock)).
    fn read_lock(&self) -> WriteLock<'_> {
        let lock = self.take_lock();
        if lock.0.is_some() && crate::barrier::enabled() {
            // loom takes `SeqCst` accesses for acquire/release ones: the
            // fence gives its model what the `SeqCst` lock and load below
            // give the real build.
            #[cfg(loom)]
            crate::sync::fence(Ordering::SeqCst);
            // SeqCst, as the lock's compare-and-swap: ordered after it for
            // the owner's entry, so if this sees the context not entered,
            // the owner's `lock` load (after its entry) sees the lock held.
            let owner = self.state.load(Ordering::SeqCst) & !WAITING;
            // Not entered: no write under way, and the last owner's are
            // ours (acquire, `Exit`'s release). Entered here: this thread
            // is not in the middle of a write. Contended: the owner takes
            // the lock, which we hold.
            if owner != 0 && owner != token(current()) && !self.contended.load(Ordering::Relaxed) {
                self.meet_owner(owner);
            }
        }
        lock
    }

    /// The reader's side of [`owner_lock`](Context::owner_lock)'s protocol,
    /// holding the lock: the heavy barrier, then the end of the owner's
    /// write under way. After it the owner (`owner`, its token) takes the
    /// lock until it leaves.
    #[cold]
    #[inline(never)]
    fn meet_owner(&self, owner: usize) {
        #[cfg(test)]
        MEET_OWNER_CALLS.with(|n| n.set(n.get() + 1));
        crate::barrier::heavy();
        let mut spins = 0u32;
        while self.busy.load(Ordering::Acquire) {
            backoff(&mut spins);
        }
        // Seen by the owner's next write through our release of the lock
        // (or the lock still held), and by the next reader through its
        // acquire of it. Only if the owner is still in: one that left
        // meanwhile has cleared the mark (`Exit`), and a mark set after
        // that would send the next entry's writes through the lock for
        // nothing. (A leave between this check and the store still can;
        // a mark left set only ever costs the lock, never a skipped
        // barrier: see ARCHITECTURE.md.)
        if self.state.load(Ordering::Relaxed) & !WAITING == owner {
            self.contended.store(true, Ordering::Relaxed);
        }
    }

    /// Takes the lock (none for a private context).
    #[inline]
    fn take_lock(&self) -> WriteLock<'_> {
        if self.private {
            return WriteLock(None);
        }
        let mut spins = 0u32;
        while self
            .lock
            // SeqCst: see `read_lock`.
            .compare_exchange_weak(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            // Holders never run user code under the lock, so it is short.
            backoff(&mut spins);
        }
        WriteLock(Some(&self.lock))
    }

    /// Drops the context's values inside the context itself, so that their
    /// destructors read and write this context, never the one the dropper
    /// happens to be in (a worker's, a caller's). They run after the values
    /// were taken out: they read defaults, and what they set is dropped in
    /// turn, round after round until nothing is left.
    #[cold]
    #[inline(never)]
    fn release(&mut self) {
        debug_assert!(
            self.own_scoped().is_null(),
            "scopes end inside their context"
        );
        for _ in 0..RELEASE_ROUNDS {
            let map = std::mem::take(self.map.get_mut());
            let frame = self.frame.get_mut().take();
            if map.is_empty() && frame.is_none() {
                return;
            }
            self.run_exclusive(move || drop((map, frame)));
        }
        // Destructors that set values whose destructors set values, without
        // end: stop rather than loop forever, and say so.
        let left = std::mem::take(self.map.get_mut());
        eprintln!(
            "contextvars: the values of context #{} kept setting new values while being dropped \
             ({} left after {RELEASE_ROUNDS} rounds); they are leaked",
            self.id,
            left.len()
        );
        std::mem::forget(left);
    }
}

impl Drop for Context {
    #[inline]
    fn drop(&mut self) {
        // A context whose root another map shares (a copy that never wrote)
        // drops no value: skip the switch.
        if self.frame.get_mut().is_some() || self.map.get_mut().owns_root() {
            self.release();
        }
    }
}

/// Waits a little longer each time: spinning first, then yielding.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        spin_loop();
    } else {
        yield_now();
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl fmt::Debug for Context {
    /// Lists the context's variables by name, with the values of those
    /// declared [`debuggable`](ContextVar::debuggable) (`..` for the
    /// others), as [`entries`](Context::entries) does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("vars", &Vars(self.entries().collect()))
            .finish()
    }
}

/// A context's entries as a `Debug` map: `name: value`, or `name: ..` for a
/// variable whose values are not shown.
struct Vars(Vec<(&'static str, Option<String>)>);

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Written as it is: `Debug` of the value, already rendered.
        struct Raw<'a>(&'a str);
        impl fmt::Debug for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(name, value)| (name, Raw(value.as_deref().unwrap_or("..")))),
            )
            .finish()
    }
}

/// A value with the debug formatter of its variable.
struct ShowValue<'a>(&'a Value, crate::ids::FmtValue);

impl fmt::Debug for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.1)(self.0, f)
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
        // The next owner starts without the lock; a reader that sees it
        // entered (acquire, through this release) sees this.
        self.ctx.contended.store(false, Ordering::Relaxed);
        let state = self.ctx.state.swap(0, Ordering::Release);
        if state & WAITING != 0 {
            wake_waiters(self.ctx.id);
        }
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
    // Outside the lock: a waker is user code.
    woken.into_iter().for_each(Waker::wake);
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
        let last = CURRENT.with(|cur| {
            let left = cur.readers.get() - READER;
            cur.readers.set(left);
            left == PARKED_BIT
        });
        if last {
            free_parked_versions();
        }
    }
}

#[cold]
#[inline(never)]
fn free_parked_versions() {
    #[cfg(test)]
    FREE_PARKED_CALLS.with(|n| n.set(n.get() + 1));
    CURRENT.with(|cur| cur.readers.set(cur.readers.get() & !PARKED_BIT));
    drop(ManuallyDrop::into_inner(PARKED.with(Cell::take)));
}

/// Calls `f` with the current context's value for `id`, without locks,
/// atomics or clones. The reference stays valid for all of `f`, even if `f`
/// writes to the context: while `f` runs, writes copy instead of mutating.
///
/// `id` may be 0, for a variable not given an id yet: that never hits the
/// cache (no slot's tag holds id 0), and `assign` then gives it one.
#[inline]
pub(crate) fn read_current<R>(
    id: VarId,
    hint: usize,
    assign: impl FnOnce() -> VarId,
    f: impl FnOnce(Option<&Value>) -> R,
) -> R {
    let cur = current();
    // `hint` (the variable's address) only picks the slot, so finding it
    // does not wait for `id` to load; `id` decides a hit.
    let slot = Slot::of(hint);
    let found = match cur.cache.get(slot, id) {
        Some(hit) => hit,
        None => look_up(cur, slot, if id == 0 { assign() } else { id }),
    };
    // A scoped value (see `SCOPED`) needs no count, its entry holds it; nor
    // does no value.
    let counted = found.is_some_and(|raw| raw.as_ptr().addr() & SCOPED == 0);
    let _reading = counted.then(Reading::start);
    // SAFETY: `found` is in the current map as of the current version: the
    // map holds a handle to it until it is written, and every write bumps
    // the version. The `readers` count makes every write during `f` copy the
    // nodes and park the old version in `PARKED`, so the box `f` borrows
    // is neither mutated nor freed until `f` returns. Or `found` is the
    // value of a `scope` under way on this thread, tagged `SCOPED`: its
    // entry holds a handle to it until the scope ends, after `f` returns
    // (scopes nest), whatever `f` writes (a write hands the map a handle
    // of its own).
    let value = found.map(|raw| unsafe { Value::borrow_raw(untag(raw)) });
    f(value.as_deref())
}

/// The low bit of a value's address in the read cache: the value is a
/// `scope`'s, held by the scope's entry (value boxes are word-aligned, so
/// the bit is free).
const SCOPED: usize = 1;

/// `raw`, a scoped value's box, tagged `SCOPED` for the read cache.
#[inline(always)]
fn tag_scoped(raw: NonNull<()>) -> NonNull<()> {
    // SAFETY: an address with its low bit set is not null.
    unsafe { NonNull::new_unchecked(raw.as_ptr().map_addr(|a| a | SCOPED)) }
}

/// The box `raw` (from the read cache) points to, without the `SCOPED` tag.
#[inline(always)]
fn untag(raw: NonNull<()>) -> NonNull<()> {
    // SAFETY: a box's address is word-aligned and not null, so clearing
    // the tag bit leaves it not null.
    unsafe { NonNull::new_unchecked(raw.as_ptr().map_addr(|a| a & !SCOPED)) }
}

/// A cache miss: looks `id` up in the current map and remembers the answer
/// in `slot`.
#[cold]
#[inline(never)]
fn look_up(cur: &Current, slot: Slot, id: VarId) -> Option<NonNull<()>> {
    #[cfg(test)]
    LOOK_UPS.with(|n| n.set(n.get() + 1));
    // SAFETY: a current context is alive (see below). Its `scoped` links
    // entries that live in the frames of the `scoped` calls under way inside
    // it on this thread, which unlink them before they end.
    let mut entry = unsafe { cur.ctx.get().as_ref().and_then(|c| c.own_scoped().as_ref()) };
    while let Some(e) = entry {
        if e.id == id {
            // SAFETY: the value is taken only after the entry left the list.
            let value = Some(tag_scoped(unsafe { &*e.value.get() }.as_raw()));
            // Every read of a variable goes through its own slot (its
            // address), the one the scope's end clears.
            #[cfg(debug_assertions)]
            assert!(slot == e.slot, "a variable is read through its own slot");
            cur.cache.fill(slot, id, value);
            return value;
        }
        // SAFETY: as above.
        entry = unsafe { e.prev.as_ref() };
    }
    // SAFETY: `root` is the current map's (or an empty one), and the current
    // context is alive (`run` borrows it until it resets the pointer; the
    // base context clears the pointer when it is dropped).
    let mut value = unsafe { cur.root.get().get(id) };
    if value.is_none() {
        // SAFETY: as above; the frame, like the map, is written only by
        // this thread while its context is current.
        value = unsafe { cur.ctx.get().as_ref().and_then(|ctx| ctx.outer_value(id)) };
    }
    let value = value.map(Value::as_raw);
    cur.cache.fill(slot, id, value);
    value
}

#[cfg(test)]
thread_local! {
    /// Read-cache misses on this thread (unit tests count them).
    pub(crate) static LOOK_UPS: Cell<u64> = const { Cell::new(0) };
    /// Calls of `wake_waiters` (the global `WAITERS` lock) on this thread.
    static WAKE_WAITERS_CALLS: Cell<u64> = const { Cell::new(0) };
    /// Calls of `free_parked_versions` (a borrow's slow end) on this thread.
    static FREE_PARKED_CALLS: Cell<u64> = const { Cell::new(0) };
    /// Calls of `meet_owner` (the heavy barrier) on this thread.
    static MEET_OWNER_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// The current context, opened for one write: what `set` and `reset` see
/// of it. (In a generator's resumption context this is the generator's own
/// map: what it sets and resets is its own, and reads fall through to the
/// caller's values; see `generator`.)
pub(crate) struct Writer<'a> {
    /// The context's id, which tokens record.
    pub(crate) context: u64,
    map: &'a mut Map,
    /// Nodes the write lets go of, dropped after the write is closed.
    garbage: &'a mut Garbage,
}

impl Writer<'_> {
    /// Sets `id` to `value`; returns the value it replaces (what a token
    /// records).
    #[inline]
    pub(crate) fn insert(&mut self, id: VarId, value: Value) -> Option<Value> {
        self.map.insert(id, value, self.garbage)
    }

    /// Gives `id` back its value `old` (`None`: no value), as `reset` does;
    /// returns the value that goes, to be dropped once the write is over.
    #[inline]
    pub(crate) fn restore(&mut self, id: VarId, old: Option<Value>) -> Option<Value> {
        match old {
            Some(old) => self.map.insert(id, old, self.garbage),
            None => self.map.remove(id, self.garbage),
        }
    }
}

/// Runs `f` on the current context for writing, creating the thread's base
/// context if there is no current context yet. Everything `f` returns or
/// leaves in the garbage is dropped only after the write is closed, so no
/// value's destructor runs under it. `checked`: the variable a `set` writes,
/// for the misuse check (`misuse`); a reset is never a misuse.
#[inline]
pub(crate) fn write_current<R>(
    checked: Option<&'static str>,
    f: impl FnOnce(Writer<'_>) -> R,
) -> R {
    let cur = current();
    let mut ctx = cur.ctx.get();
    if ctx.is_null() {
        ctx = enter_base();
    }
    // SAFETY: as in `read_current`, a current context is alive.
    let ctx = unsafe { &*ctx };
    if !ctx.own_scoped().is_null() {
        write_scoped(cur);
    }
    if let Some(var) = checked {
        if ctx.base {
            crate::misuse::check_base_write(var);
        }
    }
    if cur.readers.get() >= READER {
        park_current_version(ctx);
    }
    // Declared in this order so that, also on unwinding, the read cache is
    // refreshed before the garbage (perhaps the old root) is dropped.
    let mut garbage = Garbage::new();
    let refresh = Refresh;
    let result = {
        let _lock = ctx.owner_lock();
        // SAFETY: this thread is the only writer (the context is current
        // here), and no reader on another thread reads now (`owner_lock`).
        let map = ctx.map.with_mut(|map| unsafe { &mut *map });
        f(Writer {
            context: ctx.id,
            map,
            garbage: &mut garbage,
        })
    };
    drop(refresh);
    drop(garbage);
    result
}

/// Refreshes the read cache after a write, when dropped.
struct Refresh;

impl Drop for Refresh {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(Current::refresh);
    }
}

/// A value set by `ContextVar::scope` that lives beside its context's map
/// instead of in it, while nothing needs the map (see [`scoped`]). It lives
/// in the frame of the `scoped` call.
pub(crate) struct Scoped {
    id: VarId,
    /// The read-cache slot of the variable: the only slot that may hold
    /// this value, cleared when the entry leaves the list (the scope's end
    /// knows it; kept here only to check that reads find it there).
    #[cfg(debug_assertions)]
    slot: Slot,
    /// Dropped by the scope's end, with the variable's own type.
    value: UnsafeCell<ManuallyDrop<Value>>,
    prev: *const Scoped,
    /// `Some(old)` once the value was written into the map (`old` is the
    /// value it replaced there, which the scope's end gives back).
    written: Cell<Option<Option<Value>>>,
}

/// Runs `f` with `value` as `id`'s value in the current context: `scope`.
///
/// The value is not written into the map. It goes on the context's list of
/// scoped values and straight into the thread's read cache, and the scope's
/// end takes it off again: no map write, no version bump, no token. In a
/// shared context (entered with `run` on a `&Context` or an `Arc<Context>`)
/// other threads' `Context::get` read the list too ([`Context::read`],
/// inside `read_lock`), so taking an entry off is a write (`owner_lock`: a
/// reader may be walking it); putting one on is a release store. In a
/// private context (a thread's base context, a task's or callback's own)
/// neither opens a write.
/// Whatever needs the map as it is writes the list into it first
/// ([`write_scoped`]): a write (`set`, `reset`), a copy, a read through
/// `Context` itself on this thread. The scope's end then restores the map
/// as `reset` does. A switch to another context leaves the list where it
/// is: it belongs to its context, not to the thread.
///
/// **Invariant:** every value on a context's list is the newest value of
/// its variable in that context and is in no map; only the entry's own
/// read-cache slot ever holds it (every read of a variable, `ContextVar`'s,
/// the observers', the snapshots', goes through the slot of its address),
/// and that slot is cleared when it leaves the list. The value's box is on
/// the heap from the start and never moves: a `get` may be cloning it (user
/// code, which may copy or write the context) while a copy or a write puts
/// it into a map, and both must be the one value.
#[inline(always)]
pub(crate) fn scoped<T: Send + Sync + 'static, R>(
    id: VarId,
    hint: usize,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    let cur = current();
    let mut ctx = cur.ctx.get();
    if ctx.is_null() {
        ctx = enter_base();
    }
    // SAFETY: as in `read_current`, a current context is alive; and it stays
    // alive and current until `f` returns (contexts are left in the order
    // they were entered, also on unwinding).
    let ctx = unsafe { &*ctx };
    let value = Value::new_in(value, || &cur.spare);
    let slot = Slot::of(hint);
    let raw = value.as_raw();
    // Its end takes what it owns (`written`, `value`) out of it, also on
    // unwinding: nothing is left for a drop to look at again.
    let entry = ManuallyDrop::new(Scoped {
        id,
        #[cfg(debug_assertions)]
        slot,
        value: UnsafeCell::new(ManuallyDrop::new(value)),
        prev: ctx.own_scoped(),
        written: Cell::new(None),
    });
    // No lock: a reader elsewhere sees the list with or without the entry,
    // both whole (release: with its fields), and none can be mid-way
    // through an entry that goes, as unlinking is a write (`owner_lock`).
    ctx.scoped
        .store(ptr::from_ref(&*entry).cast_mut(), Ordering::Release);
    // Holds the entry by a shared reference: another thread may be reading
    // it until the unlinking has opened its write.
    let end = ScopeEnd::<T> {
        ctx,
        entry: &entry,
        slot,
        of: PhantomData,
    };
    // Tagged: a read of it takes no borrow count (see `read_current`).
    cur.cache.fill(slot, id, Some(tag_scoped(raw)));
    let result = f();
    // The end inline on the way out; the guard's drop does it on unwinding.
    ManuallyDrop::new(end).end();
    result
}

/// This thread's `Current`, reached through a tiny closure so that
/// `LocalKey::with` inlines to a thread-pointer access (a bigger closure was
/// left out of line on the read path: twice the instructions).
#[inline(always)]
fn current() -> &'static Current {
    let cur = CURRENT.with(ptr::from_ref);
    // SAFETY: `CURRENT` has no destructor, so it lives as long as the
    // thread, and the reference never leaves it (`Current` is not `Sync`).
    unsafe { &*cur }
}

/// This thread's spare value boxes (module `spare`).
#[inline(always)]
pub(crate) fn spare_lists() -> &'static crate::spare::Lists {
    &current().spare
}

/// Ends a `scoped` call, also on unwinding.
struct ScopeEnd<'a, T: 'static> {
    ctx: &'a Context,
    entry: &'a Scoped,
    /// The variable's read-cache slot, the only one that may hold the
    /// entry's value.
    slot: Slot,
    of: PhantomData<T>,
}

impl<T: 'static> Drop for ScopeEnd<'_, T> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<T: 'static> ScopeEnd<'_, T> {
    /// Takes the entry off (or restores the map it was written into), and
    /// drops the value. Runs once: by `scoped`, or by the drop.
    #[inline(always)]
    fn end(&self) {
        // Scopes nest, and writing the list into the map empties it whole:
        // an entry is still the head exactly when it was not written.
        let value = if ptr::eq(self.ctx.own_scoped(), self.entry) {
            debug_assert!(self.entry.written.take().is_none());
            {
                let _lock = self.ctx.owner_lock();
                // No reader elsewhere is still walking the entry when its
                // frame goes (`owner_lock`).
                self.ctx
                    .scoped
                    .store(self.entry.prev.cast_mut(), Ordering::Relaxed);
            }
            // The context is current again (or still): the slot is its.
            current().cache.forget(self.slot);
            // SAFETY: the entry is off the list and out of the read cache,
            // so nothing reaches its value: taken once, here.
            unsafe { ManuallyDrop::take(&mut *self.entry.value.get()) }
        } else {
            // SAFETY: a written entry left the list when it was written, and
            // the map holds a handle of its own: taken once, here, before
            // the restore, so that it goes also if the restore panics (a
            // value the restore lets go of may panic in its `drop`).
            let value = unsafe { ManuallyDrop::take(&mut *self.entry.value.get()) };
            let old = self.entry.written.take();
            debug_assert!(old.is_some(), "an entry off the list was written");
            if let Some(old) = old {
                restore_written(self.entry.id, old, Value::drop_as::<T>);
            }
            value
        };
        // SAFETY: the value is a `T` (`scoped`).
        unsafe { value.drop_as_in::<T>(|| &current().spare) };
    }
}

/// The end of a scope whose value was written into the map: restores the
/// map as `reset` does.
#[cold]
#[inline(never)]
fn restore_written(id: VarId, old: Option<Value>, drop_as: unsafe fn(Value)) {
    let replaced = write_current(None, |mut w| w.restore(id, old));
    if let Some(replaced) = replaced {
        // SAFETY: `drop_as` is the variable's own (see `scope`).
        unsafe { drop_as(replaced) };
    }
}

/// A copy of `map` with the values of the list headed by `scoped` on top,
/// for a reader that holds the context's lock but cannot write its map (the
/// entries stay listed while it holds the lock).
#[cold]
#[inline(never)]
fn with_scoped(map: &Map, scoped: *const Scoped) -> Map {
    let mut merged = map.clone();
    let mut garbage = Garbage::new();
    insert_scoped(
        &scoped_entries(scoped),
        &mut merged,
        &mut garbage,
        |_, _| (),
    );
    merged
}

/// The entries of a list of scoped values, newest first.
fn scoped_entries(mut next: *const Scoped) -> Vec<*const Scoped> {
    let mut entries = Vec::new();
    while !next.is_null() {
        entries.push(next);
        // SAFETY: see `look_up`.
        next = unsafe { (*next).prev };
    }
    entries
}

/// Inserts the values of `entries` (a list's, newest first) into `map`,
/// oldest first so that the newest of a variable wins, and hands each entry
/// with the value it replaced to `replaced`.
fn insert_scoped(
    entries: &[*const Scoped],
    map: &mut Map,
    garbage: &mut Garbage,
    mut replaced: impl FnMut(&Scoped, Option<Value>),
) {
    for &entry in entries.iter().rev() {
        // SAFETY: listed entries live in the frames of their `scoped` calls
        // (see `look_up`), and the callers hold them listed meanwhile.
        let entry = unsafe { &*entry };
        // SAFETY: as above; the value is taken only after it left the list.
        let value = Value::clone(unsafe { &*entry.value.get() });
        let old = map.insert(entry.id, value, garbage);
        replaced(entry, old);
    }
}

/// Writes the current context's scoped values into its map, oldest first,
/// each remembering the value it replaced, and empties the list; the
/// scopes' ends then restore the map.
#[cold]
#[inline(never)]
fn write_scoped(cur: &Current) {
    // SAFETY: only called with a current context, which is alive and which
    // this thread alone writes.
    let ctx = unsafe { &*cur.ctx.get() };
    let entries = scoped_entries(ctx.own_scoped());
    if cur.readers.get() >= READER {
        park_current_version(ctx);
    }
    let mut garbage = Garbage::new();
    {
        let _lock = ctx.owner_lock();
        // SAFETY: as above, and no reader elsewhere reads now.
        let map = ctx.map.with_mut(|map| unsafe { &mut *map });
        insert_scoped(&entries, map, &mut garbage, |entry, old| {
            entry.written.set(Some(old));
        });
        ctx.scoped.store(ptr::null_mut(), Ordering::Relaxed);
    }
    cur.refresh();
    drop(garbage);
}

/// Makes the thread's base context current (creating it on first use).
///
/// After the thread's `BASE` was torn down (a write from another
/// thread-local's destructor), the base is a new context on the heap,
/// freed by `LATE_BASE`'s destructor; if even that one has run, the context
/// is leaked (with whatever such late writes put in it) rather than abort
/// the thread's exit.
#[cold]
#[inline(never)]
fn enter_base() -> *const Context {
    let base = match BASE.try_with(|base| &base.0 as *const Context) {
        Ok(base) => base,
        Err(_) => {
            let late = Box::into_raw(Box::new(Context::base()));
            let _ = LATE_BASE.try_with(|slot| {
                let older = slot.0.replace(late);
                if !older.is_null() {
                    // SAFETY: made here earlier and no longer current
                    // (the thread had no current context).
                    drop(unsafe { Box::from_raw(older) });
                }
            });
            late
        }
    };
    CURRENT.with(|cur| cur.enter(base));
    base
}

/// Keeps the current version of `ctx`'s map alive while `with` borrows
/// into it are live; the write that follows then copies instead of mutating.
#[cold]
#[inline(never)]
fn park_current_version(ctx: &Context) {
    // SAFETY: this thread is the only writer of its current context.
    let version = ctx.map.with(|map| unsafe { (*map).clone() });
    let mut parked = PARKED.with(Cell::take);
    parked.push(version);
    PARKED.with(|slot| slot.set(parked));
    CURRENT.with(|cur| cur.readers.set(cur.readers.get() | PARKED_BIT));
}

/// The id of the current context, if the thread has one yet.
#[inline]
pub(crate) fn current_id() -> Option<u64> {
    CURRENT.with(|cur| {
        let ctx = cur.ctx.get();
        // SAFETY: as in `read_current`, a current context is alive.
        (!ctx.is_null()).then(|| unsafe { (*ctx).id })
    })
}

/// The id of the current context, making the thread's base context current
/// first if it has none yet (so the id stays the same until a switch).
pub(crate) fn current_id_or_base() -> u64 {
    if let Some(id) = current_id() {
        return id;
    }
    // SAFETY: `enter_base` returns the context it made current, alive.
    unsafe { (*enter_base()).id }
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

/// A copy of the current context for spawned work: every value the caller
/// sees now, except those of variables declared
/// [`not_inherited`](ContextVar::not_inherited). It is what this crate's
/// spawn helpers (tokio, thread, rayon, [`wrap`],
/// [`with_current_context`](crate::future::FutureExt::with_current_context),
/// the tokio task hooks) start work in; use it to write your own. O(1), as
/// [`copy_context`], when the context holds no such variable.
///
/// ```
/// use contextvars::{inherited_context, ContextVar};
///
/// static CACHE: ContextVar<Vec<u8>> = ContextVar::new("cache").not_inherited();
/// static USER: ContextVar<&'static str> = ContextVar::new("user");
/// CACHE.set(vec![1, 2]);
/// USER.set("ada");
/// let ctx = inherited_context();
/// assert_eq!((ctx.get(&CACHE), ctx.get(&USER)), (None, Some("ada")));
/// ```
#[inline]
pub fn inherited_context() -> Context {
    Context::from_map(next_id(), inherited_map(), false)
}

/// [`current_map`] without the values of variables not inherited by
/// spawned work: the one place spawns copy from.
#[inline]
pub(crate) fn inherited_map() -> Map {
    current_map().into_inherited()
}

/// An O(1) copy of the current context's map.
#[inline]
pub(crate) fn current_map() -> Map {
    CURRENT.with(|cur| {
        let ctx = cur.ctx.get();
        if ctx.is_null() {
            return Map::default();
        }
        // SAFETY: a current context is alive.
        if !unsafe { (*ctx).own_scoped() }.is_null() {
            write_scoped(cur);
        }
        // SAFETY: a current context is alive and only this thread writes
        // it (map and frame), so reading it here needs no lock.
        let (map, frame) = unsafe { ((*ctx).map.with(|m| &*m), (*ctx).frame.with(|f| &*f)) };
        match frame {
            None => map.clone(),
            Some(frame) => frame.merged(map),
        }
    })
}

/// Captures a copy of the current context now (without the variables
/// declared [`not_inherited`](ContextVar::not_inherited): see
/// [`inherited_context`]) and returns a closure that runs `f` in it: the way
/// to hand a callback to any pool or executor.
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
    let mut wrapped = Wrapped {
        ctx: inherited_context(),
        f: Some(f),
    };
    let carried = crate::carry::capture();
    move || {
        let f = wrapped.f.take().expect("called once");
        crate::carry::within(&carried, || wrapped.ctx.run_exclusive(f))
    }
}

/// A callback and its context: a callback that is dropped without being
/// called (a pool shut down, a job cancelled) is dropped inside its context.
struct Wrapped<F> {
    ctx: Context,
    f: Option<F>,
}

impl<F> Drop for Wrapped<F> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            self.ctx.run_exclusive(|| drop(f));
        }
    }
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

// ---- Observers (`crate::observe`): the switch path with hooks installed. ----

/// `Current::enter` with observers installed: notes the observed variables'
/// values, switches, then calls the hooks with the new context current.
#[cold]
#[inline(never)]
fn enter_observed(cur: &Current, ctx: *const Context) -> *const Context {
    // SAFETY: the current context and `ctx` are alive (see `enter`'s callers).
    let id_of = |c: *const Context| unsafe { c.as_ref() }.map(|c| c.id);
    let before = crate::observe::before_switch(id_of(cur.ctx.get()));
    let prev = cur.ctx.replace(ctx);
    cur.refresh();
    if let Some(before) = before {
        crate::observe::after_switch(before, id_of(ctx));
    }
    prev
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaving a shared context that no poll waits for takes no global lock
    /// (`WAITERS`): the exit looks at the context's own state word only.
    #[test]
    fn leaving_a_context_nobody_waits_for_takes_no_global_lock() {
        let calls = || WAKE_WAITERS_CALLS.with(Cell::get);
        let ctx = Context::new();
        let before = calls();
        for _ in 0..3 {
            ctx.run(|| ());
        }
        assert_eq!(calls(), before);
    }

    /// A read from another thread meets the owner (the heavy barrier) once
    /// per entry, only while the context is entered on another thread: not
    /// when nobody has it entered, nor when this very thread has; after the
    /// first meeting the owner's writes take the lock (`contended`), and
    /// leaving clears that, so the next entry meets its readers afresh.
    #[test]
    fn a_foreign_reader_meets_the_owner_once_per_entry() {
        use std::sync::{Arc, mpsc};
        static V: ContextVar<u32> = ContextVar::new("v");
        let meetings = || MEET_OWNER_CALLS.with(Cell::get);
        let per_entry = u64::from(crate::barrier::enabled());
        let ctx = Arc::new(Context::new());
        ctx.run(|| V.set(1));
        assert_eq!(ctx.get(&V), Some(1));
        assert_eq!(meetings(), 0, "nobody has it entered");
        ctx.run(|| Context::new().run(|| assert_eq!(ctx.get(&V), Some(1))));
        assert_eq!(meetings(), 0, "entered by this thread");

        for entry in 1..=2u32 {
            let (entered_tx, entered_rx) = mpsc::channel();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let (wrote_tx, wrote_rx) = mpsc::channel();
            let owner = {
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    ctx.run(|| {
                        entered_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                        V.set(10 * entry);
                        wrote_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                    })
                })
            };
            entered_rx.recv().unwrap();
            let before = meetings();
            for _ in 0..3 {
                assert_eq!(ctx.get(&V), Some(if entry == 1 { 1 } else { 10 }));
            }
            assert_eq!(
                meetings() - before,
                per_entry,
                "one meeting for three reads"
            );
            assert_eq!(ctx.contended.load(Ordering::Relaxed), per_entry == 1);
            go_tx.send(()).unwrap();
            wrote_rx.recv().unwrap();
            // The write under the lock, seen by the next read (no meeting).
            assert_eq!(ctx.get(&V), Some(10 * entry));
            assert_eq!(meetings() - before, per_entry);
            go_tx.send(()).unwrap();
            owner.join().unwrap();
            assert!(!ctx.contended.load(Ordering::Relaxed), "cleared on leaving");
        }
    }

    /// A `with` borrow under which nothing was written ends on the fast
    /// path, also after an earlier borrow parked (and freed) a version.
    #[test]
    fn a_borrow_after_one_that_parked_a_version_ends_on_the_fast_path() {
        static V: ContextVar<u32> = ContextVar::new("v");
        std::thread::spawn(|| {
            let calls = || FREE_PARKED_CALLS.with(Cell::get);
            V.set(1);
            V.with(|old| {
                V.set(2);
                assert_eq!(old, Some(&1));
            });
            assert_eq!(calls(), 1, "the parked version was freed");
            V.with(|v| assert_eq!(v, Some(&2)));
            assert_eq!(calls(), 1, "and the next borrow parked nothing");
        })
        .join()
        .unwrap();
    }
}
