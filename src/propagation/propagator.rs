//! [`Propagator`]: which variables travel, under which keys and headers,
//! and whether unknown members are forwarded; built by configuration.
//!
//! **Invariant:** a key or header name that every receiver would drop, or
//! that would collide with `baggage`, is refused when it is registered,
//! with a panic naming the variable; one key holds one variable (a second
//! registration under it replaces the first).

use std::fmt::{self, Display};
use std::str::FromStr;
use std::sync::Arc;

use super::carrier::BAGGAGE;
use super::registry::{Decode, Encode, Registry, Travel};
use crate::ContextVar;
use crate::baggage;

/// Which context variables travel between services, and how.
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// let propagator = Propagator::new().with_var(&REQUEST_ID);
///
/// // Client side: current values into the outgoing headers.
/// let mut headers = http::HeaderMap::new();
/// REQUEST_ID.sync_scope(42, || propagator.inject(&mut headers));
/// assert_eq!(headers["baggage"], "request_id=42");
///
/// // Server side: a fresh context seeded from the incoming headers.
/// let ctx = propagator.extract(&headers);
/// assert_eq!(ctx.get(&REQUEST_ID), Some(42));
/// ```
///
/// A propagator is cheap to clone, and a clone can be configured further
/// without affecting the original:
///
/// ```
/// use contextvars::propagation::Propagator;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// static TENANT: ContextVar<String> = ContextVar::new("tenant");
/// let base = Propagator::new().with_var(&REQUEST_ID);
/// let wider = base.clone().with_var(&TENANT);
/// assert_eq!((base.keys(), wider.keys()), (vec!["request_id"], vec!["request_id", "tenant"]));
/// ```
#[derive(Clone)]
pub struct Propagator {
    pub(super) reg: Arc<Registry>,
    pub(super) forward: bool,
}

impl Default for Propagator {
    fn default() -> Propagator {
        Propagator {
            reg: Arc::default(),
            forward: true,
        }
    }
}

impl Propagator {
    /// A propagator with no variables.
    ///
    /// ```
    /// let p = contextvars::propagation::Propagator::new();
    /// assert!(p.keys().is_empty());
    /// ```
    pub fn new() -> Propagator {
        Propagator::default()
    }

    /// Registers `var` under its own name, written with `Display` and read
    /// with `FromStr`.
    ///
    /// # Panics
    ///
    /// If the variable's name is not a W3C baggage key (an RFC 7230 token:
    /// no spaces, no non-ASCII letters), which could be sent but never
    /// received: register it with [`with_var_as`](Self::with_var_as) under
    /// a key that is one. The message names the variable.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static TENANT: ContextVar<String> = ContextVar::new("tenant");
    /// assert_eq!(Propagator::new().with_var(&TENANT).keys(), ["tenant"]);
    /// ```
    #[must_use]
    pub fn with_var<T>(self, var: &'static ContextVar<T>) -> Propagator
    where
        T: Display + FromStr + Send + Sync + 'static,
        T::Err: Display,
    {
        self.with_var_as(var.name(), var)
    }

    /// Registers `var` under the baggage key `key`.
    ///
    /// # Panics
    ///
    /// If `key` is not a W3C baggage key (see [`baggage::is_key`]).
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var_as("rid", &REQUEST_ID);
    /// assert_eq!(p.keys(), ["rid"]);
    /// ```
    #[must_use]
    pub fn with_var_as<T>(self, key: &'static str, var: &'static ContextVar<T>) -> Propagator
    where
        T: Display + FromStr + Send + Sync + 'static,
        T::Err: Display,
    {
        self.register(
            var.name(),
            key,
            Arc::new(move || var.with(|v| v.map(T::to_string))),
            Arc::new(move |s| {
                let value = s.parse::<T>().map_err(|e| e.to_string())?;
                var.set(value);
                Ok(())
            }),
        )
    }

    /// Registers `var` under its own name, travelling as JSON.
    ///
    /// # Panics
    ///
    /// If the variable's name is not a W3C baggage key (see
    /// [`baggage::is_key`]).
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    /// struct Caller { id: u32, name: String }
    /// static CALLER: ContextVar<Caller> = ContextVar::new("caller");
    ///
    /// let p = Propagator::new().with_var_serde(&CALLER);
    /// let mut headers = http::HeaderMap::new();
    /// CALLER.sync_scope(Caller { id: 1, name: "a b".into() }, || p.inject(&mut headers));
    /// assert_eq!(p.extract(&headers).get(&CALLER), Some(Caller { id: 1, name: "a b".into() }));
    /// ```
    #[cfg(feature = "serde")]
    #[must_use]
    pub fn with_var_serde<T>(self, var: &'static ContextVar<T>) -> Propagator
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.register(
            var.name(),
            var.name(),
            Arc::new(move || var.with(|v| v.and_then(|v| serde_json::to_string(v).ok()))),
            Arc::new(move |s| {
                var.set(serde_json::from_str::<T>(s).map_err(|e| e.to_string())?);
                Ok(())
            }),
        )
    }

    fn register(
        mut self,
        name: &'static str,
        key: &'static str,
        encode: Encode,
        decode: Decode,
    ) -> Propagator {
        // Refused here, where the mistake is made: a key that is not a token
        // would be sent and then dropped by every receiver, silently.
        if !baggage::is_key(key) {
            let suggested: String = key
                .chars()
                .map(|c| {
                    if baggage::is_key(c.encode_utf8(&mut [0; 4])) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            panic!(
                "context variable {name:?} cannot travel as baggage under the key {key:?}: a W3C \
                 baggage key is an RFC 7230 token (ASCII letters, digits and !#$%&'*+-.^_`|~; no \
                 spaces, commas or non-ASCII letters), so every receiver would drop it. Register \
                 it under a key that is one: `Propagator::with_var_as(\"{suggested}\", &VAR)`"
            );
        }
        // A clone shares the list until it is configured: copy it then.
        let vars = &mut Arc::make_mut(&mut self.reg).vars;
        vars.retain(|t| t.key != key);
        vars.push(Travel {
            name,
            key,
            encode,
            decode,
        });
        self
    }

    /// Registers `var` to travel in a header of its own as well, `header`
    /// (lowercase: `x-request-id`), written with `Display` and read with
    /// `FromStr` — for fleets whose services, proxies and request-id layers
    /// (tower-http's `SetRequestIdLayer`) speak that header rather than
    /// baggage. A variable registered with [`with_var`](Self::with_var) too
    /// travels in both; received in both, the header's value wins.
    ///
    /// On [`inject`](Self::inject), a value that is not a valid header value
    /// (control characters, non-ASCII, surrounding spaces, over
    /// [`MAX_HEADER_BYTES`](super::MAX_HEADER_BYTES)) is not sent; on
    /// [`extract`](Self::extract), a value over
    /// [`MAX_HEADER_BYTES`](super::MAX_HEADER_BYTES), not UTF-8, or that does
    /// not parse is dropped; each with a warning naming the variable and the
    /// header.
    /// Without a value, nothing is written: a header already on the request
    /// stays as it is.
    ///
    /// # Panics
    ///
    /// If `header` is not a lowercase RFC 7230 token, or is `baggage`. The
    /// message names the variable.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<String> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_header("x-request-id", &REQUEST_ID);
    ///
    /// let mut headers = http::HeaderMap::new();
    /// REQUEST_ID.sync_scope("a1b2".to_string(), || p.inject(&mut headers));
    /// assert_eq!(headers["x-request-id"], "a1b2");
    /// assert!(!headers.contains_key("baggage"));
    /// assert_eq!(p.extract(&headers).get(&REQUEST_ID).as_deref(), Some("a1b2"));
    /// ```
    #[must_use]
    pub fn with_header<T>(mut self, header: &'static str, var: &'static ContextVar<T>) -> Propagator
    where
        T: Display + FromStr + Send + Sync + 'static,
        T::Err: Display,
    {
        let name = var.name();
        if !baggage::is_key(header) || header.bytes().any(|b| b.is_ascii_uppercase()) {
            panic!(
                "context variable {name:?} cannot travel in the header {header:?}: a header \
                 name here is a lowercase RFC 7230 token (ASCII letters, digits and \
                 !#$%&'*+-.^_`|~), e.g. `with_header(\"x-request-id\", &VAR)`"
            );
        }
        if header == BAGGAGE {
            panic!(
                "context variable {name:?} cannot travel in a header named \"baggage\": that \
                 header holds the baggage members; register it with `with_var` to travel there"
            );
        }
        let reg = Arc::make_mut(&mut self.reg);
        reg.headers.retain(|t| t.key != header);
        reg.headers.push(Travel {
            name,
            key: header,
            encode: Arc::new(move || var.with(|v| v.map(T::to_string))),
            decode: Arc::new(move |s| {
                var.set(s.parse::<T>().map_err(|e| e.to_string())?);
                Ok(())
            }),
        });
        reg.fields = std::iter::once(BAGGAGE)
            .chain(reg.headers.iter().map(|t| t.key))
            .map(str::to_string)
            .collect();
        self
    }

    /// Whether members of an incoming request's baggage that this
    /// propagator does not register are forwarded on the outgoing requests
    /// made while handling it (default: yes, as OpenTelemetry's baggage
    /// propagator does).
    ///
    /// On the propagator of a [`ServerLayer`](crate::tower::ServerLayer)
    /// (or whoever calls [`extract`](Self::extract)), `false` keeps nothing
    /// to forward; on a client's, `false` sends nothing forwarded, e.g. for
    /// calls that leave your organisation.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let mut incoming = http::HeaderMap::new();
    /// incoming.insert("baggage", "request_id=1,team=blue;ttl=3".parse().unwrap());
    ///
    /// for (forward, sent) in [(true, "request_id=1,team=blue;ttl=3"), (false, "request_id=1")] {
    ///     let p = Propagator::new().with_var(&REQUEST_ID).forward_unknown(forward);
    ///     let mut outgoing = http::HeaderMap::new();
    ///     p.extract(&incoming).run(|| p.inject(&mut outgoing));
    ///     assert_eq!(outgoing["baggage"], sent);
    /// }
    /// ```
    pub fn forward_unknown(mut self, forward: bool) -> Propagator {
        self.forward = forward;
        self
    }

    /// The baggage keys that travel.
    ///
    /// ```
    /// assert!(contextvars::propagation::Propagator::new().keys().is_empty());
    /// ```
    pub fn keys(&self) -> Vec<&'static str> {
        self.reg.vars.iter().map(|t| t.key).collect()
    }

    /// Every header the propagator writes and reads: `baggage`, then those
    /// registered with [`with_header`](Self::with_header).
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_header("x-request-id", &REQUEST_ID);
    /// assert_eq!(p.fields(), ["baggage", "x-request-id"]);
    /// ```
    pub fn fields(&self) -> &[String] {
        &self.reg.fields
    }
}

impl fmt::Debug for Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagator")
            .field("keys", &self.keys())
            .field("forward_unknown", &self.forward)
            .finish()
    }
}
