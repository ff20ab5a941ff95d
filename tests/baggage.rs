//! The W3C Baggage parser and the propagator: the specification's examples,
//! every kind of bad input (each bad member dropped, good ones kept, nothing
//! panics), the limits, and a round-trip property.
#![cfg(feature = "http")]

use contextvars::ContextVar;
use contextvars::baggage::{MAX_BYTES, MAX_MEMBERS, Member, encode, parse, parse_bytes};
use contextvars::propagation::Propagator;
use proptest::prelude::*;

mod common;

fn keys(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.key.as_str()).collect()
}

#[test]
fn w3c_examples() {
    let m = parse("key1=value1,key2=value2");
    assert_eq!(keys(&m), ["key1", "key2"]);
    assert_eq!(m[1].value, "value2");

    let m = parse("key1 = value1, key2 =  value2 ");
    assert_eq!(
        (m[0].value.as_str(), m[1].value.as_str()),
        ("value1", "value2"),
        "optional whitespace"
    );

    let m = parse(
        "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue",
    );
    assert_eq!(keys(&m), ["key1", "key2", "key3"]);
    assert_eq!(m[0].properties, ["property1", "property2"]);
    assert_eq!(m[2].properties, ["propertyKey=propertyValue"]);

    let m = parse("userId=alice,serverNode=DF%2028,isProduction=false");
    assert_eq!(m[1].value, "DF 28", "percent-decoded");

    let m = parse("key=%E4%BD%A0%E5%A5%BD");
    assert_eq!(m[0].value, "你好", "UTF-8 through percent-encoding");
}

#[test]
fn each_bad_member_is_dropped_and_the_good_ones_kept() {
    let cases = [
        ("good=1,novalue,also=2", vec!["good", "also"]), // no '='
        ("good=1,bad key=x,also=2", vec!["good", "also"]), // key not a token
        ("good=1,=x,also=2", vec!["good", "also"]),      // empty key
        ("good=1,k=%zz,also=2", vec!["good", "also"]),   // bad percent-escape
        ("good=1,k=abc%2,also=2", vec!["good", "also"]), // truncated escape
        ("good=1,k=%FF%FE,also=2", vec!["good", "also"]), // not UTF-8 once decoded
        ("good=1,k=a\"b,also=2", vec!["good", "also"]),  // '"' not allowed in a value
        ("good=1,k=a\\b,also=2", vec!["good", "also"]),  // '\' not allowed
        ("good=1,,  ,also=2", vec!["good", "also"]),     // empty members
        ("", vec![]),
    ];
    for (header, expected) in cases {
        assert_eq!(keys(&parse(header)), expected, "{header:?}");
    }
    assert_eq!(
        keys(&parse_bytes(b"good=1,k=\xff\xfe,also=2")),
        ["good", "also"],
        "invalid UTF-8 on the wire"
    );
    // A sign is not a hex digit (`from_str_radix` alone would accept "%+1").
    assert_eq!(keys(&parse("good=1,k=%+1,also=2")), ["good", "also"]);
}

#[test]
fn members_past_the_limits_are_dropped() {
    let many: Vec<String> = (0..MAX_MEMBERS + 20).map(|i| format!("k{i}=v")).collect();
    let m = parse(&many.join(","));
    assert_eq!(m.len(), MAX_MEMBERS);
    assert_eq!(m.last().unwrap().key, format!("k{}", MAX_MEMBERS - 1));

    let big = "x".repeat(MAX_BYTES - 4); // with "a=1," the header passes 8,192 bytes inside `big`
    let m = parse(&format!("a=1,big={big},after=2"));
    assert_eq!(
        keys(&m),
        ["a"],
        "the member that crosses 8,192 bytes and all after it are dropped"
    );
    let m = parse(&format!("big={}", "y".repeat(MAX_BYTES)));
    assert!(m.is_empty());
}

#[test]
fn the_propagator_keeps_good_values_when_others_do_not_parse() {
    static ID: ContextVar<u64> = ContextVar::new("request_id");
    static USER: ContextVar<String> = ContextVar::new("user");
    let p = Propagator::new().with_var(&ID).with_var(&USER);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "baggage",
        "request_id=nope, user=ada, unrelated=1".parse().unwrap(),
    );
    let ctx = p.extract(&headers);
    assert_eq!(ctx.get(&ID), None, "a value that does not parse is dropped");
    assert_eq!(ctx.get(&USER), Some("ada".to_string()));
    assert_eq!(ctx.len(), 1);

    // Several baggage headers are one list.
    let mut headers = http::HeaderMap::new();
    headers.append("baggage", "request_id=5".parse().unwrap());
    headers.append("baggage", "user=bo".parse().unwrap());
    let ctx = p.extract(&headers);
    assert_eq!(
        (ctx.get(&ID), ctx.get(&USER)),
        (Some(5), Some("bo".to_string()))
    );
}

#[test]
fn bad_members_are_reported_by_name() {
    let buf = common::Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // tracing caches each callsite's interest process-wide, computed by
        // the first thread to reach it: a sibling test parsing bad baggage
        // with no subscriber can pin these warnings to "never". Reaching
        // them here first and then rebuilding the cache (now that every one
        // is registered) makes the parse below reach this subscriber.
        parse("ok=1,broken key=2,k=%zz");
        tracing::callsite::rebuild_interest_cache();
        parse("ok=1,broken key=2,k=%zz");
    });
    let out = buf.text();
    assert!(
        out.contains("broken key=2") && out.contains("key is not a token"),
        "{out}"
    );
    assert!(
        out.contains("k=%zz") && out.contains("percent-escape"),
        "{out}"
    );
    assert!(!out.contains("ok=1"), "good members are not reported");
}

proptest! {
    #[test]
    fn registered_values_round_trip(id in any::<u64>(), user in any::<String>(), tenant in "[a-z]{0,12}") {
        static ID: ContextVar<u64> = ContextVar::new("request_id");
        static USER: ContextVar<String> = ContextVar::new("user");
        static TENANT: ContextVar<String> = ContextVar::new("tenant");
        let p = Propagator::new().with_var(&ID).with_var(&USER).with_var_as("t", &TENANT);
        let mut headers = http::HeaderMap::new();
        contextvars::Context::new().run(|| {
            ID.set(id);
            USER.set(user.clone());
            TENANT.set(tenant.clone());
            p.inject(&mut headers);
        });
        let ctx = p.extract(&headers);
        prop_assert_eq!(ctx.get(&ID), Some(id));
        prop_assert_eq!(ctx.get(&USER), Some(user));
        prop_assert_eq!(ctx.get(&TENANT), Some(tenant));
    }

    #[test]
    fn encode_then_parse_is_identity(pairs in prop::collection::vec(("[A-Za-z0-9_.-]{1,8}", any::<String>()), 0..10)) {
        let header = encode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let parsed: Vec<(String, String)> = parse(&header).into_iter().map(|m| (m.key, m.value)).collect();
        prop_assert_eq!(parsed, pairs);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_bytes(&bytes);
    }
}
