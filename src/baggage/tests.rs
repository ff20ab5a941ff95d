//! The borrowing parser (its shortcut for plain members included) against
//! a plain owned parser (kept here as the reference): on
//! headers built from the pieces where the two could part ways (whitespace
//! of every kind around `=`, `,` and `;`, percent-escapes good and bad,
//! properties, empty members, bytes that are not UTF-8, members past the
//! limits), both must keep the same members with the same text, key, value
//! and properties, and drop the same ones for the same reasons.

use proptest::prelude::*;

use super::{Budget, Dropped, MAX_BYTES, MAX_MEMBERS, Member, each_member, is_key};

/// The reference parser (`parse_raw` and `parse_member`): each member
/// split, trimmed and copied into strings.
mod reference {
    use super::super::{Budget, Dropped, MAX_MEMBERS, Member, is_key};

    fn is_value_octet(b: u8) -> bool {
        matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%'
    }

    fn percent_decode(raw: &str) -> Result<String, &'static str> {
        let bytes = raw.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent-escape")?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err("bad percent-escape");
                    }
                    let hex = std::str::from_utf8(hex).map_err(|_| "bad percent-escape")?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent-escape")?);
                    i += 3;
                }
                b if is_value_octet(b) => {
                    out.push(b);
                    i += 1;
                }
                _ => return Err("character not allowed in a value"),
            }
        }
        String::from_utf8(out).map_err(|_| "value is not UTF-8 once decoded")
    }

    fn parse_member(raw: &str) -> Result<Member, &'static str> {
        let mut parts = raw.split(';');
        let pair = parts.next().unwrap_or_default();
        let (key, value) = pair.split_once('=').ok_or("no `=` between key and value")?;
        let key = key.trim();
        if !is_key(key) {
            return Err("key is not a token");
        }
        let value = percent_decode(value.trim())?;
        let properties = parts
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Member {
            key: key.to_string(),
            value,
            properties,
        })
    }

    pub fn parse_raw<'a>(header: &'a [u8], dropped: &mut Dropped) -> Vec<(&'a str, Member)> {
        let mut members = Vec::new();
        let mut budget = Budget::default();
        for raw in header.split(|&b| b == b',') {
            let Ok(raw) = std::str::from_utf8(raw) else {
                dropped.malformed(&String::from_utf8_lossy(raw), "not UTF-8");
                continue;
            };
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            if budget.members == MAX_MEMBERS {
                dropped.over_limits(raw);
                continue;
            }
            match parse_member(raw) {
                Ok(member) if budget.take(raw.len()) => members.push((raw, member)),
                Ok(_) => dropped.over_limits(raw),
                Err(why) => dropped.malformed(raw, why),
            }
        }
        members
    }
}

/// One parse: each member kept (text as received, and the member), and
/// what was dropped (counts and the names quoted).
type Outcome = (Vec<(String, Member)>, (usize, usize, Vec<String>));

fn borrowed(header: &[u8]) -> Outcome {
    let mut dropped = Dropped::default();
    let mut kept = Vec::new();
    each_member(header, &mut dropped, |m, _| {
        kept.push((m.raw.to_owned(), m.to_member()))
    });
    (
        kept,
        (dropped.malformed, dropped.over_limits, dropped.names),
    )
}

fn owned(header: &[u8]) -> Outcome {
    let mut dropped = Dropped::default();
    let kept = reference::parse_raw(header, &mut dropped)
        .into_iter()
        .map(|(raw, m)| (raw.to_owned(), m))
        .collect();
    (
        kept,
        (dropped.malformed, dropped.over_limits, dropped.names),
    )
}

/// The pieces headers are made of: what each step of the parser looks at.
const PIECES: &[&str] = &[
    "k",
    "key",
    "request_id",
    "!#$&'*+-.^_`|~",
    "=",
    "==",
    ",",
    ";",
    " ",
    "\t",
    "\u{b}",
    "\u{c}",
    "\r\n",
    "\u{a0}",
    "\u{2003}",
    "\u{3000}",
    "é",
    "€",
    "%",
    "%2C",
    "%2c",
    "%e2%82%ac",
    "%C3",
    "%C3%A9",
    "%zz",
    "%+1",
    "%4",
    "4",
    "a",
    "v=w",
    "\"",
    "\\",
    "p=1",
    "ttl = 3",
];

/// A header of up to `max` pieces, some of them bytes that are not UTF-8.
fn header(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        8 => prop::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
        1 => prop::sample::select(vec![&b"\xff"[..], b"\xc3", b"\xe2\x82", b"\x80"])
            .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_borrowing_parser_agrees_with_the_owned_one(header in header(40)) {
        prop_assert_eq!(borrowed(&header), owned(&header), "{:?}", String::from_utf8_lossy(&header));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Many members, some long: the limits, spent the same way.
    #[test]
    fn they_agree_at_the_limits(
        members in prop::collection::vec((header(6), 0usize..3000, any::<bool>()), 150..230),
    ) {
        let header: Vec<u8> = members
            .iter()
            .map(|(m, long, wide)| {
                let mut m = [&b"m="[..], m].concat();
                if *wide {
                    m.extend(std::iter::repeat_n(b'x', *long));
                }
                m
            })
            .collect::<Vec<_>>()
            .join(&b","[..]);
        let (kept, dropped) = borrowed(&header);
        prop_assert_eq!((&kept, &dropped), (&owned(&header).0, &owned(&header).1));
        let bytes: usize = kept.iter().map(|(raw, _)| raw.len() + 1).sum();
        prop_assert!(kept.len() <= MAX_MEMBERS && bytes <= MAX_BYTES + 1);
    }
}

#[test]
fn a_value_without_an_escape_is_borrowed_and_one_with_is_decoded() {
    let header = b"a=plain,b=x%2Cy;p";
    let mut values = Vec::new();
    each_member(header, &mut Dropped::default(), |m, _| {
        values.push((
            m.value.clone(),
            matches!(m.value, std::borrow::Cow::Borrowed(_)),
        ))
    });
    assert_eq!(
        values,
        [("plain".into(), true), ("x,y".into(), false)],
        "no copy of a value that needs no decoding"
    );
}

#[test]
fn trim_is_str_trim() {
    for s in [
        "",
        " ",
        "\u{b}",
        "\u{a0}",
        " \u{a0} k \u{2003}",
        "k",
        " k ",
        "\tk=v\r\n",
        "é ",
        " é",
        "\u{85}k\u{85}",
        "k\u{3000}",
        "\u{b}k\u{c}",
    ] {
        assert_eq!(super::trim(s), s.trim(), "{s:?}");
    }
}

#[test]
fn tables_match_their_definitions() {
    for b in 0..=255u8 {
        assert_eq!(
            super::is_tchar(b),
            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b),
            "{b:#x}"
        );
        assert_eq!(
            super::is_value_octet(b),
            matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%',
            "{b:#x}"
        );
    }
    assert!(is_key("k") && Budget::default().take(1));
}

#[test]
fn the_shortcut_takes_plain_members_only_and_agrees_with_the_general_path() {
    for (header, plain) in [
        ("k=v", true),
        ("k=v,x=1", true),
        ("k=", true),
        ("k=v;p ; q=1 \t,x=1", true),
        ("k=v;", true),
        (" k=v", false),
        ("k =v", false),
        ("k= v", false),
        ("k=v ", false),
        ("k=v ;p", false),
        ("k=a%20b", false),
        ("k=é", false),
        ("=v", false),
        ("k", false),
        ("k;p=v", false),
        ("", false),
    ] {
        let shortcut = super::parse_plain(header, 0);
        assert_eq!(shortcut.is_some(), plain, "{header:?}");
        let Some((m, end)) = shortcut else { continue };
        assert_eq!(
            header.as_bytes().get(end).copied().unwrap_or(b','),
            b',',
            "{header:?}"
        );
        let general = super::parse_received(super::trim(&header[..end])).unwrap();
        assert_eq!(
            (m.raw, m.key, &m.value, m.to_member()),
            (
                general.raw,
                general.key,
                &general.value,
                general.to_member()
            ),
            "{header:?}"
        );
    }
}
