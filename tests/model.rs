//! Model-based property test: random programs of `set`, `reset` (in and out
//! of order, with tokens of other variables and other contexts), `scope`,
//! `copy_context`, nested `run` (and refused re-entry), `wrap`, threads
//! spawned with a copy, and `isolated` generators with caller changes between
//! resumptions, run against a plain model (maps per context, a stack of
//! frames). Every read is checked after every operation; a divergence fails
//! with a shrunk program.
//!
//! Values are unique per `set`, so the model's value equality is the
//! implementation's identity (which is what generator layers compare).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, ResetError, Token, copy_context, wrap};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

static VARS: [ContextVar<u64>; 3] = [
    ContextVar::new("a"),
    ContextVar::new("b"),
    ContextVar::new("c"),
];
static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);
static OPS: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug)]
enum Op {
    Set(usize),
    Reset {
        token: usize,
        var: usize,
    },
    Scope(usize, Vec<Op>),
    Copy,
    New,
    Run(usize, Vec<Op>),
    Wrap(Vec<Op>),
    Thread(Vec<Op>),
    /// Resumptions of one generator, each preceded by caller operations.
    Isolated(Vec<(Vec<Op>, Vec<Op>)>),
}

type Map = HashMap<usize, u64>;

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
    token: Token<u64>,
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
                var.get().ok(),
                view.get(&v).copied(),
                "current value of {}",
                var.name()
            );
        }
    }

    /// Every context of the arena (entered ones show their live state)
    /// against the model.
    fn check_arena(&self) {
        let state = self.0.borrow();
        for (ctx, model) in &state.arena {
            for (v, var) in VARS.iter().enumerate() {
                assert_eq!(
                    ctx.get(var),
                    model.map.get(&v).copied(),
                    "arena context #{} value of {}",
                    model.id,
                    var.name()
                );
            }
            assert_eq!(ctx.len(), model.map.len());
        }
    }

    fn exec_all(&self, ops: &[Op]) {
        for op in ops {
            self.exec(op);
            OPS.fetch_add(1, Ordering::Relaxed);
            self.check();
        }
        self.check_arena();
    }

    fn exec(&self, op: &Op) {
        match op {
            Op::Set(v) => {
                let value = NEXT_VALUE.fetch_add(1, Ordering::Relaxed);
                let token = VARS[*v].set(value);
                let mut state = self.0.borrow_mut();
                let old = state.set(*v, value);
                assert_eq!(
                    token.old_value().copied(),
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
                VARS[*v].scope(value, || {
                    self.check();
                    self.exec_all(ops);
                });
                self.0.borrow_mut().restore(*v, old);
            }
            Op::Copy => {
                let ctx = Arc::new(copy_context());
                let mut state = self.0.borrow_mut();
                let (id, map) = (state.fresh_id(), state.view());
                state.arena.push((
                    ctx,
                    ModelCtx {
                        id,
                        map,
                        entered: false,
                    },
                ));
            }
            Op::New => {
                let mut state = self.0.borrow_mut();
                let id = state.fresh_id();
                state.arena.push((
                    Arc::new(Context::new()),
                    ModelCtx {
                        id,
                        map: Map::new(),
                        entered: false,
                    },
                ));
            }
            Op::Run(i, ops) => {
                let (ctx, i, entered) = {
                    let state = self.0.borrow();
                    if state.arena.is_empty() {
                        return;
                    }
                    let i = i % state.arena.len();
                    (state.arena[i].0.clone(), i, state.arena[i].1.entered)
                };
                let result = ctx.try_run(|| {
                    {
                        let mut state = self.0.borrow_mut();
                        state.arena[i].1.entered = true;
                        state.stack.push(Frame::Arena(i));
                    }
                    self.check();
                    self.exec_all(ops);
                    let mut state = self.0.borrow_mut();
                    state.stack.pop();
                    state.arena[i].1.entered = false;
                });
                assert_eq!(
                    result.is_err(),
                    entered,
                    "entering an entered context is refused, others are not"
                );
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
                let map = self.0.borrow().view();
                let ops = ops.clone();
                contextvars::thread::spawn(move || {
                    let child = Interp::new(Frame::Own { id: u64::MAX, map });
                    child.check();
                    child.exec_all(&ops);
                })
                .join()
                .unwrap();
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

fn op_strategy() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        6 => (0..VARS.len()).prop_map(Op::Set),
        4 => (0..64usize, 0..VARS.len()).prop_map(|(token, var)| Op::Reset { token, var }),
        1 => Just(Op::Copy),
        1 => Just(Op::New),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        let body = prop::collection::vec(inner.clone(), 0..6);
        prop_oneof![
            2 => ((0..VARS.len()), body.clone()).prop_map(|(v, ops)| Op::Scope(v, ops)),
            3 => ((0..8usize), body.clone()).prop_map(|(i, ops)| Op::Run(i, ops)),
            1 => body.clone().prop_map(Op::Wrap),
            1 => body.clone().prop_map(Op::Thread),
            2 => prop::collection::vec((body.clone(), body), 1..4).prop_map(Op::Isolated),
        ]
    })
}

#[test]
fn random_programs_match_the_model() {
    let cases = if cfg!(miri) { 4 } else { 2_000 };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op_strategy(), 1..120), |program| {
            // Each program starts in a fresh context of its own.
            let root = Arc::new(Context::new());
            let interp = Interp::new(Frame::Arena(0));
            interp.0.borrow_mut().arena.push((
                root.clone(),
                ModelCtx {
                    id: 0,
                    map: Map::new(),
                    entered: true,
                },
            ));
            root.run(|| interp.exec_all(&program));
            Ok(())
        })
        .unwrap();
    let ops = OPS.load(Ordering::Relaxed);
    println!("model test: {ops} operations checked");
    if !cfg!(miri) {
        assert!(
            ops >= 1_000_000,
            "only {ops} operations ran; raise the case count"
        );
    }
}
