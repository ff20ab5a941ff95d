//! asyncio and tokio (feature `pyo3-async-runtimes`): a Rust future awaited
//! from asyncio runs in a Rust context captured from the awaiting task, and
//! a Python coroutine awaited from Rust runs as an asyncio task in the
//! Python context the current Rust context carries, on the event loop it
//! carries.
//!
//! Both build on `pyo3-async-runtimes` (its tokio runtime, its
//! `future_into_py_with_locals` and `into_future_with_locals`), handing it
//! the context: what it lacks is a Rust context, and an event loop and
//! Python context that follow spawned work (its `TaskLocals` are a
//! `tokio::task_local!`, which a spawned task does not inherit; here they
//! are values of the Rust context, which it does).
//!
//! **Invariant:** each side's writes stay its own, as with
//! `asyncio.create_task`: the Rust future runs in a copy of the awaiting
//! task's context, and the coroutine in a copy of the carried one.

use std::future::Future;

use pyo3::IntoPyObject;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;

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
    let locals = TaskLocals::new(event_loop).copy_context(py)?;
    pyo3_async_runtimes::tokio::future_into_py_with_locals(py, locals, fut.with_context(ctx))
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
