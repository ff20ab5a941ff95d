//! Where a context's values are dropped: inside a context that held them,
//! never in the context of whoever happens to drop the last handle. Checked
//! from inside the values' destructors, which read a variable that only the
//! dropping thread's own context has.
//!
//! Pure core, so it also runs under Miri (`.ci/miri`), with fewer rounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use contextvars::{Context, ContextVar, Fork, observe};

/// Set in the dropping threads' own contexts only.
static DROPPER: ContextVar<u32> = ContextVar::new("dropper");

/// On drop: counts itself, and counts it as misplaced if it can see the
/// dropping thread's `DROPPER`.
struct Placed(Arc<Counts>);

#[derive(Default)]
struct Counts {
    dropped: AtomicUsize,
    misplaced: AtomicUsize,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
        if DROPPER.get().is_ok() {
            self.0.misplaced.fetch_add(1, Ordering::SeqCst);
        }
    }
}

static HELD: ContextVar<Placed> = ContextVar::new("held");

/// Two threads that meet before every round: each arrives, then spins
/// until the other has, so that both leave within a few instructions of
/// each other (a sleeping barrier would wake them microseconds apart).
struct Meeting {
    arrived: AtomicUsize,
}

impl Meeting {
    fn meet(&self, round: usize) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.arrived.load(Ordering::SeqCst) < 2 * (round + 1) {
            spins += 1;
            if spins % 128 == 0 {
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }
}

#[test]
fn a_context_and_its_copy_dropped_at_once_on_two_threads_drop_their_values_inside_one() {
    // The race is narrow: many rounds, in batches that bound the memory.
    // `CONTEXTVARS_DROP_RACE_BATCHES` runs fewer (ThreadSanitizer's build,
    // many times slower, checks the accesses, not the odds).
    let batches = std::env::var("CONTEXTVARS_DROP_RACE_BATCHES")
        .ok()
        .map(|n| n.parse().expect("CONTEXTVARS_DROP_RACE_BATCHES: a number"))
        .unwrap_or(10);
    let (batches, rounds): (usize, usize) = if cfg!(miri) {
        (1, 30)
    } else {
        (batches, 30_000)
    };
    let counts = Arc::new(Counts::default());
    for _ in 0..batches {
        let meeting = Arc::new(Meeting {
            arrived: AtomicUsize::new(0),
        });
        let mut sides: [Vec<Context>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            let ctx = Context::new();
            ctx.run(|| HELD.set(Placed(counts.clone())));
            sides[1].push(ctx.copy());
            sides[0].push(ctx);
        }
        let droppers = sides.map(|contexts| {
            let meeting = meeting.clone();
            std::thread::spawn(move || {
                DROPPER.set(1);
                for (round, ctx) in contexts.into_iter().enumerate() {
                    meeting.meet(round);
                    drop(ctx);
                }
            })
        });
        for dropper in droppers {
            dropper.join().unwrap();
        }
        assert_eq!(
            counts.misplaced.load(Ordering::SeqCst),
            0,
            "values dropped in the dropping thread's context"
        );
    }
    assert_eq!(counts.dropped.load(Ordering::SeqCst), batches * rounds);
}

#[test]
fn a_value_replaced_in_a_context_entered_inside_a_borrow_is_dropped_in_that_context() {
    static BORROWED: ContextVar<u32> = ContextVar::new("borrowed");
    let counts = Arc::new(Counts::default());
    std::thread::spawn({
        let counts = counts.clone();
        move || {
            DROPPER.set(1);
            BORROWED.set(5);
            let inner = Context::new();
            BORROWED.with(|v| {
                assert_eq!(v, Some(&5));
                inner.run(|| {
                    HELD.set(Placed(counts.clone()));
                    // Replaces the first value: its token goes at once, and
                    // the value with it, here, inside `inner`.
                    HELD.set(Placed(counts.clone()));
                    assert_eq!(counts.dropped.load(Ordering::SeqCst), 1);
                });
                drop(inner);
                assert_eq!(counts.dropped.load(Ordering::SeqCst), 2);
            });
        }
    })
    .join()
    .unwrap();
    assert_eq!(counts.dropped.load(Ordering::SeqCst), 2);
    assert_eq!(counts.misplaced.load(Ordering::SeqCst), 0);
}

#[test]
fn a_borrow_keeps_its_value_alive_across_writes_made_in_an_inner_context() {
    static B: ContextVar<String> = ContextVar::new("b");
    std::thread::spawn(|| {
        B.set("outer".to_string());
        B.with(|outer| {
            let inner = Context::new();
            inner.run(|| {
                B.set("inner".to_string());
                B.with(|v| {
                    B.set("inner 2".to_string());
                    assert_eq!(v.map(String::as_str), Some("inner"));
                });
            });
            drop(inner);
            // The outer borrow's value is intact: writes below it still copy.
            B.set("replaced".to_string());
            assert_eq!(outer.map(String::as_str), Some("outer"));
        });
        assert_eq!(B.get().as_deref(), Ok("replaced"));
    })
    .join()
    .unwrap();
}

/// Switch observers are process-wide: the tests that install them run one
/// at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn dropping_a_context_calls_no_switch_hook_and_a_writing_hook_cannot_refill_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    static TAG: ContextVar<Placed> = ContextVar::new("tag");
    std::thread::spawn(|| {
        let counts = Arc::new(Counts::default());
        let me = std::thread::current().id();
        let calls = Arc::new(AtomicUsize::new(0));
        let hook = {
            let (counts, calls) = (counts.clone(), calls.clone());
            observe::on_switch("tagger", move |_| {
                if std::thread::current().id() == me {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // A profiler's tag, set in every context switched to.
                    TAG.set(Placed(counts.clone()));
                }
            })
        };
        let ctx = Context::new();
        ctx.run(|| HELD.set(Placed(counts.clone())));
        let before = calls.load(Ordering::SeqCst);
        let live_before = live(&counts);
        drop(ctx);
        let during_drop = calls.load(Ordering::SeqCst) - before;
        drop(hook);
        assert_eq!(during_drop, 0, "dropping a context called the switch hook");
        // The context held `HELD` and the tags set on entering and leaving
        // it: all of them went with it, nothing was refilled or leaked.
        assert_eq!(live(&counts), live_before - 2, "values refilled or leaked");
    })
    .join()
    .unwrap();
}

/// How many `Placed` values made with `counts` are alive, given how many
/// were made (each `Placed(counts.clone())` holds one more handle).
fn live(counts: &Arc<Counts>) -> usize {
    Arc::strong_count(counts) - 1
}

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a value's destructor panics");
    }
}

static PANICKY: ContextVar<PanicsOnDrop> = ContextVar::new("panicky");
static REFILLED: ContextVar<Placed> = ContextVar::new("refilled");

/// On drop, sets `REFILLED` in the context it is dropped in.
struct Refills(Arc<Counts>);

impl Drop for Refills {
    fn drop(&mut self) {
        REFILLED.set(Placed(self.0.clone()));
    }
}

static REFILLS: ContextVar<Refills> = ContextVar::new("refills");

#[test]
fn a_panicking_destructor_leaves_the_other_values_dropped_inside_their_context() {
    let counts = Arc::new(Counts::default());
    let ctx = Context::new();
    ctx.run(|| {
        PANICKY.set(PanicsOnDrop);
        REFILLS.set(Refills(counts.clone()));
        HELD.set(Placed(counts.clone()));
    });
    DROPPER.set(1);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(ctx)));
    let panic = dropped.expect_err("the destructor's panic goes on to the dropper");
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"a value's destructor panics")
    );
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        2,
        "the value held and the one a destructor set are both dropped"
    );
    assert_eq!(
        counts.misplaced.load(Ordering::SeqCst),
        0,
        "both inside the context, not the dropper's"
    );
}

#[test]
fn a_context_dropped_while_its_thread_unwinds_contains_a_panicking_destructor() {
    let counts = Arc::new(Counts::default());
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = Context::new();
        ctx.run(|| {
            PANICKY.set(PanicsOnDrop);
            HELD.set(Placed(counts.clone()));
        });
        DROPPER.set(1);
        // `ctx` is dropped while this panic unwinds: the destructor's panic
        // must not leave the drop (that would abort the process).
        panic!("the first panic");
    }));
    let panic = unwound.expect_err("the first panic goes on");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"the first panic"));
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        1,
        "the other value is dropped"
    );
    assert_eq!(
        counts.misplaced.load(Ordering::SeqCst),
        0,
        "inside its context"
    );
}

static CHAIN: ContextVar<Chain> = ContextVar::new("chain");
static CHAIN_NEXT: ContextVar<Chain> = ContextVar::new("chain_next");

/// Link `.0` of a chain of `.1` links. On drop: notes where it is dropped,
/// sets the next link (unless it is the last), and panics.
struct Chain(u32, u32, Arc<Counts>);

impl Drop for Chain {
    fn drop(&mut self) {
        let Chain(link, links, counts) = self;
        counts.dropped.fetch_add(1, Ordering::SeqCst);
        if DROPPER.get().is_ok() {
            counts.misplaced.fetch_add(1, Ordering::SeqCst);
        }
        if link < links {
            CHAIN_NEXT.set(Chain(*link + 1, *links, counts.clone()));
        }
        panic!("link {link}");
    }
}

#[test]
fn destructors_that_panic_round_after_round_never_run_outside_their_context() {
    let counts = Arc::new(Counts::default());
    let ctx = Context::new();
    ctx.run(|| CHAIN.set(Chain(1, 2, counts.clone())));
    DROPPER.set(1);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(ctx)));
    let panic = dropped.expect_err("the first destructor's panic goes on");
    assert_eq!(
        panic.downcast_ref::<String>().map(String::as_str),
        Some("link 1")
    );
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        2,
        "the link the first destructor set is dropped too"
    );
    assert_eq!(
        counts.misplaced.load(Ordering::SeqCst),
        0,
        "both inside the context"
    );
}

/// `n` distinct variables, for contexts whose map is a branch (more than a
/// flat root's four entries).
fn many_vars(n: usize) -> &'static [ContextVar<Placed>] {
    static VARS: std::sync::OnceLock<Vec<ContextVar<Placed>>> = std::sync::OnceLock::new();
    &VARS.get_or_init(|| (0..40).map(|_| ContextVar::new("many")).collect())[..n]
}

#[test]
fn a_branch_root_and_its_copy_dropped_at_once_drop_each_value_once_inside_one() {
    let rounds = if cfg!(miri) { 4 } else { 300 };
    for _ in 0..rounds {
        let counts = Arc::new(Counts::default());
        let ctx = Context::new();
        ctx.run(|| {
            for var in many_vars(40) {
                var.set(Placed(counts.clone()));
            }
        });
        let copy = ctx.copy();
        let other = std::thread::spawn(move || {
            DROPPER.set(2);
            drop(copy);
        });
        DROPPER.set(1);
        drop(ctx);
        other.join().unwrap();
        assert_eq!(counts.dropped.load(Ordering::SeqCst), 40, "each value once");
        assert_eq!(
            counts.misplaced.load(Ordering::SeqCst),
            0,
            "inside the context"
        );
    }
}

#[test]
fn a_fork_that_never_wrote_and_a_copy_dropped_at_once_drop_each_value_once_inside_one() {
    let rounds = if cfg!(miri) { 4 } else { 300 };
    for _ in 0..rounds {
        let counts = Arc::new(Counts::default());
        let ctx = Context::new();
        let (fork, copy) = ctx.run(|| {
            for var in many_vars(3) {
                var.set(Placed(counts.clone()));
            }
            (Fork::new(), contextvars::copy_context())
        });
        drop(ctx);
        let other = std::thread::spawn(move || {
            DROPPER.set(2);
            drop(copy);
        });
        DROPPER.set(1);
        drop(fork);
        other.join().unwrap();
        assert_eq!(counts.dropped.load(Ordering::SeqCst), 3, "each value once");
        assert_eq!(
            counts.misplaced.load(Ordering::SeqCst),
            0,
            "inside the context"
        );
    }
}

#[test]
fn a_long_chain_of_panicking_destructors_is_dropped_whole_inside_its_context() {
    let counts = Arc::new(Counts::default());
    let ctx = Context::new();
    ctx.run(|| CHAIN.set(Chain(1, 5, counts.clone())));
    DROPPER.set(1);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(ctx)));
    let panic = dropped.expect_err("the first destructor's panic goes on");
    assert_eq!(
        panic.downcast_ref::<String>().map(String::as_str),
        Some("link 1"),
        "the first panic, not a later one"
    );
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        5,
        "each link the one before set is dropped, round after round"
    );
    assert_eq!(
        counts.misplaced.load(Ordering::SeqCst),
        0,
        "all inside the context"
    );
}
