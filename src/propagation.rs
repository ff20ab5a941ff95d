//! Context across process boundaries: registered variables travel in the
//! W3C `baggage` header, and optionally each in a header of its own (feature
//! `http`).
//!
//! A [`Propagator`] lists which variables travel, under which baggage key
//! or header, and how their values are written and read (`Display`/`FromStr`,
//! or JSON with feature `serde`). [`Propagator::inject`] writes the current
//! values into any header carrier (an [`Injector`]: `http::HeaderMap`, a
//! `HashMap<String, String>`, a message's headers);
//! [`Propagator::extract`] builds a fresh [`Context`] from one (an
//! [`Extractor`]). [`Propagator::inject_str`] and
//! [`Propagator::extract_str`] are the same for the baggage value alone.
//! Python stops at the process boundary; this is where we do not.
//!
//! # What travels, what is dropped
//!
//! - A registered variable with a value is sent under its key; one without
//!   a value sends nothing (a member of that key already on the request
//!   stays as it is).
//! - Members on an outgoing request that this propagator does not set are
//!   kept as they were, properties included.
//! - Members of an incoming request that this service does not register are
//!   *forwarded*: kept, as received, in the request's context and sent on
//!   every outgoing request made while handling it (as OpenTelemetry's
//!   baggage propagator does), so a variable that A and C register reaches
//!   C through a B that does not. A service opts out with
//!   [`Propagator::forward_unknown(false)`](Propagator::forward_unknown):
//!   on the server side nothing is kept; on a client, nothing is sent.
//! - Both ends keep to the W3C limits (180 members, 8,192 bytes): a member
//!   that does not fit is dropped and costs only itself. Malformed members
//!   and values that do not parse as their variable's type are dropped too.
//!   Everything one header loses is reported in a single `tracing` warning,
//!   with counts and the first few names.
//!
//! - A variable registered with [`Propagator::with_header`] travels in a
//!   header of its own as well (`x-request-id`), its value as `Display`
//!   writes it. A value that is not a valid header value is not sent; a
//!   received one that is over [`MAX_HEADER_BYTES`] or does not parse is
//!   dropped; each with a warning naming the variable and the header.
//!
//! ```
//! use contextvars::propagation::Propagator;
//! use contextvars::ContextVar;
//!
//! static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
//! let p = Propagator::new().with_var(&REQUEST_ID);
//!
//! // Client side: the current value into the outgoing headers.
//! let mut headers = http::HeaderMap::new();
//! REQUEST_ID.sync_scope(42, || p.inject(&mut headers));
//! assert_eq!(headers["baggage"], "request_id=42");
//! // Server side: a fresh context for the request, from its headers.
//! let ctx = p.extract(&headers);
//! assert_eq!(ctx.run(|| REQUEST_ID.get()), Ok(42));
//! ```
//!
//! **Invariant:** `extract` never fails and never panics on input: a member
//! or header that is malformed or does not parse is dropped, and every other
//! registered value still arrives.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Display};
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::baggage::{self, Budget, Dropped};

use crate::{Context, ContextVar};

/// The header name: `baggage`.
pub const BAGGAGE: &str = "baggage";

/// [`BAGGAGE`] as a `HeaderName`: a lookup by `&str` parses the name first,
/// on every request, with or without baggage.
static BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// The longest value a variable's own header may have, received or sent
/// (W3C's limit for a whole baggage header): a longer one is dropped with a
/// warning rather than parsed.
pub const MAX_HEADER_BYTES: usize = 8192;

/// A header carrier that [`Propagator::extract`] reads: HTTP headers,
/// gRPC metadata, a message's headers.
///
/// Names are asked for in lowercase (`baggage`, `x-request-id`); a carrier
/// whose names are case-insensitive (HTTP) matches them as it does.
/// Implemented for `http::HeaderMap` and for a `HashMap<String, String>`
/// keyed by lowercase names (as OpenTelemetry's carriers are). Another
/// carrier takes a few lines:
///
/// ```
/// use std::borrow::Cow;
/// use contextvars::propagation::{Extractor, Injector, Propagator};
/// use contextvars::ContextVar;
///
/// /// A message's headers, as a broker client hands them over.
/// struct Headers(Vec<(String, String)>);
///
/// impl Extractor for Headers {
///     fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
///         let (_, value) = self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
///         Some(Cow::Borrowed(value.as_bytes()))
///     }
/// }
///
/// impl Injector for Headers {
///     fn set(&mut self, name: &str, value: String) {
///         self.remove(name);
///         self.0.push((name.to_string(), value));
///     }
///     fn remove(&mut self, name: &str) {
///         self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
///     }
/// }
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// let p = Propagator::new().with_var(&REQUEST_ID);
/// let mut headers = Headers(vec![("Baggage".into(), "team=blue".into())]);
/// REQUEST_ID.sync_scope(7, || p.inject(&mut headers));
/// assert_eq!(headers.0, [("baggage".to_string(), "team=blue,request_id=7".to_string())]);
/// assert_eq!(p.extract(&headers).get(&REQUEST_ID), Some(7));
/// ```
pub trait Extractor {
    /// The value of the header `name`, as bytes (an HTTP header may hold
    /// any); a carrier that holds several values under one name joins them
    /// with `,`, as HTTP does with a list header. `None` if there is none.
    ///
    /// ```
    /// use contextvars::propagation::Extractor;
    /// let mut headers = http::HeaderMap::new();
    /// headers.append("baggage", "a=1".parse().unwrap());
    /// headers.append("baggage", "b=2".parse().unwrap());
    /// assert_eq!(Extractor::get(&headers, "baggage").as_deref(), Some(&b"a=1,b=2"[..]));
    /// ```
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>>;
}

/// A header carrier that [`Propagator::inject`] writes. It is read too
/// ([`Extractor`]): `inject` merges its members into a `baggage` header
/// already there rather than overwrite it.
///
/// Implemented for `http::HeaderMap` and `HashMap<String, String>`; see
/// [`Extractor`] for another carrier.
///
/// ```
/// use std::collections::HashMap;
/// use contextvars::propagation::Propagator;
/// use contextvars::ContextVar;
///
/// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
/// let p = Propagator::new().with_var(&REQUEST_ID);
/// let mut carrier = HashMap::new();
/// REQUEST_ID.sync_scope(7, || p.inject(&mut carrier));
/// assert_eq!(carrier["baggage"], "request_id=7");
/// ```
pub trait Injector: Extractor {
    /// Replaces every value of the header `name` (lowercase) with `value`.
    /// The propagator hands over only valid header values: visible ASCII,
    /// spaces and tabs.
    ///
    /// ```
    /// use contextvars::propagation::Injector;
    /// let mut headers = http::HeaderMap::new();
    /// Injector::set(&mut headers, "x-request-id", "7".to_string());
    /// assert_eq!(headers["x-request-id"], "7");
    /// ```
    fn set(&mut self, name: &str, value: String);

    /// Removes the header `name` (lowercase), every value of it.
    ///
    /// ```
    /// use contextvars::propagation::Injector;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("baggage", "a=1".parse().unwrap());
    /// Injector::remove(&mut headers, "baggage");
    /// assert!(headers.is_empty());
    /// ```
    fn remove(&mut self, name: &str);
}

/// `baggage`, the one name every request is asked for, without parsing it.
fn header_name(name: &str) -> Option<Cow<'static, HeaderName>> {
    if name == BAGGAGE {
        return Some(Cow::Borrowed(&BAGGAGE_NAME));
    }
    HeaderName::from_bytes(name.as_bytes()).ok().map(Cow::Owned)
}

impl Extractor for HeaderMap {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let name = header_name(name)?;
        let mut values = self.get_all(&*name).iter();
        let first = values.next()?;
        let Some(second) = values.next() else {
            return Some(Cow::Borrowed(first.as_bytes()));
        };
        let mut all = first.as_bytes().to_vec();
        for value in std::iter::once(second).chain(values) {
            all.push(b',');
            all.extend_from_slice(value.as_bytes());
        }
        Some(Cow::Owned(all))
    }
}

impl Injector for HeaderMap {
    fn set(&mut self, name: &str, value: String) {
        let Some(name) = header_name(name) else {
            tracing::warn!("header {name:?} not sent: not a valid header name");
            return;
        };
        match HeaderValue::try_from(value) {
            Ok(value) => {
                self.insert(name.into_owned(), value);
            }
            Err(_) => {
                // What was there is not what the caller meant to send.
                HeaderMap::remove(self, &*name);
                tracing::warn!("header {name} not sent: not a valid header value");
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(name) = header_name(name) {
            HeaderMap::remove(self, &*name);
        }
    }
}

impl<S: BuildHasher> Extractor for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        HashMap::get(self, name).map(|value| Cow::Borrowed(value.as_bytes()))
    }
}

impl<S: BuildHasher> Injector for HashMap<String, String, S> {
    fn set(&mut self, name: &str, value: String) {
        self.insert(name.to_string(), value);
    }

    fn remove(&mut self, name: &str) {
        HashMap::remove(self, name);
    }
}

impl<E: Extractor + ?Sized> Extractor for &E {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        (**self).get(name)
    }
}

impl<E: Extractor + ?Sized> Extractor for &mut E {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        (**self).get(name)
    }
}

impl<I: Injector + ?Sized> Injector for &mut I {
    fn set(&mut self, name: &str, value: String) {
        (**self).set(name, value)
    }

    fn remove(&mut self, name: &str) {
        (**self).remove(name)
    }
}

type Encode = Arc<dyn Fn() -> Option<String> + Send + Sync>;
type Decode = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The members of the incoming baggage that the receiving service does not
/// register, as received and joined with `,`: what its outgoing requests
/// forward. Internal: a context's listing leaves it out.
static FORWARDED: ContextVar<String> = ContextVar::new("baggage (forwarded)").internal();

/// How one variable travels: under `key` (a baggage key, or a header name).
#[derive(Clone)]
struct Travel {
    name: &'static str,
    key: &'static str,
    encode: Encode,
    decode: Decode,
}

/// What a propagator carries; shared by its clones until one is configured.
#[derive(Clone)]
struct Registry {
    /// In the `baggage` header, by baggage key.
    vars: Vec<Travel>,
    /// Each in a header of its own, by header name.
    headers: Vec<Travel>,
    /// Every header name it writes: `baggage`, then those of `headers`.
    fields: Vec<String>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            vars: Vec::new(),
            headers: Vec::new(),
            fields: vec![BAGGAGE.to_string()],
        }
    }
}

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
    reg: Arc<Registry>,
    forward: bool,
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
    /// [`MAX_HEADER_BYTES`]) is not sent; on [`extract`](Self::extract), a
    /// value over [`MAX_HEADER_BYTES`], not UTF-8, or that does not parse is
    /// dropped; each with a warning naming the variable and the header.
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

    /// Writes the current values of the registered variables into the
    /// `baggage` header of `carrier`, keeping every member it does not set
    /// as it was (properties included), then the members forwarded from the
    /// request being handled; then the variables that travel in headers of
    /// their own ([`with_header`](Self::with_header)). The header keeps to
    /// the W3C limits: a member that does not fit is dropped, with one
    /// warning naming it.
    ///
    /// `carrier` is any [`Injector`]: an `http::HeaderMap`, a
    /// `HashMap<String, String>`, a message's headers.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("baggage", "other=1;ttl=3;private".parse().unwrap());
    /// USER.sync_scope("ada l".to_string(), || p.inject(&mut headers));
    /// assert_eq!(headers["baggage"], "other=1;ttl=3;private,user=ada%20l");
    /// ```
    pub fn inject<I: Injector + ?Sized>(&self, carrier: &mut I) {
        let existing = carrier.get(BAGGAGE);
        let had = existing.is_some();
        let text = self.baggage_text(existing.as_deref().unwrap_or_default());
        if !text.is_empty() {
            carrier.set(BAGGAGE, text);
        } else if had {
            carrier.remove(BAGGAGE);
        }
        self.inject_headers(carrier);
    }

    /// The `baggage` value to send: the current values of the registered
    /// variables and the members forwarded from the request being handled,
    /// within the W3C limits; `None` if there is nothing to send. The
    /// variables of [`with_header`](Self::with_header) are not in it.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// assert_eq!(p.inject_str(), None);
    /// assert_eq!(USER.sync_scope("ada l".into(), || p.inject_str()).as_deref(), Some("user=ada%20l"));
    /// ```
    pub fn inject_str(&self) -> Option<String> {
        Some(self.baggage_text(b"")).filter(|text| !text.is_empty())
    }

    /// `existing` (a baggage header) with the current values and the
    /// forwarded members merged in, as `inject` writes it.
    fn baggage_text(&self, existing: &[u8]) -> String {
        let ours = self.current();
        if existing.is_empty() && ours.is_empty() && !self.forwards_any() {
            return String::new();
        }
        let sets = |key: &str| ours.iter().any(|(k, _)| *k == key);
        let mut dropped = Dropped::default();
        // (text as received, key)
        let mut kept = Vec::new();
        baggage::each_member(existing, &mut dropped, |m, _| kept.push((m.raw, m.key)));
        let mut out = Header::default();
        for (raw, key) in &kept {
            if !sets(key) {
                out.push(raw, &mut dropped);
            }
        }
        for (key, value) in &ours {
            out.push(
                &format!("{key}={}", baggage::encode_value(value)),
                &mut dropped,
            );
        }
        self.each_forwarded(|raw| {
            let key = raw.split_once('=').map_or(raw, |(k, _)| k).trim();
            if !sets(key) && !kept.iter().any(|(_, k)| *k == key) {
                out.push(raw, &mut dropped);
            }
        });
        dropped.warn("sent");
        out.text
    }

    /// Whether the current context holds members to forward, and this
    /// propagator forwards them.
    fn forwards_any(&self) -> bool {
        self.forward && FORWARDED.with(|f| f.is_some_and(|f| !f.is_empty()))
    }

    /// The variables of [`with_header`](Self::with_header), each with a
    /// value that is a valid header value, into `carrier`.
    fn inject_headers<I: Injector + ?Sized>(&self, carrier: &mut I) {
        for travel in &self.reg.headers {
            let Some(value) = (travel.encode)() else {
                continue;
            };
            match check_header_value(&value) {
                Ok(()) => carrier.set(travel.key, value),
                Err(why) => tracing::warn!(
                    variable = travel.name,
                    header = travel.key,
                    "context variable {:?} not sent in header {}: {why}",
                    travel.name,
                    travel.key,
                ),
            }
        }
    }

    /// A fresh context holding the registered variables found in
    /// `carrier`'s `baggage` header(s) and in their own headers
    /// ([`with_header`](Self::with_header)), and (unless
    /// [`forward_unknown(false)`](Self::forward_unknown)) the baggage
    /// members it does not register, for [`inject`](Self::inject) to
    /// forward. Members and values that are bad, do not fit the limits or
    /// do not parse are dropped, with a warning; nothing panics.
    ///
    /// `carrier` is any [`Extractor`]: an `http::HeaderMap`, a
    /// `HashMap<String, String>`, a message's headers.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
    /// let p = Propagator::new().with_var(&REQUEST_ID);
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("baggage", "request_id=not-a-number".parse().unwrap());
    /// assert!(p.extract(&headers).is_empty());
    /// ```
    pub fn extract<E: Extractor + ?Sized>(&self, carrier: &E) -> Context {
        let received = carrier.get(BAGGAGE);
        if received.is_none() && self.reg.headers.is_empty() {
            return Context::new();
        }
        let mut dropped = Dropped::default();
        let ctx = self.seed(|seeder| {
            if let Some(received) = &received {
                baggage::each_member(received, &mut dropped, |m, dropped| {
                    seeder.member(m.key, &m.value, || m.raw, dropped);
                });
            }
            // After the baggage: a variable's own header wins over its member.
            for travel in &self.reg.headers {
                if let Some(value) = carrier.get(travel.key) {
                    decode_header(travel, &value);
                }
            }
        });
        dropped.warn("received");
        ctx
    }

    /// A fresh context from a received `baggage` value, as
    /// [`extract`](Self::extract) builds it from the header.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// assert_eq!(p.extract_str("user=ada%20l,team=blue").get(&USER).as_deref(), Some("ada l"));
    /// ```
    pub fn extract_str(&self, baggage: &str) -> Context {
        let mut dropped = Dropped::default();
        let ctx = self.seed(|seeder| {
            baggage::each_member(baggage.as_bytes(), &mut dropped, |m, dropped| {
                seeder.member(m.key, &m.value, || m.raw, dropped);
            });
        });
        dropped.warn("received");
        ctx
    }

    /// A fresh context from the members `feed` hands to its [`Seeder`]:
    /// registered ones decoded into their variables, the rest kept to
    /// forward. `feed` runs inside the fresh context, where the decoded
    /// values are set.
    pub(crate) fn seed(&self, feed: impl FnOnce(&mut Seeder<'_>)) -> Context {
        // Seeding sets at most one entry per registered variable and one for
        // the forwarded members: a root with that much room is filled
        // without being regrown (an allocation and a copy per entry).
        let most = self.reg.vars.len() + self.reg.headers.len() + usize::from(self.forward);
        let mut ctx = Context::with_room(most.min(crate::map::FLAT_MAX));
        ctx.run_exclusive(|| {
            let mut seeder = Seeder {
                propagator: self,
                forwarded: String::new(),
            };
            feed(&mut seeder);
            if !seeder.forwarded.is_empty() {
                FORWARDED.set(seeder.forwarded);
            }
        });
        ctx
    }

    /// The current values of the registered variables (key, value), each
    /// with a value.
    pub(crate) fn current(&self) -> Vec<(&'static str, String)> {
        self.reg
            .vars
            .iter()
            .filter_map(|t| Some((t.key, (t.encode)()?)))
            .collect()
    }

    /// Calls `f` with each member the current context forwards (text as
    /// received), unless this propagator does not forward.
    pub(crate) fn each_forwarded(&self, mut f: impl FnMut(&str)) {
        if self.forward {
            FORWARDED.with(|forwarded| {
                forwarded
                    .into_iter()
                    .flat_map(|s| s.split(','))
                    .for_each(&mut f)
            });
        }
    }
}

/// Received members on their way into a fresh context (see
/// [`Propagator::seed`]).
pub(crate) struct Seeder<'a> {
    propagator: &'a Propagator,
    /// The members to forward, as received, joined with `,`.
    forwarded: String,
}

impl Seeder<'_> {
    /// One received member: its key, its decoded value, and its text as
    /// received (asked for only if the member is forwarded). A value that
    /// does not parse is counted in `dropped`.
    pub(crate) fn member<R: AsRef<str>>(
        &mut self,
        key: &str,
        value: &str,
        raw: impl FnOnce() -> R,
        dropped: &mut Dropped,
    ) {
        match self.propagator.reg.vars.iter().find(|t| t.key == key) {
            Some(travel) => {
                if let Err(why) = (travel.decode)(value) {
                    dropped.unparsed(key, &why);
                }
            }
            None if self.propagator.forward => {
                if !self.forwarded.is_empty() {
                    self.forwarded.push(',');
                }
                self.forwarded.push_str(raw().as_ref());
            }
            None => {}
        }
    }
}

/// An outgoing header being built within the W3C limits.
#[derive(Default)]
struct Header {
    text: String,
    budget: Budget,
}

impl Header {
    fn push(&mut self, member: &str, dropped: &mut Dropped) {
        if !self.budget.take(member.len()) {
            dropped.over_limits(member);
            return;
        }
        if !self.text.is_empty() {
            self.text.push(',');
        }
        self.text.push_str(member);
    }
}

/// Why `value` cannot be sent as a header value, if it cannot: what
/// `HeaderValue` would refuse, and what a receiver would read otherwise
/// (surrounding whitespace is not part of an HTTP field value).
fn check_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_HEADER_BYTES}-byte limit",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c == '\t' || (' '..='~').contains(&c)))
    {
        return Err(format!("{c:?} is not visible ASCII, a space or a tab"));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("leading or trailing whitespace would not arrive".to_string());
    }
    Ok(())
}

/// A variable's own header, received, into the variable (the context being
/// seeded is current); a value that cannot be used is dropped with a
/// warning naming the variable and the header.
fn decode_header(travel: &Travel, value: &[u8]) {
    let result = if value.len() > MAX_HEADER_BYTES {
        Err(format!(
            "{} bytes, over the {MAX_HEADER_BYTES}-byte limit",
            value.len()
        ))
    } else {
        match std::str::from_utf8(value) {
            Ok(text) => (travel.decode)(text.trim_matches([' ', '\t']))
                .map_err(|why| format!("value does not parse: {why}")),
            Err(_) => Err("not UTF-8".to_string()),
        }
    };
    if let Err(why) = result {
        tracing::warn!(
            variable = travel.name,
            header = travel.key,
            "context variable {:?} not received from header {}: {why}",
            travel.name,
            travel.key,
        );
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
