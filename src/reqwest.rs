//! A `reqwest-middleware` middleware that carries the current context on
//! every request a reqwest client sends (feature `reqwest`).
//!
//! reqwest is not a tower service, so [`ClientLayer`](crate::tower) cannot
//! wrap it; [`ClientMiddleware`] does the same through
//! `reqwest_middleware::ClientBuilder::with`: the registered variables go
//! into the `baggage` header (merged into one the request already has),
//! with the members the request being handled forwards, and the variables
//! of [`Propagator::with_header`] into their own headers.
//!
//! **Invariant:** the values written are those of the context the request's
//! future is polled in — the caller's, when it is awaited where it is
//! built, as a request normally is — read when it is sent, never later.

use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use crate::propagation::Propagator;

/// Writes the current values into each outgoing request.
///
/// ```no_run
/// use contextvars::propagation::Propagator;
/// use contextvars::reqwest::ClientMiddleware;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
///
/// # async fn call() -> reqwest_middleware::Result<()> {
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(ClientMiddleware::new(Propagator::new().with_var(&REQUEST_ID)))
///     .build();
/// // Inside a request's task, say:
/// REQUEST_ID.set(42);
/// // Sent with `baggage: request_id=42`.
/// let _resp = client.get("http://127.0.0.1:8080/").send().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientMiddleware {
    propagator: Propagator,
}

impl ClientMiddleware {
    /// A middleware that injects `propagator`'s variables.
    ///
    /// ```
    /// let _m = contextvars::reqwest::ClientMiddleware::new(contextvars::propagation::Propagator::new());
    /// ```
    pub fn new(propagator: Propagator) -> ClientMiddleware {
        ClientMiddleware { propagator }
    }
}

#[async_trait::async_trait]
impl Middleware for ClientMiddleware {
    async fn handle(
        &self,
        mut req: ::reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<::reqwest::Response> {
        self.propagator.inject(req.headers_mut());
        next.run(req, extensions).await
    }
}
