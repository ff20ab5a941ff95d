//! rayon's work stealing: a worker that waits (here: `rayon::yield_now` on a
//! one-thread pool, so which job runs where is deterministic) runs other
//! pending jobs on its own stack. Jobs started through
//! `contextvars::rayon` always run in their own copy, so a program using
//! only the helpers never mixes contexts; a plain `rayon::spawn` job runs in
//! the waiting closure's context (the documented limit).
#![cfg(feature = "rayon")]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use contextvars::ContextVar;
use contextvars::rayon::{ParallelIteratorExt, ThreadPoolExt};
use rayon::prelude::*;

static V: ContextVar<u32> = ContextVar::new("v");

fn one_thread_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
}

/// Yields until `rx` has a value (the job ran, on this stack).
fn wait_for<T>(rx: &mpsc::Receiver<T>) -> T {
    loop {
        if let Ok(v) = rx.try_recv() {
            return v;
        }
        assert!(rayon::yield_now().is_some(), "on a pool thread");
    }
}

#[test]
fn a_helper_job_run_while_a_join_half_yields_keeps_its_own_context() {
    let pool = one_thread_pool();
    pool.install_in_current_context(|| {
        V.set(0);
        let (tx, rx) = mpsc::channel();
        // An unrelated job, queued on this thread before the join.
        contextvars::rayon::spawn(move || {
            let seen = V.get();
            V.set(50); // its own copy
            tx.send(seen).unwrap();
        });
        let (a, b) = contextvars::rayon::join(
            move || {
                V.set(1);
                let job_saw = wait_for(&rx); // the job runs here
                (job_saw, V.get())
            },
            || V.get(),
        );
        assert_eq!(a, (Ok(0), Ok(1)));
        assert_eq!(b, Ok(0));
        assert_eq!(V.get(), Ok(0));
    });
}

#[test]
fn a_scope_job_run_while_its_spawner_yields_keeps_its_own_context() {
    let pool = one_thread_pool();
    let seen = Mutex::new(None);
    pool.install_in_current_context(|| {
        contextvars::rayon::scope(|s| {
            V.set(1);
            let (tx, rx) = mpsc::channel();
            let seen = &seen;
            s.spawn(move |_| {
                *seen.lock().unwrap() = Some(V.get());
                V.set(7);
                tx.send(()).unwrap();
            });
            V.set(2);
            wait_for(&rx);
            assert_eq!(V.get(), Ok(2));
        });
    });
    assert_eq!(seen.into_inner().unwrap(), Some(Ok(1)));
}

#[test]
fn fifo_and_pool_spawns_keep_their_own_context_under_stealing() {
    let pool = one_thread_pool();
    pool.install_in_current_context(|| {
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        V.set(10);
        contextvars::rayon::spawn_fifo(move || {
            let seen = V.get();
            V.set(11);
            tx.send(seen).unwrap();
        });
        V.set(20);
        pool.spawn_in_current_context(move || {
            let seen = V.get();
            V.set(21);
            tx2.send(seen).unwrap();
        });
        V.set(30);
        let mut got = vec![wait_for(&rx).unwrap(), wait_for(&rx).unwrap()];
        got.sort();
        assert_eq!(got, [10, 20]);
        assert_eq!(V.get(), Ok(30));
    });
}

#[test]
fn parallel_items_that_yield_never_see_another_items_value() {
    let pool = one_thread_pool();
    let mixed = pool.install_in_current_context(|| {
        V.set(1000);
        (0..64u32)
            .into_par_iter()
            .map_in_current_context(|i| {
                let inherited = V.get();
                V.set(i);
                // Other items may run on this stack meanwhile.
                rayon::yield_now();
                rayon::yield_now();
                usize::from(inherited != Ok(1000)) + usize::from(V.get() != Ok(i))
            })
            .sum::<usize>()
    });
    assert_eq!(mixed, 0);
}

#[test]
fn broadcast_runs_each_thread_in_its_own_copy() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let seen = pool.install_in_current_context(|| {
        V.set(5);
        let seen = contextvars::rayon::broadcast(|_| {
            let inherited = V.get();
            V.set(6);
            inherited
        });
        assert_eq!(V.get(), Ok(5));
        seen
    });
    assert_eq!(seen, [Ok(5), Ok(5)]);
}

/// The documented limit: a job started with plain `rayon::spawn` and run
/// while a helper closure waits runs in that closure's context.
#[test]
fn a_plain_rayon_job_run_while_a_helper_waits_shares_the_helpers_context() {
    let pool = one_thread_pool();
    let job_saw = Arc::new(Mutex::new(None));
    pool.install_in_current_context(|| {
        V.set(0);
        let (tx, rx) = mpsc::channel();
        let saw = job_saw.clone();
        rayon::spawn(move || {
            *saw.lock().unwrap() = Some(V.get());
            V.set(50);
            tx.send(()).unwrap();
        });
        let (after, _) = contextvars::rayon::join(
            move || {
                V.set(1);
                wait_for(&rx);
                V.get()
            },
            || (),
        );
        // The plain job read the helper's value and wrote into its context.
        assert_eq!(after, Ok(50));
    });
    assert_eq!(*job_saw.lock().unwrap(), Some(Ok(1)));
}
