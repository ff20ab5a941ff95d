//! Each crossing of `contextvars::python` against the same crossing made
//! with plain PyO3 (no context carried), in one run: Python calling a
//! `#[pyfunction]` (capture), Rust calling a Python callable (call, in the
//! captured context and from a copy of it), attaching from Rust, and asyncio
//! awaiting a Rust future / tokio awaiting a coroutine. Without a mirrored
//! variable first, then with one (`request_id`, an int).

use std::ffi::CString;
use std::hint::black_box;
use std::time::Duration;

use contextvars::{ContextVar, python};
use criterion::{Criterion, criterion_group, criterion_main};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

/// Plain PyO3: reads nothing.
#[pyfunction]
fn plain() -> u64 {
    1
}

/// Captures the caller's context and reads `request_id` in it.
#[pyfunction]
fn bridged(py: Python<'_>) -> PyResult<u64> {
    let ctx = python::capture(py)?;
    Ok(ctx.run(|| REQUEST_ID.get_or(1)))
}

#[pyfunction]
fn plain_future(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async { Ok(1u64) })
}

#[pyfunction]
fn bridged_future(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    python::asyncio::future_into_py(py, async { Ok(REQUEST_ID.get_or(1)) })
}

/// Awaits `coroutine_fn()` from Rust, with plain pyo3-async-runtimes (the
/// task's locals) or through the bridge (the carried loop and context).
#[pyfunction]
fn await_plain(py: Python<'_>, coroutine_fn: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let fut = Python::attach(|py| {
            let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
            pyo3_async_runtimes::into_future_with_locals(&locals, coroutine_fn.bind(py).call0()?)
        })?;
        fut.await
    })
}

#[pyfunction]
fn await_bridged(py: Python<'_>, coroutine_fn: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    python::asyncio::future_into_py(py, async move {
        let fut =
            Python::attach(|py| python::asyncio::into_future(coroutine_fn.bind(py).call0()?))?;
        fut.await
    })
}

const ASYNC_BENCH: &str = r#"
import asyncio, time

async def coroutine():
    return 1

def timed(make, iters):
    async def main():
        start = time.perf_counter()
        for _ in range(iters):
            await make()
        return time.perf_counter() - start
    return asyncio.run(main())
"#;

fn module(py: Python<'_>) -> Bound<'_, PyModule> {
    let m = PyModule::from_code(
        py,
        &CString::new(ASYNC_BENCH).unwrap(),
        c"bench.py",
        c"bench",
    )
    .unwrap();
    m.add_function(wrap_pyfunction!(plain, &m).unwrap())
        .unwrap();
    m.add_function(wrap_pyfunction!(bridged, &m).unwrap())
        .unwrap();
    m.add_function(wrap_pyfunction!(plain_future, &m).unwrap())
        .unwrap();
    m.add_function(wrap_pyfunction!(bridged_future, &m).unwrap())
        .unwrap();
    m.add_function(wrap_pyfunction!(await_plain, &m).unwrap())
        .unwrap();
    m.add_function(wrap_pyfunction!(await_bridged, &m).unwrap())
        .unwrap();
    m
}

/// Times `iters` awaits of `make()` inside one `asyncio.run`.
fn timed_awaits(m: &Bound<'_, PyModule>, make: &Bound<'_, PyAny>, iters: u64) -> Duration {
    let secs: f64 = m
        .getattr("timed")
        .unwrap()
        .call1((make, iters))
        .unwrap()
        .extract()
        .unwrap();
    Duration::from_secs_f64(secs)
}

fn crossings(c: &mut Criterion, mirrored: &str, m: &Bound<'_, PyModule>) {
    let py = m.py();
    let mut g = c.benchmark_group(format!("python/{mirrored}"));

    // Python -> Rust: a #[pyfunction] call, plain and capturing.
    let f_plain = m.getattr("plain").unwrap();
    let f_bridged = m.getattr("bridged").unwrap();
    g.bench_function("pyfunction: plain", |b| {
        b.iter(|| black_box(f_plain.call0().unwrap()))
    });
    g.bench_function("pyfunction: capture + get", |b| {
        b.iter(|| black_box(f_bridged.call0().unwrap()))
    });

    // Rust -> Python: a callable called, plain and in the carried context.
    let callback = py.eval(c"lambda: 1", None, None).unwrap();
    let ctx = python::capture(py).unwrap();
    g.bench_function("call: plain call0", |b| {
        b.iter(|| black_box(callback.call0().unwrap()))
    });
    ctx.run(|| {
        g.bench_function("call: in the captured context", |b| {
            b.iter(|| black_box(python::call(&callback, ()).unwrap()))
        });
        // A spawned task's first call: the Python context is copied.
        g.bench_function("call: first from a copy", |b| {
            b.iter(|| {
                contextvars::copy_context().run(|| black_box(python::call(&callback, ()).unwrap()))
            })
        });
        g.bench_function("call: plain, from a copy", |b| {
            b.iter(|| contextvars::copy_context().run(|| black_box(callback.call0().unwrap())))
        });
    });

    // Attaching (here nested: the bench thread is attached).
    g.bench_function("attach: Python::attach", |b| {
        b.iter(|| Python::attach(|py| black_box(py.None())))
    });
    g.bench_function("attach: python::attach", |b| {
        b.iter(|| python::attach(|py| Ok(black_box(py.None()))).unwrap())
    });

    // asyncio -> tokio, and tokio -> asyncio.
    for (name, f) in [
        ("await rust future: plain", "plain_future"),
        ("await rust future: bridged", "bridged_future"),
    ] {
        let make = m.getattr(f).unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| timed_awaits(m, &make, iters))
        });
    }
    let coroutine = m.getattr("coroutine").unwrap();
    let globals = PyDict::new(py);
    globals.set_item("m", m).unwrap();
    globals.set_item("coroutine", &coroutine).unwrap();
    for (name, f) in [
        (
            "await coroutine from rust: plain",
            "lambda: m.await_plain(coroutine)",
        ),
        (
            "await coroutine from rust: bridged",
            "lambda: m.await_bridged(coroutine)",
        ),
    ] {
        let make = py
            .eval(&CString::new(f).unwrap(), Some(&globals), None)
            .unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| timed_awaits(m, &make, iters))
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    Python::attach(|py| {
        let m = module(py);
        crossings(c, "no mirrored variable", &m);
        // From here on `request_id` is mirrored, and set by the caller.
        let var = python::declare(py, &REQUEST_ID).unwrap();
        var.call_method1("set", (7,)).unwrap();
        crossings(c, "one mirrored variable", &m);
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
