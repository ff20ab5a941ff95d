//! Observers: switch hooks, variable hooks, re-entrancy,
//! panicking hooks.
//!
//! Observers are process-wide and the tests of this binary run on parallel
//! threads, so every hook records into a thread-local of its own test: a
//! hook runs on the thread that switched or wrote, so each test sees only
//! its own thread's events.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

use contextvars::observe::{self, Cause, Change};
use contextvars::prelude::*;
use contextvars::{Context, ContextVar, copy_context};

#[test]
fn switch_hook_runs_after_run_enter_and_exit_with_the_new_context_current() {
    static TRACE: ContextVar<u64> = ContextVar::new("obs_trace");
    thread_local! { static SEEN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) }; }
    let _o = observe::on_switch("trace tagger", |_| {
        let trace = TRACE.get_or(0);
        SEEN.with(|s| s.borrow_mut().push(trace));
    });
    let request = Context::new();
    request.run(|| TRACE.set(7));
    SEEN.with(|s| s.borrow_mut().clear());
    let inner = request.run(|| {
        assert_eq!(
            SEEN.with(|s| s.borrow().clone()),
            [7],
            "entering: the hook saw the new context"
        );
        TRACE.get()
    });
    assert_eq!(inner, Ok(7));
    assert_eq!(
        SEEN.with(|s| s.borrow().clone()),
        [7, 0],
        "leaving: back in the caller's"
    );
}

#[test]
fn switch_hook_reports_the_ids_of_both_contexts() {
    thread_local! { static SEEN: RefCell<Vec<(Option<u64>, Option<u64>)>> = const { RefCell::new(Vec::new()) }; }
    let _o = observe::on_switch("ids", |s| {
        SEEN.with(|seen| seen.borrow_mut().push((s.previous(), s.current())))
    });
    let a = Context::new();
    let b = Context::new();
    a.run(|| b.run(|| ()));
    let seen = SEEN.with(|s| s.borrow().clone());
    assert_eq!(seen.len(), 4);
    let (outer, a_id) = seen[0];
    let b_id = seen[1].1;
    assert_ne!(a_id, b_id);
    assert_eq!(seen[1], (a_id, b_id));
    assert_eq!(seen[2], (b_id, a_id));
    assert_eq!(seen[3], (a_id, outer));
}

#[test]
fn switch_hook_runs_around_each_poll_of_a_context_carrying_future() {
    static TRACE: ContextVar<u64> = ContextVar::new("obs_poll_trace");
    thread_local! { static SEEN: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) }; }
    let _o = observe::on_switch("poll tagger", |_| {
        let trace = TRACE.get_or(0);
        SEEN.with(|s| s.borrow_mut().push(trace));
    });
    let ctx = Context::new();
    ctx.run(|| TRACE.set(9));
    SEEN.with(|s| s.borrow_mut().clear());
    let mut yielded = false;
    let fut = std::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(TRACE.get_or(0))
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .in_context(ctx);
    assert_eq!(futures::executor::block_on(fut), 9);
    let seen = SEEN.with(|s| s.borrow().clone());
    // Two polls and the drop, each entering and leaving the task's context;
    // the context then releases its values inside itself, which is not a
    // switch that observers hear of.
    assert_eq!(seen, [9, 0, 9, 0, 9, 0]);
}

#[test]
fn switch_hook_runs_for_generator_resumptions_and_spawned_threads() {
    thread_local! { static COUNT: Cell<usize> = const { Cell::new(0) }; }
    let _o = observe::on_switch("counter", |_| COUNT.with(|c| c.set(c.get() + 1)));
    Context::new().run(|| {
        COUNT.with(|c| c.set(0));
        let items: Vec<u32> = [1, 2].into_iter().isolated().collect();
        assert_eq!(items, [1, 2]);
        // Three resumptions (the last returns `None`), each entering and
        // leaving the generator's layer.
        assert!(COUNT.with(Cell::get) >= 6, "got {}", COUNT.with(Cell::get));
    });
    // A thread spawned with a copy runs its closure in that copy: the hook
    // runs there, on that thread.
    let on_thread = contextvars::thread::spawn(|| COUNT.with(Cell::get))
        .join()
        .unwrap();
    assert!(on_thread >= 1, "the spawned thread's switch was observed");
}

#[test]
fn variable_hook_sees_set_and_reset_with_old_and_new_values() {
    static USER: ContextVar<String> = ContextVar::new("obs_user");
    type Log = Vec<(Option<String>, Option<String>, Cause)>;
    thread_local! { static SEEN: RefCell<Log> = const { RefCell::new(Vec::new()) }; }
    let _o = USER.observe(|c: &Change<'_, String>| {
        SEEN.with(|s| {
            s.borrow_mut()
                .push((c.previous().cloned(), c.current().cloned(), c.cause()))
        })
    });
    Context::new().run(|| {
        let t1 = USER.set("ada".into());
        assert_eq!(USER.get().unwrap(), "ada");
        let t2 = USER.set("bob".into());
        USER.reset(t2).unwrap();
        USER.reset(t1).unwrap();
    });
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        SEEN.with(|x| x.borrow().clone()),
        [
            (None, s("ada"), Cause::Set),
            (s("ada"), s("bob"), Cause::Set),
            (s("bob"), s("ada"), Cause::Reset),
            (s("ada"), None, Cause::Reset),
        ]
    );
}

#[test]
fn variable_hook_sees_scope_begin_and_end_in_private_and_shared_contexts() {
    static LEVEL: ContextVar<u32> = ContextVar::new("obs_level");
    type Log = Vec<(Option<u32>, Option<u32>, Cause)>;
    thread_local! { static SEEN: RefCell<Log> = const { RefCell::new(Vec::new()) }; }
    let _o = LEVEL.observe(|c: &Change<'_, u32>| {
        SEEN.with(|s| {
            s.borrow_mut()
                .push((c.previous().copied(), c.current().copied(), c.cause()))
        })
    });
    let expected = [
        (None, Some(1), Cause::ScopeBegin),
        (Some(1), Some(2), Cause::ScopeBegin),
        (Some(2), Some(1), Cause::ScopeEnd),
        (Some(1), None, Cause::ScopeEnd),
    ];
    let body = || {
        LEVEL.sync_scope(1, || LEVEL.sync_scope(2, || assert_eq!(LEVEL.get(), Ok(2))));
    };
    // Private: `wrap` runs its callback in a context no other thread can
    // reach, where `scope` does not write the map.
    contextvars::wrap(body)();
    assert_eq!(SEEN.with(|s| s.take()), expected, "private context");
    // Shared: `run` on a `&Context`, where `scope` is a set and a reset; no
    // `Set`/`Reset` doubles.
    Context::new().run(body);
    assert_eq!(SEEN.with(|s| s.take()), expected, "shared context");
}

#[test]
fn scope_end_is_reported_when_the_scope_unwinds() {
    static LEVEL: ContextVar<u32> = ContextVar::new("obs_unwind_level");
    thread_local! { static SEEN: RefCell<Vec<Cause>> = const { RefCell::new(Vec::new()) }; }
    let _o = LEVEL.observe(|c: &Change<'_, u32>| SEEN.with(|s| s.borrow_mut().push(c.cause())));
    let r = catch_unwind(|| contextvars::wrap(|| LEVEL.sync_scope(1, || panic!("boom")))());
    assert!(r.is_err());
    assert_eq!(
        SEEN.with(|s| s.take()),
        [Cause::ScopeBegin, Cause::ScopeEnd]
    );
}

#[test]
fn variable_hook_fires_on_switches_that_change_the_visible_value_only() {
    static TENANT: ContextVar<&'static str> = ContextVar::new("obs_tenant");
    thread_local! { static SEEN: RefCell<Vec<(Option<&'static str>, Cause)>> = const { RefCell::new(Vec::new()) }; }
    let _o = TENANT.observe(|c: &Change<'_, &'static str>| {
        SEEN.with(|s| s.borrow_mut().push((c.current().copied(), c.cause())))
    });
    let acme = Context::new();
    acme.run(|| TENANT.set("acme"));
    SEEN.with(|s| s.take());
    acme.run(|| {
        // A copy shares the value: switching to it changes nothing.
        copy_context().run(|| ());
        // A context without a value does.
        Context::new().run(|| ());
    });
    assert_eq!(
        SEEN.with(|s| s.take()),
        [
            (Some("acme"), Cause::Switch),
            (None, Cause::Switch),
            (Some("acme"), Cause::Switch),
            (None, Cause::Switch),
        ]
    );
}

#[test]
fn a_hook_that_writes_its_own_variable_is_not_called_again() {
    static N: ContextVar<u64> = ContextVar::new("obs_reentrant_n");
    thread_local! { static CALLS: Cell<usize> = const { Cell::new(0) }; }
    let _o = N.observe(|c: &Change<'_, u64>| {
        CALLS.with(|n| n.set(n.get() + 1));
        // Without the guard this would recurse until the stack overflows.
        if let Some(&v) = c.current() {
            N.set(v + 1);
            N.sync_scope(v + 2, || N.get().unwrap());
        }
    });
    Context::new().run(|| {
        N.set(1);
        assert_eq!(N.get(), Ok(2), "the hook's own write took effect");
    });
    // The `set`, and the `Switch` out of the context (the value goes).
    assert_eq!(CALLS.with(Cell::get), 2);
}

#[test]
fn a_switch_hook_that_enters_contexts_is_not_called_again() {
    static V: ContextVar<u32> = ContextVar::new("obs_reentrant_v");
    thread_local! { static CALLS: Cell<usize> = const { Cell::new(0) }; }
    let _o = observe::on_switch("re-entering", |_| {
        CALLS.with(|n| n.set(n.get() + 1));
        // Each of these switches (and the write) would call the hook again.
        let ctx = copy_context();
        ctx.run(|| V.set(1));
        Context::new().run(|| ());
    });
    Context::new().run(|| ());
    assert_eq!(CALLS.with(Cell::get), 2, "once on entry, once on exit");
}

#[test]
fn a_panicking_switch_hook_is_caught_switched_off_and_the_context_restored() {
    static V: ContextVar<u32> = ContextVar::new("obs_panic_v");
    thread_local! {
        static ARMED: Cell<bool> = const { Cell::new(false) };
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }
    let _o = observe::on_switch("panicky", |_| {
        if ARMED.with(Cell::get) {
            CALLS.with(|n| n.set(n.get() + 1));
            panic!("hook failure");
        }
    });
    V.set(1);
    ARMED.with(|a| a.set(true));
    let ctx = Context::new();
    let inside = ctx.run(|| {
        V.set(2);
        V.get()
    });
    assert_eq!(inside, Ok(2), "the run went on after the hook panicked");
    assert_eq!(V.get(), Ok(1), "the previous context is current again");
    assert_eq!(ctx.get(&V), Some(2));
    ctx.run(|| ());
    assert_eq!(
        CALLS.with(Cell::get),
        1,
        "switched off after its first panic"
    );
    ARMED.with(|a| a.set(false));
}

#[test]
fn a_hook_panicking_while_a_run_unwinds_does_not_abort() {
    static V: ContextVar<u32> = ContextVar::new("obs_unwind_v");
    thread_local! { static ARMED: Cell<bool> = const { Cell::new(false) }; }
    let _o = V.observe(|_: &Change<'_, u32>| {
        if ARMED.with(Cell::get) {
            panic!("hook failure during unwinding");
        }
    });
    V.set(1);
    ARMED.with(|a| a.set(true));
    let ctx = Context::new();
    let r = catch_unwind(AssertUnwindSafe(|| {
        ctx.run(|| {
            V.set(2);
            panic!("the job failed");
        })
    }));
    ARMED.with(|a| a.set(false));
    let msg = r.unwrap_err();
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"the job failed"));
    assert_eq!(V.get(), Ok(1), "the previous context was restored");
}

#[test]
fn a_panicking_variable_hook_leaves_the_write_done() {
    static V: ContextVar<u32> = ContextVar::new("obs_panic_write");
    let _o = V.observe(|_: &Change<'_, u32>| panic!("hook failure"));
    Context::new().run(|| {
        let t = V.set(5);
        assert_eq!(V.get(), Ok(5));
        V.reset(t).unwrap();
        assert!(V.get().is_err());
    });
}

#[test]
fn dropping_the_observer_removes_it_and_hooks_run_on_the_writing_thread() {
    static V: ContextVar<u32> = ContextVar::new("obs_removed");
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let observer = V.observe(|c: &Change<'_, u32>| {
        // (The thread's exit is a `Switch` too: its base context goes.)
        if c.cause() == Cause::Set {
            CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    std::thread::spawn(|| {
        V.set(1);
    })
    .join()
    .unwrap();
    assert_eq!(
        CALLS.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "seen on another thread"
    );
    drop(observer);
    std::thread::spawn(|| {
        V.set(1);
    })
    .join()
    .unwrap();
    V.set(2);
    assert_eq!(CALLS.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A variable hook's log: previous, current, cause.
type Log = Vec<(Option<u32>, Option<u32>, Cause)>;

/// Installs a hook on `var` that logs into `log` (a thread-local of the
/// test), and returns its observer.
fn log_changes(
    var: &'static ContextVar<u32>,
    log: &'static std::thread::LocalKey<RefCell<Log>>,
) -> observe::Observer {
    var.observe(move |c: &Change<'_, u32>| {
        let entry = (c.previous().copied(), c.current().copied(), c.cause());
        log.with(|s| s.borrow_mut().push(entry));
    })
}

#[test]
fn scope_end_reports_the_value_visible_just_before_the_end() {
    static E: ContextVar<u32> = ContextVar::new("obs_scope_end_previous");
    thread_local! { static SEEN: RefCell<Log> = const { RefCell::new(Vec::new()) }; }
    let _o = log_changes(&E, &SEEN);
    Context::new().run(|| {
        E.sync_scope(1, || {
            E.set(5);
        });
        assert!(E.get().is_err());
    });
    assert_eq!(
        SEEN.with(|s| s.take()),
        [
            (None, Some(1), Cause::ScopeBegin),
            (Some(1), Some(5), Cause::Set),
            (Some(5), None, Cause::ScopeEnd),
        ]
    );
}

#[test]
fn a_set_inside_an_isolated_iterator_reports_the_callers_value_as_previous() {
    static V: ContextVar<u32> = ContextVar::new("obs_isolated_previous");
    thread_local! { static SEEN: RefCell<Log> = const { RefCell::new(Vec::new()) }; }
    let _o = log_changes(&V, &SEEN);
    Context::new().run(|| {
        V.set(1);
        SEEN.with(|s| s.take());
        let mut it = std::iter::from_fn(|| {
            let seen = V.get().ok();
            let token = V.set(2);
            V.reset(token).unwrap();
            Some(seen)
        })
        .isolated();
        assert_eq!(it.next(), Some(Some(1)));
        drop(it);
        assert_eq!(V.get(), Ok(1));
    });
    assert_eq!(
        SEEN.with(|s| s.take())
            .into_iter()
            .filter(|(_, _, cause)| *cause != Cause::Switch)
            .collect::<Vec<_>>(),
        [
            (Some(1), Some(2), Cause::Set),
            (Some(2), Some(1), Cause::Reset),
        ]
    );
}

#[test]
fn a_merge_is_reported_to_the_observers_of_each_variable_it_applies() {
    static M: ContextVar<u32> = ContextVar::new("obs_merge_m");
    static N: ContextVar<u32> = ContextVar::new("obs_merge_n");
    thread_local! { static SEEN: RefCell<Log> = const { RefCell::new(Vec::new()) }; }
    let _m = log_changes(&M, &SEEN);
    let _n = log_changes(&N, &SEEN);
    Context::new().run(|| {
        M.set(1);
        N.set(2);
        let mut fork = contextvars::Fork::new();
        fork.run(|| {
            M.set(10);
            N.set(20);
        });
        SEEN.with(|s| s.take());
        let token = M.set(3);
        M.reset(token).unwrap();
        SEEN.with(|s| s.take());
        fork.merge().unwrap();
        assert_eq!((M.get(), N.get()), (Ok(10), Ok(20)));
    });
    let mut seen = SEEN.with(|s| s.take());
    seen.retain(|(_, _, cause)| *cause != Cause::Switch);
    seen.sort_by_key(|(previous, _, _)| *previous);
    assert_eq!(
        seen,
        [
            (Some(1), Some(10), Cause::Merge),
            (Some(2), Some(20), Cause::Merge),
        ]
    );
}

#[test]
fn an_observer_and_a_change_show_what_they_are() {
    static SHOWN: ContextVar<u32> = ContextVar::new("obs_shown");
    thread_local! { static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) }; }
    let first =
        SHOWN.observe(|c: &Change<'_, u32>| SEEN.with(|s| s.borrow_mut().push(format!("{c:?}"))));
    let second = observe::on_switch("shown", |_| {});
    let (a, b) = (format!("{first:?}"), format!("{second:?}"));
    assert!(a.starts_with("Observer { id: ") && a.ends_with(" }"), "{a}");
    assert_ne!(a, b, "each observer has its own id");
    drop(second);
    Context::new().run(|| {
        SHOWN.set(1);
        SHOWN.set(2);
    });
    assert_eq!(
        SEEN.with(|s| s.borrow().clone()),
        [
            "Change { old: None, new: Some(1), cause: Set }",
            "Change { old: Some(1), new: Some(2), cause: Set }",
            "Change { old: Some(2), new: None, cause: Switch }",
        ]
    );
}

#[test]
fn a_kept_observer_stays_installed() {
    static KEPT: ContextVar<u32> = ContextVar::new("obs_kept");
    thread_local! { static SEEN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) }; }
    KEPT.observe(|c: &Change<'_, u32>| {
        if let Some(&v) = c.current() {
            SEEN.with(|s| s.borrow_mut().push(v));
        }
    })
    .keep();
    Context::new().run(|| KEPT.set(3));
    assert_eq!(SEEN.with(|s| s.borrow().clone()), [3]);
}

#[test]
fn dropping_an_observer_removes_that_observer_alone() {
    static W: ContextVar<u32> = ContextVar::new("obs_removed");
    thread_local! { static SEEN: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) }; }
    fn seen_in_a_run() -> Vec<&'static str> {
        SEEN.with(|s| s.borrow_mut().clear());
        Context::new().run(|| W.set(1));
        SEEN.with(|s| s.borrow().clone())
    }
    let a = observe::on_switch("a", |_| SEEN.with(|s| s.borrow_mut().push("a")));
    let b = observe::on_switch("b", |_| SEEN.with(|s| s.borrow_mut().push("b")));
    let w = W.observe(|_: &Change<'_, u32>| SEEN.with(|s| s.borrow_mut().push("w")));
    // Entering: a, b. The set, then leaving (1 -> none): w, w, then a, b.
    assert_eq!(seen_in_a_run(), ["a", "b", "w", "w", "a", "b"]);
    drop(w);
    assert_eq!(seen_in_a_run(), ["a", "b", "a", "b"]);
    drop(a);
    assert_eq!(seen_in_a_run(), ["b", "b"]);
    drop(b);
    assert_eq!(seen_in_a_run(), [] as [&str; 0]);
}
