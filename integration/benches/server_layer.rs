//! The cost of a request through `contextvars::tower::ServerLayer`, side by
//! side in one run with what a user would otherwise build: OpenTelemetry's
//! baggage propagator `extract` plus its `FutureExt::in_context`, and
//! tower-http's request-id layers plus a `tracing` span attached with
//! `.instrument()`; each with and without a `baggage` header, against the
//! bare service (in process, no sockets). Then `ContextFormat`'s cost per
//! log event against the same `fmt` format without it.

use std::convert::Infallible;

use contextvars::propagation::Propagator;
use contextvars::tower::ServerLayer;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};
use tracing::Instrument;

#[path = "common/server.rs"]
mod server_fixtures;
use server_fixtures::{REQUEST_ID, handler, opentelemetry_service, ready, request};

/// Calls the service once and drops the response (its body included).
fn call<S, B>(svc: &mut S, req: http::Request<()>) -> http::Response<B>
where
    S: Service<http::Request<()>, Response = http::Response<B>, Error = Infallible>,
{
    ready(svc.call(req)).unwrap()
}

fn server_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_layer");
    for baggage in [false, true] {
        let suffix = if baggage { "baggage" } else { "no_baggage" };

        let mut bare = tower::service_fn(|_req: http::Request<()>| async { handler(0) });
        group.bench_function(format!("bare/{suffix}"), |b| {
            b.iter_batched(
                || request(baggage),
                |req| call(&mut bare, req),
                BatchSize::SmallInput,
            )
        });

        let mut layered = ServerLayer::new(Propagator::new().with_var(&REQUEST_ID)).layer(
            tower::service_fn(|_req: http::Request<()>| async { handler(REQUEST_ID.get_or(0)) }),
        );
        assert_eq!(*call(&mut layered, request(true)).body().get_ref(), 42);
        group.bench_function(format!("contextvars/{suffix}"), |b| {
            b.iter_batched(
                || request(baggage),
                |req| call(&mut layered, req),
                BatchSize::SmallInput,
            )
        });

        let mut otel = opentelemetry_service();
        assert_eq!(*call(&mut otel, request(true)).body(), 42);
        group.bench_function(format!("opentelemetry/{suffix}"), |b| {
            b.iter_batched(
                || request(baggage),
                |req| call(&mut otel, req),
                BatchSize::SmallInput,
            )
        });

        let mut request_id = tower::ServiceBuilder::new()
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                tower_http::request_id::MakeRequestUuid,
            ))
            .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
            .service_fn(|req: http::Request<()>| {
                let id = req
                    .extensions()
                    .get::<tower_http::request_id::RequestId>()
                    .map(|id| id.header_value().len() as u64)
                    .unwrap_or(0);
                async move { handler(id) }
                    .instrument(tracing::info_span!("request", request_id = id))
            });
        group.bench_function(format!("tower_http_request_id/{suffix}"), |b| {
            b.iter_batched(
                || request(baggage),
                |req| call(&mut request_id, req),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A `fmt` subscriber writing to nowhere, with `format` as its event format.
fn log_to_sink<F>(format: F) -> impl tracing::Subscriber + Send + Sync
where
    F: tracing_subscriber::fmt::FormatEvent<
            tracing_subscriber::Registry,
            tracing_subscriber::fmt::format::DefaultFields,
        > + Send
        + Sync
        + 'static,
{
    tracing_subscriber::fmt()
        .event_format(format)
        .with_writer(std::io::sink)
        .finish()
}

fn context_format(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_event");
    let plain = tracing_subscriber::fmt::format().without_time();
    let with = contextvars::tracing::ContextFormat::new(plain.clone()).with_var(&REQUEST_ID);
    REQUEST_ID.sync_scope(42, || {
        tracing::subscriber::with_default(log_to_sink(plain), || {
            group.bench_function("fmt", |b| b.iter(|| tracing::info!(n = 1, "handled")));
        });
        tracing::subscriber::with_default(log_to_sink(with), || {
            group.bench_function("fmt_with_context_format", |b| {
                b.iter(|| tracing::info!(n = 1, "handled"))
            });
        });
    });
    group.finish();
}

mod common;

criterion_group! {
    name = benches;
    config = common::config();
    targets = server_layer, context_format
}
criterion_main!(benches);
