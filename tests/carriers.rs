//! Propagation over any header carrier: `http::HeaderMap`,
//! `HashMap<String, String>`, a carrier of the user's own, and the string
//! form all carry the same baggage; variables in headers of their own
//! (`x-request-id`) next to it, with what is refused and what is dropped.
#![cfg(feature = "http")]

use std::borrow::Cow;
use std::collections::HashMap;

use contextvars::ContextVar;
use contextvars::propagation::{Extractor, Injector, MAX_HEADER_BYTES, Propagator};

mod common;

static REQUEST_ID: ContextVar<u64> = ContextVar::new("request_id");
static USER: ContextVar<String> = ContextVar::new("user");
static TRACE_ID: ContextVar<String> = ContextVar::new("trace_id");

fn propagator() -> Propagator {
    Propagator::new().with_var(&REQUEST_ID).with_var(&USER)
}

/// A broker message's headers: names as sent, several values per name.
#[derive(Default, Debug)]
struct Message(Vec<(String, String)>);

impl Extractor for Message {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| Cow::Owned(values.join(",").into_bytes()))
    }
}

impl Injector for Message {
    fn set(&mut self, name: &str, value: String) {
        self.remove(name);
        self.0.push((name.to_string(), value));
    }

    fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

#[test]
fn every_carrier_carries_the_same_baggage() {
    let p = propagator();
    let existing = "team=blue;ttl=3,user=old";
    let mut headers = http::HeaderMap::new();
    headers.insert("baggage", existing.parse().unwrap());
    let mut map = HashMap::from([("baggage".to_string(), existing.to_string())]);
    let mut message = Message(vec![("Baggage".into(), existing.into())]);
    contextvars::Context::new().run(|| {
        REQUEST_ID.set(7);
        USER.set("ada l".into());
        p.inject(&mut headers);
        p.inject(&mut map);
        p.inject(&mut message);
    });
    let sent = "team=blue;ttl=3,request_id=7,user=ada%20l";
    assert_eq!(headers["baggage"], sent);
    assert_eq!(map["baggage"], sent);
    assert_eq!(message.0, [("baggage".to_string(), sent.to_string())]);

    for ctx in [p.extract(&headers), p.extract(&map), p.extract(&message)] {
        assert_eq!(ctx.get(&REQUEST_ID), Some(7));
        assert_eq!(ctx.get(&USER).as_deref(), Some("ada l"));
        // The unknown member is forwarded, whichever carrier it came in.
        let mut out = HashMap::new();
        ctx.run(|| p.inject(&mut out));
        assert_eq!(out["baggage"], "request_id=7,user=ada%20l,team=blue;ttl=3");
    }
}

#[test]
fn several_values_of_one_header_are_one_list_in_every_carrier() {
    let p = propagator();
    let mut headers = http::HeaderMap::new();
    headers.append("baggage", "request_id=1".parse().unwrap());
    headers.append("baggage", "user=u".parse().unwrap());
    let message = Message(vec![
        ("baggage".into(), "request_id=1".into()),
        ("BAGGAGE".into(), "user=u".into()),
    ]);
    for ctx in [p.extract(&headers), p.extract(&message)] {
        assert_eq!(
            (ctx.get(&REQUEST_ID), ctx.get(&USER).as_deref()),
            (Some(1), Some("u"))
        );
    }
}

#[test]
fn the_string_form_is_what_the_header_holds() {
    let p = propagator();
    let upstream = p.extract_str("request_id=3,vendor=x;p=1,user=%E4%BD%A0");
    assert_eq!(upstream.get(&REQUEST_ID), Some(3));
    assert_eq!(upstream.get(&USER).as_deref(), Some("你"));
    let (text, mut headers) = upstream.run(|| {
        let mut headers = http::HeaderMap::new();
        p.inject(&mut headers);
        (p.inject_str(), headers)
    });
    assert_eq!(
        text.as_deref(),
        Some("request_id=3,user=%E4%BD%A0,vendor=x;p=1")
    );
    assert_eq!(headers["baggage"], text.unwrap().as_str());
    // Nothing to send: no value, and an existing header of bad members only
    // is removed rather than sent on.
    assert_eq!(p.inject_str(), None);
    headers.insert("baggage", "bad key=1".parse().unwrap());
    p.inject(&mut headers);
    assert!(!headers.contains_key("baggage"));
}

#[test]
fn a_variable_travels_in_a_header_of_its_own_next_to_baggage() {
    let p = propagator().with_header("x-request-id", &REQUEST_ID);
    assert_eq!(p.fields(), ["baggage", "x-request-id"]);
    let mut headers = http::HeaderMap::new();
    let mut map = HashMap::new();
    REQUEST_ID.sync_scope(12, || {
        p.inject(&mut headers);
        p.inject(&mut map);
    });
    assert_eq!(headers["x-request-id"], "12");
    assert_eq!(headers["baggage"], "request_id=12");
    assert_eq!(map["x-request-id"], "12");

    // Only the header: what a peer that knows no baggage sends.
    let only =
        http::HeaderMap::from_iter([("x-request-id".parse().unwrap(), "5".parse().unwrap())]);
    assert_eq!(p.extract(&only).get(&REQUEST_ID), Some(5));
    // Both, differing: the header wins.
    let mut both = only.clone();
    both.insert("baggage", "request_id=4".parse().unwrap());
    assert_eq!(p.extract(&both).get(&REQUEST_ID), Some(5));
    // HTTP's optional whitespace around a field value is not the value's.
    let spaced = HashMap::from([("x-request-id".to_string(), " 6\t".to_string())]);
    assert_eq!(p.extract(&spaced).get(&REQUEST_ID), Some(6));

    // No value: a header already there stays as it is.
    let mut outgoing = only.clone();
    contextvars::Context::new().run(|| p.inject(&mut outgoing));
    assert_eq!(outgoing["x-request-id"], "5");
}

#[test]
fn a_bad_header_value_is_dropped_with_a_warning_naming_the_variable() {
    let p = propagator()
        .with_header("x-request-id", &REQUEST_ID)
        .with_header("x-trace-id", &TRACE_ID);
    let cases: [(&[u8], &str); 3] = [
        (b"not-a-number", "value does not parse: invalid digit"),
        (b"\xff1", "not UTF-8"),
        (&[b'1'; MAX_HEADER_BYTES + 1], "over the 8192-byte limit"),
    ];
    for (bad, why) in cases {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", http::HeaderValue::from_bytes(bad).unwrap());
        headers.insert("x-trace-id", "t1".parse().unwrap());
        headers.insert("baggage", "user=u".parse().unwrap());
        let mut ctx = None;
        let out = common::logged(|| ctx = Some(p.extract(&headers)));
        let ctx = ctx.unwrap();
        assert_eq!(ctx.get(&REQUEST_ID), None, "{why}");
        assert_eq!(
            (ctx.get(&TRACE_ID).as_deref(), ctx.get(&USER).as_deref()),
            (Some("t1"), Some("u")),
            "the others still arrive ({why})"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("WARN")
                && out.contains(
                    r#"context variable "request_id" not received from header x-request-id"#
                )
                && out.contains(why),
            "{out}"
        );
    }
}

#[test]
fn a_value_that_is_not_a_header_value_is_not_sent() {
    let p = Propagator::new().with_header("x-trace-id", &TRACE_ID);
    for (bad, why) in [
        ("a\nb", r#"'\n' is not visible ASCII"#),
        ("café", r#"'é' is not visible ASCII"#),
        (" a", "leading or trailing whitespace"),
        (
            &*"x".repeat(MAX_HEADER_BYTES + 1),
            "over the 8192-byte limit",
        ),
    ] {
        let mut headers = http::HeaderMap::new();
        let out =
            common::logged(|| TRACE_ID.sync_scope(bad.to_string(), || p.inject(&mut headers)));
        assert!(headers.is_empty(), "{why}");
        assert!(
            out.contains(r#"context variable "trace_id" not sent in header x-trace-id"#)
                && out.contains(why),
            "{out}"
        );
    }
}

#[test]
fn header_names_that_cannot_be_used_are_refused_naming_the_variable() {
    for (header, says) in [
        ("X-Request-Id", "lowercase RFC 7230 token"),
        ("x request", "lowercase RFC 7230 token"),
        ("", "lowercase RFC 7230 token"),
        ("baggage", "holds the baggage members"),
    ] {
        let err = std::panic::catch_unwind(|| Propagator::new().with_header(header, &REQUEST_ID))
            .expect_err(header);
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains(r#"context variable "request_id""#) && msg.contains(says),
            "{msg}"
        );
    }
}

#[test]
fn registering_a_header_again_replaces_it() {
    static OTHER: ContextVar<u64> = ContextVar::new("other");
    let p = Propagator::new()
        .with_header("x-id", &REQUEST_ID)
        .with_header("x-id", &OTHER);
    assert_eq!(p.fields(), ["baggage", "x-id"]);
    let headers = HashMap::from([("x-id".to_string(), "3".to_string())]);
    let ctx = p.extract(&headers);
    assert_eq!((ctx.get(&REQUEST_ID), ctx.get(&OTHER)), (None, Some(3)));
}
