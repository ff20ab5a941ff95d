//! Borrows of scoped values, which take no borrow count (the read cache tags
//! a scope's value; its entry holds it until the scope ends): whatever the
//! borrowing closure does — writes of the same variable, copies, nested and
//! panicking scopes, generators, other contexts, observers, churn through
//! the spare blocks, another thread reading — the borrowed value stays
//! whole. A value freed under the borrow shows as `0xdead` (its drop writes
//! that through the box), and to Miri as a use after free. (Written by a
//! hostile review of issue 16's third stop.)
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context};

#[derive(Debug)]
struct Probe(Box<u64>);
impl Probe {
    fn new(n: u64) -> Probe {
        Probe(Box::new(n))
    }
}
impl Clone for Probe {
    fn clone(&self) -> Probe {
        Probe::new(*self.0)
    }
}
impl Drop for Probe {
    fn drop(&mut self) {
        *self.0 = 0xdead;
    }
}

static V: ContextVar<Probe> = ContextVar::new("v");
static W: ContextVar<Probe> = ContextVar::new("w");

/// Runs `f` in every kind of context: a thread's base, a task's own
/// (`wrap`), a generator's resumption, a shared one (`Arc` and `&`).
fn kinds(f: fn()) {
    std::thread::spawn(f).join().unwrap();
    contextvars::wrap(f)();
    let mut g = std::iter::once_with(f).isolated();
    g.next();
    Arc::new(Context::new()).run(f);
    let c = Context::new();
    c.run(f);
}

#[test]
fn borrow_survives_everything_in_its_closure() {
    kinds(|| {
        V.scope(Probe::new(1), || {
            V.with(|v| {
                let v = v.unwrap();
                // Churn: set/reset of V itself, copies, generators, nested scopes,
                // other contexts, panics caught.
                let t = V.set(Probe::new(2));
                let c = copy_context();
                V.reset(t).unwrap();
                let t2 = V.set(Probe::new(3));
                drop(t2);
                V.scope(Probe::new(4), || {
                    V.with(|inner| assert_eq!(*inner.unwrap().0, 4));
                    let _ =
                        catch_unwind(AssertUnwindSafe(|| V.scope(Probe::new(5), || panic!("x"))));
                });
                let mut g = std::iter::repeat_with(|| {
                    V.set(Probe::new(6));
                    V.with(|x| *x.unwrap().0)
                })
                .take(3)
                .isolated();
                assert_eq!(g.next(), Some(6));
                Context::new().run(|| {
                    V.scope(Probe::new(7), || V.set(Probe::new(8)));
                });
                c.run(|| V.set(Probe::new(9)));
                drop(c);
                // churn the spare cells: many values alloc/free
                for i in 0..50 {
                    W.scope(Probe::new(100 + i), || W.set(Probe::new(200 + i)));
                    V.scope(Probe::new(300 + i), || ());
                }
                assert_eq!(*v.0, 1);
            });
            V.with(|v| assert_eq!(*v.unwrap().0, 3));
        });
    });
}

#[test]
fn borrow_of_written_scope_then_reset_in_closure() {
    kinds(|| {
        let outer = V.set(Probe::new(10));
        V.scope(Probe::new(1), || {
            V.with(|v| {
                let v = v.unwrap();
                let _c = copy_context(); // writes the list into the map
                // Tokens from before the scope
                let t = V.set(Probe::new(2));
                V.reset(t).unwrap();
                assert_eq!(*v.0, 1);
                let inner_tok = W.set(Probe::new(3));
                W.reset(inner_tok).unwrap();
                assert_eq!(*v.0, 1);
            });
        });
        V.reset(outer).unwrap();
    });
}

#[test]
fn borrow_across_scope_end_of_inner_same_var_in_other_ctx() {
    kinds(|| {
        V.scope(Probe::new(1), || {
            V.with(|a| {
                let ctx = Arc::new(copy_context());
                ctx.run(|| {
                    V.with(|b| {
                        assert_eq!(*b.unwrap().0, 1);
                        V.scope(Probe::new(2), || {
                            V.with(|c| assert_eq!(*c.unwrap().0, 2));
                        });
                        assert_eq!(*b.unwrap().0, 1);
                    })
                });
                assert_eq!(*a.unwrap().0, 1);
            })
        });
        assert!(V.with(|v| v.is_none()));
    });
}

#[test]
fn observed_scope_with_borrow() {
    static O: ContextVar<Probe> = ContextVar::new("o");
    let _obs = O.observe(|c| {
        // read other values during the hook
        let _ = O.with(|v| v.map(|p| *p.0));
        let _ = c;
    });
    kinds(|| {
        O.scope(Probe::new(1), || {
            O.with(|v| {
                let v = v.unwrap();
                O.set(Probe::new(2));
                Context::new().run(|| O.scope(Probe::new(3), || ()));
                assert_eq!(*v.0, 1);
            })
        })
    });
}

#[test]
fn foreign_readers_while_owner_scopes_and_borrows() {
    let ctx = Arc::new(Context::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let ctx = ctx.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = ctx.get(&V) {
                    assert!(*p.0 < 1000, "{}", *p.0);
                }
                let c = ctx.copy();
                drop(c);
                n += 1;
            }
            n
        })
    };
    let iters = if cfg!(miri) { 20 } else { 20000 };
    for i in 0..iters {
        ctx.run(|| {
            V.scope(Probe::new(i % 1000), || {
                V.with(|v| {
                    let t = W.set(Probe::new(1));
                    W.reset(t).unwrap();
                    V.scope(Probe::new(5), || ());
                    assert_eq!(*v.unwrap().0, i % 1000);
                })
            });
            let t = V.set(Probe::new(7));
            V.reset(t).unwrap();
        });
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}
