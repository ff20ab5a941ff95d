//! Context across async tasks: CPython's asyncio context tests
//! (`Lib/test/test_asyncio/test_tasks.py`, `test_context_*`) restated for
//! tokio, plus executor independence, interleaving at scale, migration
//! between workers and panics in a poll.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context};

#[path = "common/yield_times.rs"]
mod yield_times;
use yield_times::YieldTimes;

fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn test_context_1() {
    static CVAR: ContextVar<&str> = ContextVar::with_default("cvar", "nope");
    current_thread().block_on(async {
        assert_eq!(CVAR.get(), Ok("nope"));
        let subtask = contextvars::tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(
                CVAR.get(),
                Ok("nope"),
                "the copy was taken at spawn, before the parent's set"
            );
            CVAR.set("something else");
        });
        CVAR.set("yes");
        assert_eq!(CVAR.get(), Ok("yes"));
        subtask.await.unwrap();
        assert_eq!(
            CVAR.get(),
            Ok("yes"),
            "the subtask's set stayed in its copy"
        );
    });
}

#[test]
fn test_context_2_callbacks_do_not_pollute_the_task() {
    // Python runs a future's done-callbacks in a copy of the context taken
    // when the callback was added; here the callback is `wrap`ped and run by
    // whoever completes the future.
    static CVAR: ContextVar<String> = ContextVar::new("cvar");
    multi_thread(2).block_on(async {
        contextvars::tokio::spawn(async {
            assert!(CVAR.get().is_err());
            for j in 0..2 {
                let (done, fut) = tokio::sync::oneshot::channel::<()>();
                let on_done = contextvars::wrap(|| {
                    CVAR.set("something else".to_string());
                });
                CVAR.set(format!("yes{j}"));
                std::thread::spawn(move || {
                    done.send(()).unwrap();
                    on_done();
                });
                fut.await.unwrap();
                assert_eq!(CVAR.get(), Ok(format!("yes{j}")));
                for i in 0..3 {
                    CVAR.set(format!("yes{i}-{j}"));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    assert_eq!(CVAR.get(), Ok(format!("yes{i}-{j}")));
                }
            }
        })
        .await
        .unwrap();
    });
}

#[test]
fn test_context_3_hundred_tasks_in_parallel() {
    static CVAR: ContextVar<u64> = ContextVar::with_default("cvar", u64::MAX);
    multi_thread(2).block_on(async {
        let tasks: Vec<_> = (0..100u64)
            .map(|t| {
                contextvars::tokio::spawn(async move {
                    let num = t % 11;
                    for i in 0..10 {
                        CVAR.set(num + i);
                        tokio::time::sleep(Duration::from_micros(100 + (t * 37 + i * 91) % 900))
                            .await;
                        assert_eq!(CVAR.get(), Ok(num + i));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn test_context_4_task_with_explicit_context() {
    // asyncio.create_task(coro, context=ctx): the task's changes are visible
    // through ctx afterwards.
    static CVAR: ContextVar<u32> = ContextVar::new("cvar");
    let ret = current_thread().block_on(async {
        let mut ret = Vec::new();
        let ctx = Arc::new(copy_context());
        ret.push(ctx.get(&CVAR));
        let coro = |val| async move {
            tokio::task::yield_now().await;
            CVAR.set(val);
        };
        tokio::spawn(coro(1).in_context(ctx.clone())).await.unwrap();
        ret.push(ctx.get(&CVAR));
        tokio::spawn(coro(2).in_context(ctx.clone())).await.unwrap();
        ret.push(ctx.get(&CVAR));
        assert!(
            CVAR.get().is_err(),
            "the spawner's own context is untouched"
        );
        ret
    });
    assert_eq!(ret, [None, Some(1), Some(2)]);
}

/// Counts its wakes.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_poll_of_a_context_entered_on_another_thread_waits_its_turn() {
    // asyncio lets tasks share a context and take turns; here a poll that
    // finds the context entered elsewhere is Pending and woken when it is
    // left, instead of failing.
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: ContextVar<u32> = ContextVar::new("n");
    let ctx = Arc::new(Context::new());
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            ctx.run(|| {
                N.set(1);
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        })
    };
    entered_rx.recv().unwrap();
    let mut fut = Box::pin(async { N.get() }.in_context(ctx.clone()));
    let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let mut cx = TaskContext::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending(), "waits its turn");
    assert!(fut.as_mut().poll(&mut cx).is_pending(), "still waiting");
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "not woken while entered");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "woken once when the context is left (registered once)"
    );
    assert_eq!(
        fut.as_mut().poll(&mut cx),
        Poll::Ready(Ok(1)),
        "its turn: it sees the holder's write"
    );
}

#[test]
fn a_poll_of_a_context_entered_on_its_own_thread_is_refused() {
    // Waiting for itself would never end: the nested entry is the
    // AlreadyEntered error, as `run` is.
    let ctx = Arc::new(Context::new());
    let mut fut = Box::pin(async {}.in_context(ctx.clone()));
    let mut cx = TaskContext::from_waker(Waker::noop());
    let err = ctx.run(|| {
        Context::new()
            .run(|| catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))).unwrap_err())
    });
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("already entered"), "{msg}");
    assert!(fut.as_mut().poll(&mut cx).is_ready(), "fine once left");
}

#[test]
fn many_tasks_sharing_one_context_take_turns_and_lose_no_update() {
    // CPython: 64 tasks that each increment a variable 50 times, yielding
    // in between, end at 3,200.
    static COUNT: ContextVar<u32> = ContextVar::with_default("count", 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let ctx = Arc::new(Context::new());
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                tokio::spawn(
                    async {
                        for _ in 0..50 {
                            let n = COUNT.get().unwrap();
                            // Spin a little inside the poll so polls overlap.
                            std::hint::black_box((0..200).sum::<u32>());
                            COUNT.set(n + 1);
                            tokio::task::yield_now().await;
                        }
                    }
                    .in_context(ctx.clone()),
                )
            })
            .collect();
        for task in tasks {
            task.await.expect("no task lost");
        }
    });
    assert_eq!(ctx.get(&COUNT), Some(3200));
}

#[test]
fn inline_awaits_share_the_parents_context() {
    static V: ContextVar<u32> = ContextVar::new("v");
    async fn child() {
        V.set(2);
    }
    current_thread().block_on(
        async {
            V.set(1);
            child().await;
            assert_eq!(
                V.get(),
                Ok(2),
                "an awaited future changes its parent's context"
            );
        }
        .in_current_context(),
    );
}

/// Counts wrong reads when 10,000 tasks on a 2-worker runtime each set a
/// value, yield, and read it back, for a `ContextVar` and for a
/// `thread_local!` doing the same.
#[test]
fn ten_thousand_interleaved_tasks_never_read_each_others_values() {
    static ID: ContextVar<u64> = ContextVar::new("id");
    let wrong = multi_thread(2).block_on(async {
        let tasks: Vec<_> = (0..10_000u64)
            .map(|i| {
                contextvars::tokio::spawn(async move {
                    ID.set(i);
                    let mut wrong = 0;
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                        wrong += u32::from(ID.get() != Ok(i));
                    }
                    wrong
                })
            })
            .collect();
        let mut wrong = 0;
        for t in tasks {
            wrong += t.await.unwrap();
        }
        wrong
    });
    assert_eq!(wrong, 0);
}

#[test]
fn the_same_program_with_thread_local_bleeds() {
    thread_local! {
        static ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    // One worker thread: every task shares its thread-local.
    let wrong = current_thread().block_on(async {
        let tasks: Vec<_> = (0..10_000u64)
            .map(|i| {
                tokio::spawn(async move {
                    ID.set(i);
                    tokio::task::yield_now().await;
                    u32::from(ID.get() != i)
                })
            })
            .collect();
        let mut wrong = 0;
        for t in tasks {
            wrong += t.await.unwrap();
        }
        wrong
    });
    assert!(
        wrong > 9_000,
        "tasks interleave on one thread and read each other's values: {wrong}"
    );
}

#[test]
fn a_token_held_across_await_resets_after_the_task_moves_to_another_thread() {
    static V: ContextVar<&str> = ContextVar::new("v");
    let task = async {
        V.set("outer");
        let token = V.set("inner");
        YieldTimes(1).await; // suspended here, then resumed on another thread
        assert_eq!(V.get(), Ok("inner"));
        V.reset(token).unwrap();
        V.get()
    }
    .in_context(Context::new());
    let mut task = Box::pin(task);
    let mut cx = TaskContext::from_waker(Waker::noop());
    let first = std::thread::current().id();
    assert!(task.as_mut().poll(&mut cx).is_pending());
    let (result, second) = std::thread::spawn(move || {
        let mut cx = TaskContext::from_waker(Waker::noop());
        let Poll::Ready(result) = task.as_mut().poll(&mut cx) else {
            panic!("ready on second poll")
        };
        (result, std::thread::current().id())
    })
    .join()
    .unwrap();
    assert_ne!(first, second);
    assert_eq!(result, Ok("outer"));
    assert!(
        V.get().is_err(),
        "the polling threads' own contexts were never touched"
    );
}

#[test]
fn a_token_held_across_await_on_a_multi_thread_runtime() {
    static V: ContextVar<u64> = ContextVar::new("v");
    let rt = multi_thread(2);
    rt.block_on(async {
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                contextvars::tokio::spawn(async move {
                    let token = V.set(i);
                    let mut threads = std::collections::HashSet::new();
                    for _ in 0..20 {
                        threads.insert(std::thread::current().id());
                        tokio::task::yield_now().await;
                        assert_eq!(V.get(), Ok(i));
                    }
                    V.reset(token).unwrap();
                    assert!(V.get().is_err());
                    threads.len()
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap() >= 1);
        }
    });
}

#[test]
fn a_panic_in_a_poll_restores_the_pollers_context() {
    static V: ContextVar<u32> = ContextVar::new("v");
    V.set(1);
    let ctx = Arc::new(Context::new());
    let mut fut = Box::pin(
        async {
            V.set(2);
            panic!("in poll");
        }
        .in_context(ctx.clone()),
    );
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))).is_err());
    assert_eq!(V.get(), Ok(1), "the poller's context is current again");
    assert_eq!(ctx.get(&V), Some(2));
    assert!(ctx.try_run(|| ()).is_ok(), "nothing stays entered");

    let mut owned = Box::pin(async { panic!("owned") }.in_context(Context::new()));
    assert!(catch_unwind(AssertUnwindSafe(|| owned.as_mut().poll(&mut cx))).is_err());
    assert_eq!(V.get(), Ok(1));
}

#[test]
fn tokio_spawn_blocking_and_spawn_local_inherit() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        V.set(5);
        let blocking = contextvars::tokio::spawn_blocking(|| {
            let seen = V.get();
            V.set(6);
            seen
        });
        assert_eq!(blocking.await.unwrap(), Ok(5));
        let local_task = contextvars::tokio::spawn_local(async {
            let seen = V.get();
            V.set(7);
            seen
        });
        assert_eq!(local_task.await.unwrap(), Ok(5));
        assert_eq!(V.get(), Ok(5));
    });
}

#[test]
fn joinset_tasks_inherit_a_copy_each() {
    use contextvars::tokio::JoinSetExt;
    static V: ContextVar<u32> = ContextVar::new("v");
    multi_thread(2).block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50 {
            V.set(i);
            set.spawn_in_current_context(async move {
                tokio::task::yield_now().await;
                let seen = V.get().unwrap();
                V.set(1000);
                (i, seen)
            });
        }
        for (i, seen) in set.join_all().await {
            assert_eq!(i, seen);
        }
        assert_eq!(V.get(), Ok(49));
    });
}

#[cfg(debug_assertions)]
#[test]
fn a_set_inside_a_plain_tokio_spawn_is_caught_in_debug_builds() {
    static LEAKY: ContextVar<u32> = ContextVar::new("leaky_request_id");
    let rt = multi_thread(2);
    rt.block_on(async {
        // Correct programs: block_on's body, wrapped tasks, plain threads.
        LEAKY.set(1);
        contextvars::tokio::spawn(async { LEAKY.set(2) })
            .await
            .unwrap();
        tokio::spawn(async { LEAKY.set(3) }.in_current_context())
            .await
            .unwrap();
        std::thread::spawn(|| LEAKY.set(4)).join().unwrap();
        contextvars::tokio::spawn_blocking(|| LEAKY.set(5))
            .await
            .unwrap();

        // The mistake: a plain spawn writes the worker's base context.
        let err = tokio::spawn(async { LEAKY.set(6) }).await.unwrap_err();
        let msg = err.into_panic().downcast::<String>().unwrap();
        assert!(msg.contains("`leaky_request_id`"), "{msg}");
        assert!(msg.contains("contextvars::tokio::spawn"), "{msg}");
        let err = tokio::task::spawn_blocking(|| LEAKY.set(7))
            .await
            .unwrap_err();
        assert!(err.is_panic());
        assert_eq!(LEAKY.get(), Ok(1));
    });
}

// The same guarantees on other executors: the wrapper needs nothing from
// the executor but `poll`.
fn inherit_and_isolate(
    spawn_and_wait: impl FnOnce(
        Pin<Box<dyn Future<Output = Result<u32, contextvars::LookupError>> + Send>>,
    ) -> Result<u32, contextvars::LookupError>,
) {
    static V: ContextVar<u32> = ContextVar::new("v");
    V.set(10);
    let task = async {
        let seen = V.get();
        YieldTimes(3).await;
        V.set(11);
        assert_eq!(V.get(), Ok(11));
        seen
    }
    .in_current_context();
    V.set(12);
    assert_eq!(spawn_and_wait(Box::pin(task)), Ok(10));
    assert_eq!(V.get(), Ok(12));
}

#[test]
fn works_on_tokio_current_thread() {
    inherit_and_isolate(|t| current_thread().block_on(async { tokio::spawn(t).await.unwrap() }));
}

#[test]
fn works_on_tokio_multi_thread() {
    inherit_and_isolate(|t| multi_thread(2).block_on(async { tokio::spawn(t).await.unwrap() }));
}

#[test]
fn works_on_futures_local_pool() {
    inherit_and_isolate(|t| {
        use futures::task::LocalSpawnExt;
        let mut pool = futures::executor::LocalPool::new();
        let handle = pool.spawner().spawn_local_with_handle(t).unwrap();
        pool.run_until(handle)
    });
}

#[test]
fn works_on_futures_thread_pool() {
    inherit_and_isolate(|t| {
        use futures::task::SpawnExt;
        let pool = futures::executor::ThreadPool::builder()
            .pool_size(2)
            .create()
            .unwrap();
        let handle = pool.spawn_with_handle(t).unwrap();
        futures::executor::block_on(handle)
    });
}

// smol: integration/tests/smol.rs (its dependencies live with that package).
