//! A job queue over NATS whose jobs carry their request's context.
//!
//! ```sh
//! # One process: starts its own nats-server on a loopback port (Debian:
//! # `apt-get install nats-server`), a worker, and three HTTP requests that
//! # each queue a job; then a message with no context headers.
//! cargo run -p contextvars-integration --example job_queue
//!
//! # Two processes, against a server of your own:
//! nats-server -a 127.0.0.1 -p 4222 &
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p contextvars-integration --example job_queue -- worker &
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p contextvars-integration --example job_queue -- produce
//! ```
//!
//! Every log line starts with the context's `request_id` and `tenant`: the
//! worker's lines carry those of the request that queued the job.

use std::time::Duration;

use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::tower::ServerLayer;
use contextvars::tracing::ContextFormat;
use tower::{Layer, ServiceExt};

mod nats_server;
mod queue;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static TENANT: ContextVar<String> = ContextVar::new("tenant");

fn propagator() -> Propagator {
    Propagator::new()
        .with_var(&REQUEST_ID)
        .with_header("x-tenant", &TENANT)
}

/// Three HTTP requests to a service (in process) whose handler queues a job.
async fn produce(client: async_nats::Client) {
    let app =
        ServerLayer::new(propagator()).layer(tower::service_fn(move |req: http::Request<()>| {
            let client = client.clone();
            async move {
                let job = format!("thumbnail {}", req.uri().path());
                tracing::info!("queueing {job}");
                queue::enqueue(&client, &propagator(), job).await.unwrap();
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }
        }));
    for (id, tenant) in [(101, "acme"), (102, "initech"), (103, "acme")] {
        let req = http::Request::builder()
            .uri(format!("/images/{id}.png"))
            .header("baggage", format!("request_id={id}"))
            .header("x-tenant", tenant)
            .body(())
            .unwrap();
        app.clone().oneshot(req).await.unwrap();
    }
}

async fn worker(client: async_nats::Client) -> async_nats::Subscriber {
    let subscriber = client
        .queue_subscribe(queue::SUBJECT, queue::WORKERS.into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    subscriber
}

async fn handle(message: async_nats::Message) {
    let job = String::from_utf8_lossy(&message.payload);
    tracing::info!("worker: {job}");
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .event_format(
            ContextFormat::new(tracing_subscriber::fmt::format().without_time())
                .with_var(&REQUEST_ID)
                .with_var(&TENANT),
        )
        .init();
    let mode = std::env::args().nth(1);
    let url = std::env::var("NATS_URL").ok();
    match (mode.as_deref(), url) {
        (Some("worker"), Some(url)) => {
            let client = async_nats::connect(url).await.unwrap();
            queue::work(worker(client).await, propagator(), handle).await;
        }
        (Some("produce"), Some(url)) => {
            let client = async_nats::connect(url).await.unwrap();
            produce(client.clone()).await;
            client.flush().await.unwrap();
        }
        (Some(mode @ ("worker" | "produce")), None) => {
            eprintln!("`{mode}` needs NATS_URL (e.g. nats://127.0.0.1:4222)");
            std::process::exit(2);
        }
        (Some(other), _) => {
            eprintln!("unknown mode {other:?}: worker, produce, or none for all in one");
            std::process::exit(2);
        }
        (None, url) => {
            let server = url.is_none().then(nats_server::NatsServer::start);
            let url = url.unwrap_or_else(|| server.as_ref().unwrap().url.clone());
            let client = async_nats::connect(&url).await.unwrap();
            let subscriber = worker(async_nats::connect(&url).await.unwrap()).await;
            let working = tokio::spawn(queue::work(subscriber, propagator(), handle));
            produce(client.clone()).await;
            // A message from a producer that does not propagate: handled,
            // with a warning.
            client
                .publish(queue::SUBJECT, "cleanup (no headers)".into())
                .await
                .unwrap();
            client.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            working.abort();
        }
    }
}
