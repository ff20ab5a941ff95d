//! The header carriers a propagator reads and writes: the [`Extractor`] and
//! [`Injector`] traits, their implementations for `http::HeaderMap`,
//! `HashMap<String, String>` and references, and the name of the `baggage`
//! header.
//!
//! **Invariant:** `set` leaves one value under a name, the one given, or
//! none: a `HeaderMap` that cannot hold the value loses the stale one and
//! warns rather than keep what the caller did not mean to send; several
//! values under one name are read as one, joined with `,`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header name: `baggage`.
pub const BAGGAGE: &str = "baggage";

/// [`BAGGAGE`] as a `HeaderName`: a lookup by `&str` parses the name first,
/// on every request, with or without baggage.
static BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// A header carrier that [`Propagator::extract`](super::Propagator::extract)
/// reads: HTTP headers, gRPC metadata, a message's headers.
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

/// A header carrier that [`Propagator::inject`](super::Propagator::inject)
/// writes. It is read too ([`Extractor`]): `inject` merges its members into
/// a `baggage` header already there rather than overwrite it.
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
            crate::report::warn(&format!(
                "contextvars: header {name:?} not sent: not a valid header name"
            ));
            return;
        };
        match HeaderValue::try_from(value) {
            Ok(value) => {
                self.insert(name.into_owned(), value);
            }
            Err(_) => {
                // What was there is not what the caller meant to send.
                HeaderMap::remove(self, &*name);
                crate::report::warn(&format!(
                    "contextvars: header {name} not sent: not a valid header value"
                ));
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
