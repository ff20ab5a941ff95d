//! `ContextFormat`: the registered variables in every log line, including
//! lines from tasks, threads and rayon jobs that inherited the context.
#![cfg(all(feature = "tracing", feature = "tokio", feature = "rayon"))]

mod common;

use contextvars::ContextVar;
use contextvars::rayon::ParallelIteratorExt;
use contextvars::tracing::ContextFormat;
use rayon::prelude::*;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static DEADLINE_MS: ContextVar<u64> = ContextVar::new("deadline");

#[test]
fn every_line_inside_a_context_carries_its_variables() {
    let buf = common::Captured::default();
    let writer = buf.clone();
    let format = ContextFormat::new(tracing_subscriber::fmt::format().without_time())
        .with_var(&REQUEST_ID)
        .with_var_fmt(&DEADLINE_MS, |ms, out| write!(out, "{}s", ms / 1000));
    tracing_subscriber::fmt()
        .event_format(format)
        .with_writer(move || writer.clone())
        .init();

    tracing::info!("outside any request");
    REQUEST_ID.sync_scope(42, || {
        DEADLINE_MS.set(3000);
        tracing::info!("in the request");
        contextvars::thread::spawn(|| tracing::info!("in a thread"))
            .join()
            .unwrap();
        (0..4)
            .into_par_iter()
            .for_each_in_current_context(|i| tracing::info!(i, "in a rayon job"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let task = {
            let _entered = rt.enter();
            contextvars::tokio::spawn(async { tracing::info!("in a task") })
        };
        rt.block_on(task).unwrap();
        DEADLINE_MS.set(1000);
    });

    let text = buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    let outside = lines
        .iter()
        .find(|l| l.contains("outside any request"))
        .unwrap();
    assert!(
        !outside.contains("request_id="),
        "no value, nothing written: {outside}"
    );
    for line in lines.iter().filter(|l| !l.contains("outside any request")) {
        assert!(line.starts_with("request_id=42 deadline=3s "), "{line}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("in a rayon job"))
            .count(),
        4
    );
}
