//! Snapshots that travel: capture on one side, restore on the
//! other; bad input never fails the job.
#![cfg(feature = "serde")]

mod common;

use std::sync::LazyLock;

use contextvars::snapshot::{Snapshot, Snapshots};
use contextvars::{Context, ContextVar};

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct Caller {
    tenant: String,
    roles: Vec<String>,
}

static CALLER: ContextVar<Caller> = ContextVar::new("snap_caller");
static REQUEST_ID: ContextVar<u64> = ContextVar::new("snap_request_id");
static LOCAL_ONLY: ContextVar<u64> = ContextVar::new("snap_local_only");

static SNAPSHOTS: LazyLock<Snapshots> =
    LazyLock::new(|| Snapshots::new().with_var(&CALLER).with_var(&REQUEST_ID));

fn caller() -> Caller {
    Caller {
        tenant: "acme".into(),
        roles: vec!["admin".into()],
    }
}

#[test]
fn a_job_captured_on_one_thread_runs_in_its_context_on_another() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let worker = std::thread::spawn(move || {
        rx.iter()
            .map(|bytes| {
                SNAPSHOTS.restore_bytes(&bytes).run(|| {
                    (
                        REQUEST_ID.get().ok(),
                        CALLER.get().ok(),
                        LOCAL_ONLY.get().ok(),
                    )
                })
            })
            .collect::<Vec<_>>()
    });
    Context::new().run(|| {
        CALLER.set(caller());
        REQUEST_ID.set(41);
        LOCAL_ONLY.set(1);
        tx.send(SNAPSHOTS.capture().to_bytes()).unwrap();
        REQUEST_ID.set(42);
        tx.send(SNAPSHOTS.capture().to_bytes()).unwrap();
    });
    drop(tx);
    assert_eq!(
        worker.join().unwrap(),
        [
            (Some(41), Some(caller()), None),
            (Some(42), Some(caller()), None),
        ],
        "values captured at send time; unlisted variables do not travel"
    );
}

#[test]
fn a_snapshot_is_a_field_of_a_job_and_restores_into_a_fresh_context() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Job {
        n: u32,
        context: Snapshot,
    }
    let wire = Context::new().run(|| {
        REQUEST_ID.set(9);
        serde_json::to_string(&Job {
            n: 1,
            context: SNAPSHOTS.capture(),
        })
        .unwrap()
    });
    assert_eq!(wire, r#"{"n":1,"context":{"snap_request_id":9}}"#);
    let job: Job = serde_json::from_str(&wire).unwrap();
    let ctx = SNAPSHOTS.restore(&job.context);
    assert_eq!(ctx.get(&REQUEST_ID), Some(9));
    assert_eq!(ctx.len(), 1);
    assert!(
        REQUEST_ID.get().is_err(),
        "the worker's own context is untouched"
    );
}

#[test]
fn unknown_and_wrongly_typed_entries_are_skipped_by_name_and_the_rest_restored() {
    let input = br#"{"snap_request_id": 5, "snap_caller": {"tenant": 3}, "who_knows": [1]}"#;
    let (ctx, skipped) = SNAPSHOTS.restore_bytes_report(input);
    assert_eq!(ctx.get(&REQUEST_ID), Some(5));
    assert!(!ctx.contains(&CALLER));
    let entries: Vec<(String, String)> = skipped
        .entries()
        .map(|(n, w)| (n.to_string(), w.to_string()))
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0].0, "snap_caller");
    assert!(
        entries[0].1.starts_with("cannot be decoded: invalid type"),
        "{entries:?}"
    );
    assert_eq!(entries[1], ("who_knows".into(), "unknown variable".into()));
    let warning = skipped.to_string();
    assert!(
        warning.contains("\"snap_caller\"") && warning.contains("\"who_knows\""),
        "{warning}"
    );
}

#[test]
fn malformed_input_gives_an_empty_context_and_a_warning_never_an_error() {
    let good = br#"{"snap_request_id": 5}"#;
    for bad in [
        &good[..good.len() - 1],            // truncated
        &b""[..],                           // empty
        &b"[1, 2, 3]"[..],                  // not an object
        &b"\"snap_request_id\""[..],        // a string
        &b"{\"snap_request_id\": 5} x"[..], // trailing garbage
        &b"\xff\xfe"[..],                   // not UTF-8
    ] {
        let (ctx, skipped) = SNAPSHOTS.restore_bytes_report(bad);
        assert!(ctx.is_empty(), "{:?}", String::from_utf8_lossy(bad));
        let entries: Vec<_> = skipped.entries().collect();
        assert_eq!(entries.len(), 1, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(entries[0].0, "(whole snapshot)");
        // `restore_json` says so too, and still gives a context to run in.
        assert!(
            SNAPSHOTS
                .restore_bytes(bad)
                .run(|| REQUEST_ID.get().is_err())
        );
    }
}

#[test]
fn huge_and_deep_input_is_refused_without_parsing_it_all() {
    // Over the limit: refused whole, named by size.
    let big = format!(
        r#"{{"snap_request_id": 1, "pad": "{}"}}"#,
        "x".repeat(100_000)
    );
    let (ctx, skipped) = SNAPSHOTS.restore_bytes_report(big.as_bytes());
    assert!(ctx.is_empty());
    assert!(
        skipped.to_string().contains("over the limit of 65536"),
        "{skipped}"
    );
    // A raised limit takes it, skipping the unknown entry.
    let roomy = Snapshots::new().with_var(&REQUEST_ID).max_bytes(1 << 20);
    let (ctx, skipped) = roomy.restore_bytes_report(big.as_bytes());
    assert_eq!(ctx.get(&REQUEST_ID), Some(1));
    assert_eq!(
        skipped.entries().map(|(n, _)| n).collect::<Vec<_>>(),
        ["pad"]
    );
    // Nesting deeper than the parser allows: an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let (ctx, skipped) = roomy.restore_bytes_report(deep.as_bytes());
    assert!(ctx.is_empty());
    assert!(skipped.to_string().contains("malformed JSON"), "{skipped}");
    // Thousands of unknown names: one bounded warning.
    let many: String = format!(
        "{{{}}}",
        (0..5_000)
            .map(|i| format!("\"k{i}\": 0"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (_, skipped) = roomy.restore_bytes_report(many.as_bytes());
    assert_eq!(skipped.entries().count(), 5_000);
    let warning = skipped.to_string();
    assert!(
        warning.contains("and 4992 more") && warning.len() < 1_000,
        "{warning}"
    );
}

#[test]
fn a_job_struct_with_a_garbage_snapshot_field_still_deserializes() {
    #[derive(serde::Deserialize)]
    struct Job {
        n: u32,
        context: Snapshot,
    }
    let job: Job = serde_json::from_str(r#"{"n": 7, "context": [1, 2]}"#).unwrap();
    assert_eq!(job.n, 7);
    let (ctx, skipped) = SNAPSHOTS.restore_report(&job.context);
    assert!(ctx.is_empty());
    assert!(
        skipped.to_string().contains("not a JSON object: an array"),
        "{skipped}"
    );
}

#[test]
#[should_panic(expected = "two variables named `snap_dup` were added")]
fn two_variables_of_one_name_are_refused_naming_it() {
    static A: ContextVar<u32> = ContextVar::new("snap_dup");
    static B: ContextVar<u32> = ContextVar::new("snap_dup");
    let _ = Snapshots::new().with_var(&A).with_var(&B);
}

#[test]
fn a_value_that_cannot_be_serialized_is_left_out_of_the_capture() {
    use std::collections::HashMap;
    // JSON object keys must be strings: a map keyed by tuples fails.
    static ODD: ContextVar<HashMap<(u8, u8), u8>> = ContextVar::new("snap_odd");
    let s = Snapshots::new().with_var(&ODD).with_var(&REQUEST_ID);
    let snap = Context::new().run(|| {
        ODD.set(HashMap::from([((1, 2), 3)]));
        REQUEST_ID.set(3);
        s.capture()
    });
    assert_eq!(snap.names().collect::<Vec<_>>(), ["snap_request_id"]);
}

#[test]
fn snapshots_show_their_variables_and_input_limit() {
    assert_eq!(
        format!("{:?}", *SNAPSHOTS),
        format!(
            r#"Snapshots {{ vars: ["snap_caller", "snap_request_id"], max_bytes: {} }}"#,
            contextvars::snapshot::DEFAULT_MAX_BYTES
        )
    );
    assert_eq!(
        format!("{:?}", Snapshots::new().with_var(&REQUEST_ID).max_bytes(64)),
        r#"Snapshots { vars: ["snap_request_id"], max_bytes: 64 }"#
    );
}

#[test]
fn restore_json_reads_an_input_of_exactly_the_limit() {
    let json = r#"{"snap_request_id": 5}"#;
    let one = Snapshots::new().with_var(&REQUEST_ID);
    assert_eq!(one.restore_json(json).get(&REQUEST_ID), Some(5));
    let exact = Snapshots::new().with_var(&REQUEST_ID).max_bytes(json.len());
    let (ctx, skipped) = exact.restore_bytes_report(json.as_bytes());
    assert!(skipped.is_empty(), "refused at exactly the limit");
    assert_eq!(ctx.get(&REQUEST_ID), Some(5));
    let under = Snapshots::new()
        .with_var(&REQUEST_ID)
        .max_bytes(json.len() - 1);
    let (ctx, skipped) = under.restore_bytes_report(json.as_bytes());
    assert!(
        ctx.is_empty() && !skipped.is_empty(),
        "one byte over the limit"
    );
}

#[test]
fn a_capture_as_json_text_holds_each_variable_and_comes_back() {
    let none = Snapshot::default();
    assert_eq!((none.len(), none.is_empty()), (0, true));
    assert_eq!(none.to_json(), "{}");
    Context::new().run(|| {
        REQUEST_ID.set(9);
        let snap = SNAPSHOTS.capture();
        assert_eq!(snap.len(), 1);
        assert!(!snap.is_empty());
        assert_eq!(snap.to_json(), r#"{"snap_request_id":9}"#);
        CALLER.set(caller());
        let snap = SNAPSHOTS.capture();
        assert_eq!(snap.len(), 2);
        let back = SNAPSHOTS.restore_json(&snap.to_json());
        assert_eq!(back.get(&REQUEST_ID), Some(9));
        assert_eq!(back.get(&CALLER), Some(caller()));
    });
}

#[test]
fn a_long_reason_to_skip_is_cut_at_a_char_boundary() {
    let one = Snapshots::new().with_var(&REQUEST_ID);
    let why_for = |text: &str| -> String {
        let json = serde_json::json!({ "snap_request_id": text }).to_string();
        let (ctx, skipped) = one.restore_bytes_report(json.as_bytes());
        assert!(ctx.is_empty());
        let entries: Vec<(String, String)> = skipped
            .entries()
            .map(|(n, w)| (n.to_string(), w.to_string()))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].0, "snap_request_id");
        entries[0].1.clone()
    };
    // Where the reason quotes the value, and how much follows it.
    let marked = why_for("MARK");
    let start = marked.find("MARK").expect("the reason quotes the value");
    let after = marked.len() - start - "MARK".len();
    // A reason of exactly 200 bytes is kept whole.
    let exact = why_for(&"a".repeat(200 - start - after));
    assert_eq!(exact.len(), 200, "{exact}");
    assert!(!exact.ends_with('…'), "{exact}");
    // A longer one whose byte 200 falls inside a three-byte character is
    // cut before that character, and marked.
    let pad = (200 - start - 1) % 3;
    let long = why_for(&format!("{}{}", "a".repeat(pad), "€".repeat(100)));
    assert_eq!(long.len(), 199 + '…'.len_utf8(), "{long}");
    assert!(long.ends_with("€…"), "{long}");
}

#[test]
fn what_a_restore_skipped_is_shown_by_name_and_warned_once() {
    let s = Snapshots::new();
    let show = |json: &str| s.restore_bytes_report(json.as_bytes()).1.to_string();
    assert_eq!(
        show(r#"{"x": 1}"#),
        r#"1 entry skipped: "x": unknown variable"#
    );
    assert_eq!(
        show(r#"{"a": 1, "b": 2}"#),
        r#"2 entries skipped: "a": unknown variable; "b": unknown variable"#
    );
    // At most eight are named, then how many more.
    let ten: Vec<String> = (0..10).map(|i| format!(r#""v{i}": {i}"#)).collect();
    let shown = show(&format!("{{{}}}", ten.join(", ")));
    assert!(
        shown.starts_with(r#"10 entries skipped: "v0": "#),
        "{shown}"
    );
    assert!(
        shown.ends_with(r#""v7": unknown variable; and 2 more"#),
        "{shown}"
    );
    assert_eq!(shown.matches("unknown variable").count(), 8, "{shown}");
    let eight = show(&format!("{{{}}}", ten[..8].join(", ")));
    assert!(eight.ends_with(r#""v7": unknown variable"#), "{eight}");
    // A long name is cut, and says so; one of exactly the limit is not.
    let long = "n".repeat(65);
    assert_eq!(
        show(&format!(r#"{{"{long}": 1}}"#)),
        format!(
            r#"1 entry skipped: "{}"…: unknown variable"#,
            "n".repeat(64)
        )
    );
    let exact = "m".repeat(64);
    assert_eq!(
        show(&format!(r#"{{"{exact}": 1}}"#)),
        format!(r#"1 entry skipped: "{exact}": unknown variable"#)
    );
    // The plain restore warns with the same text; a clean one does not.
    let logged = common::logged(|| drop(s.restore_bytes(br#"{"x": 1}"#)));
    assert!(
        logged.contains(r#"snapshot restored in part: 1 entry skipped: "x": unknown variable"#),
        "{logged}"
    );
    let logged = common::logged(|| drop(s.restore_bytes(b"{}")));
    assert!(!logged.contains("snapshot"), "{logged}");
}
