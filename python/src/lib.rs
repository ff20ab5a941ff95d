//! `contextvars_demo`: an extension module that uses `contextvars::python`
//! the way a service's Rust extension would. Python code sets `request_id`
//! (a Python `ContextVar` this module declares and mirrors), calls in, and
//! the Rust side spawns tokio tasks, threads and rayon jobs that call back
//! into Python. The pytest suite (`pytests/`) drives it under asyncio, and
//! the embedded-interpreter tests (`tests/`) call the same functions.
//!
//! **Invariant:** every function captures the caller's context at its
//! boundary, and every callback is made through `contextvars::python::call`,
//! so each one runs in the Python context of the call that led to it.

use std::sync::Arc;

use contextvars::ContextVar;
use contextvars::future::FutureExt;
use contextvars::python;
use pyo3::prelude::*;

/// Mirrors the Python `contextvars_demo.request_id`.
pub static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// Mirrors a Python variable given to [`mirror_tenant`].
pub static TENANT: ContextVar<String> = ContextVar::new("tenant");

/// What one piece of spawned Rust work saw: where it ran, the Rust value of
/// `request_id` there, and what the Python callback it made returned.
pub type Seen = (&'static str, Option<u64>, Py<PyAny>);

/// One callback from the current Rust context, and the Rust value beside it.
fn callback_here(kind: &'static str, callback: &Py<PyAny>) -> PyResult<Seen> {
    let from_python =
        python::attach(|py| python::call(callback.bind(py), (kind,)).map(Bound::unbind))?;
    Ok((kind, REQUEST_ID.get().ok(), from_python))
}

/// Spawns a tokio task, a thread and a rayon job, each of which calls
/// `callback(kind)` back in Python; returns what each saw. Runs in the
/// current context: each piece of work gets a copy of it.
pub async fn fan_out_in_rust(callback: Py<PyAny>) -> PyResult<Vec<Seen>> {
    let callback = Arc::new(callback);
    let cb = Arc::clone(&callback);
    let task = contextvars::tokio::spawn(async move {
        tokio::task::yield_now().await;
        callback_here("tokio", &cb)
    });
    let cb = Arc::clone(&callback);
    let thread = contextvars::thread::spawn(move || callback_here("thread", &cb));
    let cb = Arc::clone(&callback);
    let (tx, rx) = tokio::sync::oneshot::channel();
    contextvars::rayon::spawn(move || {
        let _ = tx.send(callback_here("rayon", &cb));
    });
    let from_task = task.await.expect("the tokio task does not panic")?;
    let from_rayon = rx.await.expect("the rayon job sends its result")?;
    let from_thread = tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("joining does not panic")
        .expect("the thread does not panic")?;
    Ok(vec![from_task, from_thread, from_rayon])
}

/// The Rust value of `request_id` in the caller's context.
#[pyfunction]
pub fn rust_request_id(py: Python<'_>) -> PyResult<Option<u64>> {
    let ctx = python::capture(py)?;
    Ok(ctx.run(|| REQUEST_ID.get().ok()))
}

/// Declares that [`TENANT`] mirrors `var`.
#[pyfunction]
pub fn mirror_tenant(var: &Bound<'_, PyAny>) -> PyResult<()> {
    python::mirror(&TENANT, var)
}

/// The Rust value of `tenant` in the caller's context.
#[pyfunction]
pub fn rust_tenant(py: Python<'_>) -> PyResult<Option<String>> {
    let ctx = python::capture(py)?;
    Ok(ctx.run(|| TENANT.get().ok()))
}

/// [`fan_out_in_rust`], blocking the caller (the GIL released meanwhile).
#[pyfunction]
pub fn fan_out(py: Python<'_>, callback: Py<PyAny>) -> PyResult<Vec<Seen>> {
    let ctx = python::capture(py)?;
    py.detach(|| {
        pyo3_async_runtimes::tokio::get_runtime()
            .block_on(fan_out_in_rust(callback).in_context(ctx))
    })
}

/// [`fan_out_in_rust`], as an awaitable.
#[pyfunction]
pub fn fan_out_async(py: Python<'_>, callback: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    python::asyncio::future_into_py(py, fan_out_in_rust(callback))
}

/// Awaits `coroutine_fn()` from a tokio task spawned by the Rust future;
/// returns the Rust value of `request_id` and the coroutine's result.
#[pyfunction]
pub fn await_from_rust(py: Python<'_>, coroutine_fn: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    python::asyncio::future_into_py(py, async move {
        let task = contextvars::tokio::spawn(async move {
            let fut =
                python::attach(|py| python::asyncio::into_future(coroutine_fn.bind(py).call0()?))?;
            let result = fut.await?;
            Ok::<_, PyErr>((REQUEST_ID.get().ok(), result))
        });
        task.await.expect("the tokio task does not panic")
    })
}

/// Sets `request_id` in Rust, then calls `callback()`; returns its result.
#[pyfunction]
pub fn set_then_call(
    py: Python<'_>,
    value: u64,
    callback: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let ctx = python::capture(py)?;
    ctx.run(|| {
        REQUEST_ID.set(value);
        python::call(callback, ()).map(Bound::unbind)
    })
}

/// Calls each callback in turn from one Rust context; returns the Rust
/// value of `request_id` after each.
#[pyfunction]
pub fn call_each(py: Python<'_>, callbacks: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Option<u64>>> {
    let ctx = python::capture(py)?;
    ctx.run(|| {
        callbacks
            .iter()
            .map(|cb| python::call(cb, ()).map(|_| REQUEST_ID.get().ok()))
            .collect()
    })
}

/// Calls `callback()` from a copy of the caller's context made in Rust (a
/// sibling of the context that [`call_each`] would use).
#[pyfunction]
pub fn call_in_copy(py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let ctx = python::capture(py)?;
    ctx.run(|| contextvars::copy_context().run(|| python::call(callback, ()).map(Bound::unbind)))
}

/// Sets `request_id` in Rust, then panics with `message`.
#[pyfunction]
pub fn panic_inside(py: Python<'_>, message: String) -> PyResult<()> {
    let ctx = python::capture(py)?;
    ctx.run(|| {
        REQUEST_ID.set(0);
        panic!("{message}")
    })
}

/// Calls `callback()` from a Rust thread; returns how the error it raised
/// looks in Rust: (the exception's type name, the message).
#[pyfunction]
pub fn error_seen_by_rust(py: Python<'_>, callback: Py<PyAny>) -> PyResult<(String, String)> {
    let ctx = python::capture(py)?;
    let result = py.detach(|| {
        ctx.run(|| {
            contextvars::thread::spawn(move || {
                python::attach(|py| python::call(callback.bind(py), ()).map(drop))
            })
            .join()
            .expect("the thread does not panic")
        })
    });
    match result {
        Ok(()) => Err(pyo3::exceptions::PyAssertionError::new_err(
            "the callback did not raise",
        )),
        Err(err) => Python::attach(|py| {
            let name = err.get_type(py).name()?.to_string();
            Ok((name, err.value(py).to_string()))
        }),
    }
}

/// Starts `threads` detached Rust threads that call `callback()` in a loop
/// until a call fails (the interpreter shutting down), then stop.
#[pyfunction]
pub fn call_back_forever(py: Python<'_>, callback: Py<PyAny>, threads: usize) -> PyResult<()> {
    let ctx = python::capture(py)?;
    let callback = Arc::new(callback);
    ctx.run(|| {
        for _ in 0..threads {
            let cb = Arc::clone(&callback);
            drop(contextvars::thread::spawn(move || {
                while python::attach(|py| python::call(cb.bind(py), ()).map(drop)).is_ok() {}
            }));
        }
    });
    Ok(())
}

/// How many [`pending_forever`] futures were dropped.
static PENDING_DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An awaitable whose Rust future fails with `ValueError(message)`, or
/// panics with `message`.
#[pyfunction]
pub fn failing_future(py: Python<'_>, message: String, panic: bool) -> PyResult<Bound<'_, PyAny>> {
    python::asyncio::future_into_py(py, async move {
        tokio::task::yield_now().await;
        if panic {
            panic!("{message}");
        }
        Err::<(), _>(pyo3::exceptions::PyValueError::new_err(message))
    })
}

/// An awaitable whose Rust future never completes; its drop is counted
/// ([`pending_dropped`]).
#[pyfunction]
pub fn pending_forever(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    struct CountDrop;
    impl Drop for CountDrop {
        fn drop(&mut self) {
            PENDING_DROPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let guard = CountDrop;
    python::asyncio::future_into_py(py, async move {
        let _guard = guard;
        std::future::pending::<PyResult<()>>().await
    })
}

/// How many [`pending_forever`] futures were dropped.
#[pyfunction]
pub fn pending_dropped() -> usize {
    PENDING_DROPPED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Adds the functions and the `request_id` variable to `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    static DECLARED: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let request_id =
        DECLARED.get_or_try_init(py, || python::declare(py, &REQUEST_ID).map(Bound::unbind))?;
    m.add("request_id", request_id.bind(py))?;
    m.add_function(wrap_pyfunction!(rust_request_id, m)?)?;
    m.add_function(wrap_pyfunction!(mirror_tenant, m)?)?;
    m.add_function(wrap_pyfunction!(rust_tenant, m)?)?;
    m.add_function(wrap_pyfunction!(fan_out, m)?)?;
    m.add_function(wrap_pyfunction!(fan_out_async, m)?)?;
    m.add_function(wrap_pyfunction!(await_from_rust, m)?)?;
    m.add_function(wrap_pyfunction!(set_then_call, m)?)?;
    m.add_function(wrap_pyfunction!(call_each, m)?)?;
    m.add_function(wrap_pyfunction!(call_in_copy, m)?)?;
    m.add_function(wrap_pyfunction!(panic_inside, m)?)?;
    m.add_function(wrap_pyfunction!(error_seen_by_rust, m)?)?;
    m.add_function(wrap_pyfunction!(call_back_forever, m)?)?;
    m.add_function(wrap_pyfunction!(failing_future, m)?)?;
    m.add_function(wrap_pyfunction!(pending_forever, m)?)?;
    m.add_function(wrap_pyfunction!(pending_dropped, m)?)?;
    Ok(())
}

/// The extension module.
#[pymodule]
fn contextvars_demo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    register(m)
}
