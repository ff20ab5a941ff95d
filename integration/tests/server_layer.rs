//! `ServerLayer` and `ClientLayer` over real connections: streamed response
//! bodies run in their request's context, keep-alive requests on one
//! connection each get their own, and members the service does not register
//! are forwarded on its outgoing requests.
#![cfg(all(feature = "tokio", feature = "tower"))]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::tower::{ClientLayer, ServerLayer};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tower::{Layer, ServiceExt};

#[path = "../../tests/common/mod.rs"]
mod common;

static REQUEST_ID: ContextVar<String> = ContextVar::new("request_id");
/// Set by a handler, never propagated: it must not outlive its request.
static VISITED: ContextVar<String> = ContextVar::new("visited");

fn propagator() -> Propagator {
    Propagator::new().with_var(&REQUEST_ID)
}

/// Serves `app` behind the server layer on 127.0.0.1; returns the address.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app.layer(ServerLayer::new(propagator()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One connection to `addr`, kept alive for every request sent on it.
async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
    baggage: Option<&str>,
) -> String {
    sender.ready().await.unwrap();
    let mut req = http::Request::get(path).header("host", "localhost");
    if let Some(b) = baggage {
        req = req.header("baggage", b);
    }
    let resp = sender
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[test]
fn a_streamed_body_is_produced_inside_its_requests_context() {
    common::runtime().block_on(async {
        let app = Router::new().route(
            "/stream",
            get(|| async {
                // Each chunk is made when the body is polled, after the
                // handler has returned.
                let chunks = futures::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    tokio::task::yield_now().await;
                    let id = REQUEST_ID.get().unwrap_or_else(|_| "none".into());
                    Some((Ok::<_, Infallible>(format!("{i}:{id} ")), i + 1))
                });
                Body::from_stream(chunks)
            }),
        );
        let addr = serve(app).await;
        let mut conn = connect(addr).await;
        let calls: Vec<_> = (0..20)
            .map(|i| {
                tokio::spawn(async move {
                    let mut conn = connect(addr).await;
                    let id = format!("r{i}");
                    let body = send(&mut conn, "/stream", Some(&format!("request_id={id}"))).await;
                    (id, body)
                })
            })
            .collect();
        for call in calls {
            let (id, body) = call.await.unwrap();
            assert_eq!(body, format!("0:{id} 1:{id} 2:{id} "));
        }
        assert_eq!(
            send(&mut conn, "/stream", None).await,
            "0:none 1:none 2:none "
        );
    });
}

#[test]
fn keep_alive_requests_on_one_connection_each_get_their_own_context() {
    common::runtime().block_on(async {
        let app = Router::new().route(
            "/visit",
            get(|| async {
                let id = REQUEST_ID.get().unwrap_or_else(|_| "none".into());
                let before = VISITED.get().unwrap_or_else(|_| "none".into());
                VISITED.set(id.clone());
                REQUEST_ID.set(format!("changed-by-{id}"));
                format!("id={id} visited_before={before}")
            }),
        );
        let addr = serve(app).await;
        // One connection, reused: hyper's http1 sender cannot open another.
        let mut conn = connect(addr).await;
        assert_eq!(
            send(&mut conn, "/visit", Some("request_id=one")).await,
            "id=one visited_before=none"
        );
        assert_eq!(
            send(&mut conn, "/visit", None).await,
            "id=none visited_before=none",
            "nothing of the first request leaks into the second"
        );
        assert_eq!(
            send(&mut conn, "/visit", Some("request_id=three")).await,
            "id=three visited_before=none"
        );
    });
}

#[test]
fn unknown_members_of_the_incoming_request_go_out_on_its_outgoing_requests() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = sent.clone();
    let client =
        ClientLayer::new(propagator()).layer(tower::service_fn(move |req: http::Request<()>| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(req.headers().get("baggage").cloned());
                Ok::<_, Infallible>(())
            }
        }));
    let server =
        ServerLayer::new(propagator()).layer(tower::service_fn(move |_req: http::Request<()>| {
            let client = client.clone();
            async move {
                client.oneshot(http::Request::new(())).await?;
                Ok::<_, Infallible>(http::Response::new(()))
            }
        }));
    let req = http::Request::builder()
        .header("baggage", "request_id=5,team=blue;ttl=3, vendor=x")
        .body(())
        .unwrap();
    futures::executor::block_on(server.clone().oneshot(req)).unwrap();
    futures::executor::block_on(server.oneshot(http::Request::new(()))).unwrap();
    let sent = sent.lock().unwrap();
    assert_eq!(
        sent[0].as_ref().unwrap(),
        "request_id=5,team=blue;ttl=3,vendor=x"
    );
    assert_eq!(
        sent[1], None,
        "the next request forwards nothing of the first"
    );
}

#[test]
fn a_response_body_is_dropped_inside_its_requests_context() {
    struct Probe(Arc<Mutex<Option<String>>>);
    impl Drop for Probe {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = REQUEST_ID.get().ok();
        }
    }
    impl http_body::Body for Probe {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(None)
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let probe = seen.clone();
    let server =
        ServerLayer::new(propagator()).layer(tower::service_fn(move |_req: http::Request<()>| {
            let probe = probe.clone();
            async move { Ok::<_, Infallible>(http::Response::new(Probe(probe))) }
        }));
    let req = http::Request::builder()
        .header("baggage", "request_id=d")
        .body(())
        .unwrap();
    let resp = futures::executor::block_on(server.oneshot(req)).unwrap();
    drop(resp);
    assert_eq!(seen.lock().unwrap().as_deref(), Some("d"));
}
