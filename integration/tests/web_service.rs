//! The two-service flow of `examples/web_service.rs` over real loopback
//! sockets, with hundreds of concurrent requests, asserting on the captured
//! logs of both services and of the background work.
#![cfg(all(feature = "tokio", feature = "tracing", feature = "tower"))]

#[path = "../examples/web_service.rs"]
#[allow(dead_code)]
mod web_service;

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;

#[test]
fn both_services_and_background_work_log_the_same_request_id_under_load() {
    let logs = common::Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .event_format(web_service::log_format())
        .with_writer(move || writer.clone())
        .init();

    let rt = common::runtime();
    let answers = rt.block_on(async {
        let front = web_service::start().await;
        let calls: Vec<_> = (0..300)
            .map(|i| {
                tokio::spawn(async move {
                    // Two in three carry their own id; the rest get one made by front.
                    let sent = (i % 3 != 0).then(|| format!("req-{i}"));
                    let tenant = format!("t{i}");
                    let answered = web_service::call_front(front, sent.as_deref(), &tenant).await;
                    (sent, answered)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        answers
    });

    let mut ids = std::collections::HashSet::new();
    for (sent, answered) in &answers {
        if let Some(sent) = sent {
            assert_eq!(sent, answered, "front kept the id from the baggage");
        } else {
            assert!(answered.starts_with("gen-"), "front made an id: {answered}");
        }
        assert!(ids.insert(answered.clone()), "ids are distinct: {answered}");
    }

    // Every line is JSON, with the request id as a top-level field.
    let text = logs.text();
    let mut per_id: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        if !event["target"]
            .as_str()
            .unwrap_or("")
            .contains("web_service")
        {
            continue;
        }
        let id = event["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a log line without a request id: {line}"));
        per_id.entry(id.to_string()).or_default().push(event);
    }
    assert_eq!(
        per_id.len(),
        answers.len(),
        "every request logged, under its own id"
    );
    for (id, lines) in &per_id {
        let message =
            |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap_or("").to_owned();
        let has = |what: &str| lines.iter().filter(|e| message(e) == what).count();
        assert_eq!(has("front: request received"), 1, "{id}: {lines:#?}");
        assert_eq!(
            has("front: background work"),
            1,
            "{id}: spawned work logs the id"
        );
        assert_eq!(
            has("back: handling the call from front"),
            1,
            "{id}: the other service logs the id"
        );
        let replies: Vec<_> = lines
            .iter()
            .filter(|e| message(e) == "front: back replied")
            .collect();
        assert_eq!(replies.len(), 1, "{id}: {lines:#?}");
        assert_eq!(
            replies[0]["fields"]["echoed"].as_str(),
            Some(id.as_str()),
            "{id}: back saw the same id"
        );
        // The tenant: never registered by front (no field in its lines),
        // forwarded in its baggage, read by back.
        for e in lines {
            let back = message(e).starts_with("back:");
            assert_eq!(e["tenant"].is_string(), back, "{id}: {e}");
            if back {
                assert_eq!(e["fields"]["tenant_seen"], true, "{id}: {e}");
            }
        }
        assert_eq!(
            lines.len(),
            4,
            "{id}: no line of another request under this id"
        );
    }
}
