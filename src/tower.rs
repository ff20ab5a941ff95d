//! tower layers that carry context across services (feature `tower`).
//!
//! [`ServerLayer`] runs every request in its own fresh [`Context`] seeded
//! from the incoming `baggage` header: the inner service's `call`, every
//! poll of its future and every poll of the response body run inside it, so
//! handlers, streamed bodies (and whatever they spawn with this crate's
//! helpers) see the caller's request id without a parameter — as a Python
//! ASGI app's streaming body runs in its request's task. [`ClientLayer`]
//! writes the current values into each outgoing request's `baggage` header,
//! with the members the request being handled forwards
//! ([`Propagator::forward_unknown`]).
//!
//! ```
//! use std::convert::Infallible;
//! use contextvars::propagation::Propagator;
//! use contextvars::tower::{ClientLayer, ServerLayer};
//! use contextvars::ContextVar;
//! use tower::{Layer, ServiceExt};
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//! let propagator = Propagator::new().with_var(&REQUEST_ID);
//!
//! // A server whose handler reads the id the request's baggage carries ...
//! let server = ServerLayer::new(propagator.clone()).layer(tower::service_fn(|_: http::Request<()>| async {
//!     Ok::<_, Infallible>(http::Response::new(REQUEST_ID.get().ok()))
//! }));
//! // ... called through a client that sends the caller's id.
//! let client = ClientLayer::new(propagator).layer(server);
//! let response = REQUEST_ID.sync_scope(9, || futures::executor::block_on(client.oneshot(http::Request::new(()))));
//! assert_eq!(response.unwrap().into_body().into_inner(), Some(9));
//! ```
//!
//! **Invariant:** no two requests ever share a context: each gets one made
//! for it by `extract`, owned by its future and then by its response body,
//! and dropped inside itself.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::Context;

use crate::propagation::Propagator;

/// Server side: each request in a fresh context from its baggage.
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::tower::ServerLayer;
/// use contextvars::ContextVar;
/// use tower::{Layer, Service, ServiceExt};
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// let layer = ServerLayer::new(Propagator::new().with_var(&REQUEST_ID));
/// let svc = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(REQUEST_ID.get_or(0).to_string()))
/// }));
/// let req = http::Request::builder().header("baggage", "request_id=7").body(()).unwrap();
/// let resp = futures::executor::block_on(svc.oneshot(req)).unwrap();
/// assert_eq!(resp.body().get_ref(), "7");
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer {
    propagator: Propagator,
}

impl ServerLayer {
    /// A layer that seeds each request's context with `propagator`'s
    /// variables.
    ///
    /// ```
    /// let _layer = contextvars::tower::ServerLayer::new(contextvars::propagation::Propagator::new());
    /// ```
    pub fn new(propagator: Propagator) -> ServerLayer {
        ServerLayer { propagator }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Server<S> {
        Server {
            inner,
            propagator: self.propagator.clone(),
        }
    }
}

/// The service made by [`ServerLayer`].
///
/// ```
/// use tower::Layer;
/// let layer = contextvars::tower::ServerLayer::new(Default::default());
/// let _svc: contextvars::tower::Server<_> = layer.layer(tower::service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// }));
/// ```
#[derive(Clone, Debug)]
pub struct Server<S> {
    inner: S,
    propagator: Propagator,
}

impl<S, B, ResBody> Service<http::Request<B>> for Server<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ContextBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut ctx = self.propagator.extract(req.headers());
        let future = ctx.run_exclusive(|| self.inner.call(req));
        ResponseFuture {
            future: Some(future),
            ctx: Some(ctx),
        }
    }
}

pin_project! {
    /// The future of a [`Server`]: polls the inner service's future inside the
    /// request's context, then hands that context to the response body.
    ///
    /// ```
    /// use contextvars::tower::{ContextBody, ResponseFuture, ServerLayer};
    /// use tower::{Layer, Service};
    ///
    /// let mut svc = ServerLayer::new(Default::default()).layer(tower::service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
    /// }));
    /// let future: ResponseFuture<_> = svc.call(http::Request::new(()));
    /// let resp: http::Response<ContextBody<String>> = futures::executor::block_on(future).unwrap();
    /// assert_eq!(resp.body().get_ref(), "hi");
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        // Dropped inside `ctx` while the request has it, so a cancelled
        // handler's destructors see their request's context (`None` once
        // dropped there).
        #[pin]
        future: Option<F>,
        // `None` once the response went out: the body owns the context then.
        ctx: Option<Context>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut future = this.future;
            // Without a context (the response went out), the future is
            // dropped as a field, after this.
            if let (Some(ctx), true) = (this.ctx, future.is_some()) {
                ctx.run_exclusive(|| future.set(None));
            }
        }
    }
}

impl<F, ResBody, E> std::future::Future for ResponseFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ContextBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let ctx = this
            .ctx
            .as_mut()
            .expect("a ServerLayer response future polled after it completed");
        let future = this
            .future
            .as_pin_mut()
            .expect("a ServerLayer response future holds its future until it is dropped");
        match ctx.run_exclusive(|| future.poll(cx)) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(resp)) => {
                let ctx = this.ctx.take().expect("checked above");
                Poll::Ready(Ok(resp.map(|body| ContextBody {
                    body: Some(body),
                    ctx,
                })))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A response body that is polled (and dropped) inside its request's
    /// context, so a body produced after the handler returned — streaming,
    /// server-sent events, any lazy [`Body`] — still sees the request's
    /// variables.
    ///
    /// ```
    /// use contextvars::tower::ContextBody;
    /// use http_body_util::BodyExt;
    /// use tower::{Layer, ServiceExt};
    ///
    /// let svc = contextvars::tower::ServerLayer::new(Default::default()).layer(tower::service_fn(
    ///     |_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi"))) },
    /// ));
    /// let resp = futures::executor::block_on(svc.oneshot(http::Request::new(()))).unwrap();
    /// let body: ContextBody<String> = resp.into_body();
    /// assert_eq!(futures::executor::block_on(body.collect()).unwrap().to_bytes(), "hi");
    /// ```
    pub struct ContextBody<B> {
        // Dropped inside `ctx` (see `ResponseFuture`); `None` once dropped
        // there, or taken by `into_inner`.
        #[pin]
        body: Option<B>,
        ctx: Context,
    }

    impl<B> PinnedDrop for ContextBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut body = this.body;
            if body.is_some() {
                this.ctx.run_exclusive(|| body.set(None));
            }
        }
    }
}

/// Why the body is present wherever it is read: only `into_inner`, which
/// consumes the wrapper, and the drop empty it.
const HELD: &str = "a ContextBody holds its body until it is taken apart";

impl<B> ContextBody<B> {
    /// The body inside.
    ///
    /// ```
    /// use tower::{Layer, ServiceExt};
    /// let svc = contextvars::tower::ServerLayer::new(Default::default()).layer(tower::service_fn(
    ///     |_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(7)) },
    /// ));
    /// let resp = futures::executor::block_on(svc.oneshot(http::Request::new(()))).unwrap();
    /// assert_eq!(*resp.body().get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &B {
        self.body.as_ref().expect(HELD)
    }

    /// The body inside, to change (the wrapper is not pinned here, so
    /// neither is the body).
    ///
    /// ```
    /// use tower::{Layer, ServiceExt};
    /// let svc = contextvars::tower::ServerLayer::new(Default::default()).layer(tower::service_fn(
    ///     |_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(7)) },
    /// ));
    /// let mut resp = futures::executor::block_on(svc.oneshot(http::Request::new(()))).unwrap();
    /// *resp.body_mut().get_mut() += 1;
    /// assert_eq!(*resp.body().get_ref(), 8);
    /// ```
    pub fn get_mut(&mut self) -> &mut B {
        self.body.as_mut().expect(HELD)
    }

    /// The body inside, taken out of its context (which is dropped): from
    /// then on the body is polled in whatever context polls it.
    ///
    /// ```
    /// use tower::{Layer, ServiceExt};
    /// let svc = contextvars::tower::ServerLayer::new(Default::default()).layer(tower::service_fn(
    ///     |_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(7)) },
    /// ));
    /// let resp = futures::executor::block_on(svc.oneshot(http::Request::new(()))).unwrap();
    /// assert_eq!(resp.into_body().into_inner(), 7);
    /// ```
    pub fn into_inner(mut self) -> B {
        // Taken: the drop of the rest then drops only the context.
        self.body.take().expect(HELD)
    }

    /// The request's context, which the body is polled in.
    ///
    /// ```
    /// use tower::{Layer, ServiceExt};
    /// let svc = contextvars::tower::ServerLayer::new(Default::default()).layer(tower::service_fn(
    ///     |_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) },
    /// ));
    /// let resp = futures::executor::block_on(svc.oneshot(http::Request::new(()))).unwrap();
    /// assert!(resp.body().context().is_empty());
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl<B: Body> Body for ContextBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let body = this.body.as_pin_mut().expect(HELD);
        this.ctx.run_exclusive(|| body.poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.get_ref().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.get_ref().size_hint()
    }
}

impl<B> std::fmt::Debug for ContextBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextBody")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// Client side: the current values into each outgoing request's baggage.
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::tower::ClientLayer;
/// use contextvars::ContextVar;
/// use tower::{Layer, ServiceExt};
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// let client = ClientLayer::new(Propagator::new().with_var(&REQUEST_ID)).layer(tower::service_fn(
///     |req: http::Request<()>| async move { Ok::<_, std::convert::Infallible>(req.headers()["baggage"].clone()) },
/// ));
/// let sent = REQUEST_ID.sync_scope(9, || futures::executor::block_on(client.oneshot(http::Request::new(())))).unwrap();
/// assert_eq!(sent, "request_id=9");
/// ```
#[derive(Clone, Debug)]
pub struct ClientLayer {
    propagator: Propagator,
}

impl ClientLayer {
    /// A layer that injects `propagator`'s variables.
    ///
    /// ```
    /// let _layer = contextvars::tower::ClientLayer::new(contextvars::propagation::Propagator::new());
    /// ```
    pub fn new(propagator: Propagator) -> ClientLayer {
        ClientLayer { propagator }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = Client<S>;

    fn layer(&self, inner: S) -> Client<S> {
        Client {
            inner,
            propagator: self.propagator.clone(),
        }
    }
}

/// The service made by [`ClientLayer`].
///
/// ```
/// use tower::Layer;
/// let layer = contextvars::tower::ClientLayer::new(Default::default());
/// let _svc: contextvars::tower::Client<_> = layer.layer(tower::service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(())
/// }));
/// ```
#[derive(Clone, Debug)]
pub struct Client<S> {
    inner: S,
    propagator: Propagator,
}

impl<S, B> Service<http::Request<B>> for Client<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        self.propagator.inject(req.headers_mut());
        self.inner.call(req)
    }
}
