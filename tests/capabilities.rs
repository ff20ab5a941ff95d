//! Guards (`set_scoped`), the per-variable inheritance
//! policy (`not_inherited`), detached spawns, merging a fork back (`Fork`),
//! and listing a context's values (`Context::entries`). Each test asserts a
//! behaviour at an edge: out-of-order drops, panics, other threads and
//! contexts, conflicts.
#![cfg(feature = "full")]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, Fork, MergeError, copy_context, inherited_context};

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ---- §1 guards ----

#[test]
fn guard_restores_the_previous_value_when_dropped() {
    static V: ContextVar<u32> = ContextVar::with_default("v", 0);
    Context::new().run(|| {
        V.set(1);
        {
            let _g = V.set_scoped(2);
            assert_eq!(V.get(), Ok(2));
        }
        assert_eq!(V.get(), Ok(1));
        let ctx = copy_context();
        assert_eq!(ctx.get(&V), Some(1));
    });
}

#[test]
fn guards_dropped_out_of_order_each_restore_their_own_old_value() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        let a = V.set_scoped(1); // old: none
        let b = V.set_scoped(2); // old: 1
        let c = V.set_scoped(3); // old: 2
        drop(b); // restores 1, its own old value, although c is newer
        assert_eq!(V.get(), Ok(1));
        drop(a); // restores "no value"
        assert!(V.get().is_err());
        drop(c); // restores 2, its own old value, as resetting its token would
        assert_eq!(V.get(), Ok(2));
    });
}

#[test]
fn guard_restores_when_its_block_panics() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        V.set(1);
        let caught = catch_unwind(|| {
            let _g = V.set_scoped(2);
            panic!("boom");
        });
        assert!(caught.is_err());
        assert_eq!(V.get(), Ok(1));
    });
}

#[test]
fn guard_held_across_await_in_a_spawned_task_works_on_any_worker() {
    static V: ContextVar<u32> = ContextVar::with_default("v", 0);
    let rt = common::runtime();
    rt.block_on(async {
        let seen = contextvars::tokio::spawn(async {
            let mut seen = Vec::new();
            {
                let _g = V.set_scoped(5);
                for _ in 0..20 {
                    tokio::task::yield_now().await; // may resume on another worker
                    seen.push(V.get().unwrap());
                }
            }
            seen.push(V.get().unwrap());
            seen
        })
        .await
        .unwrap();
        let mut expected = vec![5; 20];
        expected.push(0);
        assert_eq!(seen, expected);
    });
}

#[test]
fn guard_dropped_in_another_context_changes_nothing_there_and_warns_naming_the_variable() {
    static V: ContextVar<u32> = ContextVar::new("guarded");
    let logged = common::logged(|| {
        Context::new().run(|| {
            let g = V.set_scoped(1);
            let other = Context::new();
            other.run(|| {
                V.set(9);
                drop(g); // no panic: a drop may run while unwinding or at thread exit
                assert_eq!(V.get(), Ok(9), "the other context was written");
            });
            assert_eq!(other.get(&V), Some(9));
            // Its own context keeps the value: nothing could reset it.
            assert_eq!(V.get(), Ok(1));
        })
    });
    assert!(logged.contains("`guarded`"), "{logged}");
    assert!(logged.contains("another context"), "{logged}");
    assert!(logged.contains("into_token"), "says what to do: {logged}");
}

#[test]
fn guard_dropped_on_another_thread_warns_there_and_leaves_both_contexts_alone() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        let g = V.set_scoped(1);
        let joined = std::thread::spawn(move || {
            V.set(7);
            let caught = catch_unwind(AssertUnwindSafe(|| drop(g)));
            (caught.is_err(), V.get())
        })
        .join()
        .unwrap();
        assert_eq!(joined, (false, Ok(7)));
        assert_eq!(V.get(), Ok(1));
    });
}

#[test]
fn guard_dropped_elsewhere_while_unwinding_does_not_abort() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        let g = V.set_scoped(1);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            Context::new().run(move || {
                let _g = g;
                panic!("first");
            })
        }));
        // The original panic comes through (a second one would abort).
        assert_eq!(panic_message(caught.unwrap_err()), "first");
        assert_eq!(V.get(), Ok(1));
    });
}

#[test]
fn guard_reset_by_hand_elsewhere_hands_the_token_back() {
    static V: ContextVar<u32> = ContextVar::new("v");
    Context::new().run(|| {
        let g = V.set_scoped(1);
        let failed = copy_context().run(|| g.reset()).unwrap_err();
        assert_eq!(V.get(), Ok(1));
        V.reset(failed.into_token()).unwrap();
        assert!(V.get().is_err());
    });
}

// ---- §2 inheritance policy ----

static LOCAL: ContextVar<&'static str> = ContextVar::with_default("local", "none").not_inherited();
static SHARED: ContextVar<&'static str> = ContextVar::new("shared");

fn seen() -> (&'static str, Option<&'static str>) {
    (LOCAL.get().unwrap(), SHARED.get().ok())
}

const INHERITED: (&str, Option<&str>) = ("none", Some("s"));

#[test]
fn not_inherited_variables_stay_out_of_every_spawn_helper() {
    Context::new().run(|| {
        LOCAL.set("tx");
        SHARED.set("s");
        assert_eq!(contextvars::thread::spawn(seen).join().unwrap(), INHERITED);
        std::thread::scope(|s| {
            let h = contextvars::thread::spawn_scoped(s, seen);
            assert_eq!(h.join().unwrap(), INHERITED);
        });
        assert_eq!(
            std::thread::spawn(contextvars::wrap(seen)).join().unwrap(),
            INHERITED
        );
        assert_eq!(
            futures::executor::block_on(async { seen() }.in_current_context()),
            INHERITED
        );
        assert_eq!(contextvars::rayon::join(seen, seen), (INHERITED, INHERITED));
        let (tx, rx) = std::sync::mpsc::channel();
        contextvars::rayon::spawn(move || tx.send(seen()).unwrap());
        assert_eq!(rx.recv().unwrap(), INHERITED);
        let rt = common::runtime();
        let (task, blocking) = rt.block_on(async {
            let task = contextvars::tokio::spawn(async { seen() });
            let blocking = contextvars::tokio::spawn_blocking(seen);
            (task.await.unwrap(), blocking.await.unwrap())
        });
        assert_eq!((task, blocking), (INHERITED, INHERITED));
        // The spawner still has it.
        assert_eq!(seen(), ("tx", Some("s")));
    });
}

#[test]
fn copy_context_and_context_copy_keep_not_inherited_variables() {
    Context::new().run(|| {
        LOCAL.set("tx");
        let copy = copy_context();
        assert_eq!(copy.get(&LOCAL), Some("tx"));
        assert_eq!(copy.copy().get(&LOCAL), Some("tx"));
        assert_eq!(inherited_context().get(&LOCAL), None);
        // A spawn from inside an explicit copy drops it there too.
        copy.run(|| assert_eq!(contextvars::thread::spawn(seen).join().unwrap().0, "none"));
    });
}

#[test]
fn spawn_copies_of_large_contexts_drop_exactly_the_not_inherited_variables() {
    // Enough variables for the map's branch nodes, with local ones among
    // them, set, reset and set again (the count must follow every change).
    let vars: Vec<&'static ContextVar<u32>> = (0..60)
        .map(|i| {
            let var = ContextVar::new("many");
            let var = if i % 3 == 0 { var.not_inherited() } else { var };
            &*Box::leak(Box::new(var))
        })
        .collect();
    Context::new().run(|| {
        for (i, var) in vars.iter().enumerate() {
            let token = var.set(i as u32);
            if i % 5 == 0 {
                var.reset(token).unwrap();
                var.set(i as u32 + 100);
            }
        }
        let child = inherited_context();
        for (i, var) in vars.iter().enumerate() {
            let expected = (i % 3 != 0).then(|| var.get().unwrap());
            assert_eq!(child.get(var), expected, "variable {i}");
        }
        assert_eq!(child.len(), 40);
        // Removing every local variable makes spawn copies whole again.
        let all = copy_context();
        for var in vars.iter().step_by(3) {
            assert!(all.contains(var));
        }
    });
}

#[test]
fn a_not_inherited_variable_reads_its_default_in_a_task_even_when_set_in_the_task() {
    Context::new().run(|| {
        LOCAL.set("request");
        let inner = contextvars::thread::spawn(|| {
            let before = LOCAL.get().unwrap();
            LOCAL.set("job");
            let grandchild = contextvars::thread::spawn(|| LOCAL.get().unwrap())
                .join()
                .unwrap();
            (before, LOCAL.get().unwrap(), grandchild)
        })
        .join()
        .unwrap();
        assert_eq!(inner, ("none", "job", "none"));
        assert_eq!(LOCAL.get(), Ok("request"));
    });
}

// ---- §3 detached work ----

#[test]
fn detached_spawns_start_empty_and_keep_their_writes() {
    Context::new().run(|| {
        SHARED.set("request");
        let thread = contextvars::thread::spawn_detached(|| {
            let before = SHARED.get().ok();
            SHARED.set("loop");
            (before, SHARED.get().ok())
        })
        .join()
        .unwrap();
        assert_eq!(thread, (None, Some("loop")));

        let (tx, rx) = std::sync::mpsc::channel();
        contextvars::rayon::spawn_detached(move || tx.send(SHARED.get().ok()).unwrap());
        assert_eq!(rx.recv().unwrap(), None);

        let rt = common::runtime();
        let task = rt.block_on(async {
            contextvars::tokio::spawn_detached(async {
                let before = SHARED.get().ok();
                SHARED.set("loop");
                tokio::task::yield_now().await;
                (before, SHARED.get().ok())
            })
            .await
        });
        assert_eq!(task.unwrap(), (None, Some("loop")));
        assert_eq!(SHARED.get(), Ok("request"));
    });
}

#[test]
fn a_detached_task_does_not_keep_the_request_values_alive() {
    static BUFFER: ContextVar<Arc<Vec<u8>>> = ContextVar::new("buffer");
    let buffer = Arc::new(vec![0u8; 16]);
    let rt = common::runtime();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = Context::new().run(|| {
        BUFFER.set(buffer.clone());
        let _rt = rt.enter();
        contextvars::tokio::spawn_detached(async move {
            let _ = stop_rx.await;
        })
    });
    // The request's context is gone; the long-lived task holds no copy.
    assert_eq!(Arc::strong_count(&buffer), 1);
    stop_tx.send(()).unwrap();
    rt.block_on(handle).unwrap();
}

// ---- §4 merging ----

#[test]
fn merge_applies_the_childs_sets_and_removals_as_writes() {
    static A: ContextVar<u32> = ContextVar::new("a");
    static B: ContextVar<u32> = ContextVar::new("b");
    static C: ContextVar<u32> = ContextVar::new("c");
    Context::new().run(|| {
        let b_token = B.set(1);
        C.set(1);
        let mut fork = Fork::new();
        fork.run(|| {
            A.set(10);
            B.reset(b_token).unwrap(); // a parent's token resets in the child
            let t = C.set(2);
            C.reset(t).unwrap(); // back as it was: no change
        });
        assert_eq!(fork.changed(), ["a", "b"]);
        assert_eq!((A.get().ok(), B.get().ok()), (None, Some(1)));
        let changes = fork.merge().unwrap();
        assert_eq!((changes.set, changes.removed), (vec!["a"], vec!["b"]));
        assert_eq!(
            (A.get().ok(), B.get().ok(), C.get().ok()),
            (Some(10), None, Some(1))
        );
    });
}

#[test]
fn merge_with_a_conflict_applies_nothing_and_names_every_conflict() {
    static A: ContextVar<u32> = ContextVar::new("a");
    static B: ContextVar<u32> = ContextVar::new("b");
    static D: ContextVar<u32> = ContextVar::new("d");
    Context::new().run(|| {
        B.set(1);
        D.set(1);
        let mut fork = Fork::new();
        fork.run(|| {
            A.set(10);
            B.set(20);
            D.set(40);
        });
        B.set(2); // the parent changed b too ...
        let t = D.set(3);
        D.reset(t).unwrap(); // ... but d is back to the value of the fork
        let err = fork.merge().unwrap_err();
        let MergeError::Conflict { vars, fork } = err else {
            panic!("not a conflict")
        };
        assert_eq!(vars, ["b"]);
        assert_eq!(
            (A.get().ok(), B.get().ok(), D.get().ok()),
            (None, Some(2), Some(1))
        );
        // A value set that equals the old one is still a change (identity).
        let changes = fork.merge_overwriting().unwrap();
        assert_eq!(changes.set, ["a", "b", "d"]);
        assert_eq!(
            (A.get().ok(), B.get().ok(), D.get().ok()),
            (Some(10), Some(20), Some(40))
        );
    });
}

#[test]
fn a_parent_that_removed_a_variable_the_child_set_is_a_conflict() {
    static A: ContextVar<u32> = ContextVar::new("a");
    Context::new().run(|| {
        let t = A.set(1);
        let mut fork = Fork::new();
        fork.run(|| A.set(2));
        A.reset(t).unwrap();
        assert!(matches!(fork.merge(), Err(MergeError::Conflict { vars, .. }) if vars == ["a"]));
        assert!(A.get().is_err());
    });
}

#[test]
fn merge_outside_the_forks_context_is_refused() {
    static A: ContextVar<u32> = ContextVar::new("a");
    Context::new().run(|| {
        let mut fork = Fork::new();
        fork.run(|| A.set(1));
        let other = Context::new();
        let err = other.run(|| fork.merge()).unwrap_err();
        assert!(err.to_string().contains("outside the context"), "{err}");
        assert!(other.is_empty());
        err.into_fork().merge().unwrap();
        assert_eq!(A.get(), Ok(1));
    });
}

#[test]
fn tokens_made_in_the_child_reset_in_the_parent_after_the_merge() {
    static A: ContextVar<u32> = ContextVar::new("a");
    Context::new().run(|| {
        A.set(1);
        let mut fork = Fork::new();
        let token = fork.run(|| A.set(2));
        fork.merge().unwrap();
        assert_eq!(A.get(), Ok(2));
        A.reset(token).unwrap();
        assert_eq!(A.get(), Ok(1));
    });
}

#[test]
fn a_fork_run_on_another_thread_merges_back_on_this_one() {
    static A: ContextVar<u32> = ContextVar::new("a");
    Context::new().run(|| {
        let mut fork = Fork::new();
        std::thread::scope(|s| {
            s.spawn(|| fork.run(|| A.set(3)));
        });
        fork.merge().unwrap();
        assert_eq!(A.get(), Ok(3));
    });
}

#[test]
fn a_panic_in_the_child_leaves_the_parent_untouched_until_a_merge() {
    static A: ContextVar<u32> = ContextVar::new("a");
    Context::new().run(|| {
        let mut fork = Fork::new();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            fork.run(|| {
                A.set(1);
                panic!("handler failed");
            })
        }));
        assert!(caught.is_err());
        assert!(A.get().is_err());
        drop(fork); // not merged: nothing changes
        assert!(A.get().is_err());
    });
}

#[test]
fn middleware_sees_what_the_handler_set_in_a_spawned_task() {
    static USER: ContextVar<u64> = ContextVar::new("user");
    let rt = common::runtime();
    let seen = rt.block_on(async {
        contextvars::tokio::spawn(async {
            let mut fork = Fork::new();
            let status = fork
                .run_future(async {
                    tokio::task::yield_now().await;
                    USER.set(42);
                    tokio::task::yield_now().await;
                    200
                })
                .await;
            assert!(
                USER.get().is_err(),
                "the handler's write leaked before the merge"
            );
            fork.merge().unwrap();
            (status, USER.get().unwrap())
        })
        .await
        .unwrap()
    });
    assert_eq!(seen, (200, 42));
}

// ---- §7 listing ----

#[derive(Debug)]
#[allow(dead_code)] // read by `Debug` only
struct Session {
    user: &'static str,
    admin: bool,
}

#[test]
fn entries_list_names_sorted_with_the_values_of_debuggable_variables() {
    static SESSION: ContextVar<Session> = ContextVar::new("session").debuggable();
    static COUNT: ContextVar<u32> = ContextVar::new("count").not_inherited().debuggable();
    static OPAQUE: ContextVar<String> = ContextVar::new("opaque");
    let ctx = Context::new();
    ctx.run(|| {
        SESSION.set(Session {
            user: "ada",
            admin: true,
        });
        COUNT.set(3);
        OPAQUE.set("secret".into());
    });
    let entries: Vec<_> = ctx.entries().collect();
    assert_eq!(
        entries,
        [
            ("count", Some("3".to_string())),
            ("opaque", None),
            (
                "session",
                Some(r#"Session { user: "ada", admin: true }"#.to_string())
            ),
        ]
    );
    let debug = format!("{ctx:?}");
    assert!(
        debug.contains(
            r#"vars: {"count": 3, "opaque": .., "session": Session { user: "ada", admin: true }}"#
        ),
        "{debug}"
    );
    assert!(!debug.contains("secret"), "{debug}");
}

/// A value whose `Debug` reads the context it lives in: formatting must
/// happen outside the context's lock, or this would deadlock.
struct Reentrant(Arc<Context>);

impl std::fmt::Debug for Reentrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "in a context of {}", self.0.len())
    }
}

#[test]
fn entries_of_a_context_entered_on_another_thread_format_outside_its_lock() {
    static HOLDER: ContextVar<Reentrant> = ContextVar::new("holder").debuggable();
    let ctx = Arc::new(Context::new());
    let barrier = Arc::new(Barrier::new(2));
    let (c, b) = (ctx.clone(), barrier.clone());
    let thread = std::thread::spawn(move || {
        let inner = c.clone();
        c.run(|| {
            HOLDER.set(Reentrant(inner));
            b.wait(); // entered, with a value
            b.wait(); // until the main thread has listed it
        });
    });
    barrier.wait();
    let entries: Vec<_> = ctx.entries().collect();
    barrier.wait();
    thread.join().unwrap();
    assert_eq!(entries, [("holder", Some("in a context of 1".to_string()))]);
    // The value holds its own context: break the cycle.
    ctx.run(|| drop(HOLDER.set(Reentrant(Arc::new(Context::new())))));
}

#[test]
fn guards_and_forks_can_cross_threads_and_awaits() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<contextvars::SetGuard<'static, u32>>();
    send_sync::<Fork>();
    send_sync::<MergeError>();
}

/// The count that keeps spawn copies O(1) follows every insert and remove,
/// in flat roots and branches alike: a context whose not-inherited
/// variables are all gone copies for spawns as cheaply as any other.
#[test]
#[cfg(feature = "__bench_internals")]
fn the_count_of_not_inherited_entries_follows_inserts_and_removes() {
    use contextvars::map::{Garbage, Map, Value};
    const LOCAL_BIT: u64 = 1 << 31;
    let mut map = Map::default();
    let mut garbage = Garbage::new();
    for id in 1..=40u64 {
        let id = if id % 4 == 0 { id | LOCAL_BIT } else { id };
        map.insert(id, Value::new(id), &mut garbage);
        map.insert(id, Value::new(id + 1), &mut garbage); // a replacement counts once
    }
    assert_eq!(map.locals(), 10);
    let copy = map.clone();
    for id in (4..=40u64).step_by(4) {
        map.remove(id | LOCAL_BIT, &mut garbage);
    }
    assert_eq!((map.locals(), copy.locals()), (0, 10));
    let spawned = copy.into_inherited();
    assert_eq!((spawned.locals(), spawned.len()), (0, 30));
}

#[test]
fn a_panicking_observer_is_reported_once_naming_it() {
    static V: ContextVar<u32> = ContextVar::new("reported_v");
    let logged = common::logged(|| {
        let me = std::thread::current().id();
        let hook = V.observe(move |_| {
            if std::thread::current().id() == me {
                panic!("the hook's own panic");
            }
        });
        Context::new().run(|| {
            V.set(1);
            V.set(2); // switched off: not called, not reported again
        });
        drop(hook);
    });
    assert_eq!(
        logged.matches("observer `reported_v` panicked").count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("the hook's own panic"), "{logged}");
    assert!(logged.contains("switched off"), "{logged}");
}
