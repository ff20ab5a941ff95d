//! User code that panics where the crate switches contexts: observers'
//! hooks, the payloads of their panics (whose `Drop` panics too), the
//! report of a switched-off observer, and wakers. Whatever panics, every
//! switch completes: the context entered is left, the one before is current
//! again, a context can be entered again afterwards, writes land in the
//! context they were made in, and what a wrapper owns (a future, an
//! iterator) is dropped.
//!
//! Observers are process-wide, so the tests that install them run one at a
//! time (`SERIAL`). Pure core apart from the `tracing` test, so it also runs
//! under Miri (`.ci/miri`).

#[cfg(feature = "tracing")]
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::prelude::*;
use contextvars::{Context, ContextVar, observe};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static V: ContextVar<u32> = ContextVar::new("contained_v");

/// A panic payload whose own drop panics: `catch_unwind` hands it back, and
/// whoever drops it unwinds again.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the payload's drop");
        }
    }
}

fn bomb() -> ! {
    std::panic::panic_any(Bomb)
}

/// Switch hooks that throw a `Bomb` on every switch of this thread (only
/// this thread: other tests run beside this one).
fn bombing_switch_hook() -> observe::Observer {
    let me = std::thread::current().id();
    observe::on_switch("bomber", move |_| {
        if std::thread::current().id() == me {
            bomb();
        }
    })
}

/// The checks every test makes after its switches: nothing is left entered
/// or current, and writes land where they are made.
fn assert_switches_complete(ctx: &Context) {
    assert!(
        V.get().is_err(),
        "the thread's own context is current again"
    );
    assert_eq!(
        ctx.try_run(|| V.get()),
        Ok(Ok(1)),
        "the context can be entered again"
    );
    ctx.run(|| V.set(2));
    assert_eq!(ctx.get(&V), Some(2));
    assert!(V.get().is_err());
}

#[test]
fn a_switch_hook_whose_panic_payload_panics_leaves_run_complete() {
    let _serial = serial();
    std::thread::spawn(|| {
        let hook = bombing_switch_hook();
        let ctx = Context::new();
        let result = catch_unwind(AssertUnwindSafe(|| ctx.run(|| V.set(1))));
        assert!(result.is_ok(), "a hook's panic unwound out of `run`");
        drop(hook);
        assert_switches_complete(&ctx);
    })
    .join()
    .unwrap();
}

#[test]
fn a_panicking_switch_hook_leaves_a_wrapped_callback_and_its_context_complete() {
    let _serial = serial();
    std::thread::spawn(|| {
        let hook = bombing_switch_hook();
        V.set(7);
        let job = contextvars::wrap(|| {
            V.set(8);
            V.get()
        });
        let seen = catch_unwind(AssertUnwindSafe(job));
        drop(hook);
        assert_eq!(seen.ok(), Some(Ok(8)));
        assert_eq!(V.get(), Ok(7), "the callback's write stayed in its copy");
        V.set(9);
        assert_eq!(V.get(), Ok(9));
    })
    .join()
    .unwrap();
}

/// A future that counts its polls and records its drop.
struct Tracked<'a> {
    polls: u32,
    dropped: &'a AtomicBool,
}

impl std::future::Future for Tracked<'_> {
    type Output = u32;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<u32> {
        self.polls += 1;
        V.set(self.polls);
        if self.polls < 2 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(V.get().unwrap())
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_panicking_switch_hook_leaves_a_context_carrying_future_polled_and_dropped() {
    let _serial = serial();
    std::thread::spawn(|| {
        let hook = bombing_switch_hook();
        let dropped = AtomicBool::new(false);
        let ctx = std::sync::Arc::new(Context::new());
        {
            let mut fut = Box::pin(
                Tracked {
                    polls: 0,
                    dropped: &dropped,
                }
                .in_context(ctx.clone()),
            );
            let mut cx = TaskContext::from_waker(Waker::noop());
            let first = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
            assert!(matches!(first, Ok(Poll::Pending)), "the poll unwound");
            let second = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
            assert!(matches!(second, Ok(Poll::Ready(2))), "the poll unwound");
            let dropping = catch_unwind(AssertUnwindSafe(move || drop(fut)));
            assert!(dropping.is_ok(), "the drop unwound");
        }
        drop(hook);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the pinned future was never dropped"
        );
        assert_eq!(ctx.get(&V), Some(2));
        assert!(V.get().is_err());
        assert!(ctx.try_run(|| ()).is_ok(), "the context stayed entered");
    })
    .join()
    .unwrap();
}

#[test]
fn a_panicking_switch_hook_leaves_an_isolated_iterator_resumed_and_dropped() {
    let _serial = serial();
    std::thread::spawn(|| {
        /// An iterator that sets `V` and records its drop.
        struct Gen<'a> {
            n: u32,
            dropped: &'a AtomicBool,
        }
        impl Iterator for Gen<'_> {
            type Item = u32;
            fn next(&mut self) -> Option<u32> {
                self.n += 1;
                V.set(self.n);
                Some(V.get().unwrap())
            }
        }
        impl Drop for Gen<'_> {
            fn drop(&mut self) {
                self.dropped.store(true, Ordering::SeqCst);
            }
        }
        let hook = bombing_switch_hook();
        let dropped = AtomicBool::new(false);
        V.set(100);
        {
            let mut it = Gen {
                n: 0,
                dropped: &dropped,
            }
            .isolated();
            let items = catch_unwind(AssertUnwindSafe(|| [it.next(), it.next()]));
            assert_eq!(items.ok(), Some([Some(1), Some(2)]), "a resumption unwound");
            assert!(catch_unwind(AssertUnwindSafe(move || drop(it))).is_ok());
        }
        drop(hook);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the iterator was never dropped"
        );
        assert_eq!(V.get(), Ok(100), "the generator's writes stayed its own");
    })
    .join()
    .unwrap();
}

#[test]
fn a_variable_hook_whose_panic_payload_panics_leaves_the_write_done() {
    let _serial = serial();
    static W: ContextVar<u32> = ContextVar::new("contained_w");
    std::thread::spawn(|| {
        let me = std::thread::current().id();
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let hook = {
            let calls = calls.clone();
            W.observe(move |_| {
                if std::thread::current().id() == me {
                    calls.fetch_add(1, Ordering::SeqCst);
                    bomb();
                }
            })
        };
        let ctx = Context::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            ctx.run(|| {
                let token = W.set(1);
                W.set(2);
                W.reset(token).unwrap();
                W.set(3);
            })
        }));
        drop(hook);
        assert!(result.is_ok(), "a hook's panic unwound out of a write");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "switched off after its panic"
        );
        assert_eq!(ctx.get(&W), Some(3));
        assert!(ctx.try_run(|| ()).is_ok());
    })
    .join()
    .unwrap();
}

/// A waker whose `wake` panics, for a poll that waits its turn.
fn panicking_waker() -> Waker {
    use std::task::{RawWaker, RawWakerVTable};
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    fn wake(_: *const ()) {
        bomb()
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, noop);
    // SAFETY: the vtable's functions ignore the data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

#[test]
fn a_waker_that_panics_when_its_context_is_left_does_not_unwind_out_of_run() {
    let ctx = std::sync::Arc::new(Context::new());
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let owner = {
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            catch_unwind(AssertUnwindSafe(|| {
                ctx.run(|| {
                    V.set(1);
                    entered_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                })
            }))
            .is_ok()
        })
    };
    entered_rx.recv().unwrap();
    // A poll that finds the context entered on another thread waits its
    // turn: its waker is woken when the owner leaves.
    let mut fut = Box::pin(std::future::ready(()).in_context(ctx.clone()));
    let waker = panicking_waker();
    let mut cx = TaskContext::from_waker(&waker);
    let first = fut.as_mut().poll(&mut cx);
    go_tx.send(()).unwrap();
    let left_cleanly = owner.join().unwrap();
    assert!(left_cleanly, "the waker's panic unwound out of `run`");
    if first.is_pending() {
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
    assert_switches_complete(&ctx);
}

#[test]
fn a_hook_that_scopes_a_variable_stays_on_while_other_threads_change_the_observers() {
    let _serial = serial();
    static S: ContextVar<u32> = ContextVar::new("contained_s");
    static O: ContextVar<u32> = ContextVar::new("contained_o");
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let hook = {
        let calls = calls.clone();
        O.observe(move |_| {
            // A hook that scopes a variable, while the observers change
            // under it on another thread.
            S.sync_scope(1, || {
                std::thread::yield_now();
                assert_eq!(S.get(), Ok(1));
            });
            calls.fetch_add(1, Ordering::SeqCst);
        })
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let extra = S.observe(|_| {});
                drop(extra);
            }
        })
    };
    let rounds = if cfg!(miri) { 20 } else { 20_000 };
    for i in 0..rounds {
        O.set(i);
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    drop(hook);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        rounds as usize,
        "the hook was switched off"
    );
}

/// A `tracing` subscriber that panics on every event: the observer's
/// report of its own panic goes through it.
#[cfg(feature = "tracing")]
struct PanickingSubscriber;

#[cfg(feature = "tracing")]
impl tracing::Subscriber for PanickingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        bomb()
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(feature = "tracing")]
#[test]
fn a_report_that_panics_leaves_the_switch_complete() {
    thread_local! {
        static SWITCHES: Cell<u32> = const { Cell::new(0) };
    }
    let _serial = serial();
    std::thread::spawn(|| {
        tracing::subscriber::with_default(PanickingSubscriber, || {
            tracing::callsite::rebuild_interest_cache();
            let me = std::thread::current().id();
            let hook = observe::on_switch("reported", move |_| {
                if std::thread::current().id() == me {
                    SWITCHES.with(|n| n.set(n.get() + 1));
                    panic!("the hook");
                }
            });
            let ctx = Context::new();
            let result = catch_unwind(AssertUnwindSafe(|| ctx.run(|| V.set(1))));
            drop(hook);
            assert!(result.is_ok(), "the report's panic unwound out of `run`");
            assert_eq!(SWITCHES.with(Cell::get), 1, "switched off after its panic");
            assert_switches_complete(&ctx);
        });
    })
    .join()
    .unwrap();
}

/// Without `tracing`, reports go to stderr. A closed stderr (a daemon, a
/// pipe whose reader went away) makes `eprintln!` panic: the report must
/// not. The check runs in a child process whose stderr is a pipe closed
/// before it writes.
#[cfg(all(not(feature = "tracing"), not(miri)))]
#[test]
fn a_report_to_a_closed_stderr_leaves_the_switch_complete() {
    use std::process::{Command, Stdio};
    if std::env::var_os("CONTEXTVARS_CLOSED_STDERR_CHILD").is_some() {
        // Give the parent time to close its end of the pipe.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let me = std::thread::current().id();
        let hook = observe::on_switch("reported", move |_| {
            if std::thread::current().id() == me {
                panic!("the hook");
            }
        });
        let ctx = Context::new();
        let result = catch_unwind(AssertUnwindSafe(|| ctx.run(|| V.set(1))));
        drop(hook);
        assert!(result.is_ok(), "the report's panic unwound out of `run`");
        assert_switches_complete(&ctx);
        println!("child done");
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_report_to_a_closed_stderr_leaves_the_switch_complete",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CONTEXTVARS_CLOSED_STDERR_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child failed: {stdout}");
    assert!(stdout.contains("child done"), "{stdout}");
}
