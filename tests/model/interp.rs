//! The reference model and its interpreter, shared by the property test
//! (`tests/model.rs`, programs from proptest) and the fuzz target
//! (`fuzz/fuzz_targets/ops.rs`, programs decoded from bytes by [`decode`]).
//!
//! A program is a tree of [`Op`]s. The interpreter runs each op on the real
//! crate and on a plain model (a `BTreeMap` per context, a stack of frames
//! for what is current), and after every op checks every variable's current
//! value against the model; contexts held in the arena are checked (`get`,
//! `contains`, `len`) after each `run` of them and at the end. Values are
//! drop-counted: when a program ends and everything it made is gone, no value
//! may be left alive.
//!
//! Values are unique per `set`, so the model's value equality is the
//! implementation's identity (which is what generator layers compare).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, ResetError, Token, copy_context, wrap};

/// A value that counts its live instances in [`LIVE`].
#[derive(Debug)]
pub struct Val(pub u64);

/// How many [`Val`]s are alive.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);

impl Val {
    fn new(n: u64) -> Val {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Val(n)
    }
}

impl Clone for Val {
    fn clone(&self) -> Val {
        Val::new(self.0)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

pub static VARS: [ContextVar<Val>; 3] = [
    ContextVar::new("a"),
    ContextVar::new("b"),
    ContextVar::new("c"),
];
static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);
/// Operations run (and checked), across programs and threads.
pub static OPS: AtomicU64 = AtomicU64::new(0);
/// Threads spawned by `Op::Thread`.
pub static THREADS: AtomicU64 = AtomicU64::new(0);

/// The deepest nesting [`decode`] produces.
pub const MAX_DEPTH: usize = 3;

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
}

type Map = BTreeMap<usize, u64>;

enum Frame {
    /// An arena context, entered.
    Arena(usize),
    /// A context only this frame knows (a `wrap` copy, a thread's copy).
    Own { id: u64, map: Map },
    /// A generator resumption: the caller's map under the layer's own values.
    Layer { layer: usize, outer: Map },
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

struct TokenRecord {
    token: Token<Val>,
    var: usize,
    context: u64,
    old: Option<u64>,
}

#[derive(Default)]
struct State {
    arena: Vec<(Arc<Context>, ModelCtx)>,
    stack: Vec<Frame>,
    layers: Vec<Layer>,
    tokens: Vec<Option<TokenRecord>>,
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
        }
    }

    fn current_id(&self) -> u64 {
        match self.stack.last().expect("a frame") {
            Frame::Arena(i) => self.arena[*i].1.id,
            Frame::Own { id, .. } => *id,
            Frame::Layer { layer, .. } => self.layers[*layer].id,
        }
    }

    /// Model `set`: returns the old value the token must record.
    fn set(&mut self, var: usize, value: u64) -> Option<u64> {
        match self.stack.last_mut().expect("a frame") {
            Frame::Arena(i) => self.arena[*i].1.map.insert(var, value),
            Frame::Own { map, .. } => map.insert(var, value),
            // A value showing through from the caller is not the layer's own.
            Frame::Layer { layer, .. } => self.layers[*layer].own.insert(var, value),
        }
    }

    /// Model of restoring `old` (a token's record) into the current frame.
    fn restore(&mut self, var: usize, old: Option<u64>) {
        let map = match self.stack.last_mut().expect("a frame") {
            Frame::Arena(i) => &mut self.arena[*i].1.map,
            Frame::Own { map, .. } => map,
            Frame::Layer { layer, .. } => &mut self.layers[*layer].own,
        };
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

impl Interp {
    fn new(frame: Frame) -> Interp {
        Interp(RefCell::new(State {
            stack: vec![frame],
            ..State::default()
        }))
    }

    /// Every variable's current value against the model.
    fn check(&self) {
        let state = self.0.borrow();
        let view = state.view();
        for (v, var) in VARS.iter().enumerate() {
            assert_eq!(
                var.get().ok().map(|x| x.0),
                view.get(&v).copied(),
                "current value of {}",
                var.name()
            );
        }
    }

    /// One context of the arena (an entered one shows its live state)
    /// against the model: `get`, `contains` and `len`.
    fn check_context(&self, i: usize) {
        let state = self.0.borrow();
        let (ctx, model) = &state.arena[i];
        for (v, var) in VARS.iter().enumerate() {
            assert_eq!(
                ctx.get(var).map(|x| x.0),
                model.map.get(&v).copied(),
                "arena context #{} value of {}",
                model.id,
                var.name()
            );
            assert_eq!(ctx.contains(var), model.map.contains_key(&v));
        }
        assert_eq!(ctx.len(), model.map.len());
    }

    /// The end of a program: every context of the arena against the model,
    /// then the threads it spawned joined (their panics propagate).
    fn finish(&self) {
        self.check_arena();
        let threads = std::mem::take(&mut self.0.borrow_mut().threads);
        for handle in threads {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
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

    fn exec(&self, op: &Op) {
        match op {
            Op::Set(v) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let token = VARS[*v].set(Val::new(value));
                let mut state = self.0.borrow_mut();
                let old = state.set(*v, value);
                assert_eq!(
                    token.old_value().map(|x| x.0),
                    old,
                    "token.old_value of {}",
                    VARS[*v].name()
                );
                let context = state.current_id();
                state.tokens.push(Some(TokenRecord {
                    token,
                    var: *v,
                    context,
                    old,
                }));
            }
            Op::Reset { token, var } => {
                let record = {
                    let mut state = self.0.borrow_mut();
                    let n = state.tokens.len();
                    if n == 0 {
                        return;
                    }
                    match state.tokens[token % n].take() {
                        Some(r) => r,
                        None => return,
                    }
                };
                let expected = {
                    let state = self.0.borrow();
                    if record.var != *var {
                        Err(ResetError::DifferentVar {
                            var: VARS[*var].name(),
                            token_var: VARS[record.var].name(),
                        })
                    } else if record.context != state.current_id() {
                        Err(ResetError::DifferentContext {
                            var: VARS[*var].name(),
                        })
                    } else {
                        Ok(())
                    }
                };
                assert_eq!(VARS[*var].reset(record.token), expected);
                if expected.is_ok() {
                    self.0.borrow_mut().restore(*var, record.old);
                }
            }
            Op::Scope(v, ops) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let old = self.0.borrow_mut().set(*v, value);
                VARS[*v].sync_scope(Val::new(value), || {
                    self.check();
                    self.exec_all(ops);
                });
                self.0.borrow_mut().restore(*v, old);
            }
            Op::Borrow(v, ops) => {
                let expected = self.0.borrow().view().get(v).copied();
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
                let old = self.0.borrow_mut().set(*v, value);
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    VARS[*v].sync_scope(Val::new(value), || {
                        self.check();
                        self.exec_all(ops);
                        // No panic hook (and no message) for a planned unwind.
                        std::panic::resume_unwind(Box::new("planned"));
                    })
                }));
                assert!(caught.is_err());
                self.0.borrow_mut().restore(*v, old);
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
                    {
                        let mut state = self.0.borrow_mut();
                        let (id, map) = (state.fresh_id(), state.view());
                        state.stack.push(Frame::Own { id, map });
                    }
                    self.check();
                    self.exec_all(ops);
                    self.0.borrow_mut().stack.pop();
                });
                job();
            }
            Op::Thread(ops) => {
                // The thread checks its own copy against its own model while
                // this program goes on; it is joined when the program ends.
                let map = self.0.borrow().view();
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
                        let (id, map) = (state.fresh_id(), state.view());
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
                    let (id, map) = (state.fresh_id(), state.view());
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
        }
    }
}

/// Runs `program` in a fresh context of its own, checking it against the
/// model; then, with everything it made dropped, checks that no value it set
/// is still alive. Programs must not run concurrently (the drop count is
/// global).
pub fn run_program(program: &[Op]) {
    let live_before = LIVE.load(Ordering::SeqCst);
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
    assert_eq!(
        LIVE.load(Ordering::SeqCst),
        live_before,
        "values outlived every context and token holding them"
    );
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
