//! Two services on 127.0.0.1 that share a request id without passing it:
//! `cargo run -p contextvars-integration --example web_service`.
//!
//! A request to `front` gets a request id (from its `baggage` header, or a
//! new one), spawns background work and calls `back`; the logs of both
//! services, the background work included, are JSON lines that carry the
//! same `request_id` field. The caller's baggage also carries a `tenant`,
//! which `front` does not register but forwards, so it reaches `back`,
//! which does (and logs it). Context flows through `ServerLayer` (each
//! request in a fresh context from its baggage), `contextvars::tokio::spawn`
//! (background work in a copy) and `ClientLayer` (outgoing baggage, with the
//! forwarded members). The example exits after a few requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::tower::{ClientLayer, ServerLayer};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};

/// The id every log line of a request carries.
pub static REQUEST_ID: ContextVar<String> = ContextVar::new("request_id");

/// The caller's tenant: registered by `back` only; `front` forwards it.
pub static TENANT: ContextVar<String> = ContextVar::new("tenant");

/// Which variables `front` reads from and sends in baggage (the other
/// members of its incoming baggage are forwarded as received).
pub fn propagator() -> Propagator {
    Propagator::new().with_var(&REQUEST_ID)
}

/// `back`'s: it also knows the tenant.
pub fn back_propagator() -> Propagator {
    propagator().with_var(&TENANT)
}

type HttpClient = contextvars::tower::Client<
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
>;

fn http_client() -> HttpClient {
    ClientLayer::new(propagator()).layer(Client::builder(TokioExecutor::new()).build_http())
}

async fn get_text(client: &HttpClient, uri: String, headers: &[(&str, &str)]) -> String {
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .clone()
        .oneshot(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn back_handler() -> String {
    // The tenant arrived through `front`, which never registered it.
    tracing::info!(
        tenant_seen = TENANT.get().is_ok(),
        "back: handling the call from front"
    );
    REQUEST_ID.get().unwrap_or_default()
}

async fn front_handler(State(back): State<SocketAddr>) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if REQUEST_ID.get().is_err() {
        REQUEST_ID.set(format!("gen-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    }
    tracing::info!("front: request received");
    let background = contextvars::tokio::spawn(async {
        tracing::info!("front: background work");
    });
    let echoed = get_text(&http_client(), format!("http://{back}/work"), &[]).await;
    tracing::info!(%echoed, "front: back replied");
    background.await.unwrap();
    REQUEST_ID.get().unwrap()
}

/// Serves `app` on 127.0.0.1 (an ephemeral port) with the server layer.
async fn serve(app: Router, propagator: Propagator) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As a router layer, so the response body (wrapped to be polled in the
    // request's context) goes back to axum as an axum `Body`.
    let app = app.layer(ServerLayer::new(propagator));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Starts both services; returns the address of `front`.
pub async fn start() -> SocketAddr {
    let back = serve(
        Router::new().route("/work", get(back_handler)),
        back_propagator(),
    )
    .await;
    serve(
        Router::new()
            .route("/", get(front_handler))
            .with_state(back),
        propagator(),
    )
    .await
}

/// Sends one request to `front` with `tenant` in its baggage, and
/// `request_id` too if given; returns the request id front answered with.
pub async fn call_front(front: SocketAddr, request_id: Option<&str>, tenant: &str) -> String {
    let baggage = Some(match request_id {
        Some(id) => format!("request_id={id},tenant={tenant}"),
        None => format!("tenant={tenant}"),
    });
    let headers: Vec<(&str, &str)> = baggage.iter().map(|b| ("baggage", b.as_str())).collect();
    // Outside any request: the client injects nothing of its own.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://{front}/"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("front answers");
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// The log format: JSON lines, each with the request id (and, where there
/// is one, the tenant) as a top-level field.
pub fn log_format() -> contextvars::tracing::ContextFormat<
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json, ()>,
> {
    contextvars::tracing::ContextFormat::json(
        tracing_subscriber::fmt::format().json().without_time(),
    )
    .with_var(&REQUEST_ID)
    .with_var(&TENANT)
}

#[allow(dead_code)]
fn main() {
    tracing_subscriber::fmt()
        .json()
        .event_format(log_format())
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let front = start().await;
        for (i, id) in [Some("req-a"), None, Some("req-b"), None, Some("req-c")]
            .into_iter()
            .enumerate()
        {
            let answered = call_front(front, id, "acme").await;
            println!("request {i}: sent {:?}, front answered {answered:?}", id);
        }
    });
}
