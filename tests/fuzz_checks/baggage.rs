//! The baggage parser's properties on arbitrary bytes, shared by the fuzz
//! target (`fuzz/fuzz_targets/baggage.rs`) and the replay of its regression
//! inputs (`tests/baggage_regressions.rs`): parsing never panics, keeps at
//! most `MAX_MEMBERS` members and only token keys, and what it keeps
//! survives `encode` then `parse` unchanged (keys and values).

use contextvars::baggage::{MAX_BYTES, MAX_MEMBERS, encode, parse, parse_bytes};

pub fn check(data: &[u8]) {
    let members = parse_bytes(data);
    assert!(members.len() <= MAX_MEMBERS);
    for m in &members {
        assert!(!m.key.is_empty());
        assert!(
            m.key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
            "{:?}",
            m.key
        );
    }
    let pairs: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m.key.as_str(), m.value.as_str()))
        .collect();
    let header = encode(pairs.iter().copied());
    if header.len() <= MAX_BYTES {
        let again = parse(&header);
        let again: Vec<(&str, &str)> = again
            .iter()
            .map(|m| (m.key.as_str(), m.value.as_str()))
            .collect();
        assert_eq!(again, pairs, "encode then parse changed {header:?}");
    }
}
