//! loom models of the parts where threads race on one context. Run with
//!
//! ```text
//! cd loom && RUSTFLAGS="--cfg loom" cargo test --release
//! ```
//!
//! (`.ci/run` does.)
//!
//! Every model but the last runs the crate's own code: under `--cfg loom`
//! the atomics of a context (`state`, `lock`) and of a value's reference
//! count, the cells of a context's map and frame, and the thread-locals of
//! the current context are loom's (`src/sync.rs`), so loom checks every
//! interleaving of the real `run`, `set`, `reset`, `scope`, `get`, `copy`
//! and drops for data races on the map and on the values, and the
//! assertions for what each thread sees. `RELIABILITY.md` says what stays
//! outside loom's view.
#![cfg(loom)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering::SeqCst};

use contextvars::{Context, ContextVar};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

/// Every interleaving, unless `LOOM_MAX_PREEMPTIONS` bounds them: the
/// models are small enough for loom to explore them all (in well under a
/// second; `RELIABILITY.md` has the counts).
fn model(f: impl Fn() + Sync + Send + 'static) {
    loom::model::Builder::new().check(f);
}

std::thread_local! {
    /// How many `Probe`s are alive. A test's model threads all run on its
    /// one OS thread, so a `std` thread-local counts exactly that test's
    /// probes, and adds no interleavings.
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

/// A value that loom watches. Its number is kept twice, once in a cell
/// that `clone` reads and `drop` writes: so a value freed while another
/// thread still reads it (a reference count that orders too little) is a
/// data race loom reports, and a torn or stale value shows as a mismatch.
/// `LIVE` counts it, so a leak or a second drop shows too.
struct Probe {
    n: usize,
    watched: UnsafeCell<usize>,
}

// SAFETY: through a shared reference the cell is only read (`get`,
// `clone`); the one write is in `drop`, through `&mut self`.
unsafe impl Sync for Probe {}

impl Probe {
    fn new(n: usize) -> Probe {
        LIVE.with(|live| live.set(live.get() + 1));
        Probe {
            n,
            watched: UnsafeCell::new(n),
        }
    }

    fn get(&self) -> usize {
        // SAFETY: see `Sync`; loom checks it.
        let watched = self.watched.with(|n| unsafe { *n });
        assert_eq!(watched, self.n, "a torn or freed value");
        self.n
    }
}

impl Clone for Probe {
    fn clone(&self) -> Probe {
        Probe::new(self.get())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: `&mut self`; loom checks that every read happened before.
        self.watched.with_mut(|n| unsafe { *n = usize::MAX });
        LIVE.with(|live| live.set(live.get() - 1));
    }
}

/// Drops the last handle of `ctx` and checks that no value outlives it.
fn no_value_left(ctx: Arc<Context>) {
    drop(ctx);
    assert_eq!(LIVE.with(Cell::get), 0, "a value leaked or dropped twice");
}

/// Runs `body` over every interleaving, then checks that each outcome
/// in `expected` happened in at least one of them (so the model did race
/// the two threads, rather than run them one after the other).
fn model_seeing(expected: &'static [usize], seen: &'static StdAtomicUsize, body: fn()) {
    seen.store(0, SeqCst);
    model(body);
    for n in expected {
        assert_ne!(seen.load(SeqCst) & (1 << n), 0, "no interleaving saw {n}");
    }
}

/// Two threads try to enter one shared context; never are both inside at
/// once, at least one gets in, the context ends up not entered, and it
/// holds the value of a thread that got in.
#[test]
fn two_threads_entering_one_context() {
    static N: ContextVar<usize> = ContextVar::new("n");
    model(|| {
        let ctx = Arc::new(Context::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (ctx, inside) = (ctx.clone(), inside.clone());
                thread::spawn(move || {
                    ctx.try_run(|| {
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "both inside");
                        N.set(i);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                    .is_ok()
                })
            })
            .collect();
        let won: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(won.iter().any(|w| *w), "someone gets in");
        let last = ctx.get(&N).expect("a winner set it");
        assert!(won[last], "the value is a winner's");
        assert!(ctx.try_run(|| ()).is_ok(), "left entered");
    });
}

/// One thread enters, writes and leaves; the other enters and reads,
/// lock-free, as the thread the context is current on. Entering (the
/// `state` word's Acquire, leaving's Release) must order the first
/// thread's write before that read: loom reports a data race on the map
/// otherwise. What the second thread reads is nothing or the first's value.
#[test]
fn an_entry_after_another_threads_exit_sees_its_writes() {
    static V: ContextVar<Probe> = ContextVar::new("v");
    model(|| {
        let ctx = Arc::new(Context::new());
        let first = {
            let ctx = ctx.clone();
            thread::spawn(move || ctx.try_run(|| drop(V.set(Probe::new(1)))).is_ok())
        };
        let mine = ctx
            .try_run(|| {
                let seen = V.with(|v| v.map(Probe::get));
                assert!(seen.is_none() || seen == Some(1), "saw {seen:?}");
                drop(V.set(Probe::new(2)));
            })
            .is_ok();
        let theirs = first.join().unwrap();
        assert!(mine || theirs);
        let last = ctx.get(&V).map(|v| v.get());
        assert!(last == Some(1) || last == Some(2));
        no_value_left(ctx);
    });
}

/// A shared context where `v` holds 1, entered on another thread that runs
/// `owner` in it (leaving 1 when it is done), while this thread reads `v`
/// with `Context::get`: the read sees 1 or 2, whole (recorded in `seen`);
/// afterwards `v` is 1; and every value is freed once.
fn owner_against_a_foreign_get(
    v: &'static ContextVar<Probe>,
    seen: &'static StdAtomicUsize,
    owner: fn(),
) {
    let ctx = Arc::new(Context::new());
    ctx.run(|| drop(v.set(Probe::new(1))));
    let owner = {
        let ctx = ctx.clone();
        thread::spawn(move || ctx.run(owner))
    };
    let read = ctx.get(v).expect("set before").get();
    assert!(read == 1 || read == 2, "saw {read}");
    seen.fetch_or(1 << read, SeqCst);
    owner.join().unwrap();
    assert_eq!(ctx.get(v).map(|v| v.get()), Some(1));
    no_value_left(ctx);
}

/// The owner sets a variable in a shared context (while it borrows the old
/// value) and resets it, while another thread reads it with
/// `Context::get`: the reader sees the old value or the new one, whole.
/// The reader's handle may outlive the owner's (the value replaced and its
/// handle dropped by the owner), or the other way round: each value is
/// freed once, by the last handle, after every read of it (a data race on
/// the probe otherwise).
#[test]
fn a_foreign_get_while_the_owner_sets_and_resets() {
    static V: ContextVar<Probe> = ContextVar::new("v");
    static SEEN: StdAtomicUsize = StdAtomicUsize::new(0);
    model_seeing(&[1, 2], &SEEN, || {
        owner_against_a_foreign_get(&V, &SEEN, || {
            // A borrow across the write: the write copies, and keeps the old
            // version (`PARKED`) until the borrow ends.
            let token = V.with(|old| {
                let token = V.set(Probe::new(2));
                assert_eq!(old.map(Probe::get), Some(1));
                token
            });
            assert_eq!(V.with(|v| v.map(Probe::get)), Some(2));
            V.reset(token).unwrap();
            assert_eq!(V.with(|v| v.map(Probe::get)), Some(1));
        })
    });
}

/// `scope` in a shared context is seen by another thread's `get`: the
/// scoped value goes on the context's list (a release store), which the
/// reader walks under the lock, and leaves it under the lock. Some
/// interleaving sees it, every one sees the old value or it, and the scoped
/// value is freed once, after every read of it.
#[test]
fn a_scope_in_a_shared_context_while_another_thread_gets() {
    static V: ContextVar<Probe> = ContextVar::new("v");
    static SEEN: StdAtomicUsize = StdAtomicUsize::new(0);
    model_seeing(&[1, 2], &SEEN, || {
        owner_against_a_foreign_get(&V, &SEEN, || {
            let inner = V.sync_scope(Probe::new(2), || V.with(|v| v.map(Probe::get)));
            assert_eq!(inner, Some(2));
        })
    });
}

/// Two reads from another thread while the owner scopes, sets and resets
/// over three entries: each read takes the context's lock, which every
/// write of the owner takes too, so every read sees a value the owner had
/// in place, whole (a data race on the map otherwise).
///
/// The one model bounded by default: every interleaving of its three
/// entries and two reads would take hours. Four preemptions (a few seconds)
/// are enough to find a write or a read that skips the lock;
/// `LOOM_MAX_PREEMPTIONS` overrides the bound.
#[test]
fn two_foreign_gets_while_the_owner_scopes_and_sets() {
    static V: ContextVar<Probe> = ContextVar::new("v");
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(4);
    builder.check(|| {
        let ctx = Arc::new(Context::new());
        ctx.run(|| drop(V.set(Probe::new(1))));
        let owner = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                ctx.run(|| {
                    let inner = V.sync_scope(Probe::new(2), || V.with(|v| v.map(Probe::get)));
                    assert_eq!(inner, Some(2));
                    let token = V.set(Probe::new(3));
                    V.reset(token).unwrap();
                });
                ctx.run(|| drop(V.set(Probe::new(1))));
            })
        };
        for _ in 0..2 {
            let read = ctx.get(&V).expect("set before").get();
            assert!(matches!(read, 1..=3), "saw {read}");
        }
        owner.join().unwrap();
        assert_eq!(ctx.get(&V).map(|v| v.get()), Some(1));
        no_value_left(ctx);
    });
}

/// A copy taken on one thread while the owner sets on another is a
/// snapshot: the values after some prefix of the owner's writes, never a
/// mix, and it does not change when the owner writes on (the owner must
/// copy the nodes the copy shares, not write them in place).
#[test]
fn a_copy_taken_while_the_owner_sets() {
    static A: ContextVar<Probe> = ContextVar::new("a");
    static B: ContextVar<Probe> = ContextVar::new("b");
    model(|| {
        let ctx = Arc::new(Context::new());
        let owner = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                ctx.run(|| {
                    drop(A.set(Probe::new(1)));
                    drop(B.set(Probe::new(1)));
                    drop(A.set(Probe::new(2)));
                })
            })
        };
        let copy = ctx.copy();
        let values = |c: &Context| (c.get(&A).map(|v| v.get()), c.get(&B).map(|v| v.get()));
        let taken = values(&copy);
        assert!(
            matches!(
                taken,
                (None, None) | (Some(1), None) | (Some(1), Some(1)) | (Some(2), Some(1))
            ),
            "not a snapshot: {taken:?}"
        );
        owner.join().unwrap();
        assert_eq!(values(&copy), taken, "the copy changed");
        // Entered, the copy reads the same (through the read cache).
        let inside = copy.run(|| (A.with(|v| v.map(Probe::get)), B.with(|v| v.map(Probe::get))));
        assert_eq!(inside, taken);
        assert_eq!(values(&ctx), (Some(2), Some(1)));
        drop(copy);
        no_value_left(ctx);
    });
}

/// Protocol replica, not the real code: a version of a context's map as
/// one loom `Arc`. It states on its own the property the real models check
/// through values and node counts: a version (not just a value) that
/// another thread cloned under the lock stays alive while the owner
/// replaces and releases it, and is freed exactly once.
#[test]
fn a_version_dropped_while_another_thread_reads() {
    /// A version with two fields that a torn read would show unequal, and
    /// a drop counter.
    struct Version {
        a: usize,
        b: usize,
        dropped: Arc<AtomicUsize>,
    }

    impl Drop for Version {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The replica of `Context` (the write lock and the map cell), with
    /// the orderings of `src/context.rs`.
    struct Ctx {
        lock: AtomicBool,
        map: UnsafeCell<Arc<Version>>,
        dropped: Arc<AtomicUsize>,
    }

    impl Ctx {
        /// `take_lock` (a loom yield where the real code spins).
        fn lock(&self) {
            while self
                .lock
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                thread::yield_now();
            }
        }

        fn unlock(&self) {
            self.lock.store(false, Ordering::Release);
        }

        /// `write_current`: a new version under the lock, the old one
        /// dropped after it (`Garbage`).
        fn set(&self, v: usize) {
            let new = Arc::new(Version {
                a: v,
                b: v,
                dropped: self.dropped.clone(),
            });
            self.lock();
            // SAFETY: the lock, which every access takes.
            let old = self
                .map
                .with_mut(|m| std::mem::replace(unsafe { &mut *m }, new));
            self.unlock();
            drop(old);
        }

        /// `Context::read` from another thread: the version cloned under
        /// the lock, looked at after it.
        fn copy(&self) -> Arc<Version> {
            self.lock();
            // SAFETY: as in `set`.
            let version = self.map.with(|m| unsafe { (*m).clone() });
            self.unlock();
            version
        }
    }

    model(|| {
        let dropped = Arc::new(AtomicUsize::new(0));
        let ctx = Arc::new(Ctx {
            lock: AtomicBool::new(false),
            map: UnsafeCell::new(Arc::new(Version {
                a: 0,
                b: 0,
                dropped: dropped.clone(),
            })),
            dropped,
        });
        let reader = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                let seen = ctx.copy();
                // Whatever the owner does meanwhile, this version is alive.
                thread::yield_now();
                assert_eq!(seen.a, seen.b, "torn version");
                seen.a
            })
        };
        ctx.set(7);
        let seen = reader.join().unwrap();
        assert!(seen == 0 || seen == 7);
        // The first version is dropped exactly once, by whoever let go of
        // it last; the current one is alive.
        assert_eq!(ctx.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.copy().a, 7);
    });
}

/// A context and its copy dropped at once on two threads, after each read
/// the value: exactly one of them holds the root's last handle and drops
/// the value, after the other's reads (the node's release decrement and
/// the last handle's acquire).
#[test]
fn a_context_and_its_copy_dropped_at_once() {
    static A: ContextVar<Probe> = ContextVar::new("a");
    model(|| {
        let ctx = Context::new();
        ctx.run(|| drop(A.set(Probe::new(1))));
        let copy = ctx.copy();
        let t = thread::spawn(move || {
            assert_eq!(copy.get(&A).map(|v| v.get()), Some(1));
            drop(copy);
        });
        assert_eq!(ctx.get(&A).map(|v| v.get()), Some(1));
        drop(ctx);
        t.join().unwrap();
        assert_eq!(LIVE.with(Cell::get), 0, "a value leaked or dropped twice");
    });
}

/// The owner writes while another thread reads and drops a copy that shares
/// the owner's root: the write goes in place only once the copy's handle is
/// gone and its reads are done (the acquire load of `unique_mut`), else it
/// copies the node; the copy sees the old value whole.
#[test]
fn the_owner_sets_while_another_thread_drops_a_copy() {
    static A: ContextVar<Probe> = ContextVar::new("a");
    model(|| {
        let ctx = Arc::new(Context::new());
        ctx.run(|| drop(A.set(Probe::new(1))));
        let copy = ctx.copy();
        let t = thread::spawn(move || {
            assert_eq!(copy.get(&A).map(|v| v.get()), Some(1));
            drop(copy);
        });
        ctx.run(|| drop(A.set(Probe::new(2))));
        t.join().unwrap();
        assert_eq!(ctx.get(&A).map(|v| v.get()), Some(2));
        no_value_left(ctx);
    });
}
