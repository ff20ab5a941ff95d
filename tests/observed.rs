//! Behaviour that mutation testing (`cargo mutants`, see RELIABILITY.md)
//! found no test observing: old values kept alive exactly as long as `with`
//! borrows need them, a writer and a foreign reader contending for one
//! context, accessors and `Debug` output of non-empty contexts, and what a
//! value set during thread teardown becomes.
//!
//! Pure core (no runtime), so it also runs under Miri (`.ci/miri`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use contextvars::future::ContextHandle;
use contextvars::prelude::*;
use contextvars::{Context, ContextVar};

#[path = "common/counted.rs"]
mod counted;
use counted::{Counted, Counter};

/// A counted value, numbered.
static V: ContextVar<(u32, Counted)> = ContextVar::new("v");
static W: ContextVar<u32> = ContextVar::new("w");

/// Records what `W` reads when it is dropped.
struct ReadsAtDrop(Arc<Mutex<Vec<Option<u32>>>>);

impl Drop for ReadsAtDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(W.get().ok());
    }
}

/// Runs `f` in each kind of current context a `with` borrow can be in: the
/// thread's base context (private, writes take no lock), a shared context
/// (`run` on a `&Context`: writes take the lock) and a task's own context
/// (`run_exclusive` through `wrap`).
fn in_each_kind_of_context(f: impl Fn() + Send + Sync + Copy + 'static) {
    std::thread::spawn(f).join().unwrap();
    Context::new().run(f);
    contextvars::wrap(f)();
}

// --- `with` borrows and the versions they keep alive -------------------------

#[test]
fn a_value_replaced_during_a_with_borrow_lives_until_the_borrow_ends() {
    in_each_kind_of_context(|| {
        let (first, second) = (Counter::new(), Counter::new());
        drop(V.set((1, Counted::new(&first))));
        V.with(|v| {
            let v = v.unwrap();
            // The token holds the replaced value: dropping it leaves the
            // borrowed version as the only owner.
            drop(V.set((2, Counted::new(&second))));
            assert_eq!(first.drops(), 0, "the borrowed value is still alive");
            assert_eq!(v.0, 1, "and still reads as it was");
            assert_eq!(V.with(|now| now.unwrap().0), 2);
        });
        assert_eq!(first.drops(), 1, "dropped once the borrow ended");
        assert_eq!(V.with(|v| v.unwrap().0), 2);
        drop(V.set((3, Counted::new(&Counter::new()))));
        assert_eq!(second.drops(), 1);
        assert_eq!(first.drops(), 1, "dropped once only");
    });
}

#[test]
fn nested_borrows_keep_every_replaced_value_until_the_outermost_ends() {
    in_each_kind_of_context(|| {
        let (first, second, third) = (Counter::new(), Counter::new(), Counter::new());
        drop(V.set((1, Counted::new(&first))));
        V.with(|outer| {
            V.with(|inner| {
                drop(V.set((2, Counted::new(&second))));
                assert_eq!(inner.unwrap().0, 1);
            });
            // The inner borrow is over, the outer one is not.
            assert_eq!(first.drops(), 0, "the outer borrow still reads it");
            assert_eq!(outer.unwrap().0, 1);
            // A second write under the same borrow parks a second version.
            drop(V.set((3, Counted::new(&third))));
            assert_eq!((first.drops(), second.drops()), (0, 0));
            V.with(|again| assert_eq!(again.unwrap().0, 3));
            assert_eq!((first.drops(), second.drops()), (0, 0), "still borrowed");
            assert_eq!(outer.unwrap().0, 1);
        });
        assert_eq!((first.drops(), second.drops()), (1, 1), "both released");
        assert_eq!(third.drops(), 0, "the current value stays");
        // The next borrow and write are counted from zero again.
        let fourth = Counter::new();
        V.with(|v| {
            drop(V.set((4, Counted::new(&fourth))));
            assert_eq!(v.unwrap().0, 3);
            assert_eq!(third.drops(), 0);
        });
        assert_eq!(third.drops(), 1);
        drop(V.set((5, Counted::new(&Counter::new()))));
        assert_eq!(fourth.drops(), 1);
    });
}

#[test]
fn three_nested_borrows_keep_a_replaced_value_until_the_outermost_ends() {
    in_each_kind_of_context(|| {
        let first = Counter::new();
        drop(V.set((1, Counted::new(&first))));
        V.with(|outer| {
            V.with(|middle| {
                V.with(|inner| {
                    drop(V.set((2, Counted::new(&Counter::new()))));
                    assert_eq!(inner.unwrap().0, 1);
                });
                assert_eq!(first.drops(), 0, "two borrows still read it");
                assert_eq!(middle.unwrap().0, 1);
            });
            assert_eq!(first.drops(), 0, "the outer borrow still reads it");
            assert_eq!(outer.unwrap().0, 1);
        });
        assert_eq!(first.drops(), 1, "released with the outermost borrow");
    });
}

#[test]
fn without_a_borrow_a_replaced_value_is_dropped_at_once() {
    in_each_kind_of_context(|| {
        let first = Counter::new();
        drop(V.set((1, Counted::new(&first))));
        drop(V.set((2, Counted::new(&Counter::new()))));
        assert_eq!(first.drops(), 1, "no borrow keeps it");
        // A borrow that wrote nothing leaves nothing behind either.
        V.with(|v| assert_eq!(v.unwrap().0, 2));
        let second = Counter::new();
        drop(V.set((3, Counted::new(&second))));
        drop(V.set((4, Counted::new(&Counter::new()))));
        assert_eq!(second.drops(), 1);
    });
}

#[test]
fn a_scoped_value_written_out_keeps_no_old_version_alive() {
    // In a private context a scoped value stays beside the map until
    // something needs the map; writing it out must not keep the version
    // before it alive (nothing borrows it).
    in_each_kind_of_context(|| {
        let first = Counter::new();
        drop(V.set((1, Counted::new(&first))));
        W.sync_scope(7, || {
            // A switch of context writes the scoped value out. (Nothing is
            // read meanwhile: a read's end would free a version kept alive
            // for no borrow, and hide it.)
            let other = Context::new();
            other.run(|| ());
            drop(V.set((2, Counted::new(&Counter::new()))));
            assert_eq!(first.drops(), 1, "no borrow keeps it");
            assert_eq!(W.get(), Ok(7));
        });
        assert!(W.get().is_err());
    });
}

#[test]
fn a_borrow_across_a_scoped_value_written_out_stays_valid() {
    in_each_kind_of_context(|| {
        let first = Counter::new();
        drop(V.set((1, Counted::new(&first))));
        W.sync_scope(7, || {
            V.with(|v| {
                Context::new().run(|| assert!(W.get().is_err()));
                drop(V.set((2, Counted::new(&Counter::new()))));
                assert_eq!(first.drops(), 0);
                assert_eq!(v.unwrap().0, 1);
                assert_eq!(W.get(), Ok(7));
            });
            assert_eq!(first.drops(), 1);
        });
    });
}

// --- a writer and a foreign reader contending for one context --------------

/// The owner writes pairs (A = n, B = n) under the lock while another thread
/// reads the context and copies it: every read sees the owner's writes in
/// order, and a copy never holds half a pair.
#[test]
fn a_writer_and_a_foreign_reader_contend_for_the_lock() {
    static A: ContextVar<u64> = ContextVar::new("a");
    static B: ContextVar<u64> = ContextVar::new("b");
    const ROUNDS: u64 = if cfg!(miri) { 200 } else { 20_000 };
    let ctx = Arc::new(Context::new());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (ctx, done) = (ctx.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut last, mut reads) = (0, 0u64);
            while !done.load(Ordering::Acquire) || reads == 0 {
                let copy = ctx.copy();
                let (a, b) = (copy.get(&A), copy.get(&B));
                // The pair is written `A` then `B`, so a copy has `b` equal to
                // `a` or one behind it.
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(b == a || b + 1 == a, "a torn copy: a = {a}, b = {b}");
                }
                let a = ctx.get(&A).unwrap_or(0);
                assert!(a >= last, "reads went back in time: {a} after {last}");
                last = a;
                reads += 1;
            }
            reads
        })
    };
    ctx.run(|| {
        for n in 1..=ROUNDS {
            A.set(n);
            B.set(n);
            // A version that the copy shares makes the next write copy nodes.
            if n % 64 == 0 {
                std::thread::yield_now();
            }
        }
    });
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
    assert_eq!((ctx.get(&A), ctx.get(&B)), (Some(ROUNDS), Some(ROUNDS)));
}

// --- accessors and `Debug` of contexts that hold values ---------------------

#[test]
fn accessors_see_a_contexts_values() {
    let ctx = Context::new();
    assert!(ctx.is_empty());
    ctx.run(|| W.set(3));
    assert!(!ctx.is_empty());
    assert_eq!(ctx.len(), 1);

    let owned = async {}.in_context(ctx);
    assert_eq!(owned.context().get(&W), Some(3));
    assert_eq!(
        ContextHandle::context(&owned.into_parts().1).get(&W),
        Some(3)
    );

    let shared = Arc::new(Context::new());
    shared.run(|| W.set(4));
    assert_eq!(ContextHandle::context(&shared).get(&W), Some(4));
    let task = async {}.in_context(shared.clone());
    assert_eq!(task.context().get(&W), Some(4));
    assert!(std::ptr::eq(task.context(), &*shared), "the same context");
}

/// A future polled in a borrowed context (`in_context(&mut ctx)`, what
/// `Fork::run_future` makes) sees that context, and its drop runs inside it.
#[test]
fn a_future_in_a_borrowed_context_is_dropped_inside_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut ctx = Context::new();
    ctx.run(|| W.set(5));
    let guard = ReadsAtDrop(seen.clone());
    let task = async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    }
    .in_context(&mut ctx);
    assert_eq!(task.context().get(&W), Some(5));
    drop(task); // never polled: dropping it drops `guard`
    assert_eq!(*seen.lock().unwrap(), [Some(5)], "dropped once, inside ctx");
}

/// A callback made by `wrap` and dropped without being called is dropped
/// inside the context it captured.
#[test]
fn a_wrapped_callback_never_called_is_dropped_inside_its_context() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let guard = ReadsAtDrop(seen.clone());
    let callback = Context::new().run(|| {
        W.set(6);
        contextvars::wrap(move || drop(guard))
    });
    drop(callback);
    assert_eq!(*seen.lock().unwrap(), [Some(6)]);
}

/// A fork merges only in the context it was made in (as a token resets only
/// there); elsewhere the merge is refused and the fork handed back.
#[test]
fn a_fork_merges_only_where_it_was_made() {
    Context::new().run(|| {
        let mut fork = contextvars::Fork::new();
        fork.run(|| W.set(8));
        let refused = Context::new().run(|| fork.merge()).unwrap_err();
        let contextvars::MergeError::DifferentContext { fork } = refused else {
            panic!("refused for another reason: {refused:?}");
        };
        assert!(W.get().is_err(), "nothing merged");
        fork.merge().unwrap();
        assert_eq!(W.get(), Ok(8));
    });
}

#[test]
fn debug_output_names_the_variable_the_token_and_the_context() {
    static LEVEL: ContextVar<u32> = ContextVar::new("level");
    assert_eq!(format!("{LEVEL:?}"), r#"ContextVar { name: "level", .. }"#);

    Context::new().run(|| {
        let first = LEVEL.set(1);
        assert_eq!(
            format!("{first:?}"),
            r#"Token { var: "level", old_value: None, .. }"#
        );
        let second = LEVEL.set(2);
        assert_eq!(
            format!("{second:?}"),
            r#"Token { var: "level", old_value: Some(1), .. }"#
        );
    });

    let ctx = Context::new();
    ctx.run(|| LEVEL.set(9));
    let expected = format!("InContext {{ ctx: {ctx:?}, .. }}");
    assert!(expected.contains(r#"vars: {"level": ..}"#), "{expected}");
    assert_eq!(format!("{:?}", async {}.in_context(ctx)), expected);
}

#[test]
fn a_variables_declared_default_inheritance_and_formatter_show() {
    static PLAIN: ContextVar<u32> = ContextVar::new("plain");
    static LEVEL: ContextVar<u32> = ContextVar::with_default("level", 42).not_inherited();
    static USER: ContextVar<String> = ContextVar::new("user").debuggable();
    assert_eq!((PLAIN.default(), LEVEL.default()), (None, Some(&42)));
    assert_eq!((PLAIN.is_inherited(), LEVEL.is_inherited()), (true, false));

    let ctx = Context::new();
    ctx.run(|| {
        USER.set("ada".to_string());
        PLAIN.set(1);
    });
    let shown = format!("{ctx:?}");
    assert!(
        shown.contains(r#"vars: {"plain": .., "user": "ada"}"#),
        "{shown}"
    );
}

// --- thread teardown -----------------------------------------------------------

/// Dropped in another thread-local's destructor, after the thread's base
/// context was torn down: sets a counted value and reads it back.
struct SetsAtExit {
    value: Counter,
    seen: Arc<Mutex<Vec<u32>>>,
}

impl Drop for SetsAtExit {
    fn drop(&mut self) {
        self.seen
            .lock()
            .unwrap()
            .push(V.with(|v| v.map_or(0, |v| v.0)));
        V.set((7, Counted::new(&self.value)));
        self.seen
            .lock()
            .unwrap()
            .push(V.with(|v| v.map_or(0, |v| v.0)));
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<Option<SetsAtExit>> =
        const { std::cell::RefCell::new(None) };
}

/// A value set by a thread-local's destructor that runs after the base
/// context's is neither read from the dead base context nor lost in it: it
/// starts from an empty context and is dropped before the thread is gone.
#[test]
fn a_value_set_after_the_base_context_is_gone_is_still_dropped() {
    let (value, base_value) = (Counter::new(), Counter::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let thread = {
        let (value, base_value, seen) = (value.clone(), base_value.clone(), seen.clone());
        std::thread::spawn(move || {
            // Registered before the base context, so destroyed after it.
            AT_EXIT.with(|slot| *slot.borrow_mut() = Some(SetsAtExit { value, seen }));
            V.set((3, Counted::new(&base_value))); // creates the base context
        })
    };
    thread.join().unwrap();
    assert_eq!(base_value.drops(), 1, "the base context's value");
    assert_eq!(
        *seen.lock().unwrap(),
        [0, 7],
        "a fresh context, then its value"
    );
    assert_eq!(value.drops(), 1, "the late value was dropped");
}

// --- shared contexts entered on another thread -----------------------------

/// A waker that counts how often it was woken.
struct Wakes(AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Wakes>, std::task::Waker) {
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    (wakes.clone(), std::task::Waker::from(wakes))
}

/// Another thread inside a context: it sets `W` to `value` there, and leaves
/// when told to (or after ten seconds, so that a poll that wrongly waits for
/// it fails the test instead of hanging it).
struct Holder {
    leave: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Holder {
    /// Returns once the thread is inside `ctx`.
    fn enter(ctx: &Arc<Context>, value: u32) -> Holder {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (leave, leave_rx) = std::sync::mpsc::channel::<()>();
        let ctx = ctx.clone();
        let thread = std::thread::spawn(move || {
            ctx.run(|| {
                W.set(value);
                entered_tx.send(()).unwrap();
                let _ = leave_rx.recv_timeout(std::time::Duration::from_secs(10));
            });
        });
        entered_rx.recv().unwrap();
        Holder { leave, thread }
    }

    fn leave(self) {
        self.leave.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

/// Polls of tasks whose shared context another thread has entered are
/// `Pending` (not the "entered already" panic, nor a wait), and every
/// waiting task's waker is woken once when that thread leaves, not before,
/// and not when another context is left; the next poll runs inside it.
#[test]
fn polls_wait_their_turn_while_another_thread_has_the_context_entered() {
    use std::task::{Context as Cx, Poll};
    let (first, second) = (Arc::new(Context::new()), Arc::new(Context::new()));
    let (first_holder, second_holder) = (Holder::enter(&first, 1), Holder::enter(&second, 2));
    // Two tasks in `first`, with wakers of their own; the second task also
    // waits for `second`, with the same waker.
    let (a_wakes, a_waker) = waker();
    let (b_wakes, b_waker) = waker();
    let mut a = std::pin::pin!(async { W.get() }.in_context(first.clone()));
    let mut b = std::pin::pin!(async { W.get() }.in_context(first.clone()));
    let mut b2 = std::pin::pin!(async { W.get() }.in_context(second.clone()));
    assert!(a.as_mut().poll(&mut Cx::from_waker(&a_waker)).is_pending());
    assert!(a.as_mut().poll(&mut Cx::from_waker(&a_waker)).is_pending());
    assert!(b.as_mut().poll(&mut Cx::from_waker(&b_waker)).is_pending());
    assert!(b2.as_mut().poll(&mut Cx::from_waker(&b_waker)).is_pending());
    let wakes = || {
        (
            a_wakes.0.load(Ordering::SeqCst),
            b_wakes.0.load(Ordering::SeqCst),
        )
    };
    assert_eq!(wakes(), (0, 0), "not woken while they are entered");

    second_holder.leave();
    assert_eq!(wakes(), (0, 1), "the waiter for `second` only");
    let poll = b2.as_mut().poll(&mut Cx::from_waker(&b_waker));
    assert_eq!(poll, Poll::Ready(Ok(2)));

    first_holder.leave();
    if cfg!(miri) {
        // `a` polled twice with one waker is registered once because
        // `Waker::will_wake` sees the two as the same; Miri gives each use of
        // a vtable its own address, so there `will_wake` says no (std allows
        // it false negatives) and `a` may be woken once per poll.
        assert!(matches!(wakes(), (1 | 2, 2)), "{:?}", wakes());
    } else {
        assert_eq!(wakes(), (1, 2), "each waiter for `first`, once");
    }
    assert_eq!(
        a.as_mut().poll(&mut Cx::from_waker(&a_waker)),
        Poll::Ready(Ok(1))
    );
    assert_eq!(
        b.as_mut().poll(&mut Cx::from_waker(&b_waker)),
        Poll::Ready(Ok(1))
    );
}

/// Dropping a task whose shared context another thread has entered waits
/// for it to be left, then drops the future inside the context.
#[test]
fn a_drop_waits_while_another_thread_has_the_context_entered() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ctx = Arc::new(Context::new());
    let holder = Holder::enter(&ctx, 1);
    let guard = ReadsAtDrop(seen.clone());
    let task = async move {
        let _guard = guard;
    }
    .in_context(ctx.clone());
    let dropper = std::thread::spawn(move || drop(task));
    holder.leave();
    dropper.join().unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some(1)], "dropped inside ctx");
}
