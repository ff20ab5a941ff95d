//! The reference model and its interpreter, shared by the property test
//! (`tests/model.rs`, programs from proptest) and the fuzz target
//! (`fuzz/fuzz_targets/ops.rs`, programs decoded from bytes by [`decode`]).
//!
//! A program is a tree of [`Op`]s. The interpreter runs each op on the real
//! crate and on a plain model (a `BTreeMap` per context, a stack of frames
//! for what is current), and after every op checks every variable's current
//! value against the model; contexts held in the arena and forks' children
//! are checked (`get`, `contains`, `len`) after each `run` of them and at the
//! end. Values are drop-counted: when a program ends and everything it made
//! is gone, no value may be left alive.
//!
//! Values are unique per `set`, so the model's value equality is the
//! implementation's identity (which is what generator layers and merges
//! compare).
//!
//! Tokens and guards carry the set of contexts where the model expects them
//! to reset: where they were made, a fork's child for a token its parent
//! made before the fork, and a merge's parent for a token of a variable the
//! merge applied. Where the documented rules say nothing (a token two forks
//! away), the model marks the context "unknown" and the program skips that
//! reset rather than guess.
//!
//! Observers installed by a program log, on the program's own thread, what
//! each notification said (cause, previous and current value, and what a
//! hook that reads saw); the model predicts that log for every cause but
//! `Switch` (which depends on how each adapter enters contexts, and is not
//! modelled). Hooks report what they must never see (a switch hook called
//! while a context is dropped, a hook called again after it panicked, a
//! `scope` or write inside a hook that panicked) in [`VIOLATIONS`], checked
//! after every op.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::observe::{self, Cause, Change, Observer};
use contextvars::prelude::*;
use contextvars::{
    Context, ContextVar, Fork, MergeError, ResetError, SetGuard, Token, copy_context, wrap,
};

/// A value that counts its live instances in [`LIVE`]. A probe (second
/// field non-zero, see [`Op::DropRace`]) also records where it is dropped.
#[derive(Debug)]
pub struct Val(pub u64, u64);

/// How many [`Val`]s are alive.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);

impl Val {
    fn new(n: u64) -> Val {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Val(n, 0)
    }

    /// A value whose drop records the `MARK` it sees, and writes `SPILL`.
    fn probe(n: u64, tag: u64) -> Val {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Val(n, tag)
    }
}

impl Clone for Val {
    fn clone(&self) -> Val {
        Val::new(self.0)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        if self.1 != 0 {
            // Where am I dropped? A context holding this probe has `MARK` =
            // its tag (or, while the context is being released, nothing);
            // any other context is the wrong one. The write lands in the
            // context the drop runs in: a program's context must never see it.
            let seen = MARK.get().ok();
            drop(SPILL.set(self.1));
            lock(&DROPPED_PROBES).push((self.1, seen));
        }
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

pub static VARS: [ContextVar<Val>; 4] = [
    ContextVar::new("a"),
    ContextVar::new("b"),
    ContextVar::new("c"),
    ContextVar::new("d").not_inherited(),
];

/// The index in [`VARS`] of the variable declared `not_inherited`: `wrap`,
/// the spawn helpers, `in_current_context` and channels leave it behind;
/// copies and forks keep it.
const LOCAL: usize = 3;

/// What hooks write and scope (never observed by the model).
static HOOK_VAR: ContextVar<Val> = ContextVar::new("hook");
/// A [`Op::DropRace`] context's tag; [`OUTSIDE`] where it is dropped from.
static MARK: ContextVar<u64> = ContextVar::new("mark");
/// Written by a probe's drop, wherever it runs.
static SPILL: ContextVar<u64> = ContextVar::new("spill");
/// Where [`Op::DropRace`] puts its probes.
static PROBE_VARS: [ContextVar<Val>; 2] = [ContextVar::new("probe0"), ContextVar::new("probe1")];
/// `MARK` in the contexts a [`Op::DropRace`] context is dropped from.
const OUTSIDE: u64 = u64::MAX;

/// Probes dropped: (tag, the `MARK` their drop saw).
static DROPPED_PROBES: Mutex<Vec<(u64, Option<u64>)>> = Mutex::new(Vec::new());
/// What hooks and other threads saw that must never happen.
pub static VIOLATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);
/// Operations run (and checked), across programs and threads.
pub static OPS: AtomicU64 = AtomicU64::new(0);
/// Threads spawned by `Op::Thread`.
pub static THREADS: AtomicU64 = AtomicU64::new(0);
/// Observer keys, unique across programs and threads.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// A number for this thread (hooks log only on their owner's thread).
    static THREAD_NO: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    /// What this thread's observers were told, in order.
    static LOG: RefCell<Vec<Note>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread is dropping a context (no switch is observed).
    static DROPPING: Cell<bool> = const { Cell::new(false) };
}

/// The deepest nesting [`decode`] produces.
pub const MAX_DEPTH: usize = 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn violation(what: String) {
    lock(&VIOLATIONS).push(what);
}

/// This thread's number; 0 while its thread-locals are torn down (hooks run
/// then too, and must not panic for it).
fn thread_no() -> u64 {
    THREAD_NO.try_with(|n| *n).unwrap_or(0)
}

fn dropping() -> bool {
    DROPPING.try_with(Cell::get).unwrap_or(false)
}

/// Runs `f` with this thread marked as dropping a context.
fn while_dropping<R>(f: impl FnOnce() -> R) -> R {
    struct Unmark;
    impl Drop for Unmark {
        fn drop(&mut self) {
            DROPPING.with(|d| d.set(false));
        }
    }
    DROPPING.with(|d| d.set(true));
    let _unmark = Unmark;
    f()
}

/// `f`, whose panic is a violation named `what`.
fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            violation(format!("{what} panicked: {msg}"));
            None
        }
    }
}

/// What a hook does besides logging.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    Plain,
    /// Reads the variables (a variable hook logs what it read).
    Reads,
    /// Sets and resets `HOOK_VAR` (the reset must succeed).
    Writes,
    /// `HOOK_VAR.sync_scope(..)` around a read (must not panic, also while
    /// another thread installs and removes observers).
    Scopes,
    /// Panics on its n-th call on its own thread (not counting a variable
    /// hook's `Switch` notifications); it must be switched off then.
    Panics(u8),
}

#[derive(Clone, Debug)]
pub enum Op {
    /// `VARS[v].set(fresh value)`; the token is kept.
    Set(usize),
    /// `VARS[var].reset(token #token)` (modulo the tokens made so far): in or
    /// out of order, of another variable (`DifferentVar`), of another context
    /// (`DifferentContext`); either error changes nothing.
    Reset { token: usize, var: usize },
    /// `VARS[v].sync_scope(fresh value, body)`.
    Scope(usize, Vec<Op>),
    /// `VARS[v].with(|value| body)`: the borrowed value, checked before and
    /// after the body, must stay what it was whatever the body does (writes,
    /// copies, scopes, switches), including a scoped value that the borrow
    /// or the body moves out of its scope's frame.
    Borrow(usize, Vec<Op>),
    /// `VARS[v].sync_scope(fresh value, body)` whose body panics after its ops;
    /// the panic is caught outside the scope.
    ScopePanic(usize, Vec<Op>),
    /// Every variable of `arena[i]` read from another thread (`Context::get`
    /// of a context that may be entered here, live).
    ForeignRead(usize),
    /// `copy_context()` into the arena.
    Copy,
    /// `Context::new()` into the arena.
    New,
    /// `arena[i].copy()` into the arena (an entered one is copied live).
    CopyOf(usize),
    /// `arena[i].try_run(body)`: refused when it is entered.
    Run(usize, Vec<Op>),
    /// `wrap(body)()`.
    Wrap(Vec<Op>),
    /// `contextvars::thread::spawn(body)`, joined when the program ends.
    Thread(Vec<Op>),
    /// A future polled twice (`Pending` in between) with
    /// `in_context(arena[i].clone())`: the first body in the first poll,
    /// the second in the second.
    Poll(usize, Vec<Op>, Vec<Op>),
    /// The same with `in_current_context()`.
    PollCopy(Vec<Op>, Vec<Op>),
    /// Resumptions of one `isolated` generator, each preceded by caller ops.
    Isolated(Vec<(Vec<Op>, Vec<Op>)>),
    /// `Fork::new()` into the fork table.
    ForkNew,
    /// `forks[i].run(body)` (skipped while that fork runs or once merged).
    ForkRun(usize, Vec<Op>),
    /// `forks[i].merge()` (or `merge_overwriting()`) here: refused outside
    /// the context the fork was made in (`DifferentContext`: a sibling's
    /// child, an outer fork's parent), or on a conflict (the parent also
    /// changed a variable the child changed); refused, nothing changes.
    Merge { fork: usize, overwrite: bool },
    /// `VARS[v].set_scoped(fresh value)`; the guard is kept.
    Guard(usize),
    /// Guard #guard dropped here (or, `elsewhere`, on another thread): it
    /// resets in its own context, and elsewhere changes nothing, without a
    /// panic.
    DropGuard { guard: usize, elsewhere: bool },
    /// `VARS[v].observe(hook)`, kept until `Unobserve` or the program's end.
    Observe(usize, Hook),
    /// `observe::on_switch(hook)`.
    OnSwitch(Hook),
    /// Observer #i removed.
    Unobserve(usize),
    /// The body runs while another thread installs and removes observers.
    Churn(Vec<Op>),
    /// A message sent on a `channel::mpsc` channel and handled (the body)
    /// in its envelope: the sender's inherited context.
    Channel(Vec<Op>),
    /// A fresh context holding probes (values whose drop records the
    /// context it runs in), dropped: 0, here; 1, with its copy, on two
    /// threads at once; 2, here and its copy on another thread at once.
    /// Each probe must be dropped by then, inside a context that holds it.
    DropRace(u8),
}

type Map = BTreeMap<usize, u64>;

fn inherited(mut map: Map) -> Map {
    map.remove(&LOCAL);
    map
}

enum Frame {
    /// An arena context, entered.
    Arena(usize),
    /// A context only this frame knows (a `wrap` copy, a thread's copy).
    Own { id: u64, map: Map },
    /// A generator resumption: the caller's map under the layer's own values.
    Layer { layer: usize, outer: Map },
    /// A fork's child (`forks[i]`), entered.
    Fork(usize),
}

struct Layer {
    id: u64,
    own: Map,
}

struct ModelCtx {
    id: u64,
    map: Map,
    entered: bool,
}

/// Where a token or guard is expected to reset.
struct Ticket {
    var: usize,
    /// The context it was made in.
    origin: u64,
    /// Contexts where its reset is expected to work.
    valid: Vec<u64>,
    /// Contexts where the documented rules do not say.
    unknown: Vec<u64>,
    old: Option<u64>,
}

enum Expect {
    Done,
    Refused(ResetError),
    Unknown,
}

struct TokenRecord {
    token: Token<Val>,
    ticket: Ticket,
}

struct GuardRecord {
    guard: SetGuard<'static, Val>,
    ticket: Ticket,
}

struct ForkRecord {
    /// `None` while it runs, and once merged (`merged`).
    fork: Option<Fork>,
    merged: bool,
    /// The child's id (model).
    id: u64,
    parent: u64,
    /// The parent's view at the fork.
    base: Map,
    child: Map,
}

struct ObserverRecord {
    handle: Observer,
    key: u64,
    /// `None`: a switch observer.
    var: Option<usize>,
    hook: Hook,
    /// Notifications so far (the model's count of the hook's own).
    calls: usize,
    /// Switched off after its planned panic.
    off: bool,
    /// The scopes of its variable open when it was installed: whether their
    /// end is reported to it is not specified.
    vague: Vec<u64>,
}

/// One notification, as a variable hook logged it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    key: u64,
    cause: String,
    previous: Option<u64>,
    current: Option<u64>,
    /// What a hook that reads saw (the value visible after the change).
    read: Option<Option<u64>>,
}

#[derive(Default)]
struct State {
    arena: Vec<(Arc<Context>, ModelCtx)>,
    stack: Vec<Frame>,
    layers: Vec<Layer>,
    tokens: Vec<Option<TokenRecord>>,
    guards: Vec<Option<GuardRecord>>,
    forks: Vec<ForkRecord>,
    observers: Vec<Option<ObserverRecord>>,
    /// The keys of every observer this program installed.
    keys: Vec<u64>,
    /// Notifications the observers must have logged by the next check, and
    /// whether each may be missing.
    expected: Vec<(Note, bool)>,
    /// The scopes open now: (id, variable).
    open_scopes: Vec<(u64, usize)>,
    next_id: u64,
    /// Threads spawned with a copy, still running alongside.
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Interp(RefCell<State>);

impl State {
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The values the current frame shows.
    fn view(&self) -> Map {
        match self.stack.last().expect("a frame") {
            Frame::Arena(i) => self.arena[*i].1.map.clone(),
            Frame::Own { map, .. } => map.clone(),
            Frame::Layer { layer, outer } => {
                let mut m = outer.clone();
                m.extend(self.layers[*layer].own.iter().map(|(k, v)| (*k, *v)));
                m
            }
            Frame::Fork(f) => self.forks[*f].child.clone(),
        }
    }

    /// `view()[var]`, without building the view.
    fn visible(&self, var: usize) -> Option<u64> {
        match self.stack.last().expect("a frame") {
            Frame::Arena(i) => self.arena[*i].1.map.get(&var),
            Frame::Own { map, .. } => map.get(&var),
            Frame::Layer { layer, outer } => self.layers[*layer]
                .own
                .get(&var)
                .or_else(|| outer.get(&var)),
            Frame::Fork(f) => self.forks[*f].child.get(&var),
        }
        .copied()
    }

    fn current_id(&self) -> u64 {
        match self.stack.last().expect("a frame") {
            Frame::Arena(i) => self.arena[*i].1.id,
            Frame::Own { id, .. } => *id,
            Frame::Layer { layer, .. } => self.layers[*layer].id,
            Frame::Fork(f) => self.forks[*f].id,
        }
    }

    fn current_map(&mut self) -> &mut Map {
        match self.stack.last_mut().expect("a frame") {
            Frame::Arena(i) => &mut self.arena[*i].1.map,
            Frame::Own { map, .. } => map,
            // A value showing through from the caller is not the layer's own.
            Frame::Layer { layer, .. } => &mut self.layers[*layer].own,
            Frame::Fork(f) => &mut self.forks[*f].child,
        }
    }

    /// Model `set`: returns the old value the token must record (in a
    /// generator, its own: `None` when only the caller's showed through).
    /// A `sync_scope` of `var` with `value` begins: the value is set, the
    /// observers told, the scope listed as open. Returns the value it
    /// replaced and the scope's id, for [`State::end_scope`].
    fn begin_scope(&mut self, var: usize, value: u64) -> (Option<u64>, u64) {
        let before = self.visible(var);
        let old = self.set(var, value);
        self.notify(var, before, "ScopeBegin");
        let scope = self.fresh_id();
        self.open_scopes.push((scope, var));
        (old, scope)
    }

    /// The scope `scope` of `var` ends (also by unwinding): `old` is back,
    /// and the observers are told from `before_end`, the value visible
    /// just before.
    fn end_scope(&mut self, var: usize, old: Option<u64>, scope: u64, before_end: Option<u64>) {
        self.open_scopes.retain(|(s, _)| *s != scope);
        self.restore(var, old);
        self.notify_scope(var, before_end, "ScopeEnd", Some(scope));
    }

    fn set(&mut self, var: usize, value: u64) -> Option<u64> {
        self.current_map().insert(var, value)
    }

    /// Model of restoring `old` (a token's record) into the current frame.
    fn restore(&mut self, var: usize, old: Option<u64>) {
        let map = self.current_map();
        match old {
            Some(v) => map.insert(var, v),
            None => map.remove(&var),
        };
    }

    fn push_arena(&mut self, ctx: Context, map: Map) {
        let id = self.fresh_id();
        self.arena.push((
            Arc::new(ctx),
            ModelCtx {
                id,
                map,
                entered: false,
            },
        ));
    }

    /// A ticket for a token or guard of `var` made here now.
    fn ticket(&self, var: usize, old: Option<u64>) -> Ticket {
        let origin = self.current_id();
        // A fork made here earlier: whether its child takes a token made
        // after the fork is not documented.
        let unknown = self
            .forks
            .iter()
            .filter(|f| !f.merged && f.parent == origin)
            .map(|f| f.id)
            .collect();
        Ticket {
            var,
            origin,
            valid: vec![origin],
            unknown,
            old,
        }
    }

    fn tickets_mut(&mut self) -> impl Iterator<Item = &mut Ticket> {
        let tokens = self.tokens.iter_mut().flatten().map(|t| &mut t.ticket);
        let guards = self.guards.iter_mut().flatten().map(|g| &mut g.ticket);
        tokens.chain(guards)
    }

    /// What resetting `ticket` (as a token of `var`) here must do.
    fn expect_reset(&self, ticket: &Ticket, var: usize) -> Expect {
        let here = self.current_id();
        if ticket.var != var {
            Expect::Refused(ResetError::DifferentVar {
                var: VARS[var].name(),
                token_var: VARS[ticket.var].name(),
            })
        } else if ticket.valid.contains(&here) {
            Expect::Done
        } else if ticket.unknown.contains(&here) {
            Expect::Unknown
        } else {
            Expect::Refused(ResetError::DifferentContext {
                var: VARS[var].name(),
            })
        }
    }

    /// What this program's observers logged on this thread since the last
    /// look.
    fn logged(&self) -> Vec<Note> {
        LOG.with(|log| std::mem::take(&mut *log.borrow_mut()))
            .into_iter()
            .filter(|n| self.keys.contains(&n.key))
            .collect()
    }

    /// The notifications of a change of `var` from `previous` to what is
    /// visible now, for each of the program's observers of it (`scope`: the
    /// scope a `ScopeEnd` ends).
    fn notify(&mut self, var: usize, previous: Option<u64>, cause: &str) {
        self.notify_scope(var, previous, cause, None);
    }

    fn notify_scope(&mut self, var: usize, previous: Option<u64>, cause: &str, scope: Option<u64>) {
        let current = self.visible(var);
        let mut notes = Vec::new();
        for o in self.observers.iter_mut().flatten() {
            if o.var != Some(var) || o.off {
                continue;
            }
            let read = matches!(o.hook, Hook::Reads | Hook::Scopes).then_some(current);
            let note = Note {
                key: o.key,
                cause: cause.to_string(),
                previous,
                current,
                read,
            };
            if scope.is_some_and(|s| o.vague.contains(&s)) {
                notes.push((note, true));
                continue;
            }
            notes.push((note, false));
            o.count_call();
        }
        self.expected.extend(notes);
    }

    /// Checks what this program's observers logged against `expected`,
    /// variable by variable in order (a note that may be missing is matched
    /// if it is there).
    fn match_notes(&mut self, expected: Vec<(Note, bool)>, logged: Vec<Note>, what: &str) {
        let mut queues: BTreeMap<u64, std::collections::VecDeque<Note>> = BTreeMap::new();
        for note in &logged {
            queues.entry(note.key).or_default().push_back(note.clone());
        }
        let fail = |why: &str| -> ! {
            panic!("{what}: {why}\n  logged: {logged:?}\n  expected: {expected:?}")
        };
        for (note, maybe) in &expected {
            let queue = queues.entry(note.key).or_default();
            if queue.front() == Some(note) {
                queue.pop_front();
                if *maybe {
                    let observer = self
                        .observers
                        .iter_mut()
                        .flatten()
                        .find(|o| o.key == note.key);
                    if let Some(o) = observer {
                        o.count_call();
                    }
                }
            } else if !*maybe {
                fail(&format!("missing or different: {note:?}"));
            }
        }
        if let Some(extra) = queues.values().find_map(|q| q.front()) {
            fail(&format!("not expected: {extra:?}"));
        }
    }
}

impl ObserverRecord {
    /// One more notification: a hook that panics on it is off afterwards.
    fn count_call(&mut self) {
        if matches!(self.hook, Hook::Panics(n) if usize::from(n) == self.calls) {
            self.off = true;
        }
        self.calls += 1;
    }
}

/// A future that is `Pending` once.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Polls `fut` to completion, expecting exactly one `Pending`; checks the
/// caller's view in between.
fn poll_twice<F: Future<Output = ()>>(interp: &Interp, fut: F, between: impl FnOnce()) {
    let mut fut = std::pin::pin!(fut);
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    interp.check();
    between();
    assert!(fut.as_mut().poll(&mut cx).is_ready());
}

/// A variable observer of `VARS[var]` that logs on this thread.
fn observe_var(var: usize, hook: Hook, key: u64) -> Observer {
    let owner = thread_no();
    let calls = AtomicUsize::new(0);
    VARS[var].observe(move |change: &Change<'_, Val>| {
        if matches!(change.cause(), Cause::Switch) || thread_no() != owner {
            return;
        }
        let n = calls.fetch_add(1, Ordering::Relaxed);
        let read_var = || VARS[var].get().ok().map(|v| v.0);
        let read = match hook {
            Hook::Reads => Some(read_var()),
            Hook::Scopes => guarded("a `scope` inside a variable hook", || {
                churn_inside_hook();
                HOOK_VAR.sync_scope(Val::new(0), read_var)
            }),
            Hook::Writes => {
                guarded("a write inside a variable hook", write_and_reset);
                None
            }
            Hook::Plain | Hook::Panics(_) => None,
        };
        let _ = LOG.try_with(|log| {
            log.borrow_mut().push(Note {
                key,
                cause: format!("{:?}", change.cause()),
                previous: change.previous().map(|v| v.0),
                current: change.current().map(|v| v.0),
                read,
            })
        });
        if matches!(hook, Hook::Panics(k) if usize::from(k) == n) {
            // No panic hook (and no message) for a planned unwind.
            std::panic::resume_unwind(Box::new("a planned panic in a variable hook"));
        }
    })
}

/// A switch observer: must never run while this thread drops a context, nor
/// after it panicked.
fn observe_switch(hook: Hook) -> Observer {
    let owner = thread_no();
    let calls = AtomicUsize::new(0);
    let panicked = AtomicBool::new(false);
    observe::on_switch("model", move |_| {
        if dropping() {
            violation("a switch hook ran while a context was being dropped".into());
            if matches!(hook, Hook::Writes) {
                // What a hook that writes does there: refill the context
                // (the leak check sees it if the crate lets it).
                drop(HOOK_VAR.set(Val::new(0)));
            }
            return;
        }
        if thread_no() != owner {
            return;
        }
        if panicked.load(Ordering::Relaxed) {
            violation("a switch hook was called again after it panicked".into());
            return;
        }
        let n = calls.fetch_add(1, Ordering::Relaxed);
        match hook {
            Hook::Plain => {}
            Hook::Reads => {
                for var in &VARS {
                    drop(var.get());
                }
            }
            Hook::Writes => {
                guarded("a write inside a switch hook", write_and_reset);
            }
            Hook::Scopes => {
                guarded("a `scope` inside a switch hook", || {
                    churn_inside_hook();
                    HOOK_VAR.sync_scope(Val::new(0), || drop(VARS[0].get()))
                });
            }
            Hook::Panics(k) => {
                if usize::from(k) == n {
                    panicked.store(true, Ordering::Relaxed);
                    std::panic::resume_unwind(Box::new("a planned panic in a switch hook"));
                }
            }
        }
    })
}

/// A hook's write: a `set` and its `reset`, which must work.
fn write_and_reset() {
    let token = HOOK_VAR.set(Val::new(0));
    if let Err(e) = HOOK_VAR.reset(token) {
        violation(format!("a hook's own reset failed: {e}"));
    }
}

/// Rounds of observer changes the churn thread still has to make.
static CHURN_LEFT: Mutex<u32> = Mutex::new(0);
static CHURN_WAKE: std::sync::Condvar = std::sync::Condvar::new();
/// Rounds the churn thread made.
static CHURN_ROUNDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread runs a `Churn` body.
    static IN_CHURN: Cell<bool> = const { Cell::new(false) };
}

/// Asks the churn thread for `rounds` more rounds of installing and
/// removing observers, and waits until it has made the first.
fn churn(rounds: u32) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            loop {
                {
                    let mut left = lock(&CHURN_LEFT);
                    while *left == 0 {
                        left = CHURN_WAKE.wait(left).unwrap_or_else(|e| e.into_inner());
                    }
                    *left -= 1;
                }
                let a = observe::on_switch("churn", |_| {});
                let b = HOOK_VAR.observe(|_| {});
                drop(a);
                drop(b);
                CHURN_ROUNDS.fetch_add(1, Ordering::Release);
            }
        });
    });
    let start = CHURN_ROUNDS.load(Ordering::Acquire);
    *lock(&CHURN_LEFT) += rounds;
    CHURN_WAKE.notify_all();
    while CHURN_ROUNDS.load(Ordering::Acquire) == start {
        std::thread::yield_now();
    }
}

/// Inside a hook, before it scopes: under `Churn`, the observers change
/// now, while the hook runs (as a busy program's other threads may make
/// them change at any moment), not only when the timing happens to fall so.
fn churn_inside_hook() {
    if IN_CHURN.try_with(Cell::get).unwrap_or(false) {
        churn(1);
    }
}

/// Runs `f` while another thread installs and removes observers: a burst
/// of changes as `f` starts, and one more inside each hook that scopes.
fn with_churn<R>(f: impl FnOnce() -> R) -> R {
    struct Leave(bool);
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_CHURN.with(|c| c.set(self.0));
        }
    }
    churn(16);
    let _leave = Leave(IN_CHURN.with(|c| c.replace(true)));
    f()
}

impl Interp {
    fn new(frame: Frame) -> Interp {
        Interp(RefCell::new(State {
            stack: vec![frame],
            ..State::default()
        }))
    }

    /// Every variable's current value against the model; what the hooks
    /// saw; nothing spilled from a drop.
    fn check(&self) {
        let violations = std::mem::take(&mut *lock(&VIOLATIONS));
        assert!(violations.is_empty(), "{violations:#?}");
        let mut state = self.0.borrow_mut();
        let view = state.view();
        for (v, var) in VARS.iter().enumerate() {
            assert_eq!(
                var.get().ok().map(|x| x.0),
                view.get(&v).copied(),
                "current value of {}",
                var.name()
            );
        }
        assert_eq!(
            SPILL.get().ok(),
            None,
            "a probe's destructor ran in a program's context (it was dropped outside the context \
             holding it)"
        );
        assert_eq!(MARK.get().ok(), None, "a drop-race context's value leaked");
        let expected = std::mem::take(&mut state.expected);
        let logged = state.logged();
        state.match_notes(expected, logged, "what the variable observers were told");
    }

    /// One context of the arena (an entered one shows its live state)
    /// against the model: `get`, `contains` and `len`.
    fn check_context(&self, i: usize) {
        let state = self.0.borrow();
        let (ctx, model) = &state.arena[i];
        check_map(ctx, &model.map, &format!("arena context #{}", model.id));
    }

    /// A fork's child (when it is not running) against the model.
    fn check_fork(&self, f: usize) {
        let state = self.0.borrow();
        let record = &state.forks[f];
        if let Some(fork) = &record.fork {
            check_map(
                fork.context(),
                &record.child,
                &format!("fork #{}", record.id),
            );
        }
    }

    /// The end of a program: every context of the arena and every fork
    /// against the model, then the threads it spawned joined (their panics
    /// propagate), then its guards defused.
    fn finish(&self) {
        self.check_arena();
        let n = self.0.borrow().forks.len();
        (0..n).for_each(|f| self.check_fork(f));
        let threads = std::mem::take(&mut self.0.borrow_mut().threads);
        for handle in threads {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        // Defused: each would warn, dropped outside its context (`DropGuard`
        // checks that drop).
        let guards = std::mem::take(&mut self.0.borrow_mut().guards);
        for record in guards.into_iter().flatten() {
            drop(record.guard.into_token());
        }
        let violations = std::mem::take(&mut *lock(&VIOLATIONS));
        assert!(violations.is_empty(), "{violations:#?}");
    }

    /// Every context of the arena against the model.
    fn check_arena(&self) {
        let n = self.0.borrow().arena.len();
        (0..n).for_each(|i| self.check_context(i));
    }

    fn exec_all(&self, ops: &[Op]) {
        for op in ops {
            self.exec(op);
            OPS.fetch_add(1, Ordering::Relaxed);
            self.check();
        }
    }

    /// Index into the arena, if it has anything.
    fn arena_index(&self, i: usize) -> Option<usize> {
        let n = self.0.borrow().arena.len();
        (n > 0).then(|| i % n)
    }

    fn enter_arena(&self, i: usize) {
        let mut state = self.0.borrow_mut();
        assert!(!state.arena[i].1.entered);
        state.arena[i].1.entered = true;
        state.stack.push(Frame::Arena(i));
    }

    fn leave_arena(&self, i: usize) {
        let mut state = self.0.borrow_mut();
        assert!(matches!(state.stack.pop(), Some(Frame::Arena(j)) if j == i));
        state.arena[i].1.entered = false;
    }

    /// Runs `ops` in a frame of its own showing `map` (a copy's).
    fn in_own_frame(&self, map: Map, ops: &[Op]) {
        {
            let mut state = self.0.borrow_mut();
            let id = state.fresh_id();
            state.stack.push(Frame::Own { id, map });
        }
        self.check();
        self.exec_all(ops);
        self.0.borrow_mut().stack.pop();
    }

    fn exec(&self, op: &Op) {
        match op {
            Op::Set(v) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let token = VARS[*v].set(Val::new(value));
                let mut state = self.0.borrow_mut();
                let before = state.visible(*v);
                let old = state.set(*v, value);
                assert_eq!(
                    token.old_value().map(|x| x.0),
                    old,
                    "token.old_value of {}",
                    VARS[*v].name()
                );
                let ticket = state.ticket(*v, old);
                state.notify(*v, before, "Set");
                state.tokens.push(Some(TokenRecord { token, ticket }));
            }
            Op::Reset { token, var } => {
                let mut state = self.0.borrow_mut();
                let n = state.tokens.len();
                if n == 0 {
                    return;
                }
                let Some(record) = state.tokens[token % n].take() else {
                    return;
                };
                let expected = match state.expect_reset(&record.ticket, *var) {
                    Expect::Unknown => {
                        state.tokens[token % n] = Some(record);
                        return;
                    }
                    Expect::Done => Ok(()),
                    Expect::Refused(e) => Err(e),
                };
                let before = state.visible(*var);
                drop(state);
                let old = record.ticket.old;
                assert_eq!(VARS[*var].reset(record.token), expected);
                if expected.is_ok() {
                    let mut state = self.0.borrow_mut();
                    state.restore(*var, old);
                    state.notify(*var, before, "Reset");
                }
            }
            Op::Scope(v, ops) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let (old, scope) = self.0.borrow_mut().begin_scope(*v, value);
                let before_end = VARS[*v].sync_scope(Val::new(value), || {
                    self.check();
                    self.exec_all(ops);
                    self.0.borrow().visible(*v)
                });
                self.0.borrow_mut().end_scope(*v, old, scope, before_end);
            }
            Op::Borrow(v, ops) => {
                let expected = self.0.borrow().visible(*v);
                VARS[*v].with(|borrowed| {
                    assert_eq!(
                        borrowed.map(|x| x.0),
                        expected,
                        "borrowed {}",
                        VARS[*v].name()
                    );
                    self.exec_all(ops);
                    assert_eq!(
                        borrowed.map(|x| x.0),
                        expected,
                        "{} borrowed across its body",
                        VARS[*v].name()
                    );
                });
            }
            Op::ScopePanic(v, ops) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let (old, scope) = self.0.borrow_mut().begin_scope(*v, value);
                let before_end = Cell::new(None);
                let caught = catch_unwind(AssertUnwindSafe(|| {
                    VARS[*v].sync_scope(Val::new(value), || {
                        self.check();
                        self.exec_all(ops);
                        before_end.set(self.0.borrow().visible(*v));
                        // No panic hook (and no message) for a planned unwind.
                        std::panic::resume_unwind(Box::new("planned"));
                    })
                }));
                assert!(caught.is_err());
                self.0
                    .borrow_mut()
                    .end_scope(*v, old, scope, before_end.get());
            }
            Op::ForeignRead(i) => {
                let Some(i) = self.arena_index(*i) else {
                    return;
                };
                let (ctx, expected) = {
                    let state = self.0.borrow();
                    (state.arena[i].0.clone(), state.arena[i].1.map.clone())
                };
                let seen = read_elsewhere(ctx);
                let expected: Vec<Option<u64>> =
                    (0..VARS.len()).map(|v| expected.get(&v).copied()).collect();
                assert_eq!(seen, expected, "arena context read from another thread");
            }
            Op::Copy => {
                let mut state = self.0.borrow_mut();
                let map = state.view();
                state.push_arena(copy_context(), map);
            }
            Op::New => self.0.borrow_mut().push_arena(Context::new(), Map::new()),
            Op::CopyOf(i) => {
                let Some(i) = self.arena_index(*i) else {
                    return;
                };
                let mut state = self.0.borrow_mut();
                let (copy, map) = (state.arena[i].0.copy(), state.arena[i].1.map.clone());
                state.push_arena(copy, map);
            }
            Op::Run(i, ops) => {
                let Some(i) = self.arena_index(*i) else {
                    return;
                };
                let (ctx, entered) = {
                    let state = self.0.borrow();
                    (state.arena[i].0.clone(), state.arena[i].1.entered)
                };
                let result = ctx.try_run(|| {
                    self.enter_arena(i);
                    self.check();
                    self.exec_all(ops);
                    self.leave_arena(i);
                });
                assert_eq!(
                    result.is_err(),
                    entered,
                    "entering an entered context is refused, others are not"
                );
                self.check_context(i);
            }
            Op::Wrap(ops) => {
                let job = wrap(|| {
                    let map = inherited(self.0.borrow().view());
                    self.in_own_frame(map, ops);
                });
                job();
            }
            Op::Thread(ops) => {
                // The thread checks its own copy against its own model while
                // this program goes on; it is joined when the program ends.
                let map = inherited(self.0.borrow().view());
                let ops = ops.clone();
                THREADS.fetch_add(1, Ordering::Relaxed);
                let handle = contextvars::thread::spawn(move || {
                    let child = Interp::new(Frame::Own { id: u64::MAX, map });
                    child.check();
                    child.exec_all(&ops);
                    child.finish();
                });
                self.0.borrow_mut().threads.push(handle);
            }
            Op::Poll(i, first, second) => {
                let Some(i) = self.arena_index(*i) else {
                    return;
                };
                let (ctx, entered) = {
                    let state = self.0.borrow();
                    (state.arena[i].0.clone(), state.arena[i].1.entered)
                };
                if entered {
                    // Polling would panic (tests/panic_safety.rs); the entry
                    // is refused the same way.
                    assert!(ctx.try_run(|| ()).is_err());
                    return;
                }
                let fut = async {
                    self.enter_arena(i);
                    self.check();
                    self.exec_all(first);
                    self.leave_arena(i);
                    YieldOnce(false).await;
                    self.enter_arena(i);
                    self.check();
                    self.exec_all(second);
                    self.leave_arena(i);
                };
                poll_twice(self, fut.in_context(ctx), || self.check_context(i));
                self.check_context(i);
            }
            Op::PollCopy(first, second) => {
                let frame = RefCell::new(None);
                let enter = || {
                    let own = frame.borrow_mut().take().unwrap_or_else(|| {
                        let mut state = self.0.borrow_mut();
                        let (id, map) = (state.fresh_id(), inherited(state.view()));
                        Frame::Own { id, map }
                    });
                    self.0.borrow_mut().stack.push(own);
                    self.check();
                };
                let leave = || {
                    let own = self.0.borrow_mut().stack.pop();
                    *frame.borrow_mut() = own;
                };
                // The copy is taken now, not at the first poll: the frame is
                // made here too.
                let fut = async {
                    enter();
                    self.exec_all(first);
                    leave();
                    YieldOnce(false).await;
                    enter();
                    self.exec_all(second);
                    leave();
                }
                .in_current_context();
                {
                    let mut state = self.0.borrow_mut();
                    let (id, map) = (state.fresh_id(), inherited(state.view()));
                    *frame.borrow_mut() = Some(Frame::Own { id, map });
                }
                // Between the polls the caller changes its value: the task's
                // copy does not follow.
                poll_twice(self, fut, || self.exec(&Op::Set(0)));
            }
            Op::Isolated(resumptions) => {
                let layer = {
                    let mut state = self.0.borrow_mut();
                    let id = state.fresh_id();
                    state.layers.push(Layer {
                        id,
                        own: Map::new(),
                    });
                    state.layers.len() - 1
                };
                let next: RefCell<Option<&[Op]>> = RefCell::new(None);
                let mut generator = std::iter::from_fn(|| {
                    let ops = next.borrow_mut().take()?;
                    {
                        let mut state = self.0.borrow_mut();
                        let outer = state.view();
                        state.stack.push(Frame::Layer { layer, outer });
                    }
                    self.check();
                    self.exec_all(ops);
                    self.0.borrow_mut().stack.pop();
                    Some(())
                })
                .isolated();
                for (caller_ops, generator_ops) in resumptions {
                    self.exec_all(caller_ops);
                    *next.borrow_mut() = Some(generator_ops);
                    assert_eq!(generator.next(), Some(()));
                    self.check();
                }
            }
            Op::ForkNew => {
                let fork = Fork::new();
                let mut state = self.0.borrow_mut();
                let (id, parent, base) = (state.fresh_id(), state.current_id(), state.view());
                // A token made in the parent resets in the child (as
                // documented); one that only became valid in the parent
                // (through a merge) is two steps away: not documented.
                for ticket in state.tickets_mut() {
                    if ticket.valid.contains(&parent) {
                        if ticket.origin == parent {
                            ticket.valid.push(id);
                        } else {
                            ticket.unknown.push(id);
                        }
                    } else if ticket.unknown.contains(&parent) {
                        ticket.unknown.push(id);
                    }
                }
                state.forks.push(ForkRecord {
                    fork: Some(fork),
                    merged: false,
                    id,
                    parent,
                    child: base.clone(),
                    base,
                });
            }
            Op::ForkRun(f, ops) => {
                let Some(f) = self.fork_index(*f) else {
                    return;
                };
                let Some(mut fork) = self.0.borrow_mut().forks[f].fork.take() else {
                    return;
                };
                fork.run(|| {
                    self.0.borrow_mut().stack.push(Frame::Fork(f));
                    self.check();
                    self.exec_all(ops);
                    assert!(
                        matches!(self.0.borrow_mut().stack.pop(), Some(Frame::Fork(g)) if g == f)
                    );
                });
                self.0.borrow_mut().forks[f].fork = Some(fork);
                self.check_fork(f);
            }
            Op::Merge { fork, overwrite } => self.merge(*fork, *overwrite),
            Op::Guard(v) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let guard = VARS[*v].set_scoped(Val::new(value));
                let mut state = self.0.borrow_mut();
                let before = state.visible(*v);
                let old = state.set(*v, value);
                assert_eq!(
                    guard.old_value().map(|x| x.0),
                    old,
                    "guard.old_value of {}",
                    VARS[*v].name()
                );
                let ticket = state.ticket(*v, old);
                state.notify(*v, before, "Set");
                state.guards.push(Some(GuardRecord { guard, ticket }));
            }
            Op::DropGuard { guard, elsewhere } => {
                let mut state = self.0.borrow_mut();
                let n = state.guards.len();
                if n == 0 {
                    return;
                }
                let Some(record) = state.guards[guard % n].take() else {
                    return;
                };
                if *elsewhere {
                    drop(state);
                    let guard = record.guard;
                    let problems =
                        Workers::start(vec![Box::new(move || drop(guard)) as Job]).wait();
                    assert!(
                        problems.is_empty(),
                        "a guard dropped on another thread: {problems:?}"
                    );
                    return;
                }
                let var = record.ticket.var;
                let expect = state.expect_reset(&record.ticket, var);
                if let Expect::Unknown = expect {
                    state.guards[guard % n] = Some(record);
                    return;
                }
                let before = state.visible(var);
                drop(state);
                let old = record.ticket.old;
                guarded("a guard dropped in another context", || drop(record.guard));
                if let Expect::Done = expect {
                    let mut state = self.0.borrow_mut();
                    state.restore(var, old);
                    state.notify(var, before, "Reset");
                }
            }
            Op::Observe(v, hook) => {
                let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
                let handle = observe_var(*v, *hook, key);
                let mut state = self.0.borrow_mut();
                let vague = state
                    .open_scopes
                    .iter()
                    .filter(|(_, var)| var == v)
                    .map(|(id, _)| *id)
                    .collect();
                state.keys.push(key);
                state.observers.push(Some(ObserverRecord {
                    handle,
                    key,
                    var: Some(*v),
                    hook: *hook,
                    calls: 0,
                    off: false,
                    vague,
                }));
            }
            Op::OnSwitch(hook) => {
                let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
                let handle = observe_switch(*hook);
                let mut state = self.0.borrow_mut();
                state.keys.push(key);
                state.observers.push(Some(ObserverRecord {
                    handle,
                    key,
                    var: None,
                    hook: *hook,
                    calls: 0,
                    off: false,
                    vague: Vec::new(),
                }));
            }
            Op::Unobserve(i) => {
                let record = {
                    let mut state = self.0.borrow_mut();
                    let n = state.observers.len();
                    if n == 0 {
                        return;
                    }
                    state.observers[i % n].take()
                };
                // The handle is dropped outside the model's borrow: the
                // removal drops the hook.
                drop(record);
            }
            Op::Churn(ops) => {
                if cfg!(miri) {
                    self.exec_all(ops);
                } else {
                    with_churn(|| self.exec_all(ops));
                }
            }
            Op::Channel(ops) => {
                let (tx, rx) = contextvars::channel::mpsc::channel();
                let map = inherited(self.0.borrow().view());
                tx.send(()).expect("the receiver is here");
                let envelope = rx.recv().expect("a message was sent");
                envelope.run(|()| self.in_own_frame(map, ops));
            }
            Op::DropRace(mode) => drop_race(*mode),
        }
    }

    /// Index into the fork table, if it has anything.
    fn fork_index(&self, i: usize) -> Option<usize> {
        let n = self.0.borrow().forks.len();
        (n > 0).then(|| i % n)
    }

    fn merge(&self, f: usize, overwrite: bool) {
        let Some(f) = self.fork_index(f) else {
            return;
        };
        let mut state = self.0.borrow_mut();
        let Some(fork) = state.forks[f].fork.take() else {
            return;
        };
        let record = &state.forks[f];
        let view = state.view();
        let changed: Vec<usize> = (0..VARS.len())
            .filter(|v| record.base.get(v) != record.child.get(v))
            .collect();
        let conflicts: Vec<&str> = changed
            .iter()
            .filter(|v| !overwrite && view.get(v) != record.base.get(v))
            .map(|&v| VARS[v].name())
            .collect();
        let different_context = state.current_id() != record.parent;
        drop(state);
        let result = if overwrite {
            fork.merge_overwriting()
        } else {
            fork.merge()
        };
        let mut state = self.0.borrow_mut();
        if different_context {
            match result {
                Err(MergeError::DifferentContext { fork }) => state.forks[f].fork = Some(*fork),
                other => panic!(
                    "a merge outside the fork's context must be refused (DifferentContext), got \
                     {other:?}"
                ),
            }
            return;
        }
        if !conflicts.is_empty() {
            match result {
                Err(MergeError::Conflict { vars, fork }) => {
                    assert_eq!(vars, conflicts, "a merge's conflicts");
                    state.forks[f].fork = Some(*fork);
                }
                other => {
                    panic!("a merge with conflicts {conflicts:?} must be refused, got {other:?}")
                }
            }
            return;
        }
        let changes = match result {
            Ok(changes) => changes,
            Err(e) => panic!("a merge in the fork's context without conflicts failed: {e:?}"),
        };
        let child = state.forks[f].child.clone();
        let (mut set, mut removed) = (Vec::new(), Vec::new());
        for &v in &changed {
            let before = state.visible(v);
            let value = child.get(&v).copied();
            state.restore(v, value);
            state.notify(v, before, "Merge");
            match value {
                Some(_) => set.push(VARS[v].name()),
                None => removed.push(VARS[v].name()),
            }
        }
        set.sort_unstable();
        removed.sort_unstable();
        assert_eq!(
            (changes.set, changes.removed),
            (set, removed),
            "what a merge applied"
        );
        // The child's tokens of what the merge applied now reset here.
        let (id, parent) = (state.forks[f].id, state.forks[f].parent);
        state.forks[f].merged = true;
        for ticket in state.tickets_mut() {
            if !changed.contains(&ticket.var) {
                continue;
            }
            if ticket.valid.contains(&id) {
                if ticket.origin == id {
                    ticket.valid.push(parent);
                } else {
                    ticket.unknown.push(parent);
                }
            } else if ticket.unknown.contains(&id) {
                ticket.unknown.push(parent);
            }
        }
        // The order of a merge's notifications across variables is not
        // specified: compare this op's as a set.
        let mut expected = std::mem::take(&mut state.expected);
        let mut logged = state.logged();
        expected.sort();
        logged.sort();
        state.match_notes(
            expected,
            logged,
            "what the variable observers were told of a merge",
        );
    }
}

/// `ctx` (a context or a fork's child) against `map`.
fn check_map(ctx: &Context, map: &Map, what: &str) {
    for (v, var) in VARS.iter().enumerate() {
        assert_eq!(
            ctx.get(var).map(|x| x.0),
            map.get(&v).copied(),
            "{what}: value of {}",
            var.name()
        );
        assert_eq!(
            ctx.contains(var),
            map.contains_key(&v),
            "{what}: contains {}",
            var.name()
        );
    }
    assert_eq!(ctx.len(), map.len(), "{what}: len");
}

/// A context holding probes under a fresh tag, dropped as `mode` says (see
/// [`Op::DropRace`]); then each probe must have been dropped, inside a
/// context holding it (its `MARK` is the tag; a context being released shows
/// nothing), never where it was dropped from (`MARK` = [`OUTSIDE`]).
fn drop_race(mode: u8) {
    let tag = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
    let ctx = Context::new();
    ctx.run(|| {
        drop(MARK.set(tag));
        // The second set replaces the first probe: dropped inside `ctx`.
        for p in [0, 0, 1] {
            let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
            drop(PROBE_VARS[p].set(Val::probe(value, tag)));
        }
    });
    let problems = match mode % 3 {
        0 => {
            MARK.sync_scope(OUTSIDE, || while_dropping(|| drop(ctx)));
            Vec::new()
        }
        1 => {
            let copy = ctx.copy();
            let barrier = Meet::new(2);
            let b = barrier.clone();
            Workers::start(vec![
                Box::new(move || {
                    b.wait();
                    drop(ctx)
                }) as Job,
                Box::new(move || {
                    barrier.wait();
                    drop(copy)
                }),
            ])
            .wait()
        }
        _ => {
            let copy = ctx.copy();
            let barrier = Meet::new(2);
            let b = barrier.clone();
            let pending = Workers::start(vec![Box::new(move || {
                b.wait();
                drop(ctx)
            }) as Job]);
            MARK.sync_scope(OUTSIDE, || {
                barrier.wait();
                while_dropping(|| drop(copy))
            });
            pending.wait()
        }
    };
    assert!(
        problems.is_empty(),
        "a context dropped on another thread: {problems:?}"
    );
    let seen: Vec<Option<u64>> = {
        let mut dropped = lock(&DROPPED_PROBES);
        let seen = dropped
            .iter()
            .filter(|(t, _)| *t == tag)
            .map(|(_, s)| *s)
            .collect();
        dropped.retain(|(t, _)| *t != tag);
        seen
    };
    assert_eq!(
        seen.len(),
        3,
        "a context's values are dropped when its last handle is (mode {mode}): {seen:?}"
    );
    for mark in seen {
        assert!(
            mark.is_none() || mark == Some(tag),
            "a value was dropped outside every context holding it (it saw MARK {mark:?}, not \
             {tag}; mode {mode})"
        );
    }
}

/// Where the droppers of a race wait for each other: spinning, not
/// parked, so that they leave at the same moment (a parked thread wakes tens
/// of microseconds late, and the race is over by then).
struct Meet(AtomicUsize, usize);

impl Meet {
    fn new(parties: usize) -> Arc<Meet> {
        Arc::new(Meet(AtomicUsize::new(0), parties))
    }

    fn wait(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
        let mut spins = 0u32;
        while self.0.load(Ordering::Acquire) < self.1 {
            spins += 1;
            // Miri runs one thread at a time: let the other one run.
            if spins < 20_000 && !cfg!(miri) {
                std::hint::spin_loop();
            } else {
                // The other party is not running (a loaded machine).
                std::thread::yield_now();
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Jobs handed to other threads (two long-lived workers; under Miri a thread
/// per job), each run in the worker's own context (`MARK` = [`OUTSIDE`]),
/// marked as dropping, then checked: the job did not panic, and left the
/// worker's context as it was.
struct Workers {
    replies: Vec<std::sync::mpsc::Receiver<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The workers are this caller's until it has their answers (programs
    /// on several threads use them: jobs meeting at a barrier must not be
    /// queued behind another caller's).
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

impl Workers {
    fn start(jobs: Vec<Job>) -> Workers {
        type Request = (Job, std::sync::mpsc::Sender<Vec<String>>);
        static WORKERS: Mutex<Vec<std::sync::mpsc::Sender<Request>>> = Mutex::new(Vec::new());
        static EXCLUSIVE: Mutex<()> = Mutex::new(());
        let mut pending = Workers {
            replies: Vec::new(),
            threads: Vec::new(),
            _exclusive: lock(&EXCLUSIVE),
        };
        for (k, job) in jobs.into_iter().enumerate() {
            let (reply, answer) = std::sync::mpsc::channel();
            pending.replies.push(answer);
            if cfg!(miri) {
                pending.threads.push(std::thread::spawn(move || {
                    let _ = reply.send(worker_job(job));
                }));
                continue;
            }
            let mut workers = lock(&WORKERS);
            while workers.len() <= k {
                let (requests, incoming) = std::sync::mpsc::channel::<Request>();
                std::thread::spawn(move || {
                    for (job, reply) in incoming {
                        let _ = reply.send(worker_job(job));
                    }
                });
                workers.push(requests);
            }
            workers[k].send((job, reply)).expect("the worker runs");
        }
        pending
    }

    fn wait(self) -> Vec<String> {
        let mut problems = Vec::new();
        for answer in self.replies {
            problems.extend(answer.recv().expect("the worker answers"));
        }
        for thread in self.threads {
            thread.join().expect("the worker thread ends");
        }
        problems
    }
}

/// Runs `job` in a context of its own on this worker (`MARK` = [`OUTSIDE`]),
/// then checks that context.
fn worker_job(job: Job) -> Vec<String> {
    Context::new().run(|| {
        drop(MARK.set(OUTSIDE));
        worker_job_here(job)
    })
}

fn worker_job_here(job: Job) -> Vec<String> {
    let mut problems = Vec::new();
    if catch_unwind(AssertUnwindSafe(|| while_dropping(job))).is_err() {
        problems.push("the drop panicked".to_string());
    }
    if MARK.get().ok() != Some(OUTSIDE) {
        problems.push(format!(
            "the thread's own MARK became {:?}",
            MARK.get().ok()
        ));
    }
    if let Ok(spill) = SPILL.get() {
        problems.push(format!(
            "a probe ({spill}) was dropped in the thread's own context"
        ));
    }
    for var in &VARS {
        if let Ok(v) = var.get() {
            problems.push(format!(
                "{} = {} appeared in the thread's own context",
                var.name(),
                v.0
            ));
        }
    }
    problems
}

/// Runs `program` in a fresh context of its own, checking it against the
/// model; then, with everything it made dropped, checks that no value it set
/// is still alive. Programs must not run concurrently (the drop count is
/// global).
pub fn run_program(program: &[Op]) {
    /// Marks a program that failed: its values may outlive it (in threads
    /// it left running), so the next programs' counts are not exact.
    struct Failed;
    impl Drop for Failed {
        fn drop(&mut self) {
            if std::thread::panicking() {
                FAILED.store(true, Ordering::Relaxed);
            }
        }
    }
    static FAILED: AtomicBool = AtomicBool::new(false);
    let _failed = Failed;
    let live_before = LIVE.load(Ordering::SeqCst);
    LOG.with(|log| log.borrow_mut().clear());
    lock(&VIOLATIONS).clear();
    {
        let root = Context::new();
        let interp = Interp::new(Frame::Arena(0));
        interp.0.borrow_mut().arena.push((
            Arc::new(root),
            ModelCtx {
                id: 0,
                map: Map::new(),
                entered: true,
            },
        ));
        let root = interp.0.borrow().arena[0].0.clone();
        root.run(|| interp.exec_all(program));
        interp.0.borrow_mut().arena[0].1.entered = false;
        interp.finish();
    }
    let violations = std::mem::take(&mut *lock(&VIOLATIONS));
    assert!(violations.is_empty(), "{violations:#?}");
    let live = LIVE.load(Ordering::SeqCst);
    if FAILED.load(Ordering::Relaxed) {
        // An earlier program's leftovers may have been dropped meanwhile.
        assert!(
            live <= live_before,
            "values outlived every context and token holding them"
        );
    } else {
        assert_eq!(
            live, live_before,
            "values outlived every context and token holding them"
        );
    }
}

/// A program from bytes (for the fuzzer): total, so every input is a
/// program. At most `MAX_DEPTH` levels of nesting, at most 5 ops per body,
/// 3 resumptions per generator, and 256 ops at the top.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut bytes = data.iter().copied();
    decode_body(&mut bytes, 0, 256)
}

fn decode_body(bytes: &mut impl Iterator<Item = u8>, depth: usize, max: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    while ops.len() < max {
        match decode_op(bytes, depth) {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    ops
}

fn decode_op(bytes: &mut impl Iterator<Item = u8>, depth: usize) -> Option<Op> {
    let tag = bytes.next()?;
    let arg = usize::from(bytes.next().unwrap_or(0));
    let nested = depth < MAX_DEPTH;
    let body = |bytes: &mut _| {
        let len = usize::from(bytes_next(bytes)) % 6;
        decode_body(bytes, depth + 1, len)
    };
    Some(match tag % 16 {
        0..=3 => Op::Set(arg % VARS.len()),
        4..=6 => Op::Reset {
            token: arg,
            var: usize::from(bytes.next().unwrap_or(0)) % VARS.len(),
        },
        // `Copy` and `New` take no argument: an argument of 128 or more
        // selects one of the operations added after the corpus was kept.
        7 | 8 if arg >= 0x80 => decode_more(bytes, arg - 0x80, nested, body),
        7 => Op::Copy,
        8 => Op::New,
        9 => Op::CopyOf(arg),
        // Only arg 255: the inputs in fuzz/regressions/ops keep their meaning.
        10 if nested && arg == 0xff => {
            Op::Borrow(usize::from(bytes_next(bytes)) % VARS.len(), body(bytes))
        }
        10 if nested => Op::Scope(arg % VARS.len(), body(bytes)),
        11 if nested => Op::Run(arg, body(bytes)),
        12 if nested => match arg % 3 {
            0 => Op::Wrap(body(bytes)),
            1 => Op::Thread(body(bytes)),
            _ => Op::PollCopy(body(bytes), body(bytes)),
        },
        13 if nested => Op::Poll(arg, body(bytes), body(bytes)),
        14 if nested => {
            let n = arg % 3 + 1;
            Op::Isolated((0..n).map(|_| (body(bytes), body(bytes))).collect())
        }
        15 if nested && arg % 2 == 0 => Op::ScopePanic(arg / 2 % VARS.len(), body(bytes)),
        15 => Op::ForeignRead(arg / 2),
        _ => Op::Set(arg % VARS.len()),
    })
}

/// Forks, guards, observers, channels and drop races: `kind` (0..128)
/// chooses, the next byte is the argument.
fn decode_more<I: Iterator<Item = u8>>(
    bytes: &mut I,
    kind: usize,
    nested: bool,
    body: impl Fn(&mut I) -> Vec<Op>,
) -> Op {
    let arg = usize::from(bytes_next(bytes));
    let hook = |arg: usize| match arg % 5 {
        0 => Hook::Plain,
        1 => Hook::Reads,
        2 => Hook::Writes,
        3 => Hook::Scopes,
        _ => Hook::Panics((arg / 5 % 4) as u8),
    };
    match kind % 12 {
        0 => Op::ForkNew,
        1 if nested => Op::ForkRun(arg, body(bytes)),
        2 => Op::Merge {
            fork: arg / 2,
            overwrite: arg % 2 == 1,
        },
        3 => Op::Guard(arg % VARS.len()),
        4 => Op::DropGuard {
            guard: arg / 4,
            elsewhere: arg % 4 == 0,
        },
        5 => Op::Observe(arg % VARS.len(), hook(arg / VARS.len())),
        6 => Op::OnSwitch(hook(arg)),
        7 => Op::Unobserve(arg),
        8 if nested => Op::Churn(body(bytes)),
        9 if nested => Op::Channel(body(bytes)),
        10 => Op::DropRace((arg % 3) as u8),
        _ => Op::ForkNew,
    }
}

/// Every variable of `ctx`, read on another thread (one reader thread for
/// the whole run: spawning one per read would dominate the test's time).
fn read_elsewhere(ctx: Arc<Context>) -> Vec<Option<u64>> {
    let read = |ctx: &Context| -> Vec<Option<u64>> {
        VARS.iter().map(|var| ctx.get(var).map(|v| v.0)).collect()
    };
    if cfg!(miri) {
        // Miri wants every thread joined before the program ends (and runs
        // few programs): a thread per read.
        return std::thread::spawn(move || read(&ctx)).join().unwrap();
    }
    type Request = (Arc<Context>, std::sync::mpsc::Sender<Vec<Option<u64>>>);
    static READER: std::sync::Mutex<Option<std::sync::mpsc::Sender<Request>>> =
        std::sync::Mutex::new(None);
    let (reply, answer) = std::sync::mpsc::channel();
    {
        let mut reader = READER.lock().unwrap_or_else(|e| e.into_inner());
        let requests = reader.get_or_insert_with(|| {
            let (requests, incoming) = std::sync::mpsc::channel::<Request>();
            std::thread::spawn(move || {
                for (ctx, reply) in incoming {
                    let seen = read(&ctx);
                    // Let go of the context before answering, so the caller's
                    // count of live values does not race with this drop.
                    drop(ctx);
                    let _ = reply.send(seen);
                }
            });
            requests
        });
        requests.send((ctx, reply)).expect("the reader thread runs");
    }
    answer.recv().expect("the reader answers")
}

fn bytes_next(bytes: &mut impl Iterator<Item = u8>) -> u8 {
    bytes.next().unwrap_or(0)
}
