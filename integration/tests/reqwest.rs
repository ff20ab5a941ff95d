//! `contextvars::reqwest::ClientMiddleware` over real loopback HTTP: a
//! reqwest client carries the caller's variables to an axum service behind
//! `ServerLayer`, each concurrent caller its own; and a request id in a
//! header of its own (`x-request-id`) set and echoed by tower-http's
//! request-id layers, followed through a second service.
#![cfg(all(feature = "tokio", feature = "tower", feature = "reqwest"))]

use axum::Router;
use axum::routing::get;
use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::reqwest::ClientMiddleware;
use contextvars::tower::ServerLayer;
use reqwest_middleware::ClientWithMiddleware;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

#[path = "../../tests/common/mod.rs"]
mod common;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static TRACE_ID: ContextVar<String> = ContextVar::new("trace_id");

/// Serves `app` on 127.0.0.1; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A plain reqwest client that talks to loopback directly, whatever proxy
/// the environment names.
fn plain() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn client(propagator: Propagator) -> ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(plain())
        .with(ClientMiddleware::new(propagator))
        .build()
}

/// A service that answers the request id its handler sees, and the
/// `baggage` header it was sent.
async fn echo_service() -> String {
    let app = Router::new()
        .route(
            "/",
            get(|headers: http::HeaderMap| async move {
                let baggage = headers
                    .get("baggage")
                    .map_or("-", |v| v.to_str().unwrap())
                    .to_string();
                format!("{} {baggage}", REQUEST_ID.get_or(0))
            }),
        )
        .layer(ServerLayer::new(Propagator::new().with_var(&REQUEST_ID)));
    serve(app).await
}

#[test]
fn a_reqwest_client_carries_the_callers_variables_over_loopback() {
    common::runtime().block_on(async {
        let url = echo_service().await;
        let client = client(Propagator::new().with_var(&REQUEST_ID));
        let send = |req: reqwest_middleware::RequestBuilder| async move {
            req.send().await.unwrap().text().await.unwrap()
        };

        // No value: nothing sent.
        assert_eq!(send(client.get(&url)).await, "0 -");

        REQUEST_ID.set(7);
        assert_eq!(send(client.get(&url)).await, "7 request_id=7");
        // Merged into the caller's own baggage, not over it.
        assert_eq!(
            send(client.get(&url).header("baggage", "team=blue;ttl=3")).await,
            "7 team=blue;ttl=3,request_id=7"
        );

        // Concurrent callers on two workers, each its own value.
        let tasks: Vec<_> = (100..140u64)
            .map(|id| {
                let (client, url) = (client.clone(), url.clone());
                contextvars::tokio::spawn(async move {
                    REQUEST_ID.set(id);
                    tokio::task::yield_now().await;
                    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
                    (id, body)
                })
            })
            .collect();
        for task in tasks {
            let (id, body) = task.await.unwrap();
            assert_eq!(body, format!("{id} request_id={id}"));
        }
        assert_eq!(REQUEST_ID.get(), Ok(7), "the spawner's value is its own");
    });
}

/// Service A: tower-http sets `x-request-id` when the caller sent none and
/// echoes it on the response; `ServerLayer` puts it in `TRACE_ID`; the
/// handler calls B through reqwest, which sends it on. B answers what it
/// received; A answers what its handler saw and what B said.
async fn request_id_services() -> String {
    let propagator = Propagator::new().with_header("x-request-id", &TRACE_ID);
    let b = Router::new()
        .route(
            "/",
            get(|| async { TRACE_ID.get().unwrap_or_else(|_| "none".into()) }),
        )
        .layer(ServerLayer::new(propagator.clone()));
    let b_url = serve(b).await;
    let client = client(propagator.clone());
    let a = Router::new()
        .route(
            "/",
            get(move || async move {
                let seen = TRACE_ID.get().unwrap_or_else(|_| "none".into());
                let from_b = client
                    .get(&b_url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                format!("{seen} {from_b}")
            }),
        )
        // Outermost first: tower-http sets the id before `ServerLayer` reads it.
        .layer(ServerLayer::new(propagator))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    serve(a).await
}

#[test]
fn a_request_id_header_set_by_tower_http_follows_the_request_to_the_next_service() {
    common::runtime().block_on(async {
        let url = request_id_services().await;
        let plain = plain();

        // The caller sends none: tower-http makes one, the handler sees it,
        // B receives it, and the response echoes it.
        let resp = plain.get(&url).send().await.unwrap();
        let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(echoed.len(), 36, "a UUID: {echoed}");
        assert_eq!(resp.text().await.unwrap(), format!("{echoed} {echoed}"));

        // The caller sends one: it is the one that travels.
        let resp = plain
            .get(&url)
            .header("x-request-id", "abc-123")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-request-id"], "abc-123");
        assert_eq!(resp.text().await.unwrap(), "abc-123 abc-123");

        // A caller whose context holds the id sends it through the
        // middleware, and tower-http keeps it.
        let client = client(Propagator::new().with_header("x-request-id", &TRACE_ID));
        TRACE_ID.set("from-caller".into());
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "from-caller");
        assert_eq!(resp.text().await.unwrap(), "from-caller from-caller");
    });
}
