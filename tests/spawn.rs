//! Inheritance into threads and rayon: a copy of the spawner's context at
//! the spawn, never shared back.

use contextvars::ContextVar;

#[test]
fn thread_spawn_inherits_a_copy_and_plain_threads_start_empty() {
    static V: ContextVar<u32> = ContextVar::new("v");
    std::thread::spawn(|| {
        V.set(1);
        let h = contextvars::thread::spawn(|| {
            let seen = V.get();
            V.set(2);
            (seen, V.get())
        });
        V.set(3);
        assert_eq!(h.join().unwrap(), (Ok(1), Ok(2)));
        assert_eq!(V.get(), Ok(3));
        assert!(std::thread::spawn(|| V.get().is_err()).join().unwrap());
    })
    .join()
    .unwrap();
}

#[test]
fn scoped_threads_inherit_a_copy_each() {
    static V: ContextVar<u32> = ContextVar::new("v");
    V.set(7);
    let seen: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                contextvars::thread::spawn_scoped(s, move || {
                    let seen = V.get();
                    V.set(i);
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(seen, vec![Ok(7), Ok(7), Ok(7), Ok(7)]);
    assert_eq!(V.get(), Ok(7));
}

#[cfg(feature = "rayon")]
mod rayon_helpers {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use contextvars::ContextVar;
    use contextvars::rayon::ParallelIteratorExt;
    use rayon::prelude::*;

    #[test]
    fn a_value_set_before_par_iter_is_seen_by_every_item_and_item_sets_do_not_leak() {
        static REQUEST: ContextVar<u64> = ContextVar::new("request");
        static SCRATCH: ContextVar<u64> = ContextVar::new("scratch");
        REQUEST.set(99);
        let seen: Vec<(u64, Option<u64>)> = (0..10_000u64)
            .into_par_iter()
            .map_in_current_context(|i| {
                // Another item's set is never visible here.
                let leaked = SCRATCH.get().ok();
                SCRATCH.set(i);
                REQUEST.set(i);
                (REQUEST.get().unwrap(), leaked)
            })
            .collect();
        assert!(seen.iter().enumerate().all(|(i, (r, _))| *r == i as u64));
        assert!(
            seen.iter().all(|(_, leaked)| leaked.is_none()),
            "no item saw another's set"
        );
        assert_eq!(REQUEST.get(), Ok(99));
        assert!(SCRATCH.get().is_err());

        let requests = Mutex::new(HashSet::new());
        (0..1000).into_par_iter().for_each_in_current_context(|_| {
            requests.lock().unwrap().insert(REQUEST.get().unwrap());
        });
        assert_eq!(requests.into_inner().unwrap(), HashSet::from([99]));
    }

    #[test]
    fn join_and_scope_run_in_copies() {
        static V: ContextVar<u32> = ContextVar::new("v");
        V.set(1);
        let (a, b) = contextvars::rayon::join(
            || {
                V.set(2);
                V.get()
            },
            || V.get(),
        );
        assert_eq!((a, b), (Ok(2), Ok(1)));
        assert_eq!(V.get(), Ok(1));
        let seen = Mutex::new(Vec::new());
        let nested = Mutex::new(Vec::new());
        contextvars::rayon::scope(|s| {
            V.set(3);
            for i in 0..8 {
                let (seen, nested) = (&seen, &nested);
                s.spawn(move |s| {
                    seen.lock().unwrap().push(V.get().unwrap());
                    V.set(100 + i);
                    s.spawn(move |_| nested.lock().unwrap().push((i, V.get().unwrap())));
                });
            }
        });
        assert_eq!(
            seen.into_inner().unwrap(),
            [3; 8],
            "every job inherits the scope's value"
        );
        let nested = nested.into_inner().unwrap();
        assert_eq!(nested.len(), 8);
        assert!(
            nested.iter().all(|(i, v)| *v == 100 + i),
            "nested jobs inherit their spawner's copy"
        );
        assert_eq!(V.get(), Ok(1), "the scope's set stayed in its copy");
    }

    #[test]
    fn a_panicking_item_leaves_the_caller_intact() {
        static V: ContextVar<u32> = ContextVar::new("v");
        V.set(1);
        let r = std::panic::catch_unwind(|| {
            (0..100).into_par_iter().for_each_in_current_context(|i| {
                V.set(i);
                if i == 50 {
                    panic!("item 50");
                }
            })
        });
        assert!(r.is_err());
        assert_eq!(V.get(), Ok(1));
    }
}
