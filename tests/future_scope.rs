//! `ContextVar::scope` over a future: the value holds during every poll and
//! the drop, on any executor and whichever thread polls, and nowhere else:
//! not between polls, not in the context the future is polled in once a
//! poll returns, not after a panic.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::observe::{Cause, Change};
#[cfg(feature = "tokio")]
use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context};

#[path = "common/counted.rs"]
mod counted;
use counted::{Counted, Counter};
#[path = "common/yield_times.rs"]
mod yield_times;
use yield_times::YieldTimes;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 0);
static OTHER: ContextVar<u32> = ContextVar::new("other");

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut TaskContext::from_waker(Waker::noop()))
}

#[test]
#[cfg(feature = "tokio")]
fn the_value_holds_across_awaits_on_a_multi_threaded_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|i| {
                contextvars::tokio::spawn(REQUEST_ID.scope(i, async move {
                    let mut seen = Vec::new();
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                        seen.push(REQUEST_ID.get());
                    }
                    (i, seen)
                }))
            })
            .collect();
        for task in tasks {
            let (i, seen) = task.await.unwrap();
            assert!(seen.iter().all(|v| *v == Ok(i)), "task {i} saw {seen:?}");
        }
    });
}

#[test]
fn the_value_is_gone_between_polls_and_after_the_future() {
    LEVEL.set(1);
    let mut fut = pin!(LEVEL.scope(5, async {
        let before = LEVEL.get();
        YieldTimes(1).await;
        (before, LEVEL.get())
    }));
    assert_eq!(LEVEL.get(), Ok(1), "nothing is set before the first poll");
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(LEVEL.get(), Ok(1), "the value is gone between polls");
    assert!(copy_context().get(&LEVEL) == Some(1), "and from copies");
    assert_eq!(poll_once(fut.as_mut()), Poll::Ready((Ok(5), Ok(5))));
    assert_eq!(LEVEL.get(), Ok(1));
}

#[test]
fn any_executor_polls_it_in_scope() {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..8u64 {
        let tx = tx.clone();
        pool.spawn_ok(REQUEST_ID.scope(i, async move {
            YieldTimes(3).await;
            tx.send((i, REQUEST_ID.get().ok())).unwrap();
        }));
    }
    drop(tx);
    let mut seen: Vec<_> = rx.iter().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..8).map(|i| (i, Some(i))).collect::<Vec<_>>());
}

/// Reads the variable when dropped.
struct ReadsOnDrop(Arc<std::sync::Mutex<Option<Result<u64, contextvars::LookupError>>>>);

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(REQUEST_ID.get());
    }
}

#[test]
fn a_future_dropped_unfinished_is_dropped_inside_the_scope() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let guard = ReadsOnDrop(seen.clone());
    let mut fut = Box::pin(REQUEST_ID.scope(3, async move {
        let _guard = guard;
        YieldTimes(1).await;
    }));
    assert!(poll_once(fut.as_mut()).is_pending());
    drop(fut); // a cancelled task, a losing `select!` branch
    assert_eq!(*seen.lock().unwrap(), Some(Ok(3)));
    assert!(
        REQUEST_ID.get().is_err(),
        "nothing left in the caller's context"
    );
}

#[test]
fn a_future_never_polled_is_dropped_inside_the_scope_too() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let guard = ReadsOnDrop(seen.clone());
    drop(REQUEST_ID.scope(4, async move {
        let _guard = guard;
    }));
    assert_eq!(*seen.lock().unwrap(), Some(Ok(4)));
}

static COUNTED: ContextVar<Counted> = ContextVar::new("counted");

#[test]
fn the_value_is_dropped_once_with_the_future_or_the_last_copy_holding_it() {
    let drops = Counter::new();
    let mut fut = Box::pin(COUNTED.scope(Counted::new(&drops), async {
        let copy = copy_context(); // a handle to the value, in a map
        YieldTimes(2).await;
        copy
    }));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert!(poll_once(fut.as_mut()).is_pending());
    let Poll::Ready(copy) = poll_once(fut.as_mut()) else {
        panic!("ready after two yields")
    };
    assert!(copy.contains(&COUNTED));
    assert_eq!(drops.drops(), 0, "the copy holds it");
    drop(copy);
    assert_eq!(drops.drops(), 0, "the future holds it");
    drop(fut);
    assert_eq!(drops.drops(), 1);
}

#[test]
fn the_value_is_dropped_once_when_the_future_is_dropped() {
    let drops = Counter::new();
    {
        let mut fut = Box::pin(COUNTED.scope(Counted::new(&drops), YieldTimes(5)));
        for _ in 0..3 {
            assert!(poll_once(fut.as_mut()).is_pending());
        }
        assert_eq!(drops.drops(), 0, "held across polls");
    }
    assert_eq!(drops.drops(), 1);
}

#[test]
fn a_panicking_poll_restores_the_context_and_the_drop_still_sees_the_value() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let guard = ReadsOnDrop(seen.clone());
    let mut fut = Box::pin(REQUEST_ID.scope(8, async move {
        let _guard = guard;
        YieldTimes(1).await;
        panic!("inside the scope");
    }));
    assert!(poll_once(fut.as_mut()).is_pending());
    let caught = catch_unwind(AssertUnwindSafe(|| poll_once(fut.as_mut())));
    assert!(caught.is_err());
    assert!(
        REQUEST_ID.get().is_err(),
        "the panic ended the poll's scope"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        Some(Ok(8)),
        "unwinding dropped the body in scope"
    );
    drop(fut);
    assert!(REQUEST_ID.get().is_err());
}

#[test]
fn writes_to_other_variables_are_the_tasks_and_to_itself_last_one_poll() {
    let task = Context::new();
    let result = task.run(|| {
        let mut fut = pin!(LEVEL.scope(2, async {
            OTHER.set(9); // the task's own: stays
            LEVEL.set(3); // lasts to the end of this poll
            let inside = LEVEL.get();
            YieldTimes(1).await;
            (inside, LEVEL.get())
        }));
        assert!(poll_once(fut.as_mut()).is_pending());
        assert_eq!(
            LEVEL.get(),
            Ok(0),
            "the scope's end undid both values of LEVEL"
        );
        assert_eq!(OTHER.get(), Ok(9));
        poll_once(fut.as_mut())
    });
    assert_eq!(result, Poll::Ready((Ok(3), Ok(2))));
    assert_eq!(task.get(&OTHER), Some(9));
    assert_eq!(task.get(&LEVEL), None);
}

#[test]
#[cfg(feature = "tokio")]
fn work_spawned_inside_the_scope_starts_with_its_value() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = rt.block_on(REQUEST_ID.scope(11, async {
        let child = contextvars::tokio::spawn(async { REQUEST_ID.get() });
        let wrapped = async { REQUEST_ID.get() }.in_current_context();
        (child.await.unwrap(), wrapped.await)
    }));
    assert_eq!(seen, (Ok(11), Ok(11)));
}

#[test]
fn scopes_of_futures_nest() {
    let seen = futures::executor::block_on(LEVEL.scope(1, async {
        let inner = LEVEL.scope(2, async {
            YieldTimes(1).await;
            LEVEL.get()
        });
        let inner = inner.await;
        (inner, LEVEL.get())
    }));
    assert_eq!(seen, (Ok(2), Ok(1)));
}

#[test]
fn observers_see_each_poll_begin_and_end_the_scope() {
    static WATCHED: ContextVar<u32> = ContextVar::new("future_scope_watched");
    /// Each change: the value before, the value after, and why.
    type Seen = Vec<(Option<u32>, Option<u32>, Cause)>;
    thread_local! { static SEEN: RefCell<Seen> = const { RefCell::new(Vec::new()) }; }
    let _o = WATCHED.observe(|c: &Change<'_, u32>| {
        SEEN.with(|s| {
            s.borrow_mut()
                .push((c.previous().copied(), c.current().copied(), c.cause()))
        })
    });
    let mut fut = pin!(WATCHED.scope(6, YieldTimes(1)));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert!(poll_once(fut.as_mut()).is_ready());
    let one_poll = [
        (None, Some(6), Cause::ScopeBegin),
        (Some(6), None, Cause::ScopeEnd),
    ];
    assert_eq!(SEEN.with(|s| s.take()), [one_poll, one_poll].concat());
}

#[test]
fn the_future_reports_its_variable_and_value() {
    let fut = REQUEST_ID.scope(12, async {});
    assert_eq!(fut.var().name(), "request_id");
    assert_eq!(fut.value(), &12);
    assert!(format!("{fut:?}").contains("request_id"));
}
