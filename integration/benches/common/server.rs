//! What `server_layer.rs` and `examples/server_layer_loop.rs` both use: the
//! request, the handler, and OpenTelemetry's header extractor, so the bench
//! and the instruction-count loop measure the same requests.

use std::convert::Infallible;
use std::hint::black_box;
use std::task::{Context as TaskContext, Poll, Waker};

use contextvars::ContextVar;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, TextMapPropagator};

pub static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");

pub fn request(baggage: bool) -> http::Request<()> {
    let mut req = http::Request::builder().uri("/work");
    if baggage {
        req = req.header("baggage", "request_id=42,other=x");
    }
    req.body(()).unwrap()
}

/// Polls a future that is ready at once.
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = TaskContext::from_waker(Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => unreachable!("the handler is ready at once"),
    }
}

/// The handler: reads the request id (from whichever place the stack
/// under test keeps it) and answers it.
pub fn handler(id: u64) -> Result<http::Response<u64>, Infallible> {
    Ok(http::Response::new(black_box(id)))
}

/// OpenTelemetry's extractor over an `http::HeaderMap` (what
/// `opentelemetry-http` provides).
pub struct Headers<'a>(pub &'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// What a user would build with OpenTelemetry alone: its baggage
/// propagator's `extract`, and the handler run inside the extracted
/// context (`FutureExt::with_context`), reading the request id from it.
pub fn opentelemetry_service()
-> impl tower::Service<http::Request<()>, Response = http::Response<u64>, Error = Infallible> {
    let propagator = opentelemetry_sdk::propagation::BaggagePropagator::new();
    tower::service_fn(move |req: http::Request<()>| {
        let cx = propagator.extract(&Headers(req.headers()));
        opentelemetry::context::FutureExt::with_context(
            async {
                let id = opentelemetry::Context::map_current(|cx| {
                    cx.baggage()
                        .get("request_id")
                        .and_then(|v| v.as_str().parse().ok())
                });
                handler(id.unwrap_or(0))
            },
            cx,
        )
    })
}
