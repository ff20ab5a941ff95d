//! gRPC with tonic over loopback: a server behind `ServerLayer`, called
//! through `ClientLayer` over a tonic `Channel` and through an interceptor
//! over the request's `MetadataMap`; the handler, and its log lines, see the
//! caller's variables, each call in a context of its own.
//!
//! No `protoc`: the messages are derived with prost, and the service is a
//! hand-written tower service over tonic's codegen-free API
//! (`tonic::server::Grpc`, `tonic::client::Grpc`, `tonic_prost::ProstCodec`).
#![cfg(all(feature = "tokio", feature = "tower", feature = "tracing"))]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use contextvars::ContextVar;
use contextvars::propagation::Propagator;
use contextvars::tower::{ClientLayer, ServerLayer};
use contextvars::tracing::ContextFormat;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;

#[path = "../../tests/common/mod.rs"]
mod common;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static TENANT: ContextVar<String> = ContextVar::new("tenant");

fn propagator() -> Propagator {
    Propagator::new()
        .with_var(&REQUEST_ID)
        .with_header("x-tenant", &TENANT)
}

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    note: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Pong {
    #[prost(uint64, tag = "1")]
    request_id: u64,
    #[prost(string, tag = "2")]
    tenant: String,
    #[prost(string, tag = "3")]
    note: String,
}

const ECHO: &str = "/contextvars.test.Echo/Echo";

/// The handler: answers what its context holds, and logs a line.
struct EchoMethod;

impl UnaryService<Ping> for EchoMethod {
    type Response = Pong;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Pong>, tonic::Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Ping>) -> Self::Future {
        Box::pin(async move {
            // A suspension point: the values hold across it.
            tokio::task::yield_now().await;
            let note = request.into_inner().note;
            tracing::info!("handled {note}");
            Ok(tonic::Response::new(Pong {
                request_id: REQUEST_ID.get_or(0),
                tenant: TENANT.get().unwrap_or_default(),
                note,
            }))
        })
    }
}

/// The service, as tonic's generated code would write it.
#[derive(Clone)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "contextvars.test.Echo";
}

impl<B> tower::Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != ECHO {
                return Ok(tonic::Status::unimplemented(req.uri().path().to_string()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Pong, Ping>::default());
            Ok(grpc.unary(EchoMethod, req).await)
        })
    }
}

/// What the handlers logged, through `ContextFormat` (the one subscriber of
/// this test binary, so that the server's worker threads log to it).
fn logs() -> &'static common::Captured {
    common::global_log(|log| {
        tracing_subscriber::fmt()
            .event_format(
                ContextFormat::new(tracing_subscriber::fmt::format().without_time())
                    .with_var(&REQUEST_ID)
                    .with_var(&TENANT),
            )
            .with_writer(move || log.clone())
            .finish()
    })
}

/// A tonic server behind `ServerLayer` on 127.0.0.1; returns a channel to it.
async fn serve() -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        Server::builder()
            .layer(ServerLayer::new(propagator()))
            .add_service(EchoServer)
            .serve_with_incoming(incoming),
    );
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One call of `Echo` over `service`.
async fn echo<S>(service: S, note: &str) -> Pong
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::client::Grpc::new(service);
    if let Err(e) = grpc.ready().await {
        panic!("channel not ready: {}", e.into());
    }
    grpc.unary(
        tonic::Request::new(Ping { note: note.into() }),
        PathAndQuery::from_static(ECHO),
        ProstCodec::<Ping, Pong>::default(),
    )
    .await
    .unwrap()
    .into_inner()
}

#[test]
fn a_grpc_handler_and_its_logs_see_the_callers_variables() {
    let logs = logs();
    common::runtime().block_on(async {
        let channel = serve().await;
        let client = tower::ServiceBuilder::new()
            .layer(ClientLayer::new(propagator()))
            .service(channel.clone());

        // No value: the handler's context is empty.
        let pong = echo(client.clone(), "bare").await;
        assert_eq!((pong.request_id, pong.tenant.as_str()), (0, ""));

        REQUEST_ID.set(7);
        TENANT.set("acme".into());
        let pong = echo(client.clone(), "through-layer").await;
        assert_eq!(
            (pong.request_id, pong.tenant.as_str(), pong.note.as_str()),
            (7, "acme", "through-layer")
        );

        // Concurrent calls on one channel, each from its own task: each
        // handler sees its own caller's id.
        let calls: Vec<_> = (1000..1020u64)
            .map(|id| {
                let client = client.clone();
                contextvars::tokio::spawn(async move {
                    REQUEST_ID.set(id);
                    (id, echo(client, "concurrent").await.request_id)
                })
            })
            .collect();
        for call in calls {
            let (sent, seen) = call.await.unwrap();
            assert_eq!(sent, seen);
        }
    });
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("handled through-layer"))
        .unwrap_or_else(|| panic!("no log line of the call: {logs}"));
    assert!(line.starts_with("request_id=7 tenant=acme "), "{line}");
    let bare = logs.lines().find(|l| l.contains("handled bare")).unwrap();
    assert!(!bare.contains("request_id="), "{bare}");
}

#[test]
fn an_interceptor_over_the_metadata_map_carries_them_too() {
    common::runtime().block_on(async {
        let channel = serve().await;
        let p = propagator();
        // A tonic `Interceptor`: `MetadataMap` is an `http::HeaderMap`
        // inside, which is a carrier.
        let intercepted = tonic::service::interceptor::InterceptedService::new(
            channel,
            move |mut req: tonic::Request<()>| {
                p.inject(req.metadata_mut().as_mut());
                Ok(req)
            },
        );
        let pong = echo(intercepted.clone(), "before").await;
        assert_eq!((pong.request_id, pong.tenant.as_str()), (0, ""));
        REQUEST_ID.set(42);
        TENANT.set("initech".into());
        let pong = echo(intercepted, "intercepted").await;
        assert_eq!((pong.request_id, pong.tenant.as_str()), (42, "initech"));
    });
}
