//! This crate's prelude glob-imported beside the extension traits of
//! OpenTelemetry (`FutureExt`), `tracing` (`Instrument`, `WithSubscriber`),
//! `futures` and rayon: every adapter resolves to its own trait (no E0034,
//! "multiple applicable items"), and each does its own job on one future.
#![cfg(all(feature = "futures", feature = "rayon"))]

use contextvars::prelude::*;
use futures::prelude::*;
use opentelemetry::trace::*;
use rayon::prelude::*;
use tracing::instrument::*;

use contextvars::{Context, ContextVar};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

#[derive(Debug, PartialEq)]
struct Tag(&'static str);

#[test]
fn every_adapter_resolves_beside_opentelemetry_tracing_futures_and_rayon() {
    let ctx = Context::new();
    ctx.run(|| REQUEST_ID.set(7));
    let otel = opentelemetry::Context::new().with_value(Tag("otel"));
    let subscriber = tracing::subscriber::NoSubscriber::default();

    let task = async {
        let tag = opentelemetry::Context::map_current(|cx| cx.get::<Tag>().map(|t| t.0));
        (REQUEST_ID.get(), tag)
    }
    .in_context(ctx) // contextvars
    .with_context(otel) // opentelemetry
    .instrument(tracing::info_span!("request")) // tracing
    .with_subscriber(subscriber) // tracing
    .boxed(); // futures
    assert_eq!(futures::executor::block_on(task), (Ok(7), Some("otel")));

    REQUEST_ID.set(1);
    let copied = async { REQUEST_ID.get() }
        .in_current_context()
        .with_current_context()
        .in_current_span()
        .with_current_subscriber();
    REQUEST_ID.set(2);
    assert_eq!(futures::executor::block_on(copied), Ok(1));

    let stream = stream::iter([1, 2])
        .map(|n| n + REQUEST_ID.get().unwrap())
        .in_current_context()
        .with_current_context();
    assert_eq!(
        futures::executor::block_on(stream.collect::<Vec<_>>()),
        [3, 4]
    );

    let sum: u64 = (0..4u64)
        .into_par_iter()
        .map_in_current_context(|n| n * REQUEST_ID.get().unwrap())
        .sum();
    assert_eq!(sum, 12);
}
