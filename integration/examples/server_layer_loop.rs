//! The requests of `benches/server_layer.rs`, in a plain loop, for counting
//! instructions per request with callgrind (which load on a shared machine
//! does not move, unlike criterion's times):
//!
//! ```text
//! cargo build --release -p contextvars-integration --example server_layer_loop
//! valgrind --tool=callgrind target/release/examples/server_layer_loop contextvars baggage 50000
//! ```
//!
//! Arguments: the stack (`bare`, `contextvars` or `opentelemetry`), whether
//! the request carries `baggage: request_id=42,other=x` (`baggage` or
//! `none`), and how many requests. Each response is dropped inside the loop
//! (criterion drops them after timing), so the per-request figure includes
//! dropping the request's context. Run two counts and divide the
//! difference to leave out start-up: BENCHMARKS.md, "A request through
//! `ServerLayer`".

use contextvars::propagation::Propagator;
use contextvars::tower::ServerLayer;
use tower::{Layer, Service};

#[path = "../benches/common/server.rs"]
mod server_fixtures;
use server_fixtures::{REQUEST_ID, handler, opentelemetry_service, ready, request};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: server_layer_loop bare|contextvars|opentelemetry baggage|none COUNT";
    let [_, stack, baggage, count] = args.as_slice() else {
        panic!("{usage}")
    };
    let baggage = match baggage.as_str() {
        "baggage" => true,
        "none" => false,
        _ => panic!("{usage}"),
    };
    let count: u64 = count.parse().expect(usage);
    let mut sum = 0;
    match stack.as_str() {
        "bare" => {
            let mut svc = tower::service_fn(|_req: http::Request<()>| async { handler(0) });
            for _ in 0..count {
                sum += *ready(svc.call(request(baggage))).unwrap().body();
            }
        }
        "contextvars" => {
            let mut svc =
                ServerLayer::new(Propagator::new().with_var(&REQUEST_ID)).layer(tower::service_fn(
                    |_req: http::Request<()>| async { handler(REQUEST_ID.get_or(0)) },
                ));
            for _ in 0..count {
                sum += *ready(svc.call(request(baggage))).unwrap().body().get_ref();
            }
        }
        "opentelemetry" => {
            let mut svc = opentelemetry_service();
            for _ in 0..count {
                sum += *ready(svc.call(request(baggage))).unwrap().body();
            }
        }
        _ => panic!("{usage}"),
    }
    // Every request with the header answers 42: the stack did its work.
    assert_eq!(
        sum,
        if baggage && stack != "bare" {
            42 * count
        } else {
            0
        }
    );
}
