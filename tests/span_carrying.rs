//! `tracing::carry_spans`: the span current at spawn follows the work this
//! crate's helpers start — tasks, blocking jobs, threads, rayon jobs and
//! parallel iterators, `wrap` — entered on every poll or call and exited
//! after, and closed when the work ends; detached work and plain spawns
//! carry nothing, and neither does anything while the switch is off. With
//! feature `opentelemetry`, OpenTelemetry's current context goes along.
//! Plain `tokio::spawn` tasks carry it under the task hooks (with
//! `--cfg tokio_unstable`); channel messages and in-process snapshots
//! carry the span current at the send or capture.
#![cfg(all(feature = "tracing", feature = "tokio", feature = "rayon"))]

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use contextvars::rayon::ParallelIteratorExt;
use rayon::prelude::*;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

mod common;

/// Carrying on until dropped (also when a test fails).
struct On;

impl On {
    fn new() -> On {
        contextvars::tracing::carry_spans(true);
        On
    }
}

impl Drop for On {
    fn drop(&mut self) {
        contextvars::tracing::carry_spans(false);
    }
}

/// Takes the lock that keeps these tests one at a time (they flip a
/// process-wide switch), and marks where the log stands.
fn setup() -> (MutexGuard<'static, ()>, usize) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mark = logs().len();
    (serial, mark)
}

/// The process-wide log: the one global subscriber, so that work on other
/// threads logs to it.
fn logs() -> &'static common::Captured {
    common::global_log(|log| {
        let fmt = tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(move || log.clone());
        tracing_subscriber::registry().with(fmt).with(Counting)
    })
}

/// What was logged since `mark`.
fn since(mark: usize) -> String {
    logs().since(mark)
}

/// How many times the spans of each name were entered, and closed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    enters: usize,
    closes: usize,
}

fn counts() -> &'static Mutex<HashMap<&'static str, Counts>> {
    static COUNTS: OnceLock<Mutex<HashMap<&'static str, Counts>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

/// The counts of the spans named `name` (each test names its own).
fn counts_of(name: &str) -> Counts {
    counts()
        .lock()
        .unwrap()
        .get(name)
        .copied()
        .unwrap_or_default()
}

/// Counts enters and closes per span name.
struct Counting;

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Counting {
    fn on_enter(&self, id: &tracing::span::Id, ctx: LayerContext<'_, S>) {
        let name = ctx.span(id).unwrap().name();
        counts().lock().unwrap().entry(name).or_default().enters += 1;
    }

    fn on_close(&self, id: tracing::span::Id, ctx: LayerContext<'_, S>) {
        let name = ctx.span(&id).unwrap().name();
        counts().lock().unwrap().entry(name).or_default().closes += 1;
    }
}

/// The log line of the event whose message is `message`.
fn line_of(out: &str, message: &str) -> String {
    out.lines()
        .find(|l| l.ends_with(message))
        .unwrap_or_else(|| panic!("no line {message:?} in:\n{out}"))
        .to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// Starts one piece of work through every helper, from inside a span;
/// each logs an event named after its helper.
fn spawn_everything() {
    let rt = runtime();
    let request = tracing::info_span!("request", id = 7);
    let _entered = request.enter();
    contextvars::thread::spawn(|| tracing::info!("thread::spawn"))
        .join()
        .unwrap();
    std::thread::scope(|s| {
        contextvars::thread::spawn_scoped(s, || tracing::info!("thread::spawn_scoped"));
    });
    std::thread::spawn(contextvars::wrap(|| tracing::info!("wrap")))
        .join()
        .unwrap();
    rt.block_on(async {
        contextvars::tokio::spawn(async {
            tokio::task::yield_now().await;
            tracing::info!("tokio::spawn");
        })
        .await
        .unwrap();
        contextvars::tokio::spawn_blocking(|| tracing::info!("tokio::spawn_blocking"))
            .await
            .unwrap();
    });
    rt.block_on(async {
        use contextvars::tokio::JoinSetExt;
        let mut set = tokio::task::JoinSet::new();
        set.spawn_in_current_context(async { tracing::info!("JoinSet") });
        set.join_next().await.unwrap().unwrap();
    });
    contextvars::rayon::join(
        || (),
        || {
            // Forced onto another thread where rayon would not steal.
            rayon::spawn(|| ());
            tracing::info!("rayon::join")
        },
    );
    contextvars::rayon::scope(|s| s.spawn(|_| tracing::info!("rayon::scope")));
    let (tx, rx) = std::sync::mpsc::channel();
    contextvars::rayon::spawn(move || {
        tracing::info!("rayon::spawn");
        tx.send(()).unwrap();
    });
    rx.recv().unwrap();
    let local = tokio::task::LocalSet::new();
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The task runs on this thread, where `request` is entered anyway:
    // spawned under an inner span that is left before it runs.
    local.block_on(&current, async {
        let task = tracing::info_span!("inner").in_scope(|| {
            contextvars::tokio::spawn_local(async { tracing::info!("tokio::spawn_local") })
        });
        task.await.unwrap()
    });
    contextvars::rayon::scope_fifo(|s| s.spawn_fifo(|_| tracing::info!("rayon::scope_fifo")));
    contextvars::rayon::broadcast(|_| tracing::info!("rayon::broadcast"));
    {
        use contextvars::rayon::ThreadPoolExt;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install_in_current_context(|| tracing::info!("install_in_current_context"));
    }
    let _: Vec<()> = (0..4)
        .into_par_iter()
        .map_in_current_context(|i| tracing::info!("map_in_current_context {i}"))
        .collect();
}

const HELPERS: [&str; 16] = [
    "tokio::spawn_local",
    "rayon::scope_fifo",
    "rayon::broadcast",
    "install_in_current_context",
    "thread::spawn",
    "thread::spawn_scoped",
    "wrap",
    "tokio::spawn",
    "tokio::spawn_blocking",
    "JoinSet",
    "rayon::join",
    "rayon::scope",
    "rayon::spawn",
    "map_in_current_context 0",
    "map_in_current_context 1",
    "map_in_current_context 3",
];

#[test]
fn on_every_helper_carries_the_span_current_at_spawn() {
    let (_serial, mark) = setup();
    let on = On::new();
    spawn_everything();
    drop(on);
    let out = since(mark);
    for helper in HELPERS {
        let line = line_of(&out, helper);
        assert!(
            line.contains("request{id=7}:"),
            "{helper} logged under the request's span: {line}"
        );
    }
    let local = line_of(&out, "tokio::spawn_local");
    assert!(local.contains("request{id=7}:inner: "), "{local}");
}

#[test]
fn off_nothing_is_carried() {
    let (_serial, mark) = setup();
    assert!(!contextvars::tracing::carries_spans());
    spawn_everything();
    let out = since(mark);
    for helper in HELPERS {
        let line = line_of(&out, helper);
        // On the spawner's own thread (rayon may run a job there) the span
        // is current anyway; everywhere else it is not.
        if !line.contains("request{id=7}") {
            continue;
        }
        assert!(
            matches!(
                helper,
                "rayon::join" | "rayon::scope" | "tokio::spawn_local"
            ) || helper.starts_with("map_with"),
            "{helper} carried a span with the switch off: {line}"
        );
    }
    assert!(
        !line_of(&out, "thread::spawn").contains("request"),
        "a new thread"
    );
    let local = line_of(&out, "tokio::spawn_local");
    assert!(!local.contains("inner"), "{local}");
}

#[test]
fn detached_and_plain_work_carry_nothing() {
    let (_serial, mark) = setup();
    let on = On::new();
    let rt = runtime();
    {
        let request = tracing::info_span!("request", id = 8);
        let _entered = request.enter();
        contextvars::thread::spawn_detached(|| tracing::info!("thread::spawn_detached"))
            .join()
            .unwrap();
        rt.block_on(async {
            contextvars::tokio::spawn_detached(async { tracing::info!("tokio::spawn_detached") })
                .await
                .unwrap();
            tokio::spawn(async { tracing::info!("plain tokio::spawn") })
                .await
                .unwrap();
        });
        let (tx, rx) = std::sync::mpsc::channel();
        contextvars::rayon::spawn_detached(move || {
            tracing::info!("rayon::spawn_detached");
            tx.send(()).unwrap();
        });
        rx.recv().unwrap();
    }
    drop(on);
    let out = since(mark);
    for message in [
        "thread::spawn_detached",
        "tokio::spawn_detached",
        "plain tokio::spawn",
        "rayon::spawn_detached",
    ] {
        let line = line_of(&out, message);
        assert!(!line.contains("request"), "{line}");
    }
}

#[test]
fn a_task_enters_the_span_only_while_it_is_polled_and_closes_it_when_done() {
    let (_serial, mark) = setup();
    let on = On::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (resume, wait) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let request = tracing::info_span!("request", id = 9);
            let _entered = request.enter();
            contextvars::tokio::spawn(async move {
                tracing::info!("first poll");
                wait.await.unwrap();
                tracing::info!("second poll");
            })
            // The spawner's handle to the span is dropped here: the task
            // holds the only one.
        };
        tokio::task::yield_now().await;
        // Between the task's polls, on the same (only) thread.
        tracing::info!("between polls");
        resume.send(()).unwrap();
        task.await.unwrap();
        tracing::info!("after the task");
    });
    drop(on);
    let out = since(mark);
    assert!(
        line_of(&out, "first poll").contains("request{id=9}: "),
        "{out}"
    );
    assert!(
        line_of(&out, "second poll").contains("request{id=9}: "),
        "{out}"
    );
    assert!(!line_of(&out, "between polls").contains("request"), "{out}");
    // The span closed when the task completed, before its awaiter resumed.
    let close = out
        .find("request{id=9}: close")
        .unwrap_or_else(|| panic!("the span never closed:\n{out}"));
    assert!(close < out.find("after the task").unwrap(), "{out}");
}

#[test]
fn a_cancelled_task_is_dropped_inside_its_span() {
    struct LogOnDrop;
    impl Drop for LogOnDrop {
        fn drop(&mut self) {
            tracing::info!("dropped");
        }
    }
    let (_serial, mark) = setup();
    let on = On::new();
    let rt = runtime();
    rt.block_on(async {
        let (started, running) = tokio::sync::oneshot::channel();
        let task = {
            let request = tracing::info_span!("request", id = 10);
            let _entered = request.enter();
            contextvars::tokio::spawn(async {
                let _guard = LogOnDrop;
                started.send(()).unwrap();
                std::future::pending::<()>().await
            })
        };
        running.await.unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    });
    drop(on);
    let out = since(mark);
    assert!(
        line_of(&out, "dropped").contains("request{id=10}: "),
        "{out}"
    );
}

#[cfg(feature = "opentelemetry")]
#[test]
fn the_opentelemetry_context_current_at_spawn_goes_along() {
    use opentelemetry::baggage::BaggageExt;
    let (_serial, _) = setup();
    let tenant = || {
        opentelemetry::Context::map_current(|cx| {
            cx.baggage().get("tenant").map(|v| v.as_str().to_string())
        })
    };
    let on = On::new();
    let seen = {
        let _attached = opentelemetry::Context::current()
            .with_baggage([opentelemetry::KeyValue::new("tenant", "acme")])
            .attach();
        let carried = contextvars::thread::spawn(tenant);
        let detached = contextvars::thread::spawn_detached(tenant);
        let par: Vec<_> = (0..3)
            .into_par_iter()
            .map_in_current_context(|_| tenant())
            .collect();
        (carried.join().unwrap(), detached.join().unwrap(), par)
    };
    drop(on);
    let acme = Some("acme".to_string());
    assert_eq!(seen, (acme.clone(), None, vec![acme; 3]));
}

/// Logs `"{0} dropped"` when dropped.
struct LogsDrop(&'static str);

impl Drop for LogsDrop {
    fn drop(&mut self) {
        tracing::info!("{} dropped", self.0);
    }
}

/// Counts the polls of the future it wraps.
#[cfg(tokio_unstable)]
struct CountPolls<F> {
    inner: std::pin::Pin<Box<F>>,
    polls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(tokio_unstable)]
impl<F: std::future::Future> CountPolls<F> {
    fn new(inner: F, polls: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> CountPolls<F> {
        CountPolls {
            inner: Box::pin(inner),
            polls: polls.clone(),
        }
    }
}

#[cfg(tokio_unstable)]
impl<F: std::future::Future> std::future::Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// A task's body, boxed.
#[cfg(tokio_unstable)]
type Body = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

#[cfg(tokio_unstable)]
fn hooked_runtime() -> tokio::runtime::Runtime {
    use contextvars::tokio::BuilderExt;
    tokio::runtime::Builder::new_current_thread()
        .isolate_tasks()
        .build()
        .unwrap()
}

/// Spawns, from inside a span named `span`, a task that logs `"{span}
/// first poll"`, waits for the returned sender, and logs `"{span} last
/// poll"`; the block_on future logs `"{span} between polls"` and
/// `"{span} after the task"`. Returns how many times the task was polled.
#[cfg(tokio_unstable)]
fn two_polls_under_hooks(
    span: &'static str,
    spawn: fn(CountPolls<Body>) -> tokio::task::JoinHandle<()>,
) -> usize {
    let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    hooked_runtime().block_on(async {
        let (resume, wait) = tokio::sync::oneshot::channel::<()>();
        let task = tracing::info_span!("task", name = span).in_scope(|| {
            let body: Body = Box::pin(async move {
                tracing::info!("{span} first poll");
                tokio::task::yield_now().await;
                wait.await.unwrap();
                tracing::info!("{span} last poll");
            });
            spawn(CountPolls::new(body, &polls))
        });
        tokio::task::yield_now().await;
        tracing::info!("{span} between polls");
        resume.send(()).unwrap();
        task.await.unwrap();
        tracing::info!("{span} after the task");
    });
    polls.load(std::sync::atomic::Ordering::Relaxed)
}

/// Checks what `two_polls_under_hooks(span, ..)` logged with carrying on.
#[cfg(tokio_unstable)]
fn assert_carried_by_every_poll(out: &str, span: &str) {
    let under = format!("task{{name=\"{span}\"}}: ");
    for message in ["first poll", "last poll"] {
        let line = line_of(out, &format!("{span} {message}"));
        assert!(line.contains(&under), "{line}\n{out}");
    }
    // Exited after each poll: the block_on future, polled in between on the
    // same thread, is not under it.
    let between = line_of(out, &format!("{span} between polls"));
    assert!(!between.contains("task{"), "{between}");
    // Let go when the task ended, before its awaiter resumed.
    let close = out
        .find(&format!("{under}close"))
        .unwrap_or_else(|| panic!("the span never closed:\n{out}"));
    assert!(
        close < out.find(&format!("{span} after the task")).unwrap(),
        "{out}"
    );
}

#[cfg(tokio_unstable)]
#[test]
fn under_the_task_hooks_a_plain_spawn_enters_its_span_around_every_poll() {
    let (_serial, mark) = setup();
    let on = On::new();
    let before = counts_of("task");
    let polls = two_polls_under_hooks("plain", |f| tokio::spawn(f));
    let after = counts_of("task");
    drop(on);
    assert_carried_by_every_poll(&since(mark), "plain");
    assert!(polls >= 2, "{polls}");
    // Once by the spawner (`in_scope`), then once per poll; closed once.
    assert_eq!(after.enters - before.enters, 1 + polls);
    assert_eq!(after.closes - before.closes, 1);
}

#[cfg(tokio_unstable)]
#[test]
fn under_the_task_hooks_a_helper_task_enters_its_span_once_per_poll() {
    let (_serial, mark) = setup();
    let on = On::new();
    let before = counts_of("task");
    let polls = two_polls_under_hooks("helper", |f| contextvars::tokio::spawn(f));
    let after = counts_of("task");
    drop(on);
    assert_carried_by_every_poll(&since(mark), "helper");
    // The helper's own carrying only: the spawn hook filed no second one.
    assert_eq!(after.enters - before.enters, 1 + polls);
    assert_eq!(after.closes - before.closes, 1);
}

#[cfg(tokio_unstable)]
#[test]
fn under_the_task_hooks_detached_work_carries_nothing() {
    let (_serial, mark) = setup();
    let on = On::new();
    hooked_runtime().block_on(async {
        let task = tracing::info_span!("detaching").in_scope(|| {
            contextvars::tokio::spawn_detached(async {
                tokio::task::yield_now().await;
                tracing::info!("detached under the hooks");
            })
        });
        task.await.unwrap();
    });
    drop(on);
    let line = line_of(&since(mark), "detached under the hooks");
    assert!(!line.contains("detaching"), "{line}");
}

#[cfg(tokio_unstable)]
#[test]
fn under_the_task_hooks_off_a_plain_spawn_carries_nothing() {
    let (_serial, mark) = setup();
    assert!(!contextvars::tracing::carries_spans());
    let before = counts_of("task");
    two_polls_under_hooks("off", |f| tokio::spawn(f));
    let after = counts_of("task");
    let out = since(mark);
    for message in ["off first poll", "off last poll"] {
        let line = line_of(&out, message);
        assert!(!line.contains("task{"), "{line}");
    }
    assert_eq!(after.enters - before.enters, 1, "the spawner's enter only");
}

#[cfg(tokio_unstable)]
#[test]
fn under_the_task_hooks_an_aborted_task_drops_inside_its_span_but_not_at_shutdown() {
    let (_serial, mark) = setup();
    let on = On::new();
    let rt = hooked_runtime();
    rt.block_on(async {
        for name in ["aborted", "at shutdown"] {
            let task = tracing::info_span!("idle", name).in_scope(|| {
                tokio::spawn(async move {
                    let _guard = LogsDrop(name);
                    std::future::pending::<()>().await
                })
            });
            tokio::task::yield_now().await; // polled once: now idle
            if name == "aborted" {
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
            }
        }
    });
    let closes = counts_of("idle").closes;
    drop(rt);
    drop(on);
    let out = since(mark);
    let aborted = line_of(&out, "aborted dropped");
    assert!(aborted.contains("idle{name=\"aborted\"}: "), "{aborted}");
    // Outside any poll: the hooks cannot enter the span (documented).
    let shutdown = line_of(&out, "at shutdown dropped");
    assert!(!shutdown.contains("idle{"), "{shutdown}");
    // Let go all the same, with the task.
    assert_eq!(counts_of("idle").closes - closes, 1);
}

#[test]
fn a_message_carries_the_span_current_at_the_send_until_it_is_handled() {
    let (_serial, mark) = setup();
    let on = On::new();
    let before = counts_of("sent");
    let (tx, rx) = contextvars::channel::mpsc::channel();
    tracing::info_span!("sent", id = 12).in_scope(|| {
        tx.send(LogsDrop("handled message")).unwrap();
        tx.send(LogsDrop("unopened message")).unwrap();
    });
    drop(tx);
    let held = counts_of("sent").closes - before.closes;
    std::thread::spawn(move || {
        let first = rx.recv().unwrap();
        first.run(|msg| tracing::info!("handling {}", msg.0));
        drop(rx.recv().unwrap());
    })
    .join()
    .unwrap();
    drop(on);
    let out = since(mark);
    for message in [
        "handling handled message",
        "handled message dropped",
        "unopened message dropped",
    ] {
        let line = line_of(&out, message);
        assert!(line.contains("sent{id=12}: "), "{line}");
    }
    assert_eq!(held, 0, "the envelopes keep the span until handled");
    assert_eq!(counts_of("sent").closes - before.closes, 1);
}

#[test]
fn a_message_handled_async_enters_its_span_around_every_poll() {
    let (_serial, mark) = setup();
    let on = On::new();
    let before = counts_of("sent_async");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = contextvars::channel::tokio::unbounded_channel();
        tracing::info_span!("sent_async").in_scope(|| tx.send(3u32).unwrap());
        let handling = rx.recv().await.unwrap().run_async(|n| async move {
            tracing::info!("async first poll {n}");
            tokio::task::yield_now().await;
            tracing::info!("async second poll {n}");
        });
        handling.await;
        tracing::info!("async handled");
    });
    drop(on);
    let out = since(mark);
    for message in ["async first poll 3", "async second poll 3"] {
        let line = line_of(&out, message);
        assert!(line.contains("sent_async: "), "{line}");
    }
    assert!(!line_of(&out, "async handled").contains("sent_async"));
    let after = counts_of("sent_async");
    // The sender's enter, the call that made the future, two polls, the
    // drop (as `Instrument`).
    assert_eq!(after.enters - before.enters, 5);
    assert_eq!(after.closes - before.closes, 1);
}

#[test]
fn off_a_message_carries_no_span() {
    let (_serial, mark) = setup();
    assert!(!contextvars::tracing::carries_spans());
    let (tx, rx) = contextvars::channel::mpsc::channel();
    tracing::info_span!("sent_off").in_scope(|| tx.send(()).unwrap());
    std::thread::spawn(move || rx.recv().unwrap().run(|()| tracing::info!("handled off")))
        .join()
        .unwrap();
    let line = line_of(&since(mark), "handled off");
    assert!(!line.contains("sent_off"), "{line}");
}

#[cfg(feature = "serde")]
#[test]
fn an_in_process_snapshot_carries_the_span_a_serialized_one_does_not() {
    use contextvars::ContextVar;
    use contextvars::snapshot::{Snapshot, Snapshots};
    static TENANT: ContextVar<String> = ContextVar::new("tenant");
    let (_serial, mark) = setup();
    let on = On::new();
    let before = counts_of("captured");
    let snapshots = Snapshots::new().with_var(&TENANT);
    let (snapshot, json) = tracing::info_span!("captured", id = 14).in_scope(|| {
        TENANT.sync_scope("acme".to_string(), || {
            let snapshot = snapshots.capture();
            let json = snapshot.to_json();
            (snapshot, json)
        })
    });
    let held = counts_of("captured").closes - before.closes;
    std::thread::spawn(move || {
        let job = || tracing::info!("job of {}", TENANT.get().unwrap());
        snapshots.run(snapshot, job);
        let travelled: Snapshot = serde_json::from_str(&json).unwrap();
        snapshots.run(travelled, || {
            tracing::info!("travelled job of {}", TENANT.get().unwrap())
        });
    })
    .join()
    .unwrap();
    drop(on);
    let out = since(mark);
    let line = line_of(&out, " job of acme");
    assert!(line.contains("captured{id=14}: "), "{line}");
    let line = line_of(&out, "travelled job of acme");
    assert!(!line.contains("captured"), "{line}");
    assert_eq!(held, 0, "the snapshot keeps the span until run");
    assert_eq!(counts_of("captured").closes - before.closes, 1);
}
