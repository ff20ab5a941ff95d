//! loom models of the parts where threads race on one context. Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
//!
//! (`.ci/run` does, with `LOOM_MAX_PREEMPTIONS=3`.)
//!
//! Two kinds of model, and `RELIABILITY.md` says which is which:
//!
//! - **Real code**: `two_threads_entering_one_context` runs the crate's own
//!   `Context::try_run` and `ContextVar::set`, whose `entered` and `lock`
//!   flags are loom atomics under `--cfg loom` (`src/sync.rs`).
//! - **Protocol replicas**: the rest. The crate's map lives in a plain
//!   `UnsafeCell` reached through `thread_local!` pointers, and loom runs
//!   its threads as coroutines on one OS thread, so a `thread_local!` would
//!   be shared between loom's threads, and accesses to a `std` cell are not
//!   tracked. These models therefore restate the protocol of
//!   `src/context.rs` step by step with loom's `UnsafeCell`, `Arc` and
//!   atomics, **with the same orderings**: the `entered` compare-exchange
//!   (Acquire) and its release on exit (Release, `Exit::drop`), the write
//!   lock (`write_lock`: compare-exchange Acquire, store Release), writes only
//!   under the lock by the thread on which the context is current, lock-free
//!   reads by that thread only, reads and copies from other threads under the
//!   lock (`Context::read`), and the old version dropped after the lock is
//!   released (`Garbage`). loom checks every interleaving (up to the
//!   preemption bound) for data races on the map, torn versions,
//!   use-after-free and leaks of versions and values.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Real code: two threads try to enter one shared context; never are both
/// inside at once, at least one gets in, the context ends up not entered,
/// and it holds the value of a thread that got in.
#[test]
fn two_threads_entering_one_context() {
    use contextvars::{Context, ContextVar};
    static N: ContextVar<usize> = ContextVar::new("n");
    model(|| {
        let ctx = std::sync::Arc::new(Context::new());
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

/// A version of a context's map: two fields that a torn read would show
/// unequal, and a drop counter.
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

/// The replica of `Context`: the flags and the map, with the orderings of
/// `src/context.rs`.
struct Ctx {
    entered: AtomicBool,
    lock: AtomicBool,
    map: UnsafeCell<Arc<Version>>,
    dropped: Arc<AtomicUsize>,
}

impl Ctx {
    fn new() -> Ctx {
        let dropped = Arc::new(AtomicUsize::new(0));
        Ctx {
            entered: AtomicBool::new(false),
            lock: AtomicBool::new(false),
            map: UnsafeCell::new(Arc::new(Version {
                a: 0,
                b: 0,
                dropped: dropped.clone(),
            })),
            dropped,
        }
    }

    /// `try_run`'s entry.
    fn try_enter(&self) -> bool {
        self.entered
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// `Exit::drop`.
    fn exit(&self) {
        self.entered.store(false, Ordering::Release);
    }

    /// `write_lock` (a loom yield where the real code spins).
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

    /// `with_current_mut` + `Map::insert`, by the thread where the context
    /// is entered: a new version under the lock, the old one dropped after.
    fn set(&self, v: usize) {
        let new = Arc::new(Version {
            a: v,
            b: v,
            dropped: self.dropped.clone(),
        });
        self.lock();
        let old = self
            .map
            .with_mut(|m| std::mem::replace(unsafe { &mut *m }, new));
        self.unlock();
        drop(old); // `Garbage`: after the lock
    }

    /// `with_value`: the lock-free read of the thread where it is entered.
    fn read_own(&self) -> usize {
        self.map.with(|m| {
            let v = unsafe { &**m };
            assert_eq!(v.a, v.b, "torn version");
            v.a
        })
    }

    /// `Context::read` from another thread (`copy`, `get`, `len`): the
    /// version cloned under the lock, looked at after it.
    fn copy(&self) -> Arc<Version> {
        self.lock();
        let version = self.map.with(|m| unsafe { (*m).clone() });
        self.unlock();
        version
    }
}

/// A copy taken on one thread while the owner sets on another: the copy is
/// one whole version (the one before, between, or after the sets), and the
/// owner's own lock-free reads see its writes.
#[test]
fn a_copy_taken_while_the_owner_sets() {
    model(|| {
        let ctx = Arc::new(Ctx::new());
        let owner = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                assert!(ctx.try_enter());
                ctx.set(1);
                assert_eq!(ctx.read_own(), 1);
                ctx.set(2);
                assert_eq!(ctx.read_own(), 2);
                ctx.exit();
            })
        };
        let copy = ctx.copy();
        assert_eq!(copy.a, copy.b, "torn copy");
        assert!(copy.a <= 2);
        owner.join().unwrap();
        // The copy keeps its version alive, the context the last one; the
        // rest are gone, each exactly once.
        let expected = if copy.a == 2 { 2 } else { 1 };
        assert_eq!(ctx.dropped.load(Ordering::SeqCst), expected);
        drop(copy);
        assert_eq!(ctx.dropped.load(Ordering::SeqCst), 2);
    });
}

/// A value replaced (its last reference dropped by the owner) while
/// another thread reads the context: the reader's version stays alive as
/// long as it holds it, and every version is dropped exactly once.
#[test]
fn a_value_dropped_while_another_thread_reads() {
    model(|| {
        let ctx = Arc::new(Ctx::new());
        let reader = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                let seen = ctx.copy();
                let before = seen.dropped.load(Ordering::SeqCst);
                // Whatever the owner does meanwhile, this version is alive.
                thread::yield_now();
                assert_eq!(seen.a, seen.b);
                let after = seen.dropped.load(Ordering::SeqCst);
                assert!(after >= before);
                seen.a
            })
        };
        assert!(ctx.try_enter());
        ctx.set(7);
        ctx.exit();
        let seen = reader.join().unwrap();
        assert!(seen == 0 || seen == 7);
        // The initial version is dropped exactly once, by whoever let go
        // last; the current one is alive.
        assert_eq!(ctx.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.read_own(), 7);
    });
}

/// One thread enters, writes and leaves; another then enters and reads
/// lock-free as the current thread. The `entered` flag's acquire/release
/// (and the lock's) must order the first thread's write before that read:
/// loom reports a data race on the map otherwise.
#[test]
fn an_entry_after_another_threads_exit_sees_its_writes() {
    model(|| {
        let ctx = Arc::new(Ctx::new());
        let first = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                if ctx.try_enter() {
                    ctx.set(1);
                    ctx.exit();
                    true
                } else {
                    false
                }
            })
        };
        let mine = ctx.try_enter();
        if mine {
            let v = ctx.read_own();
            assert!(v == 0 || v == 1);
            ctx.set(2);
            ctx.exit();
        }
        let theirs = first.join().unwrap();
        assert!(mine || theirs);
        assert!(ctx.try_enter());
        assert!(ctx.read_own() == 1 || ctx.read_own() == 2);
        ctx.exit();
    });
}
