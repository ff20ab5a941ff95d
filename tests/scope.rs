//! `scope` keeps its value beside the map, on its context's list:
//! everything that looks at the map while the scope is open, on this
//! thread or another, must still see the scoped value, and nothing may see
//! it after the scope ends.

use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context};

#[path = "common/counted.rs"]
mod counted;
use counted::{Counted, Counter};

static V: ContextVar<u32> = ContextVar::with_default("v", 0);
static W: ContextVar<u32> = ContextVar::new("w");

/// Runs `f` in each kind of context: a thread's base context, a callback's
/// own (`wrap`), a generator's resumption (the private ones, whose writes
/// take no lock), and a shared context entered with `run`.
fn in_every_kind_of_context(f: fn()) {
    std::thread::spawn(f).join().unwrap();
    contextvars::wrap(f)();
    let mut generator = std::iter::once_with(f).isolated();
    generator.next();
    Arc::new(Context::new()).run(f);
}

#[test]
fn a_copy_taken_inside_a_scope_keeps_the_scoped_value() {
    in_every_kind_of_context(|| {
        V.set(1);
        let copy = V.sync_scope(2, copy_context);
        assert_eq!(copy.get(&V), Some(2));
        assert_eq!(V.get(), Ok(1), "the scope ended");
        assert_eq!(copy.run(|| V.get()), Ok(2));
    });
}

#[test]
fn nested_scopes_of_one_variable_unwind_in_order_around_writes() {
    in_every_kind_of_context(|| {
        V.sync_scope(1, || {
            V.sync_scope(2, || {
                assert_eq!(V.get(), Ok(2));
                W.set(5); // a write of another variable writes the list out
                V.sync_scope(3, || assert_eq!(V.get(), Ok(3)));
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
    in_every_kind_of_context(|| {
        V.sync_scope(4, || {
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

/// A read of a scoped value takes no borrow count (its entry holds it), so
/// the writes inside the borrow go in place: the set, the reset and a
/// nested scope that ends each make and free a box of the value's size
/// (the spare blocks hand a freed box to the next one at once). The
/// borrowed box is none of them: the entry's handle, and the map's own
/// once the first write put the value there, keep it whole until the
/// scope ends.
#[test]
fn a_borrowed_scoped_value_stays_whole_while_its_closure_writes_in_place() {
    static HEAPED: ContextVar<Vec<u64>> = ContextVar::new("heaped");
    in_every_kind_of_context(|| {
        HEAPED.sync_scope(vec![7; 5], || {
            HEAPED.with(|v| {
                let borrowed = v.unwrap();
                for i in 0..4 {
                    let token = HEAPED.set(vec![i; 5]);
                    HEAPED.sync_scope(vec![100 + i; 5], || {
                        assert_eq!(HEAPED.get(), Ok(vec![100 + i; 5]));
                    });
                    assert_eq!(HEAPED.get(), Ok(vec![i; 5]));
                    HEAPED.reset(token).unwrap();
                    let _copy = copy_context();
                }
                assert_eq!(*borrowed, vec![7; 5], "the borrowed box is still the value");
            });
            assert_eq!(HEAPED.get(), Ok(vec![7; 5]));
        });
        assert!(HEAPED.get().is_err());
    });
}

#[test]
fn a_switch_inside_a_scope_neither_shows_nor_loses_the_value() {
    in_every_kind_of_context(|| {
        V.sync_scope(8, || {
            Context::new().run(|| assert_eq!(V.get(), Ok(0), "not in another context"));
            assert_eq!(V.get(), Ok(8), "still here after the switch");
        });
        assert_eq!(V.get(), Ok(0));
    });
}

static C: ContextVar<Counted> = ContextVar::new("counted");

#[test]
fn a_scoped_value_is_dropped_once_when_its_scope_ends_also_on_panic() {
    let drops = Counter::new();
    C.sync_scope(Counted::new(&drops), || {
        assert_eq!(drops.drops(), 0);
    });
    assert_eq!(drops.drops(), 1);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        C.sync_scope(Counted::new(&drops), || {
            let _copy = copy_context(); // written into the map, then restored
            panic!("inside the scope");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(drops.drops(), 2, "dropped with the copy and the scope gone");
    assert!(C.with(|c| c.is_none()));
}

#[test]
fn a_shared_context_shows_a_scoped_value_to_another_thread() {
    let ctx = Arc::new(Context::new());
    let reader = ctx.clone();
    ctx.run(|| {
        V.sync_scope(9, || {
            let seen = std::thread::spawn(move || reader.get(&V)).join().unwrap();
            assert_eq!(seen, Some(9));
        })
    });
    assert_eq!(ctx.get(&V), None);
}

#[test]
fn another_thread_sees_everything_a_scope_in_a_shared_context_holds() {
    let ctx = Arc::new(Context::new());
    ctx.run(|| W.set(1));
    let reader = ctx.clone();
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (answer, answers) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        for () in asked {
            let copy = reader.copy();
            let seen = (
                reader.get(&V),
                reader.get(&W),
                reader.contains(&V),
                reader.len(),
                copy.get(&V),
                copy.run(|| (V.get(), W.get())),
            );
            answer.send(seen).unwrap();
        }
    });
    let look = || {
        ask.send(()).unwrap();
        answers.recv().unwrap()
    };
    ctx.run(|| {
        V.sync_scope(7, || {
            assert_eq!(look(), (Some(7), Some(1), true, 2, Some(7), (Ok(7), Ok(1))));
            W.sync_scope(2, || {
                V.sync_scope(8, || {
                    assert_eq!(look(), (Some(8), Some(2), true, 2, Some(8), (Ok(8), Ok(2))));
                });
                assert_eq!(look().0, Some(7), "the inner scope ended");
                // A write puts the scoped values into the map: still seen.
                let token = V.set(9);
                assert_eq!(look(), (Some(9), Some(2), true, 2, Some(9), (Ok(9), Ok(2))));
                V.reset(token).unwrap();
                assert_eq!(look().0, Some(7));
            });
            assert_eq!(look().1, Some(1), "W's scope ended");
        });
        assert_eq!(look(), (None, Some(1), false, 1, None, (Ok(0), Ok(1))));
    });
    drop(ask);
    thread.join().unwrap();
    assert_eq!((ctx.get(&V), ctx.get(&W), ctx.len()), (None, Some(1), 1));
}

#[test]
fn a_context_entered_under_another_shows_its_scoped_values_on_its_own_thread() {
    let outer = Context::new();
    outer.run(|| {
        V.sync_scope(3, || {
            let inner = Context::new();
            let seen = inner.run(|| (V.get(), outer.get(&V), outer.copy().get(&V)));
            assert_eq!(seen, (Ok(0), Some(3), Some(3)));
            assert_eq!(V.get(), Ok(3));
        })
    });
    assert_eq!(outer.get(&V), None);
}

#[test]
fn scopes_in_two_contexts_at_once_each_stay_in_their_own() {
    in_every_kind_of_context(|| {
        V.sync_scope(1, || {
            let other = Context::new();
            other.run(|| {
                V.sync_scope(2, || {
                    assert_eq!(V.get(), Ok(2));
                    assert_eq!(copy_context().get(&V), Some(2));
                });
                assert_eq!(V.get(), Ok(0));
            });
            assert_eq!(other.get(&V), None);
            assert_eq!(V.get(), Ok(1));
            assert_eq!(copy_context().get(&V), Some(1));
        });
        assert_eq!(V.get(), Ok(0));
    });
}

static OBSERVED: [ContextVar<String>; 4] = [
    ContextVar::new("observed 1"),
    ContextVar::new("observed 2"),
    ContextVar::new("observed 3"),
    ContextVar::new("observed 4"),
];
/// Which of `OBSERVED` the scenario runs with.
static WHICH: AtomicUsize = AtomicUsize::new(0);

/// A variable observer reads the value around a switch through another
/// read-cache slot than the variable's own; it must see a scoped value
/// there (not an older answer for the map under it), and never a scoped
/// value once its scope ended and its box is freed. (Four variables, so
/// that some have their own slot elsewhere than the switch's.)
#[test]
fn observers_around_a_switch_see_a_scope_exactly_while_it_lasts() {
    for (which, observed) in OBSERVED.iter().enumerate() {
        WHICH.store(which, Ordering::SeqCst);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let _observer = observed.observe(move |change| {
            log.lock()
                .unwrap()
                .push((change.previous().cloned(), change.current().cloned()));
        });
        in_every_kind_of_context(|| {
            let var = &OBSERVED[WHICH.load(Ordering::SeqCst)];
            // A switch before the scope: the hooks read the variable (none).
            Context::new().run(|| ());
            var.sync_scope("scoped".to_string(), || Context::new().run(|| ()));
            // The scope is over; the switches now find no value.
            Context::new().run(|| assert!(var.get().is_err()));
            assert!(var.get().is_err());
        });
        let scoped = || Some("scoped".to_string());
        let one_scope = [
            (None, scoped()), // the scope begins
            (scoped(), None), // the switch into a new context
            (None, scoped()), // and back
            (scoped(), None), // the scope ends
        ];
        // Once per kind of context, and nothing after each scope ended.
        let expected: Vec<_> = one_scope.iter().cycle().take(16).cloned().collect();
        assert_eq!(
            *seen.lock().unwrap(),
            expected,
            "{}",
            OBSERVED[which].name()
        );
    }
}

/// Readers on other threads copy a shared context while its owner opens
/// and closes nested scopes: every copy is one moment of it (the inner
/// scope's value only with the outer one's, and from the same round), and
/// nothing is seen once the last scope ended.
#[test]
fn copies_from_other_threads_see_nested_scopes_whole() {
    let rounds: u32 = if cfg!(miri) { 20 } else { 5_000 };
    let ctx = Arc::new(Context::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (ctx, done) = (ctx.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let copy = ctx.copy();
                    match (copy.get(&V), copy.get(&W)) {
                        (None, None) | (Some(_), None) => {}
                        (Some(v), Some(w)) => {
                            assert_eq!(w, v + 1_000_000, "the inner scope of another round");
                        }
                        (None, Some(w)) => panic!("the inner scope ({w}) without the outer one"),
                    }
                    assert_eq!(
                        copy.len(),
                        usize::from(copy.contains(&V)) + usize::from(copy.contains(&W))
                    );
                }
            })
        })
        .collect();
    ctx.run(|| {
        for i in 0..rounds {
            let inner = V.sync_scope(i, || W.sync_scope(i + 1_000_000, || (V.get(), W.get())));
            assert_eq!(inner, (Ok(i), Ok(i + 1_000_000)));
        }
    });
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!((ctx.get(&V), ctx.get(&W), ctx.len()), (None, None, 0));
}

/// A guard (`set_scoped`) is a `set` whose drop is the `reset`: guards
/// dropped in order restore the value before the first; dropped out of
/// order, each restores its own old value (as resetting the tokens in that
/// order would); a panic drops them on the way out. (Pure core, so Miri
/// runs the guard's write path here.)
#[test]
fn guards_restore_in_and_out_of_order_and_on_panic() {
    in_every_kind_of_context(|| {
        V.set(1);
        {
            let _two = V.set_scoped(2);
            let _three = V.set_scoped(3);
            assert_eq!(V.get(), Ok(3));
        }
        assert_eq!(V.get(), Ok(1), "dropped in reverse order");
        let two = V.set_scoped(2);
        let three = V.set_scoped(3);
        drop(two); // restores 1, its own old value
        assert_eq!(V.get(), Ok(1));
        drop(three); // restores 2, its own old value
        assert_eq!(V.get(), Ok(2), "out of order: the last dropped decides");
        let caught = std::panic::catch_unwind(|| {
            let _four = V.set_scoped(4);
            V.sync_scope(5, || panic!("inside"));
        });
        assert!(caught.is_err());
        assert_eq!(
            V.get(),
            Ok(2),
            "the panic dropped the guard and ended the scope"
        );
    });
}

/// A value with state of its own behind `&` (interior mutability): a copy
/// of its bits would be a second value that drifts apart from the first.
#[derive(Debug)]
struct Hits(std::sync::atomic::AtomicU32);

impl Hits {
    fn new() -> Hits {
        Hits(std::sync::atomic::AtomicU32::new(0))
    }
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn count(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clone for Hits {
    fn clone(&self) -> Hits {
        Hits(std::sync::atomic::AtomicU32::new(self.count()))
    }
}

static HITS: ContextVar<Hits> = ContextVar::new("hits");

fn hits_here() -> u32 {
    HITS.with(|h| h.expect("in the scope").count())
}

/// A scoped value beside the map is written into it when something needs
/// the map (a copy, a write), maybe while it is borrowed: every reader,
/// before and after, sees one and the same value.
#[test]
fn a_scoped_value_is_one_value_for_every_borrow_copy_and_write() {
    in_every_kind_of_context(|| {
        HITS.sync_scope(Hits::new(), || {
            // Reads that clone, then a borrow, then a copy inside the borrow.
            assert_eq!(HITS.get().unwrap().count(), 0);
            HITS.with(|h| {
                let h = h.unwrap();
                h.hit();
                let copy = copy_context();
                h.hit();
                assert_eq!(copy.run(hits_here), 2, "the copy has the borrowed value");
                W.set(9); // a write inside the borrow
                h.hit();
                assert_eq!(hits_here(), 3, "the write kept the borrowed value");
                assert_eq!(copy.run(hits_here), 3);
            });
            let before = HITS.with(|h| ptr::from_ref(h.unwrap()));
            let copy = copy_context();
            assert!(
                ptr::eq(
                    before,
                    copy.run(|| HITS.with(|h| ptr::from_ref(h.unwrap())))
                ),
                "a copy shares the value itself, not a copy of its bits"
            );
        });
        assert!(HITS.with(|h| h.is_none()));
        // A value hit before a write or a copy puts it into the map keeps
        // its hits there.
        HITS.sync_scope(Hits::new(), || {
            HITS.get().unwrap(); // a clone
            let copy = copy_context();
            HITS.with(|h| h.unwrap().hit());
            assert_eq!(copy.run(hits_here), 1);
        });
        HITS.sync_scope(Hits::new(), || {
            HITS.with(|h| h.unwrap().hit());
            W.set(1);
            assert_eq!(hits_here(), 1);
            assert_eq!(copy_context().run(hits_here), 1);
        });
    });
}

/// Counted, with its clones, and may write the context while it is being
/// cloned (`get` lends the value to `clone`, which is user code).
struct Sneaky {
    counted: Counted,
    text: String,
}

impl Clone for Sneaky {
    fn clone(&self) -> Sneaky {
        if SNEAKY_WRITES.load(Ordering::SeqCst) {
            // Puts the scoped value into the map (a write and a copy)
            // while `get` is reading it.
            W.set(W.get().unwrap_or(0) + 1);
            let copy = copy_context();
            let seen = copy.run(|| SNEAKY.with(|s| s.map(|s| s.text.len())));
            assert_eq!(seen, Some(self.text.len()));
        }
        Sneaky {
            counted: self.counted.clone(),
            text: self.text.clone(),
        }
    }
}

static SNEAKY: ContextVar<Sneaky> = ContextVar::new("sneaky");
static SNEAKY_WRITES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[test]
fn a_scoped_value_whose_clone_writes_and_copies_is_dropped_once() {
    let drops = Counter::new();
    let sneaky = |text: &str| Sneaky {
        counted: Counted::new(&drops),
        text: text.to_string(),
    };
    SNEAKY_WRITES.store(true, Ordering::SeqCst);
    let kept = SNEAKY.sync_scope(sneaky("scoped"), || {
        let got = SNEAKY.get().unwrap();
        assert_eq!(got.text, "scoped");
        assert_eq!(SNEAKY.get().unwrap().text, "scoped", "after the writes");
        // A copy outlives the scope, and keeps the value alive.
        (got, copy_context())
    });
    SNEAKY_WRITES.store(false, Ordering::SeqCst);
    let (got, copy) = kept;
    assert!(SNEAKY.with(|s| s.is_none()), "the scope ended");
    assert_eq!(W.get(), Ok(2), "each clone wrote");
    let before = drops.drops();
    assert_eq!(before, 1, "only the second `get`'s clone went");
    assert_eq!(
        copy.get(&SNEAKY).map(|s| s.text.clone()),
        Some("scoped".to_string())
    );
    assert_eq!(drops.drops(), before + 1, "the clone `get` made");
    drop(got);
    assert_eq!(drops.drops(), before + 2);
    drop(copy);
    assert_eq!(
        drops.drops(),
        before + 3,
        "the scoped value, dropped once, by the last copy"
    );
}

/// Values of every shape, scoped and copied: nothing, big, over-aligned.
#[test]
fn scoped_values_of_any_size_and_alignment_survive_a_copy() {
    #[derive(Clone, Debug, PartialEq)]
    #[repr(align(128))]
    struct Aligned(u8);
    static UNIT: ContextVar<()> = ContextVar::new("unit");
    static BIG: ContextVar<[u64; 512]> = ContextVar::new("big");
    static ALIGNED: ContextVar<Aligned> = ContextVar::new("aligned");
    in_every_kind_of_context(|| {
        let big: [u64; 512] = std::array::from_fn(|i| i as u64 * 3);
        UNIT.sync_scope((), || {
            BIG.sync_scope(big, || {
                ALIGNED.sync_scope(Aligned(7), || {
                    assert_eq!(
                        ALIGNED.with(|a| a.unwrap() as *const Aligned as usize % 128),
                        0
                    );
                    assert_eq!(BIG.with(|b| b.unwrap()[511]), 511 * 3);
                    let copy = copy_context();
                    assert_eq!(
                        ALIGNED.with(|a| a.unwrap() as *const Aligned as usize % 128),
                        0
                    );
                    assert_eq!(copy.get(&ALIGNED), Some(Aligned(7)));
                    assert_eq!(copy.get(&BIG).map(|b| b[100]), Some(300));
                    assert_eq!(copy.get(&UNIT), Some(()));
                })
            })
        });
        assert_eq!(BIG.get().ok(), None);
        assert_eq!(UNIT.get().ok(), None);
    });
}

#[test]
fn a_borrowed_scoped_value_is_dropped_once_also_on_panic() {
    let drops = Counter::new();
    // Borrowed, then the scope ends normally.
    C.sync_scope(Counted::new(&drops), || C.with(|c| assert!(c.is_some())));
    assert_eq!(drops.drops(), 1);
    // Borrowed, then a panic in the borrow's closure.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        C.sync_scope(Counted::new(&drops), || C.with(|_| panic!("in the borrow")))
    }));
    assert!(caught.is_err());
    assert_eq!(drops.drops(), 2);
    // Not borrowed, a panic.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        C.sync_scope(Counted::new(&drops), || panic!("in the scope"))
    }));
    assert!(caught.is_err());
    assert_eq!(drops.drops(), 3);
    // A copy taken after a borrow keeps it past the scope.
    let copy = C.sync_scope(Counted::new(&drops), || {
        C.with(|_| ());
        copy_context()
    });
    assert_eq!(drops.drops(), 3, "the copy holds it");
    drop(copy);
    assert_eq!(drops.drops(), 4);
}

/// A value without drop glue whose `clone` (user code, run by `get`) writes
/// its own variable twice: were the box `get` found not held for the clone,
/// it would be freed and its memory reused for the newer value meanwhile.
#[derive(Debug, PartialEq)]
struct Rewrites(u64);

impl Clone for Rewrites {
    fn clone(&self) -> Rewrites {
        let first = REWRITES.set(Rewrites(self.0 + 100));
        drop(first); // the token: the value it replaced is freed
        REWRITES.set(Rewrites(self.0 + 200)); // in the freed box's memory
        Rewrites(self.0)
    }
}

static REWRITES: ContextVar<Rewrites> = ContextVar::new("rewrites");

#[test]
fn get_clones_the_value_it_found_even_if_its_clone_frees_it() {
    in_every_kind_of_context(|| {
        REWRITES.set(Rewrites(1));
        assert_eq!(REWRITES.get(), Ok(Rewrites(1)));
        assert_eq!(REWRITES.get(), Ok(Rewrites(201)), "the clone's last write");
        let scoped = REWRITES.sync_scope(Rewrites(7), || {
            let got = REWRITES.get();
            (got, REWRITES.get_or(Rewrites(0)))
        });
        assert_eq!(scoped, (Ok(Rewrites(7)), Rewrites(207)));
        assert_eq!(REWRITES.get(), Ok(Rewrites(401)), "the scope ended");
    });
}

// The values below have state of their own behind `&` and no drop glue (a
// mutex, an atomic): a read that copied their bits, or a scoped value that
// moved while `get` was cloning it, would be two values where there is one.
// (Both would be faster; BENCHMARKS.md, "What limits the scope".)

/// Its clone borrows its own variable, then changes the value through that
/// borrow if it can lock it: with one value the lock is already held.
struct Locked(std::sync::Mutex<Vec<u64>>);

impl Clone for Locked {
    fn clone(&self) -> Locked {
        LOCKED.with(|_| ());
        let guard = self.0.lock().unwrap();
        LOCKED.with(|v| {
            if let Ok(mut other) = v.unwrap().0.try_lock() {
                other.extend(0..64); // would free the buffer `guard` reads
            }
        });
        Locked(std::sync::Mutex::new(guard.clone()))
    }
}

static LOCKED: ContextVar<Locked> = ContextVar::new("locked");

#[test]
fn a_scoped_value_is_one_value_while_its_own_clone_borrows_it() {
    in_every_kind_of_context(|| {
        LOCKED.sync_scope(Locked(std::sync::Mutex::new(vec![1, 2, 3])), || {
            let got = LOCKED.get().unwrap();
            assert_eq!(*got.0.lock().unwrap(), vec![1, 2, 3]);
            let here = LOCKED.with(|v| v.unwrap().0.lock().unwrap().clone());
            assert_eq!(here, vec![1, 2, 3], "the clone's lock was the value's own");
        });
    });
}

/// A mutex without drop glue, cloned under its lock.
struct Guarded(std::sync::Mutex<u64>);

impl Clone for Guarded {
    fn clone(&self) -> Guarded {
        Guarded(std::sync::Mutex::new(*self.0.lock().unwrap()))
    }
}

static GUARDED: ContextVar<Guarded> = ContextVar::new("guarded");

/// `get` on one thread clones the value another thread holds locked through
/// a copy of the context: it waits for the lock (it is one value), and
/// returns once the other thread lets go.
#[test]
fn get_waits_for_a_lock_another_thread_holds_on_the_same_value() {
    use std::sync::mpsc;
    std::thread::spawn(|| {
        GUARDED.set(Guarded(std::sync::Mutex::new(5)));
        let copy = copy_context();
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            copy.run(|| {
                GUARDED.with(|g| {
                    let _guard = g.unwrap().0.lock().unwrap();
                    locked_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            })
        });
        locked_rx.recv().unwrap();
        let reader_copy = copy_context();
        let (got_tx, got_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let got = reader_copy.run(|| GUARDED.get().unwrap().0.into_inner().unwrap());
            got_tx.send(got).unwrap();
        });
        assert!(
            got_rx
                .recv_timeout(std::time::Duration::from_millis(50))
                .is_err(),
            "the reader waits for the lock"
        );
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(
            got_rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(5)
        );
        reader.join().unwrap();
    })
    .join()
    .unwrap();
}

/// An atomic changed on another thread through a copy while this thread
/// reads it: `get` reads it as the atomic it is (Miri checks for a race).
#[test]
fn get_reads_a_value_another_thread_changes_through_a_copy() {
    std::thread::spawn(|| {
        HITS.set(Hits::new());
        let copy = copy_context();
        let other = std::thread::spawn(move || copy.run(|| HITS.with(|h| h.unwrap().hit())));
        let seen = HITS.get().unwrap().count();
        other.join().unwrap();
        assert!(seen <= 1);
        assert_eq!(HITS.get().unwrap().count(), 1, "one value, hit once");
    })
    .join()
    .unwrap();
}

/// A counted value; one of them panics when dropped (and is counted
/// dropped all the same: its fields are dropped while the panic unwinds).
struct Live {
    _counted: Counted,
    bomb: bool,
}

impl Live {
    fn new(live: &Counter, bomb: bool) -> Live {
        Live {
            _counted: Counted::new(live),
            bomb,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.bomb {
            panic!("a value's drop panics");
        }
    }
}

static LIVE: ContextVar<Live> = ContextVar::new("live");

/// A `set` inside a scope whose value panics when the scope's end lets it
/// go: the panic reaches the caller, the variable is restored, and the
/// scoped value is dropped all the same, not leaked.
#[test]
fn a_panicking_drop_at_a_scopes_end_loses_nothing() {
    in_every_kind_of_context(|| {
        let live = Counter::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            LIVE.sync_scope(Live::new(&live, false), || {
                let _token = LIVE.set(Live::new(&live, true));
            })
        }));
        assert!(caught.is_err(), "the drop's panic reaches the caller");
        assert!(LIVE.with(|v| v.is_none()), "the variable is restored");
        assert_eq!(live.live(), 0, "nothing leaked");
    });
}

// --- borrows of scoped values under churn ----------------------------------
//
// Reads of a scoped value take no borrow count (the read cache tags a scope's
// value; its entry holds it until the scope ends). Whatever the borrowing
// closure does — writes of the same variable, copies, nested and panicking
// scopes, generators, other contexts, observers, churn through the spare
// blocks, another thread reading — the borrowed value stays whole. A value
// freed under the borrow shows as `0xdead` (its drop writes that through its
// box), and to Miri as a use after free.

/// A value with a box of its own, stamped `0xdead` when dropped.
#[derive(Debug)]
struct Stamped(Box<u64>);
impl Stamped {
    fn new(n: u64) -> Stamped {
        Stamped(Box::new(n))
    }
}
impl Clone for Stamped {
    fn clone(&self) -> Stamped {
        Stamped::new(*self.0)
    }
}
impl Drop for Stamped {
    fn drop(&mut self) {
        *self.0 = 0xdead;
    }
}

static SV: ContextVar<Stamped> = ContextVar::new("stamped_v");
static SW: ContextVar<Stamped> = ContextVar::new("stamped_w");

#[test]
fn borrow_survives_everything_in_its_closure() {
    in_every_kind_of_context(|| {
        SV.sync_scope(Stamped::new(1), || {
            SV.with(|v| {
                let v = v.unwrap();
                // Churn: set/reset of V itself, copies, generators, nested scopes,
                // other contexts, panics caught.
                let t = SV.set(Stamped::new(2));
                let c = copy_context();
                SV.reset(t).unwrap();
                let t2 = SV.set(Stamped::new(3));
                drop(t2);
                SV.sync_scope(Stamped::new(4), || {
                    SV.with(|inner| assert_eq!(*inner.unwrap().0, 4));
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        SV.sync_scope(Stamped::new(5), || panic!("x"))
                    }));
                });
                let mut g = std::iter::repeat_with(|| {
                    SV.set(Stamped::new(6));
                    SV.with(|x| *x.unwrap().0)
                })
                .take(3)
                .isolated();
                assert_eq!(g.next(), Some(6));
                Context::new().run(|| {
                    SV.sync_scope(Stamped::new(7), || SV.set(Stamped::new(8)));
                });
                c.run(|| SV.set(Stamped::new(9)));
                drop(c);
                // churn the spare cells: many values alloc/free
                for i in 0..50 {
                    SW.sync_scope(Stamped::new(100 + i), || SW.set(Stamped::new(200 + i)));
                    SV.sync_scope(Stamped::new(300 + i), || ());
                }
                assert_eq!(*v.0, 1);
            });
            SV.with(|v| assert_eq!(*v.unwrap().0, 3));
        });
    });
}

#[test]
fn borrow_of_written_scope_then_reset_in_closure() {
    in_every_kind_of_context(|| {
        let outer = SV.set(Stamped::new(10));
        SV.sync_scope(Stamped::new(1), || {
            SV.with(|v| {
                let v = v.unwrap();
                let _c = copy_context(); // writes the list into the map
                // Tokens from before the scope
                let t = SV.set(Stamped::new(2));
                SV.reset(t).unwrap();
                assert_eq!(*v.0, 1);
                let inner_tok = SW.set(Stamped::new(3));
                SW.reset(inner_tok).unwrap();
                assert_eq!(*v.0, 1);
            });
        });
        SV.reset(outer).unwrap();
    });
}

#[test]
fn borrow_across_scope_end_of_inner_same_var_in_other_ctx() {
    in_every_kind_of_context(|| {
        SV.sync_scope(Stamped::new(1), || {
            SV.with(|a| {
                let ctx = Arc::new(copy_context());
                ctx.run(|| {
                    SV.with(|b| {
                        assert_eq!(*b.unwrap().0, 1);
                        SV.sync_scope(Stamped::new(2), || {
                            SV.with(|c| assert_eq!(*c.unwrap().0, 2));
                        });
                        assert_eq!(*b.unwrap().0, 1);
                    })
                });
                assert_eq!(*a.unwrap().0, 1);
            })
        });
        assert!(SV.with(|v| v.is_none()));
    });
}

#[test]
fn observed_scope_with_borrow() {
    static O: ContextVar<Stamped> = ContextVar::new("o");
    let _obs = O.observe(|c| {
        // read other values during the hook
        let _ = O.with(|v| v.map(|p| *p.0));
        let _ = c;
    });
    in_every_kind_of_context(|| {
        O.sync_scope(Stamped::new(1), || {
            O.with(|v| {
                let v = v.unwrap();
                O.set(Stamped::new(2));
                Context::new().run(|| O.sync_scope(Stamped::new(3), || ()));
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
                if let Some(p) = ctx.get(&SV) {
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
            SV.sync_scope(Stamped::new(i % 1000), || {
                SV.with(|v| {
                    let t = SW.set(Stamped::new(1));
                    SW.reset(t).unwrap();
                    SV.sync_scope(Stamped::new(5), || ());
                    assert_eq!(*v.unwrap().0, i % 1000);
                })
            });
            let t = SV.set(Stamped::new(7));
            SV.reset(t).unwrap();
        });
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}
