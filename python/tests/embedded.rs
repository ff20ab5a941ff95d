//! `contextvars::python` with an embedded CPython: captures, mirrored
//! variables and calls back into Python, driven from Rust threads, rayon
//! jobs and tokio tasks.

use std::ffi::CString;

use contextvars::python;
use contextvars::{Context, ContextVar, ResetError};
use contextvars_demo::REQUEST_ID;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyModule};

/// The demo module, registered once in the embedded interpreter (so that
/// `request_id` is declared and mirrored once).
fn demo(py: Python<'_>) -> Bound<'_, PyModule> {
    // PyOnceLock, not std's OnceLock: one thread may wait for another's
    // initialisation while holding the GIL that the other needs.
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_init(py, || {
            let m = PyModule::new(py, "contextvars_demo").unwrap();
            contextvars_demo::register(&m).unwrap();
            py.import("sys")
                .unwrap()
                .getattr("modules")
                .unwrap()
                .set_item("contextvars_demo", &m)
                .unwrap();
            m.unbind()
        })
        .bind(py)
        .clone()
}

/// Evaluates a Python expression with the demo module as `d` and
/// `contextvars` imported.
fn eval<'py>(py: Python<'py>, code: &str) -> Bound<'py, PyAny> {
    let globals = PyDict::new(py);
    globals.set_item("d", demo(py)).unwrap();
    globals
        .set_item("contextvars", py.import("contextvars").unwrap())
        .unwrap();
    py.eval(&CString::new(code).unwrap(), Some(&globals), None)
        .unwrap()
}

/// Runs `f` in a new, empty Python context (`contextvars.Context().run`),
/// as a Python caller of a `#[pyfunction]` would be in its own task.
fn in_new_python_context<R: Send + 'static>(
    py: Python<'_>,
    f: impl Fn(Python<'_>) -> R + Send + Sync + 'static,
) -> R {
    let out = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = std::sync::Arc::clone(&out);
    let body = PyCFunction::new_closure(py, None, None, move |args, _| -> PyResult<()> {
        *slot.lock().unwrap() = Some(f(args.py()));
        Ok(())
    })
    .unwrap();
    eval(py, "contextvars.Context()")
        .call_method1("run", (body,))
        .unwrap();
    out.lock().unwrap().take().unwrap()
}

/// Python's `request_id.set(n)` in the current Python context.
fn py_set(py: Python<'_>, n: u64) {
    demo(py)
        .getattr("request_id")
        .unwrap()
        .call_method1("set", (n,))
        .unwrap();
}

#[test]
fn capture_holds_the_python_value_and_spawned_work_inherits_it() {
    Python::attach(|py| {
        in_new_python_context(py, |py| {
            py_set(py, 42);
            let ctx = python::capture(py).unwrap();
            py_set(py, 43); // the capture is a copy
            py.detach(|| {
                ctx.run(|| {
                    assert_eq!(REQUEST_ID.get(), Ok(42));
                    let from_thread = contextvars::thread::spawn(|| REQUEST_ID.get())
                        .join()
                        .unwrap();
                    let (a, b) = contextvars::rayon::join(|| REQUEST_ID.get(), || REQUEST_ID.get());
                    assert_eq!((from_thread, a, b), (Ok(42), Ok(42), Ok(42)));
                })
            });
        });
    });
}

#[test]
fn capture_without_a_python_value_leaves_the_rust_variable_unset() {
    Python::attach(|py| {
        in_new_python_context(py, |py| {
            // A value the current Rust context had is not the caller's.
            let outer = Context::new();
            outer.run(|| {
                REQUEST_ID.set(9);
                let ctx = python::capture(py).unwrap();
                assert!(ctx.run(|| REQUEST_ID.get()).is_err());
            });
        });
    });
}

#[test]
fn calls_from_rust_threads_run_in_the_carried_context_with_each_threads_value() {
    Python::attach(|py| {
        in_new_python_context(py, |py| {
            // A Python-only variable, set by the caller.
            let other = eval(py, "contextvars.ContextVar('other')");
            other.call_method1("set", ("from the caller",)).unwrap();
            let read = PyModule::from_code(
                py,
                c"def read(other):\n    import contextvars_demo as d\n    return d.request_id.get(None), other.get(None)\n",
                c"read.py",
                c"read",
            )
            .unwrap()
            .getattr("read")
            .unwrap()
            .unbind();
            let other = other.unbind();
            let ctx = python::capture(py).unwrap();
            let seen: Vec<(Option<u64>, Option<String>)> = py.detach(|| {
                ctx.run(|| {
                    let handles: Vec<_> = (0..8u64)
                        .map(|i| {
                            let read = python::attach(|py| Ok(read.clone_ref(py))).unwrap();
                            let other = python::attach(|py| Ok(other.clone_ref(py))).unwrap();
                            contextvars::thread::spawn(move || {
                                REQUEST_ID.set(i);
                                python::attach(|py| {
                                    python::call(read.bind(py), (other.bind(py),))?.extract()
                                })
                                .unwrap()
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                })
            });
            let expected: Vec<_> = (0..8u64)
                .map(|i| (Some(i), Some("from the caller".to_owned())))
                .collect();
            assert_eq!(seen, expected);
        });
    });
}

#[test]
fn calls_from_tokio_tasks_run_in_the_carried_context() {
    let rt = pyo3_async_runtimes::tokio::get_runtime();
    Python::attach(|py| {
        in_new_python_context(py, |py| {
            py_set(py, 5);
            let ctx = python::capture(py).unwrap();
            let callback = eval(py, "lambda kind: (kind, d.request_id.get(None))").unbind();
            use contextvars::future::FutureExt;
            let seen = py.detach(|| {
                rt.block_on(contextvars_demo::fan_out_in_rust(callback).in_context(ctx))
            });
            let seen = seen.unwrap();
            assert_eq!(seen.len(), 3);
            for (kind, rust, from_python) in seen {
                let (cb_kind, py_value): (String, Option<u64>) = from_python.extract(py).unwrap();
                assert_eq!((cb_kind.as_str(), rust, py_value), (kind, Some(5), Some(5)));
            }
        });
    });
}

#[test]
fn without_a_carried_context_a_call_runs_in_an_empty_python_context_with_the_rust_values() {
    Python::attach(|py| {
        let other = eval(py, "contextvars.ContextVar('other')");
        other.call_method1("set", ("on this thread",)).unwrap();
        let read = eval(py, "lambda o: (d.request_id.get(None), o.get(None))");
        let seen: (Option<u64>, Option<String>) = Context::new().run(|| {
            REQUEST_ID.set(77);
            python::call(&read, (&other,)).unwrap().extract().unwrap()
        });
        assert_eq!(seen, (Some(77), None));
    });
}

#[test]
fn a_python_exception_comes_back_as_that_error() {
    Python::attach(|py| {
        let ctx = in_new_python_context(py, |py| python::capture(py).unwrap());
        let err = ctx
            .run(|| python::call(&eval(py, "lambda: 1 // 0"), ()))
            .unwrap_err();
        assert!(err.is_instance_of::<pyo3::exceptions::PyZeroDivisionError>(py));
        // What the callback set before it raised stays set, as after an
        // inline call that raised.
        ctx.run(|| {
            let err =
                python::call(&eval(py, "lambda: (d.request_id.set(12), 1 // 0)"), ()).unwrap_err();
            assert!(err.is_instance_of::<pyo3::exceptions::PyZeroDivisionError>(py));
            assert_eq!(REQUEST_ID.get(), Ok(12));
        });
    });
}

#[test]
fn a_python_value_that_does_not_convert_is_an_error_naming_the_variable() {
    Python::attach(|py| {
        in_new_python_context(py, |py| {
            demo(py)
                .getattr("request_id")
                .unwrap()
                .call_method1("set", ("abc",))
                .unwrap();
            let err = python::capture(py).unwrap_err();
            assert!(err.is_instance_of::<pyo3::exceptions::PyTypeError>(py));
            let msg = err.to_string();
            assert!(msg.contains("mirrored variable `request_id`"), "{msg}");
            assert!(msg.contains("`str`") && msg.contains("`u64`"), "{msg}");
        });
        // A callback that sets such a value: the error comes when Rust
        // takes the value back.
        let ctx = in_new_python_context(py, |py| python::capture(py).unwrap());
        let err = ctx
            .run(|| python::call(&eval(py, "lambda: d.request_id.set(-1)"), ()))
            .unwrap_err();
        assert!(
            err.to_string().contains("mirrored variable `request_id`"),
            "{err}"
        );
    });
}

#[test]
fn a_rust_token_from_outside_a_capture_is_refused_inside_it() {
    Python::attach(|py| {
        let outer = in_new_python_context(py, |py| python::capture(py).unwrap());
        let token = outer.run(|| REQUEST_ID.set(1));
        // A crossing into Python and back (a callback that calls a Rust
        // function, which captures) makes a new context: a copy.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let put = std::sync::Arc::clone(&slot);
        let rust_fn = PyCFunction::new_closure(py, None, None, move |args, _| -> PyResult<()> {
            *put.lock().unwrap() = Some(python::capture(args.py())?);
            Ok(())
        })
        .unwrap();
        outer.run(|| python::call(&rust_fn, ())).unwrap();
        let inner: Context = slot.lock().unwrap().take().unwrap();
        assert_eq!(inner.run(|| REQUEST_ID.get()), Ok(1));
        let failed = inner.run(|| REQUEST_ID.try_reset(token)).unwrap_err();
        assert!(matches!(
            failed.error(),
            ResetError::DifferentContext { .. }
        ));
        assert!(failed.error().to_string().contains("request_id"));
        outer.run(|| REQUEST_ID.reset(failed.into_token())).unwrap();
        assert!(outer.run(|| REQUEST_ID.get()).is_err());
    });
}

#[test]
fn a_callback_changes_the_carried_context_as_an_inline_call_would() {
    Python::attach(|py| {
        let ctx = in_new_python_context(py, |py| python::capture(py).unwrap());
        let store = eval(py, "[]");
        let set = eval(py, "lambda store: store.append(d.request_id.set(8))");
        let reset = eval(py, "lambda store: d.request_id.reset(store.pop())");
        ctx.run(|| {
            python::call(&set, (&store,)).unwrap();
            // The callback's set is the Rust value now ...
            assert_eq!(REQUEST_ID.get(), Ok(8));
            // ... and its token resets in the next call from this context.
            python::call(&reset, (&store,)).unwrap();
            assert!(REQUEST_ID.get().is_err());
        });
        // A copy (a spawned task's context) runs in a copy of the Python
        // context: a token made in `ctx` is refused there.
        ctx.run(|| python::call(&set, (&store,)).unwrap());
        let err = ctx
            .copy()
            .run(|| python::call(&reset, (&store,)))
            .unwrap_err();
        assert!(err.is_instance_of::<pyo3::exceptions::PyValueError>(py));
        assert!(err.to_string().contains("different Context"), "{err}");
    });
}

#[test]
fn a_call_made_inside_a_callback_runs_in_the_callbacks_context() {
    Python::attach(|py| {
        let ctx = in_new_python_context(py, |py| python::capture(py).unwrap());
        let inner = eval(py, "lambda: d.request_id.get(None)").unbind();
        // A Rust function the callback calls, which calls back again
        // without capturing: it runs in the context the callback runs in.
        let nested =
            PyCFunction::new_closure(py, None, None, move |args, _| -> PyResult<Py<PyAny>> {
                python::call(inner.bind(args.py()), ()).map(Bound::unbind)
            })
            .unwrap();
        let outer = eval(py, "lambda nested: (d.request_id.set(31), nested())[1]");
        let seen: Option<u64> =
            ctx.run(|| python::call(&outer, (nested,)).unwrap().extract().unwrap());
        assert_eq!(seen, Some(31));
    });
}

#[test]
fn a_panic_inside_a_captured_context_leaves_nothing_entered() {
    static PROBE: ContextVar<u64> = ContextVar::new("probe");
    Python::attach(|py| {
        let ctx = in_new_python_context(py, |py| python::capture(py).unwrap());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ctx.run(|| {
                PROBE.set(1);
                let _ = python::call(&eval(py, "lambda: None"), ());
                panic!("inside");
            })
        }));
        assert!(caught.is_err());
        assert!(PROBE.get().is_err());
        // Neither half is left entered: both run again.
        assert_eq!(ctx.run(|| PROBE.get()), Ok(1));
        ctx.run(|| python::call(&eval(py, "lambda: None"), ()))
            .unwrap();
    });
}

#[test]
fn messages_sent_through_a_channel_are_handled_in_their_senders_python_context() {
    Python::attach(|py| {
        let read = eval(py, "lambda: d.request_id.get(None)").unbind();
        let (tx, rx) = contextvars::channel::mpsc::channel::<u64>();
        for n in [1u64, 2, 3] {
            let ctx = in_new_python_context(py, move |py| {
                py_set(py, n);
                python::capture(py).unwrap()
            });
            ctx.run(|| tx.send(n).unwrap());
        }
        drop(tx);
        // One handler thread, each message in its sender's context.
        let seen: Vec<(u64, Option<u64>)> = py.detach(|| {
            std::thread::spawn(move || {
                rx.iter()
                    .map(|envelope| {
                        envelope.run(|n| {
                            let from_python = python::attach(|py| {
                                python::call(read.bind(py), ())?.extract::<Option<u64>>()
                            });
                            (n, from_python.unwrap())
                        })
                    })
                    .collect()
            })
            .join()
            .unwrap()
        });
        assert_eq!(seen, [(1, Some(1)), (2, Some(2)), (3, Some(3))]);
    });
}
