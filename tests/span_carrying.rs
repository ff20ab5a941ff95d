//! `tracing::carry_spans`: the span current at spawn follows the work this
//! crate's helpers start — tasks, blocking jobs, threads, rayon jobs and
//! parallel iterators, `wrap` — entered on every poll or call and exited
//! after, and closed when the work ends; detached work and plain spawns
//! carry nothing, and neither does anything while the switch is off. With
//! feature `opentelemetry`, OpenTelemetry's current context goes along.
#![cfg(all(feature = "tracing", feature = "tokio", feature = "rayon"))]

use std::sync::{Mutex, MutexGuard};

use contextvars::rayon::ParallelIteratorExt;
use rayon::prelude::*;
use tracing_subscriber::fmt::format::FmtSpan;

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
        tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(move || log.clone())
            .finish()
    })
}

/// What was logged since `mark`.
fn since(mark: usize) -> String {
    logs().since(mark)
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
