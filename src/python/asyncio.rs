//! asyncio and tokio (feature `pyo3-async-runtimes`): a Rust future awaited
//! from asyncio runs in a Rust context captured from the awaiting task, and
//! a Python coroutine awaited from Rust runs as an asyncio task in the
//! Python context the current Rust context carries, on the event loop it
//! carries.
//!
//! Both build on `pyo3-async-runtimes`: its tokio runtime and its
//! `into_future_with_locals`, handed the carried loop and context. What it
//! lacks is a Rust context, and an event loop and Python context that follow
//! spawned work (its `TaskLocals` are a `tokio::task_local!`, which a
//! spawned task does not inherit; here they are values of the Rust context,
//! which it does). Its `future_into_py` is not used: it hands the result to
//! the event loop from a thread that attaches outside any bookkeeping, and a
//! thread that CPython holds there while the interpreter exits is ended
//! inside CPython, which aborts the process. Here the result goes through
//! [`attach`](super::attach), which shutdown waits for.
//!
//! **Invariant:** each side's writes stay its own, as with
//! `asyncio.create_task`: the Rust future runs in a copy of the awaiting
//! task's context, and the coroutine in a copy of the carried one.

use std::future::Future;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyModule};
use pyo3::{IntoPyObject, IntoPyObjectExt, intern};
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::err::RustPanic;

use crate::future::FutureExt;

/// Returns a Python awaitable that runs `fut` on `pyo3-async-runtimes`'
/// tokio runtime, in a Rust context [captured](super::capture) from the
/// calling asyncio task now (its Python context, the mirrored values, and
/// its event loop, for [`into_future`]).
///
/// As `asyncio.create_task(coro)`: the future's writes are its own, and
/// tasks it spawns with this crate's helpers inherit its context.
///
/// # Errors
///
/// `RuntimeError` outside a running event loop; a mirrored value that does
/// not convert (a `TypeError` naming the variable).
///
/// ```no_run
/// use contextvars::ContextVar;
/// use pyo3::prelude::*;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// #[pyfunction]
/// fn request_id_later(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
///     contextvars::python::asyncio::future_into_py(py, async {
///         tokio::task::yield_now().await;
///         Ok(REQUEST_ID.get_or(0))
///     })
/// }
/// ```
pub fn future_into_py<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let ctx = super::capture_with(py, Some(event_loop.clone().unbind()))?;
    // pyo3-async-runtimes' own task locals too, for code that asks for them.
    let locals = TaskLocals::new(event_loop.clone()).copy_context(py)?;
    let py_fut = event_loop.call_method0(intern!(py, "create_future"))?;
    let runtime = pyo3_async_runtimes::tokio::get_runtime();
    let task = runtime.spawn(pyo3_async_runtimes::tokio::scope(
        locals,
        fut.in_context(ctx),
    ));
    // Cancelling the Python future aborts the Rust task.
    let abort = task.abort_handle();
    let on_done = PyCFunction::new_closure(py, None, None, move |args, _| -> PyResult<()> {
        if args
            .get_item(0)?
            .call_method0(intern!(args.py(), "cancelled"))?
            .is_truthy()?
        {
            abort.abort();
        }
        Ok(())
    })?;
    py_fut.call_method1(intern!(py, "add_done_callback"), (on_done,))?;
    let target = py_fut.clone().unbind();
    let event_loop = event_loop.unbind();
    runtime.spawn(async move {
        let outcome = task.await;
        // The GIL is taken on a blocking thread, not on a worker.
        drop(::tokio::task::spawn_blocking(move || {
            // An error here is the interpreter shutting down: nobody waits.
            let _ = super::attach(|py| {
                let (method, value) = match outcome {
                    Ok(Ok(value)) => ("set_result", value.into_bound_py_any(py)?),
                    Ok(Err(err)) => (
                        "set_exception",
                        err.into_value(py).into_bound(py).into_any(),
                    ),
                    Err(join) if join.is_panic() => {
                        let message = panic_message(join.into_panic());
                        let err = RustPanic::new_err(format!("rust future panicked: {message}"));
                        (
                            "set_exception",
                            err.into_value(py).into_bound(py).into_any(),
                        )
                    }
                    // Aborted: the Python future was cancelled.
                    Err(_) => return Ok(()),
                };
                event_loop.bind(py).call_method1(
                    intern!(py, "call_soon_threadsafe"),
                    (settle_fn(py)?, target.bind(py), method, value),
                )?;
                Ok(())
            });
        }));
    });
    Ok(py_fut)
}

/// `settle(fut, method, value)`: sets a result or exception unless the
/// future was cancelled meanwhile (run on the event loop's thread).
fn settle_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.get_or_try_init(py, || {
        let code = c"def settle(fut, method, value):\n    if not fut.done():\n        getattr(fut, method)(value)\n";
        let m = PyModule::from_code(py, code, c"contextvars_settle.py", c"contextvars_settle")?;
        Ok::<_, PyErr>(m.getattr("settle")?.unbind())
    })
    .map(|f| f.bind(py))
}

/// The text a panic carried, if it was a string.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(not a string)".to_owned(), |s| (*s).to_owned()),
    }
}

/// Schedules `awaitable` as an asyncio task on the event loop carried by the
/// current Rust context, in a copy of the Python context it carries with
/// the mirrored Rust values set in it, and returns a Rust future of its
/// result. Works from any task or thread spawned, with this crate's
/// helpers, from a future given to [`future_into_py`].
///
/// As `await asyncio.ensure_future(coro)` in Python: the coroutine's writes
/// are its own.
///
/// # Errors
///
/// `RuntimeError` where no event loop is carried (the current Rust context
/// does not come from [`future_into_py`]); a mirrored value that does not
/// convert. The future returns what the coroutine raised.
///
/// ```no_run
/// use pyo3::prelude::*;
///
/// async fn ask_python(coroutine_fn: Py<PyAny>) -> PyResult<Py<PyAny>> {
///     let fut = Python::attach(|py| {
///         contextvars::python::asyncio::into_future(coroutine_fn.bind(py).call0()?)
///     })?;
///     fut.await
/// }
/// ```
pub fn into_future(
    awaitable: Bound<'_, PyAny>,
) -> PyResult<impl Future<Output = PyResult<Py<PyAny>>> + Send + use<>> {
    let py = awaitable.py();
    let Some(event_loop) = super::carried_loop(py) else {
        return Err(PyRuntimeError::new_err(
            "contextvars: no asyncio event loop is carried by the current context; await Python \
             coroutines from work started by contextvars::python::asyncio::future_into_py",
        ));
    };
    let locals = TaskLocals::new(event_loop.into_bound(py)).with_context(super::prepared_copy(py)?);
    pyo3_async_runtimes::into_future_with_locals(&locals, awaitable)
}
