//! Tasks started with plain `tokio::spawn` on a runtime built with
//! `BuilderExt::isolate_tasks` (tokio's task hooks): each runs in a copy of
//! its spawner's context, taken at the spawn, and drops in it; and the edges
//! tokio leaves to the hooks (abort, panic, shutdown, `spawn_blocking`,
//! `LocalSet`) behave as `BuilderExt::isolate_tasks` documents.
//!
//! Needs `RUSTFLAGS="--cfg tokio_unstable"` (the CI step "tokio tests with
//! tokio_unstable" runs it).
#![cfg(all(feature = "tokio", tokio_unstable))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contextvars::tokio::{BuilderExt, hooks};
use contextvars::{Context, ContextVar};

fn isolated_multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .isolate_tasks()
        .build()
        .unwrap()
}

fn isolated_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .isolate_tasks()
        .build()
        .unwrap()
}

/// A server: 500 interleaved requests in plain `tokio::spawn`
/// tasks on two workers; each sets its id, yields and sleeps so tasks
/// migrate and interleave, and reads its id back. Without the hooks, in
/// release, almost every request read another's id.
#[test]
fn plain_spawn_requests_never_read_another_requests_value() {
    static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    let rt = isolated_multi_thread(2);
    let wrong = rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..500u64 {
            handles.push(tokio::spawn(async move {
                let inherited = REQUEST_ID.get();
                REQUEST_ID.set(i);
                let mut wrong = usize::from(inherited.is_ok());
                for step in 0..4u64 {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros((i * 37 + step * 91) % 300)).await;
                    wrong += usize::from(REQUEST_ID.get() != Ok(i));
                }
                wrong
            }));
        }
        let mut wrong = 0;
        for h in handles {
            wrong += h.await.unwrap();
        }
        wrong
    });
    assert_eq!(wrong, 0);
}

#[test]
fn a_plain_task_starts_in_a_copy_taken_at_the_spawn() {
    static V: ContextVar<u32> = ContextVar::new("v");
    for rt in [isolated_current_thread(), isolated_multi_thread(2)] {
        rt.block_on(async {
            V.set(1);
            let task = tokio::spawn(async {
                let inherited = V.get();
                V.set(2);
                (inherited, V.get())
            });
            V.set(3); // after the spawn: not seen by the task
            assert_eq!(task.await.unwrap(), (Ok(1), Ok(2)));
            // The task's set is its own.
            assert_eq!(V.get(), Ok(3));
        });
    }
}

#[test]
fn nested_plain_spawns_inherit_at_their_spawn() {
    static DEPTH: ContextVar<u32> = ContextVar::new("depth");
    let rt = isolated_multi_thread(2);
    let seen = rt.block_on(async {
        DEPTH.set(0);
        tokio::spawn(async {
            let outer = DEPTH.get().unwrap();
            DEPTH.set(outer + 1);
            let child = tokio::spawn(async {
                let inner = DEPTH.get().unwrap();
                tokio::task::yield_now().await;
                DEPTH.set(inner + 1);
                let grandchild = tokio::spawn(async { DEPTH.get().unwrap() });
                DEPTH.set(100); // after the grandchild's spawn
                (inner, grandchild.await.unwrap())
            });
            DEPTH.set(50); // after the child's spawn
            let (inner, grand) = child.await.unwrap();
            (outer, inner, grand, DEPTH.get().unwrap())
        })
        .await
        .unwrap()
    });
    assert_eq!(seen, (0, 1, 2, 50));
}

#[test]
fn join_set_tasks_are_isolated() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let rt = isolated_multi_thread(2);
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50 {
            V.set(i);
            set.spawn(async move {
                tokio::task::yield_now().await;
                let seen = V.get().unwrap();
                V.set(1000 + i);
                tokio::task::yield_now().await;
                (i, seen, V.get().unwrap())
            });
        }
        for (i, seen, own) in set.join_all().await {
            assert_eq!((seen, own), (i, 1000 + i));
        }
        assert_eq!(V.get(), Ok(49));
    });
}

/// A panicking poll leaves nothing behind on its worker: the next tasks
/// there see only what they inherited.
#[test]
fn a_panicking_plain_task_leaks_nothing() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let rt = isolated_current_thread();
    rt.block_on(async {
        let err = tokio::spawn(async {
            V.set(7);
            panic!("boom");
        })
        .await
        .unwrap_err();
        assert!(err.is_panic());
        for _ in 0..3 {
            assert!(tokio::spawn(async { V.get() }).await.unwrap().is_err());
        }
        assert!(V.get().is_err());
    });
}

/// Records what a destructor saw.
struct Probe {
    var: &'static ContextVar<u32>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let v = self.var.get().map_or("none".to_owned(), |v| v.to_string());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(format!("probe:{v}"));
    }
}

/// A value kept in a task's context: dropped when the context is.
struct Held(Arc<Mutex<Vec<String>>>);

impl Drop for Held {
    fn drop(&mut self) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.push("context dropped".to_owned());
    }
}

/// Abort: tokio drops the future inside the task's last poll, so inside
/// the hooks: its destructors see the task's own values, and the context
/// is dropped after them.
#[test]
fn an_aborted_plain_task_drops_inside_its_context() {
    static V: ContextVar<u32> = ContextVar::new("v");
    static HELD: ContextVar<Arc<Held>> = ContextVar::new("held");
    for rt in [isolated_current_thread(), isolated_multi_thread(2)] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            V.set(1);
            let (started_tx, started) = tokio::sync::oneshot::channel();
            let probe_seen = seen.clone();
            let task = tokio::spawn(async move {
                V.set(2);
                HELD.set(Arc::new(Held(probe_seen.clone())));
                let _probe = Probe {
                    var: &V,
                    seen: probe_seen,
                };
                started_tx.send(()).unwrap();
                std::future::pending::<()>().await;
            });
            started.await.unwrap();
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            assert_eq!(V.get(), Ok(1));
        });
        drop(rt); // the context is dropped when the last poll ends
        assert_eq!(*seen.lock().unwrap(), ["probe:2", "context dropped"]);
    }
}

/// Completion: the future (and its locals) drop inside the last poll, the
/// context after it, so a finished task's values are released.
#[test]
fn a_finished_plain_task_releases_its_context() {
    static HELD: ContextVar<Arc<Held>> = ContextVar::new("held");
    let rt = isolated_multi_thread(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(async {
        for _ in 0..20 {
            let s = seen.clone();
            tokio::spawn(async move {
                HELD.set(Arc::new(Held(s)));
                tokio::task::yield_now().await;
            })
            .await
            .unwrap();
        }
    });
    // The context of a task that ends in a poll is dropped when that poll
    // ends, which may be just after its `JoinHandle` returned: the workers
    // have surely finished once the runtime is gone.
    drop(rt);
    assert_eq!(seen.lock().unwrap().len(), 20);
    assert!(HELD.get().is_err());
}

/// Shutdown of a multi-thread runtime: tokio drops a pending task outside
/// the poll hooks, on a worker thread, so its destructors see that worker's
/// own (empty) context, as documented; its context is dropped after them.
#[test]
fn at_multi_thread_shutdown_a_plain_task_drops_in_the_workers_context() {
    static V: ContextVar<u32> = ContextVar::new("v");
    static HELD: ContextVar<Arc<Held>> = ContextVar::new("held");
    let rt = isolated_multi_thread(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(async {
        V.set(1);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let probe_seen = seen.clone();
        tokio::spawn(async move {
            V.set(2);
            HELD.set(Arc::new(Held(probe_seen.clone())));
            let _probe = Probe {
                var: &V,
                seen: probe_seen,
            };
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        started.await.unwrap();
        // The one worker runs this only once the task's poll has ended, so
        // the shutdown finds the task idle (a task being polled would be
        // cancelled at the end of that poll, inside its context).
        tokio::spawn(async {}).await.unwrap();
    });
    drop(rt);
    assert_eq!(*seen.lock().unwrap(), ["probe:none", "context dropped"]);
}

/// Shutdown of a current-thread runtime: the pending task is dropped on the
/// thread dropping the runtime, in the context current there.
#[test]
fn at_current_thread_shutdown_a_plain_task_drops_in_the_droppers_context() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let rt = isolated_current_thread();
    let seen = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(async {
        let probe_seen = seen.clone();
        tokio::spawn(async move {
            V.set(2);
            let _probe = Probe {
                var: &V,
                seen: probe_seen,
            };
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await; // let it start
    });
    let dropper = Context::new();
    dropper.run(|| {
        V.set(9);
        drop(rt);
    });
    assert_eq!(*seen.lock().unwrap(), ["probe:9"]);
}

/// `spawn_blocking` gets no hook calls from tokio; the crate's helper gives
/// the job its own copy.
#[test]
fn spawn_blocking_is_not_covered_by_the_hooks_but_the_helper_isolates() {
    static V: ContextVar<u32> = ContextVar::new("v");
    let rt = isolated_multi_thread(1);
    rt.block_on(async {
        V.set(1);
        let plain = tokio::task::spawn_blocking(|| V.get()).await.unwrap();
        assert!(plain.is_err(), "a plain blocking job does not inherit");
        let helper = contextvars::tokio::spawn_blocking(|| V.get())
            .await
            .unwrap();
        assert_eq!(helper, Ok(1));
    });
}

/// A user's own hooks, chained with the crate's: the user's before-poll
/// hook runs inside the task's context, and isolation still holds.
#[test]
fn user_hooks_chain_with_the_crates() {
    static V: ContextVar<u32> = ContextVar::new("v");
    static SEEN_IN_HOOK: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    static SPAWNS: AtomicUsize = AtomicUsize::new(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_task_spawn(|meta| {
            hooks::on_task_spawn(meta);
            SPAWNS.fetch_add(1, Ordering::Relaxed);
        })
        .on_before_task_poll(|meta| {
            hooks::on_before_task_poll(meta);
            if let Ok(v) = V.get() {
                SEEN_IN_HOOK.lock().unwrap().push(v);
            }
        })
        .on_after_task_poll(hooks::on_after_task_poll)
        .on_task_terminate(hooks::on_task_terminate)
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..10 {
            V.set(i);
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                assert_eq!(V.get(), Ok(i));
            })
            .await
            .unwrap();
        }
    });
    assert_eq!(SPAWNS.load(Ordering::Relaxed), 10);
    let mut seen = SEEN_IN_HOOK.lock().unwrap().clone();
    seen.dedup();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

/// Under the hooks, a plain task never writes a base context, so the
/// misuse check (a panic in debug builds) stays silent.
#[test]
fn plain_tasks_under_the_hooks_are_not_misuse() {
    static V: ContextVar<u32> = ContextVar::new("v");
    contextvars::set_misuse_policy(contextvars::Misuse::Panic);
    let rt = isolated_multi_thread(2);
    rt.block_on(async {
        tokio::spawn(async {
            V.set(1);
            tokio::task::yield_now().await;
            V.get()
        })
        .await
        .unwrap()
        .unwrap();
    });
}

/// A variable declared `not_inherited` stays out of the copy
/// the spawn hook takes, as it stays out of every spawn helper's.
#[test]
fn plain_spawn_under_the_hooks_leaves_not_inherited_variables_behind() {
    static TX: ContextVar<u32> = ContextVar::new("tx").not_inherited();
    static REQ: ContextVar<u32> = ContextVar::new("req");
    let rt = isolated_multi_thread(2);
    let seen = rt.block_on(async {
        TX.set(1);
        REQ.set(2);
        tokio::spawn(async { (TX.get().ok(), REQ.get().ok()) })
            .await
            .unwrap()
    });
    assert_eq!(seen, (None, Some(2)));
}
