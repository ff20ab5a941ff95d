//! `scope` in a private context keeps its value beside the map (issue 16):
//! everything that looks at the map while the scope is open must still see
//! the scoped value, and nothing may see it after the scope ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context};

static V: ContextVar<u32> = ContextVar::with_default("v", 0);
static W: ContextVar<u32> = ContextVar::new("w");

/// Runs `f` in each kind of private context: a thread's base context, a
/// callback's own (`wrap`), and a generator's resumption.
fn in_private_contexts(f: fn()) {
    std::thread::spawn(f).join().unwrap();
    contextvars::wrap(f)();
    let mut generator = std::iter::once_with(f).isolated();
    generator.next();
}

#[test]
fn a_copy_taken_inside_a_scope_keeps_the_scoped_value() {
    in_private_contexts(|| {
        V.set(1);
        let copy = V.scope(2, copy_context);
        assert_eq!(copy.get(&V), Some(2));
        assert_eq!(V.get(), Ok(1), "the scope ended");
        assert_eq!(copy.run(|| V.get()), Ok(2));
    });
}

#[test]
fn nested_scopes_of_one_variable_unwind_in_order_around_writes() {
    in_private_contexts(|| {
        V.scope(1, || {
            V.scope(2, || {
                assert_eq!(V.get(), Ok(2));
                W.set(5); // a write of another variable writes the list out
                V.scope(3, || assert_eq!(V.get(), Ok(3)));
                assert_eq!(V.get(), Ok(2));
            });
            assert_eq!(V.get(), Ok(1));
            let token = V.set(7); // a write of the scoped variable itself
            assert_eq!(token.old_value(), Some(&1));
            assert_eq!(V.get(), Ok(7));
        });
        assert_eq!(V.get(), Ok(0), "back to the default");
        assert_eq!(W.get(), Ok(5), "the plain set stays");
    });
}

#[test]
fn a_borrow_of_a_scoped_value_outlives_a_write_in_its_closure() {
    in_private_contexts(|| {
        V.scope(4, || {
            V.with(|v| {
                let borrowed = v.unwrap();
                V.set(5);
                let _copy = copy_context();
                assert_eq!(*borrowed, 4, "the borrowed box is still alive");
            });
            assert_eq!(V.get(), Ok(5));
        });
        assert_eq!(V.get(), Ok(0));
    });
}

#[test]
fn a_switch_inside_a_scope_neither_shows_nor_loses_the_value() {
    in_private_contexts(|| {
        V.scope(8, || {
            Context::new().run(|| assert_eq!(V.get(), Ok(0), "not in another context"));
            assert_eq!(V.get(), Ok(8), "still here after the switch");
        });
        assert_eq!(V.get(), Ok(0));
    });
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

static C: ContextVar<Counted> = ContextVar::new("counted");

#[test]
fn a_scoped_value_is_dropped_once_when_its_scope_ends_also_on_panic() {
    let drops = Arc::new(AtomicUsize::new(0));
    C.scope(Counted(drops.clone()), || {
        assert_eq!(drops.load(Ordering::SeqCst), 0);
    });
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        C.scope(Counted(drops.clone()), || {
            let _copy = copy_context(); // written into the map, then restored
            panic!("inside the scope");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "dropped with the copy and the scope gone"
    );
    assert!(C.with(|c| c.is_none()));
}

#[test]
fn a_shared_context_shows_a_scoped_value_to_another_thread() {
    let ctx = Arc::new(Context::new());
    let reader = ctx.clone();
    ctx.run(|| {
        V.scope(9, || {
            let seen = std::thread::spawn(move || reader.get(&V)).join().unwrap();
            assert_eq!(seen, Some(9));
        })
    });
    assert_eq!(ctx.get(&V), None);
}
