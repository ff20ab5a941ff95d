//! tower layers that carry context across services (feature `tower`).
//!
//! [`ServerLayer`] runs every request in its own fresh [`Context`] seeded
//! from the incoming `baggage` header: the inner service's `call` and every
//! poll of its future run inside it, so handlers (and whatever they spawn
//! with this crate's helpers) see the caller's request id without a
//! parameter. [`ClientLayer`] writes the current values into each outgoing
//! request's `baggage` header.
//!
//! **Invariant:** no two requests ever share a context: each gets one made
//! for it by `extract`, owned by its future.

use std::task::{Context as TaskContext, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::Context;
use crate::future::{FutureExt, WithContext};
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
///     Ok::<_, std::convert::Infallible>(REQUEST_ID.get_or(0))
/// }));
/// let req = http::Request::builder().header("baggage", "request_id=7").body(()).unwrap();
/// let id = futures::executor::block_on(svc.oneshot(req)).unwrap();
/// assert_eq!(id, 7);
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
///     Ok::<_, std::convert::Infallible>(())
/// }));
/// ```
#[derive(Clone, Debug)]
pub struct Server<S> {
    inner: S,
    propagator: Propagator,
}

impl<S, B> Service<http::Request<B>> for Server<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WithContext<S::Future, Context>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ctx = self.propagator.extract(req.headers());
        let future = ctx.run(|| self.inner.call(req));
        future.with_context(ctx)
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
/// let sent = REQUEST_ID.scope(9, || futures::executor::block_on(client.oneshot(http::Request::new(())))).unwrap();
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
