//! Panic safety and leaks of every entry point: `run`, `scope`, a polled
//! `in_context` future (owned and shared context), `wrap`, threads spawned
//! in a copy, `isolated` iterators and streams, tokio and rayon helpers.
//!
//! After a panic inside any of them, the thread is back in the context it was
//! in before (a token made there still resets, a `set` lands in it), nothing
//! is left entered (every context involved can be entered again), and every
//! value set on the way is dropped once the last context holding it goes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context, wrap};

#[path = "common/counted.rs"]
mod counted;
use counted::{Counted, Counter};

static V: ContextVar<u32> = ContextVar::new("v");
static D: ContextVar<Counted> = ContextVar::new("d");

/// Sets `V = 2` and a counted `D` in the current context, then panics.
fn set_then_panic(live: &Counter) -> ! {
    V.set(2);
    D.set(Counted::new(live));
    panic!("boom");
}

/// Runs `body` (which must panic) inside a fresh shared context holding
/// `V = 1`, and checks that afterwards the thread is in that context again,
/// that it is left entered by nothing, and that the thread's own context was
/// never written.
fn after_panic(body: impl FnOnce()) {
    let outer = Arc::new(Context::new());
    outer.run(|| {
        let token = V.set(1);
        let caught = catch_unwind(AssertUnwindSafe(body));
        assert!(caught.is_err(), "the body was expected to panic");
        assert_eq!(V.get(), Ok(1), "the caller's value is back");
        assert!(
            D.with(|d| d.is_none()),
            "no value of the panicking code shows"
        );
        // The current context is `outer` itself, not a look-alike: a `set`
        // lands in it, and a token made before the panic still resets.
        let later = V.set(3);
        assert_eq!(outer.get(&V), Some(3));
        V.reset(later).unwrap();
        V.reset(token)
            .expect("still in the context the token was made in");
        assert!(V.get().is_err());
    });
    assert!(outer.try_run(|| ()).is_ok(), "nothing left `outer` entered");
    assert!(V.get().is_err(), "the thread's own context was not written");
}

fn assert_all_dropped(live: &Counter) {
    assert_eq!(live.live(), 0, "a value leaked");
}

#[test]
fn run() {
    let live = Counter::new();
    let inner = Arc::new(Context::new());
    after_panic(|| inner.run(|| set_then_panic(&live)));
    assert_eq!(inner.get(&V), Some(2), "writes before the panic stay");
    assert_eq!(inner.try_run(|| V.get()), Ok(Ok(2)), "enterable again");
    assert_eq!(live.live(), 1);
    drop(inner);
    assert_all_dropped(&live);
}

#[test]
fn run_nested_three_deep() {
    let live = Counter::new();
    let (a, b) = (Arc::new(Context::new()), Arc::new(Context::new()));
    after_panic(|| {
        a.run(|| {
            V.set(10);
            b.run(|| Context::new().run(|| set_then_panic(&live)))
        })
    });
    assert_eq!(a.get(&V), Some(10));
    assert!(a.try_run(|| ()).is_ok() && b.try_run(|| ()).is_ok());
    assert_all_dropped(&live);
}

#[test]
fn refused_reentry_leaves_the_entry_in_place() {
    let ctx = Arc::new(Context::new());
    ctx.run(|| {
        let refused = catch_unwind(AssertUnwindSafe(|| ctx.run(|| ())));
        assert!(refused.is_err());
        // Still entered: the failed entry did not release the real one.
        let other = ctx.clone();
        let from_elsewhere = std::thread::spawn(move || other.try_run(|| ()).is_err());
        assert!(from_elsewhere.join().unwrap());
        V.set(4);
    });
    assert_eq!(ctx.get(&V), Some(4));
    assert!(ctx.try_run(|| ()).is_ok());
}

#[test]
fn scope() {
    let live = Counter::new();
    after_panic(|| {
        V.sync_scope(7, || {
            D.sync_scope(Counted::new(&live), || set_then_panic(&live))
        });
    });
    assert_all_dropped(&live);
}

#[test]
fn scope_whose_body_resets_out_of_order_and_panics() {
    // The scope's token is for the outer context; the body panics inside a
    // nested `run` after leaving the scope's value unbalanced.
    let live = Counter::new();
    after_panic(|| {
        D.sync_scope(Counted::new(&live), || {
            let _stray = D.set(Counted::new(&live));
            Context::new().run(|| set_then_panic(&live))
        })
    });
    assert_all_dropped(&live);
}

/// A future that sets `V` on its first poll, returns `Pending`, and sets a
/// counted value then panics on its second.
struct PanicsOnSecondPoll {
    polls: u32,
    live: Counter,
}

impl std::future::Future for PanicsOnSecondPoll {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.polls += 1;
        if self.polls == 1 {
            V.set(5);
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        set_then_panic(&self.live)
    }
}

#[test]
fn in_context_owned() {
    let live = Counter::new();
    after_panic(|| {
        let fut = PanicsOnSecondPoll {
            polls: 0,
            live: live.clone(),
        };
        futures::executor::block_on(fut.in_context(Context::new()));
    });
    assert_all_dropped(&live);
}

#[test]
fn in_current_context() {
    let live = Counter::new();
    after_panic(|| {
        let fut = PanicsOnSecondPoll {
            polls: 0,
            live: live.clone(),
        };
        futures::executor::block_on(fut.in_current_context());
    });
    assert_all_dropped(&live);
}

#[test]
fn in_context_shared() {
    let live = Counter::new();
    let ctx = Arc::new(Context::new());
    after_panic(|| {
        let fut = PanicsOnSecondPoll {
            polls: 0,
            live: live.clone(),
        };
        futures::executor::block_on(fut.in_context(ctx.clone()));
    });
    assert_eq!(ctx.get(&V), Some(2), "the task's writes stay in the Arc");
    assert!(ctx.try_run(|| ()).is_ok(), "not left entered");
    assert_eq!(live.live(), 1);
    drop(ctx);
    assert_all_dropped(&live);
}

#[test]
fn in_context_polled_while_entered_elsewhere() {
    let ctx = Arc::new(Context::new());
    let handle = ctx.clone();
    ctx.run(|| {
        V.set(8);
        let refused = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(async { V.set(9) }.in_context(handle))
        }));
        let message = refused.expect_err("polling an entered context panics");
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.contains("already entered"), "{message}");
        assert_eq!(V.get(), Ok(8), "the refused poll did not run");
        let other = ctx.clone();
        let still_entered = std::thread::spawn(move || other.try_run(|| ()).is_err());
        assert!(still_entered.join().unwrap(), "the real entry stands");
    });
    assert!(ctx.try_run(|| ()).is_ok());
}

#[test]
fn wrap_job() {
    let live = Counter::new();
    after_panic(|| {
        let job = wrap(|| set_then_panic(&live));
        // A caller's change after the capture is not seen by the job; the
        // scope's own reset runs as the job's panic unwinds through it.
        V.sync_scope(6, job);
    });
    assert_all_dropped(&live);
}

#[test]
fn thread_spawned_in_a_copy() {
    let live = Counter::new();
    after_panic(|| {
        let live = live.clone();
        let joined = contextvars::thread::spawn(move || {
            assert_eq!(V.get(), Ok(1), "the copy");
            set_then_panic(&live)
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(V.get(), Ok(1));
        panic!("re-raised on the spawner");
    });
    assert_all_dropped(&live);
}

#[test]
fn isolated_iterator() {
    let live = Counter::new();
    let mut resumptions = 0;
    let mut generator = std::iter::from_fn(|| {
        resumptions += 1;
        match resumptions {
            1 => {
                V.set(20);
                Some(V.get().unwrap())
            }
            2 => set_then_panic(&live),
            _ => Some(V.get().unwrap()),
        }
    })
    .isolated();
    after_panic(|| {
        assert_eq!(generator.next(), Some(20));
        assert_eq!(V.get(), Ok(1));
        generator.next();
    });
    // Resumable again after the panic, in another caller context; its own
    // value from before the panic is still on top.
    assert_eq!(Context::new().run(|| generator.next()), Some(20));
    assert!(V.get().is_err());
    drop(generator);
    assert_all_dropped(&live);
}

#[test]
fn values_in_a_generator_layer_are_dropped_with_the_generator() {
    let live = Counter::new();
    let mut generator = std::iter::repeat_with(|| {
        if D.with(|d| d.is_none()) {
            D.set(Counted::new(&live));
        }
    })
    .isolated();
    Context::new().run(|| {
        generator.next();
        generator.next();
    });
    assert_eq!(live.live(), 1, "kept in the layer");
    drop(generator);
    assert_all_dropped(&live);
}

#[test]
fn values_in_copies_are_dropped_with_the_last_copy() {
    let live = Counter::new();
    let a = Context::new();
    a.run(|| D.set(Counted::new(&live)));
    let copies: Vec<Context> = (0..10).map(|_| a.copy()).collect();
    let in_threads: Vec<_> = (0..4)
        .map(|_| {
            let ctx = a.copy();
            std::thread::spawn(move || {
                // `get` clones: a value of its own, counted by the same counter.
                ctx.run(|| D.set(D.get().unwrap()));
                ctx
            })
        })
        .collect();
    let in_threads: Vec<Context> = in_threads.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(live.live(), 5, "one shared value, four own");
    drop(a);
    assert_eq!(live.live(), 5, "the copies still hold it");
    drop(copies);
    assert_eq!(live.live(), 4);
    drop(in_threads);
    assert_all_dropped(&live);
}

#[test]
fn a_copy_taken_inside_a_panicking_run_keeps_its_values() {
    let live = Counter::new();
    let mut copy = None;
    after_panic(|| {
        Context::new().run(|| {
            D.set(Counted::new(&live));
            copy = Some(copy_context());
            panic!("after the copy");
        })
    });
    assert_eq!(live.live(), 1, "the copy holds the value");
    assert!(copy.as_ref().unwrap().contains(&D));
    drop(copy);
    assert_all_dropped(&live);
}

// `run`, nested `run`s and `scope` unwinding,
// a refused re-entry's panic, and values set before a panic.

#[test]
fn run_restores_the_previous_context_when_f_panics() {
    static V: ContextVar<u32> = ContextVar::new("v");
    V.set(1);
    let ctx = Context::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        ctx.run(|| {
            V.set(2);
            panic!("boom");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(V.get(), Ok(1), "the caller's context is current again");
    assert_eq!(
        ctx.get(&V),
        Some(2),
        "writes before the panic stay in the context"
    );
    // Nothing is left entered: the context can be entered again.
    assert_eq!(ctx.try_run(|| V.get()), Ok(Ok(2)));
}

#[test]
fn nested_runs_unwind_to_the_outermost_caller() {
    static V: ContextVar<u32> = ContextVar::new("v");
    V.set(0);
    let (a, b) = (Context::new(), Context::new());
    let caught = catch_unwind(AssertUnwindSafe(|| {
        a.run(|| {
            V.set(1);
            b.run(|| {
                V.set(2);
                panic!("deep");
            })
        })
    }));
    assert!(caught.is_err());
    assert_eq!(V.get(), Ok(0));
    assert!(a.try_run(|| ()).is_ok() && b.try_run(|| ()).is_ok());
}

#[test]
fn scope_resets_when_f_panics() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let caught = catch_unwind(AssertUnwindSafe(|| V.sync_scope(5, || panic!("in scope"))));
    assert!(caught.is_err());
    assert!(V.get().is_err(), "the scoped value was removed again");
    V.set(1);
    let _ = catch_unwind(AssertUnwindSafe(|| V.sync_scope(5, || panic!("in scope"))));
    assert_eq!(V.get(), Ok(1), "the previous value came back");
}

#[test]
fn run_panics_with_a_clear_message_on_reentry() {
    let ctx = Context::new();
    let err = catch_unwind(AssertUnwindSafe(|| ctx.run(|| ctx.run(|| ())))).unwrap_err();
    let msg = err
        .downcast_ref::<String>()
        .expect("formatted panic message");
    assert!(msg.contains("already entered"), "{msg}");
    assert!(
        ctx.try_run(|| ()).is_ok(),
        "the failed re-entry left nothing entered"
    );
}

#[test]
fn values_survive_a_panic_and_are_dropped_after() {
    static V: ContextVar<Counted> = ContextVar::new("counted");
    let live = Counter::new();
    let ctx = Context::new();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        ctx.run(|| {
            V.set(Counted::new(&live));
            panic!("after set");
        })
    }));
    assert_eq!(live.live(), 1);
    drop(ctx);
    assert_eq!(live.live(), 0);
}

#[cfg(feature = "futures")]
mod stream {
    use super::*;
    use futures::StreamExt as _;
    use futures::executor::block_on;

    #[test]
    fn isolated_stream() {
        let live = Counter::new();
        let mut polls = 0;
        let mut stream = futures::stream::poll_fn(|_| {
            polls += 1;
            match polls {
                1 => {
                    V.set(30);
                    std::task::Poll::Ready(Some(V.get().unwrap()))
                }
                2 => set_then_panic(&live),
                _ => std::task::Poll::Ready(Some(V.get().unwrap())),
            }
        });
        let mut stream = contextvars::stream::StreamExt::isolated(&mut stream);
        after_panic(|| {
            assert_eq!(block_on(stream.next()), Some(30));
            assert_eq!(V.get(), Ok(1));
            block_on(stream.next());
        });
        assert_eq!(Context::new().run(|| block_on(stream.next())), Some(30));
        drop(stream);
        assert_all_dropped(&live);
    }
}

#[cfg(feature = "tokio")]
mod tokio_helpers {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn spawned_task() {
        let live = Counter::new();
        let rt = runtime();
        after_panic(|| {
            let live = live.clone();
            let joined = rt.block_on(async move {
                contextvars::tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    set_then_panic(&live)
                })
                .await
            });
            assert!(joined.unwrap_err().is_panic());
            assert_eq!(V.get(), Ok(1), "block_on's thread is back in the caller");
            // The runtime's thread runs its next task in a fresh copy again.
            let seen = rt.block_on(async { contextvars::tokio::spawn(async { V.get() }).await });
            assert_eq!(seen.unwrap(), Ok(1));
            panic!("re-raised");
        });
        drop(rt);
        assert_all_dropped(&live);
    }

    #[test]
    fn spawn_blocking() {
        let live = Counter::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        after_panic(|| {
            let _runtime = rt.enter();
            let inner = live.clone();
            let joined = rt.block_on(contextvars::tokio::spawn_blocking(move || {
                set_then_panic(&inner)
            }));
            assert!(joined.unwrap_err().is_panic());
            // The same blocking thread, reused: its context is clean.
            let seen = rt.block_on(contextvars::tokio::spawn_blocking(|| {
                (V.get(), D.with(|d| d.is_none()))
            }));
            assert_eq!(seen.unwrap(), (Ok(1), true));
            let plain = rt.block_on(tokio::task::spawn_blocking(|| V.get().is_err()));
            assert!(plain.unwrap(), "the pool thread's own context is empty");
            panic!("re-raised");
        });
        drop(rt);
        assert_all_dropped(&live);
    }
}

#[cfg(feature = "rayon")]
mod rayon_helpers {
    use super::*;
    use contextvars::rayon::ParallelIteratorExt;
    use rayon::prelude::*;

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    /// After a panic in the pool, every worker's own context is still empty.
    fn workers_are_clean(pool: &rayon::ThreadPool) {
        let clean = pool.broadcast(|_| V.get().is_err() && D.with(|d| d.is_none()));
        assert!(clean.into_iter().all(|c| c));
    }

    #[test]
    fn join() {
        let live = Counter::new();
        let pool = pool();
        after_panic(|| {
            pool.install(wrap(|| {
                contextvars::rayon::join(|| V.get(), || set_then_panic(&live));
            }))
        });
        workers_are_clean(&pool);
        assert_all_dropped(&live);
    }

    #[test]
    fn scope_spawn() {
        let live = Counter::new();
        let pool = pool();
        after_panic(|| {
            pool.install(wrap(|| {
                contextvars::rayon::scope(|s| {
                    s.spawn(|_| set_then_panic(&live));
                    s.spawn(|_| assert_eq!(V.get(), Ok(1)));
                    V.set(40);
                })
            }))
        });
        workers_are_clean(&pool);
        assert_all_dropped(&live);
    }

    #[test]
    fn map_in_current_context() {
        let live = Counter::new();
        let pool = pool();
        after_panic(|| {
            pool.install(wrap(|| {
                (0..64u32).into_par_iter().for_each_in_current_context(|i| {
                    assert_eq!(V.get(), Ok(1));
                    D.set(Counted::new(&live));
                    if i == 33 {
                        set_then_panic(&live);
                    }
                })
            }))
        });
        workers_are_clean(&pool);
        assert_all_dropped(&live);
    }
}
