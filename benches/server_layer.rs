//! The cost of `contextvars::tower::ServerLayer` per request: the same
//! in-process tower service called with and without the layer, with a
//! `baggage` header carrying a request id (no sockets).

use std::convert::Infallible;
use std::hint::black_box;
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::tower::ServerLayer;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service};

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

fn request() -> http::Request<()> {
    http::Request::builder()
        .uri("/work")
        .header("baggage", "request_id=42,other=x")
        .body(())
        .unwrap()
}

/// The request id a response carries, with or without the layer's body.
trait Id {
    fn id(&self) -> u64;
}

impl Id for u64 {
    fn id(&self) -> u64 {
        *self
    }
}

impl Id for contextvars::tower::ContextBody<u64> {
    fn id(&self) -> u64 {
        *self.get_ref()
    }
}

/// Calls the service once and polls its (immediately ready) future.
fn call<B, S>(svc: &mut S, req: http::Request<()>) -> u64
where
    S: Service<http::Request<()>, Response = http::Response<B>, Error = Infallible>,
    B: Id,
{
    let mut cx = TaskContext::from_waker(Waker::noop());
    let fut = svc.call(req);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(r) => r.unwrap().body().id(),
        Poll::Pending => unreachable!("the handler is ready at once"),
    }
}

fn server_layer(c: &mut Criterion) {
    let handler = tower::service_fn(|req: http::Request<()>| async move {
        // What a handler would do: read the request id (here: from the
        // context, or the header when there is no layer).
        let id = REQUEST_ID.get().unwrap_or_else(|_| {
            let baggage = req
                .headers()
                .get("baggage")
                .map(|v| v.as_bytes().len())
                .unwrap_or(0);
            baggage as u64
        });
        Ok::<_, Infallible>(http::Response::new(id))
    });
    let mut group = c.benchmark_group("server_layer");
    let mut bare = handler;
    group.bench_function("without", |b| {
        b.iter_batched(
            request,
            |req| black_box(call(&mut bare, req)),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut layered = ServerLayer::new(Propagator::new().with_var(&REQUEST_ID)).layer(handler);
    assert_eq!(call(&mut layered, request()), 42);
    group.bench_function("with", |b| {
        b.iter_batched(
            request,
            |req| black_box(call(&mut layered, req)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

mod common;

criterion_group! {
    name = benches;
    config = common::config();
    targets = server_layer
}
criterion_main!(benches);
