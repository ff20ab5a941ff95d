//! Runs one crossing of `contextvars::python` (or its plain PyO3 peer) a
//! given number of times, for counting instructions under callgrind, which
//! load on the machine does not move (BENCHMARKS.md):
//!
//! ```sh
//! cargo build --release -p contextvars-python --example crossing_counts
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/crossing_counts capture 20000
//! ```
//!
//! The count of a run with 0 iterations, subtracted, leaves the crossing's.

use std::hint::black_box;

use contextvars::{ContextVar, python};
use pyo3::prelude::*;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

/// A plain `#[pyfunction]`: the peer of a capturing one.
#[pyfunction]
fn plain() -> u64 {
    1
}

/// A `#[pyfunction]` that captures the caller's context and reads in it.
#[pyfunction]
fn bridged(py: Python<'_>) -> PyResult<u64> {
    let ctx = python::capture(py)?;
    Ok(ctx.run(|| REQUEST_ID.get_or(1)))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args
        .next()
        .expect("a crossing: plain | capture | call0 | call | call-copy | plain-copy");
    let mirrored = what.ends_with("+mirror");
    let what = what.trim_end_matches("+mirror").to_owned();
    let n: u64 = args.next().expect("a count").parse().expect("a number");
    Python::attach(|py| {
        if mirrored {
            let var = python::declare(py, &REQUEST_ID).unwrap();
            var.call_method1("set", (7,)).unwrap();
        }
        let f_plain = wrap_pyfunction!(plain, py).unwrap().into_any();
        let f_bridged = wrap_pyfunction!(bridged, py).unwrap().into_any();
        let callback = py.eval(c"lambda: 1", None, None).unwrap();
        let ctx = python::capture(py).unwrap();
        // Each crossing once before counting: caches and interned names.
        ctx.run(|| python::call(&callback, ()).unwrap());
        f_bridged.call0().unwrap();
        ctx.run(|| {
            for _ in 0..n {
                match what.as_str() {
                    "plain" => drop(black_box(f_plain.call0().unwrap())),
                    "capture" => drop(black_box(f_bridged.call0().unwrap())),
                    "call0" => drop(black_box(callback.call0().unwrap())),
                    "call" => drop(black_box(python::call(&callback, ()).unwrap())),
                    "call-copy" => contextvars::copy_context()
                        .run(|| drop(black_box(python::call(&callback, ()).unwrap()))),
                    "plain-copy" => contextvars::copy_context()
                        .run(|| drop(black_box(callback.call0().unwrap()))),
                    other => panic!("no crossing named {other}"),
                }
            }
        });
    });
}
