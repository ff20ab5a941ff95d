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
        ["a", "after"],
        "the member that crosses 8,192 bytes is dropped, and costs only itself"
    );
    // Exactly at the limit: "a=1," + "b=" + filler = 8,192 bytes is kept.
    let fill = "z".repeat(MAX_BYTES - 6);
    assert_eq!(keys(&parse(&format!("a=1,b={fill}"))), ["a", "b"]);
    assert_eq!(keys(&parse(&format!("a=1,b={fill}z"))), ["a"]);
    let m = parse(&format!("big={}", "y".repeat(MAX_BYTES)));
    assert!(m.is_empty());
}

/// The edges of the parser that borrows from the header (values decoded
/// only when they hold an escape, members forwarded as the slice received).
#[test]
fn percent_escapes_decode_in_either_case_and_bad_ones_drop_only_their_member() {
    let m = parse("a=%2c%2C,b=x%e2%82%ACy,c=%C3%A9,d=100%25,e=v=w");
    let values: Vec<&str> = m.iter().map(|m| m.value.as_str()).collect();
    assert_eq!(values, [",,", "x€y", "é", "100%", "v=w"]);
    for bad in [
        "k=%",
        "k=%4",
        "k=a%4g",
        "k=%C3",
        "k=%FF",
        "k=%C3%28",
        "k=a b",
        "k=a\u{7f}",
    ] {
        assert_eq!(
            keys(&parse(&format!("x=1,{bad},y=2"))),
            ["x", "y"],
            "{bad:?}"
        );
    }
}

#[test]
fn whitespace_around_separators_is_not_part_of_keys_values_or_properties() {
    let m = parse(" \tk1 \t= \tv1 \t; p1 ;  p2 = x \t,\tk2=v2 ,\u{a0}k3\u{a0}=\u{2003}v3\u{3000}");
    assert_eq!(
        keys(&m),
        ["k1", "k2", "k3"],
        "Unicode whitespace trimmed too"
    );
    assert_eq!(
        m.iter().map(|m| m.value.as_str()).collect::<Vec<_>>(),
        ["v1", "v2", "v3"]
    );
    assert_eq!(m[0].properties, ["p1", "p2 = x"]);
    // Whitespace inside a key or a value is not trimmed away: dropped.
    assert_eq!(keys(&parse("a b=1,c=d e,f=1")), ["f"]);
    // U+000B is whitespace to `str::trim`, not to `u8::is_ascii_whitespace`.
    assert_eq!(keys(&parse("\u{b}k=v\u{b}")), ["k"]);
}

#[test]
fn properties_and_empty_members() {
    let m = parse("k=v;;p; ;q=1;,j=w;");
    assert_eq!(keys(&m), ["k", "j"]);
    assert_eq!(m[0].properties, ["p", "q=1"]);
    assert!(m[1].properties.is_empty());
    // The `=` must come before the first `;`: here the pair is `k` alone.
    assert!(parse("k;p=v").is_empty());
    assert!(parse(";k=v").is_empty());
    // Empty members are skipped, not reported.
    assert_eq!(keys(&parse(",, ,\t,k=v,,")), ["k"]);
    assert_eq!(keys(&parse("k=")), ["k"], "an empty value is a value");
    assert_eq!(parse("k=")[0].value, "");
}

#[test]
fn a_member_that_is_not_utf8_costs_only_itself_next_to_non_ascii_ones() {
    // The header is not UTF-8 as a whole, so it is checked member by
    // member: the one before the bad bytes keeps its non-ASCII property.
    let m = parse_bytes(b"a=1;caf\xc3\xa9,b=\xff,c=3;\xe2\x82\xac");
    assert_eq!(keys(&m), ["a", "c"]);
    assert_eq!(
        (m[0].properties.as_slice(), m[1].properties.as_slice()),
        (&["café".to_string()][..], &["€".to_string()][..])
    );
    // A value that is UTF-8 on the wire but not ASCII is not a baggage value.
    assert!(parse("k=é").is_empty());
}

#[test]
fn a_member_exactly_at_the_byte_limit_is_kept_counted_as_received() {
    let at = format!("k={}", "x".repeat(MAX_BYTES - 2));
    assert_eq!(keys(&parse(&at)), ["k"]);
    assert_eq!(
        keys(&parse(&format!("  {at} \t,"))),
        ["k"],
        "outer whitespace is not counted"
    );
    assert!(parse(&format!("{at}x")).is_empty());
    // The limit counts the member as received, escapes included, not decoded.
    let escaped = format!("k={}", "%41".repeat((MAX_BYTES - 2) / 3));
    assert_eq!(escaped.len(), MAX_BYTES);
    let m = parse(&escaped);
    assert_eq!(m[0].value, "A".repeat((MAX_BYTES - 2) / 3));
    assert!(parse(&format!("{escaped}B")).is_empty());
    // Properties count too.
    let with_property = format!("k={};p", "x".repeat(MAX_BYTES - 4));
    assert_eq!(keys(&parse(&with_property)), ["k"]);
    assert!(parse(&format!("{with_property}q")).is_empty());
}

#[test]
fn unknown_members_are_forwarded_exactly_as_received() {
    static ID: ContextVar<u64> = ContextVar::new("request_id");
    let p = Propagator::new().with_var(&ID);
    let mut incoming = http::HeaderMap::new();
    incoming.insert(
        "baggage",
        " other = a%2Cb ; ttl = 3 ,request_id = %34%32, v=%e2%82%ac;p"
            .parse()
            .unwrap(),
    );
    let ctx = p.extract(&incoming);
    assert_eq!(ctx.get(&ID), Some(42), "a registered value is decoded");
    let mut outgoing = http::HeaderMap::new();
    ctx.run(|| p.inject(&mut outgoing));
    assert_eq!(
        outgoing["baggage"], "request_id=42,other = a%2Cb ; ttl = 3,v=%e2%82%ac;p",
        "not decoded, re-encoded or re-spaced; only the outer whitespace trimmed"
    );
}

#[test]
fn forwarded_members_are_not_listed_in_the_requests_context() {
    static ID: ContextVar<u64> = ContextVar::new("request_id").debuggable();
    let p = Propagator::new().with_var(&ID);
    let mut incoming = http::HeaderMap::new();
    incoming.insert("baggage", "request_id=7,tenant=acme".parse().unwrap());
    let ctx = p.extract(&incoming);
    assert_eq!(ctx.names(), ["request_id"]);
    assert_eq!(ctx.len(), 1);
    assert!(!ctx.is_empty());
    let entries: Vec<_> = ctx.entries().collect();
    assert_eq!(entries, [("request_id", Some("7".to_string()))]);
    assert_eq!(
        format!("{ctx:?}"),
        format!(
            "Context {{ id: {}, vars: {{\"request_id\": 7}} }}",
            ctx_id(&ctx)
        )
    );
    // A copy lists the same, and the member is still forwarded.
    assert_eq!(ctx.copy().len(), 1);
    let mut outgoing = http::HeaderMap::new();
    ctx.run(|| p.inject(&mut outgoing));
    assert_eq!(outgoing["baggage"], "request_id=7,tenant=acme");
    // Only forwarded members: an empty listing.
    let mut only_unknown = http::HeaderMap::new();
    only_unknown.insert("baggage", "tenant=acme".parse().unwrap());
    let ctx = p.extract(&only_unknown);
    assert!(ctx.is_empty() && ctx.names().is_empty() && ctx.entries().next().is_none());
}

/// The id a context's `Debug` shows.
fn ctx_id(ctx: &contextvars::Context) -> String {
    let shown = format!("{ctx:?}");
    let start = shown.find("id: ").expect("an id") + 4;
    shown[start..].split(',').next().unwrap().to_string()
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
    let ctx = p.clone().forward_unknown(false).extract(&headers);
    assert_eq!(ctx.get(&ID), None, "a value that does not parse is dropped");
    assert_eq!(ctx.get(&USER), Some("ada".to_string()));
    assert_eq!(ctx.len(), 1);
    let mut outgoing = http::HeaderMap::new();
    ctx.run(|| p.inject(&mut outgoing));
    assert_eq!(outgoing["baggage"], "user=ada", "nothing kept to forward");
    // By default `unrelated` is kept, to forward (and not listed).
    let ctx = p.extract(&headers);
    assert_eq!(ctx.len(), 1);
    let mut outgoing = http::HeaderMap::new();
    ctx.run(|| p.inject(&mut outgoing));
    assert_eq!(outgoing["baggage"], "user=ada,unrelated=1");

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
    let out = common::logged(|| {
        parse("ok=1,broken key=2,k=%zz");
    });
    assert_eq!(out.lines().count(), 1, "one warning per header: {out}");
    assert!(
        out.contains(r#"first=["broken key (key is not a token)", "k (bad percent-escape)"]"#),
        "each bad member named with its reason, good ones not: {out}"
    );
    assert!(
        out.contains("dropped=2") && out.contains("malformed=2"),
        "{out}"
    );
}

#[test]
fn a_hostile_header_makes_one_warning_with_counts_and_first_names() {
    // 400 KB of `a=1,`: 100,000 members, within hyper's default limits.
    let header = "a=1,".repeat(100_000);
    let p = Propagator::new();
    let mut headers = http::HeaderMap::new();
    headers.insert("baggage", header.parse().unwrap());
    let out = common::logged(|| {
        p.extract(&headers);
    });
    assert_eq!(out.lines().count(), 1, "{}", &out[..out.len().min(2000)]);
    assert!(
        out.contains(&format!("dropped={}", 100_000 - MAX_MEMBERS))
            && out.contains(&format!("over_limits={}", 100_000 - MAX_MEMBERS)),
        "{out}"
    );
    assert!(
        out.contains(r#"first=["a (over the W3C limits)", "a (over the W3C limits)", "a (over the W3C limits)"]"#),
        "the first three names, no more: {out}"
    );
}

#[test]
fn values_that_do_not_parse_are_reported_in_the_same_one_warning() {
    static ID: ContextVar<u64> = ContextVar::new("request_id");
    let p = Propagator::new().with_var(&ID);
    let mut headers = http::HeaderMap::new();
    let header = vec!["request_id=x"; 150].join(",");
    headers.insert("baggage", header.parse().unwrap());
    let out = common::logged(|| {
        p.extract(&headers);
    });
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("unparsed=150") && out.contains("request_id (value does not parse"),
        "{out}"
    );
}

static USER: ContextVar<String> = ContextVar::new("user");
static RID: ContextVar<u64> = ContextVar::new("request_id");

#[test]
fn inject_keeps_within_the_limits_and_names_what_it_drops() {
    let p = Propagator::new().with_var(&USER).with_var(&RID);
    let mut headers = http::HeaderMap::new();
    let out = common::logged(|| {
        headers.clear();
        contextvars::Context::new().run(|| {
            USER.set("€".repeat(1000)); // 9,005 bytes percent-encoded
            RID.set(7);
            p.inject(&mut headers);
        });
    });
    let sent = headers["baggage"].to_str().unwrap();
    assert_eq!(
        sent, "request_id=7",
        "the oversized member is dropped, the rest sent"
    );
    assert!(sent.len() <= MAX_BYTES);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("baggage sent") && out.contains("user (over the W3C limits)"),
        "{out}"
    );
    assert_eq!(p.extract(&headers).get(&RID), Some(7));

    // 200 registered members' worth: at most 180 go out.
    let many: Vec<String> = (0..200).map(|i| format!("k{i}=v")).collect();
    let mut headers = http::HeaderMap::new();
    headers.insert("baggage", many.join(",").parse().unwrap());
    RID.sync_scope(1, || p.inject(&mut headers));
    assert_eq!(
        parse_bytes(headers["baggage"].as_bytes()).len(),
        MAX_MEMBERS
    );
}

#[test]
fn a_member_dropped_on_extract_costs_only_itself() {
    let p = Propagator::new().with_var(&USER).with_var(&RID);
    let user = contextvars::baggage::encode_value(&"€".repeat(1000));
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "baggage",
        format!("user={user},request_id=7").parse().unwrap(),
    );
    let ctx = p.extract(&headers);
    assert_eq!(ctx.get(&USER), None, "over 8,192 bytes on its own");
    assert_eq!(ctx.get(&RID), Some(7), "the member after it still arrives");
}

#[test]
fn inject_keeps_members_it_does_not_set_as_received() {
    let p = Propagator::new().with_var(&USER).with_var(&RID);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "baggage",
        "other=1;ttl=3;private, user=old;p, request_id=9;keep"
            .parse()
            .unwrap(),
    );
    USER.sync_scope("new".to_string(), || p.inject(&mut headers));
    assert_eq!(
        headers["baggage"], "other=1;ttl=3;private,request_id=9;keep,user=new",
        "what it does not set stays, properties included; what it sets is replaced"
    );
}

#[test]
fn members_a_hop_does_not_register_reach_the_next_hop() {
    static TEAM: ContextVar<String> = ContextVar::new("team");
    // A and C register `team` and `request_id`; B registers only `request_id`.
    let a = Propagator::new().with_var(&RID).with_var(&TEAM);
    let b = Propagator::new().with_var(&RID);
    let c = a.clone();
    let mut a_to_b = http::HeaderMap::new();
    contextvars::Context::new().run(|| {
        RID.set(1);
        TEAM.set("blue".into());
        a.inject(&mut a_to_b);
    });
    a_to_b.append("baggage", "vendor=x;ttl=3".parse().unwrap());

    let mut b_to_c = http::HeaderMap::new();
    b.extract(&a_to_b).run(|| {
        assert_eq!(RID.get(), Ok(1));
        assert!(TEAM.get().is_err(), "B does not register team");
        RID.set(2); // B's own change travels too
        b.inject(&mut b_to_c);
    });
    assert_eq!(b_to_c["baggage"], "request_id=2,team=blue,vendor=x;ttl=3");
    let at_c = c.extract(&b_to_c);
    assert_eq!(
        (at_c.get(&RID), at_c.get(&TEAM)),
        (Some(2), Some("blue".to_string()))
    );

    // Opting out, on B's server side or on B's client side.
    for (server, client) in [
        (b.clone().forward_unknown(false), b.clone()),
        (b.clone(), b.clone().forward_unknown(false)),
    ] {
        let mut out = http::HeaderMap::new();
        server.extract(&a_to_b).run(|| client.inject(&mut out));
        assert_eq!(out["baggage"], "request_id=1");
    }
}

#[test]
fn variables_whose_names_are_not_tokens_are_refused_at_registration() {
    static SPACED: ContextVar<String> = ContextVar::new("tenant id");
    static ACCENT: ContextVar<String> = ContextVar::new("tenánt");
    for (register, name, suggested) in [
        (
            Box::new(|| drop(Propagator::new().with_var(&SPACED)))
                as Box<dyn Fn() + std::panic::RefUnwindSafe>,
            "tenant id",
            "tenant_id",
        ),
        (
            Box::new(|| drop(Propagator::new().with_var(&ACCENT))),
            "tenánt",
            "ten_nt",
        ),
        (
            Box::new(|| drop(Propagator::new().with_var_as("a,b", &ACCENT))),
            "tenánt",
            "a_b",
        ),
    ] {
        let err = std::panic::catch_unwind(&register).expect_err("refused");
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains(&format!("{name:?}")),
            "names the variable: {msg}"
        );
        assert!(
            msg.contains(&format!("with_var_as(\"{suggested}\"")),
            "says what to do: {msg}"
        );
    }
    // Under a key that is a token, it travels.
    let p = Propagator::new().with_var_as("tenant_id", &SPACED);
    let mut headers = http::HeaderMap::new();
    SPACED.sync_scope("acme".into(), || p.inject(&mut headers));
    assert_eq!(p.extract(&headers).get(&SPACED), Some("acme".to_string()));
}

#[test]
fn a_propagator_can_be_configured_after_it_is_cloned() {
    let base = Propagator::new().with_var(&RID);
    let wider = base.clone().with_var(&USER);
    let narrower = wider.clone().forward_unknown(false);
    assert_eq!(base.keys(), ["request_id"]);
    assert_eq!(wider.keys(), ["request_id", "user"]);
    assert_eq!(narrower.keys(), ["request_id", "user"]);
    let mut headers = http::HeaderMap::new();
    contextvars::Context::new().run(|| {
        RID.set(3);
        USER.set("u".into());
        base.inject(&mut headers);
    });
    assert_eq!(
        headers["baggage"], "request_id=3",
        "the original is unchanged"
    );
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
