//! Context across process boundaries: registered variables travel in the
//! W3C `baggage` HTTP header (feature `http`).
//!
//! A [`Propagator`] lists which variables travel, under which baggage key,
//! and how their values are written and read (`Display`/`FromStr`, or JSON
//! with feature `serde`). [`Propagator::inject`] writes the current values
//! into a `HeaderMap`; [`Propagator::extract`] builds a fresh [`Context`]
//! from one. Python stops at the process boundary; this is where we do not.
//!
//! **Invariant:** `extract` never fails and never panics on input: a member
//! that is malformed or does not parse is dropped with a `tracing` warning,
//! and every other registered member still arrives.

use std::fmt::{self, Display};
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::baggage;
use crate::{Context, ContextVar};

/// The header name: `baggage`.
pub const BAGGAGE: &str = "baggage";

type Encode = Box<dyn Fn() -> Option<String> + Send + Sync>;
type Decode = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

struct Travel {
    key: &'static str,
    encode: Encode,
    decode: Decode,
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
/// REQUEST_ID.scope(42, || propagator.inject(&mut headers));
/// assert_eq!(headers["baggage"], "request_id=42");
///
/// // Server side: a fresh context seeded from the incoming headers.
/// let ctx = propagator.extract(&headers);
/// assert_eq!(ctx.get(&REQUEST_ID), Some(42));
/// ```
#[derive(Clone, Default)]
pub struct Propagator {
    vars: Arc<Vec<Travel>>,
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
            key,
            Box::new(move || var.with(|v| v.map(T::to_string))),
            Box::new(move |s| {
                let value = s.parse::<T>().map_err(|e| e.to_string())?;
                var.set(value);
                Ok(())
            }),
        )
    }

    /// Registers `var` under its own name, travelling as JSON.
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
    /// CALLER.scope(Caller { id: 1, name: "a b".into() }, || p.inject(&mut headers));
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
            Box::new(move || var.with(|v| v.and_then(|v| serde_json::to_string(v).ok()))),
            Box::new(move |s| {
                var.set(serde_json::from_str::<T>(s).map_err(|e| e.to_string())?);
                Ok(())
            }),
        )
    }

    fn register(mut self, key: &'static str, encode: Encode, decode: Decode) -> Propagator {
        let vars =
            Arc::get_mut(&mut self.vars).expect("a propagator is configured before it is shared");
        vars.retain(|t| t.key != key);
        vars.push(Travel {
            key,
            encode,
            decode,
        });
        self
    }

    /// The baggage keys that travel.
    ///
    /// ```
    /// assert!(contextvars::propagation::Propagator::new().keys().is_empty());
    /// ```
    pub fn keys(&self) -> Vec<&'static str> {
        self.vars.iter().map(|t| t.key).collect()
    }

    /// Writes the current values of the registered variables into the
    /// `baggage` header, keeping members of other keys already there.
    ///
    /// ```
    /// use contextvars::propagation::Propagator;
    /// use contextvars::ContextVar;
    ///
    /// static USER: ContextVar<String> = ContextVar::new("user");
    /// let p = Propagator::new().with_var(&USER);
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("baggage", "other=1".parse().unwrap());
    /// USER.scope("ada l".to_string(), || p.inject(&mut headers));
    /// assert_eq!(headers["baggage"], "other=1,user=ada%20l");
    /// ```
    pub fn inject(&self, headers: &mut HeaderMap) {
        let mut members: Vec<(String, String)> = collect(headers)
            .into_iter()
            .filter(|m| !self.vars.iter().any(|t| t.key == m.key))
            .map(|m| (m.key, m.value))
            .collect();
        members.extend(
            self.vars
                .iter()
                .filter_map(|t| Some((t.key.to_string(), (t.encode)()?))),
        );
        headers.remove(BAGGAGE);
        if members.is_empty() {
            return;
        }
        let header = baggage::encode(members.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match HeaderValue::from_str(&header) {
            Ok(value) => {
                headers.insert(BAGGAGE, value);
            }
            Err(_) => {
                tracing::warn!("baggage not sent: the encoded header is not a valid header value")
            }
        }
    }

    /// A fresh context holding the registered variables found in the
    /// `baggage` header(s). Members that are bad or do not parse are dropped
    /// with a warning; nothing panics.
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
    pub fn extract(&self, headers: &HeaderMap) -> Context {
        let ctx = Context::new();
        let members = collect(headers);
        ctx.run(|| {
            for member in &members {
                let Some(travel) = self.vars.iter().find(|t| t.key == member.key) else { continue };
                if let Err(why) = (travel.decode)(&member.value) {
                    tracing::warn!(member = %member.key, "baggage member dropped: value does not parse: {why}");
                }
            }
        });
        ctx
    }
}

/// Every member of every `baggage` header, with the limits applied to the
/// whole.
fn collect(headers: &HeaderMap) -> Vec<baggage::Member> {
    let joined: Vec<u8> = headers
        .get_all(BAGGAGE)
        .iter()
        .fold(Vec::new(), |mut all, value| {
            if !all.is_empty() {
                all.push(b',');
            }
            all.extend_from_slice(value.as_bytes());
            all
        });
    baggage::parse_bytes(&joined)
}

impl fmt::Debug for Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagator")
            .field("keys", &self.keys())
            .finish()
    }
}
