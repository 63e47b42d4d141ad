//! Events over HTTP (`POST /v1/events`) and in binary mode over NATS, against a real
//! `serve` and `nats-server`: what is posted reaches the log through the stream and
//! folds to the digest of `replay --events`; each role posts only its types; a request
//! with one bad event publishes nothing; an event on another type's subject is refused.

use std::time::Duration;

mod common;
use common::*;

const TOKENS: &str = r#"
[[auth.tokens]]
token = "prod"
role = "producer"
[[auth.tokens]]
token = "fin"
role = "finance"
[[auth.tokens]]
token = "adm"
role = "admin"
[[auth.tokens]]
token = "p100"
role = "partner:P-100"
"#;

/// The token that may post an event of type `t`.
fn token_for(t: &str) -> &'static str {
    match t {
        "program.published" => "adm",
        "adjustment.posted" | "claim.decided" | "period.closed" => "fin",
        "claim.submitted" => "p100",
        _ => "prod",
    }
}

fn post(port: u16, token: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    post_to(port, "/v1/events", token, content_type, body)
}

fn post_to(
    port: u16,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let (status, text) = http(
        port,
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", content_type)],
        body.as_bytes(),
    );
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
    (status, v)
}

fn event_type(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["type"].as_str().unwrap().to_string()
}

/// The inbound stream's last sequence.
fn stream_last(nats: &Nats) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("INCENTIVE_EVENTS").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    })
}

#[test]
fn events_posted_over_http_fold_like_published_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let port = free_port();
    let log = tmp.path().join("serve.log");
    let mut service = serve_with_config(&nats, tmp.path(), port, TOKENS, &log);
    assert!(
        wait_until(Duration::from_secs(30), || {
            http_answer(port, "/health/ready").is_some_and(|(c, _)| c == 200)
        }),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let file = root().join("replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();

    // Refusals first: none of them publishes anything.
    let (status, v) = post(port, "prod", "application/cloudevents+json", lines[0]);
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["events"][0]["status"], "forbidden");
    assert!(
        v["events"][0]["message"]
            .as_str()
            .unwrap()
            .contains("a producer token may not post program.published"),
        "{v}"
    );
    let bad_batch = format!("[{}, {{\"specversion\":\"1.0\"}}]", lines[0]);
    let (status, v) = post(
        port,
        "adm",
        "application/cloudevents-batch+json",
        &bad_batch,
    );
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["events"][0]["status"], "not_published");
    assert_eq!(v["events"][1]["status"], "refused");
    assert_eq!(v["events"][1]["code"], "invalid_envelope");
    let (status, v) = post(port, "adm", "text/plain", lines[0]);
    assert_eq!(status, 415, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("binary mode"),
        "{v}"
    );
    let claim_for_other = r#"{"specversion":"1.0","id":"c9","source":"portal","type":"claim.submitted","time":"2026-02-01T00:00:00Z","data":{"claim_id":"C-9","partner_id":"P-200","program_id":"REBATE-2026","amount":"10.00","activity":"fair"}}"#;
    let (status, v) = post(
        port,
        "p100",
        "application/cloudevents+json",
        claim_for_other,
    );
    assert_eq!(status, 403, "{v}");
    assert!(
        v["events"][0]["message"]
            .as_str()
            .unwrap()
            .contains("for P-100 only"),
        "{v}"
    );
    let (status, _) = http(
        port,
        "GET",
        "/v1/status",
        &[("Authorization", "Bearer prod")],
        b"",
    );
    assert_eq!(status, 403, "a producer token reads nothing");
    assert_eq!(
        stream_last(&nats),
        0,
        "a refused request published something"
    );

    // The fixture, run by run of one role: batches, one event in structured mode, and
    // a sale in binary mode.
    let mut sequences = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let token = token_for(&event_type(lines[i]));
        let mut j = i + 1;
        while j < lines.len() && token_for(&event_type(lines[j])) == token {
            j += 1;
        }
        let (status, v) = if j - i == 1 {
            post(port, token, "application/cloudevents+json", lines[i])
        } else {
            post(
                port,
                token,
                "application/cloudevents-batch+json",
                &format!("[{}]", lines[i..j].join(",")),
            )
        };
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["stream"], "INCENTIVE_EVENTS");
        for e in v["events"].as_array().unwrap() {
            assert_eq!(e["status"], "stored", "{v}");
            assert_eq!(e["duplicate"], false, "{v}");
            sequences.push(e["stream_sequence"].as_u64().unwrap());
        }
        i = j;
    }
    assert_eq!(sequences, (1..=lines.len() as u64).collect::<Vec<_>>());
    // The same again: the stream knows them (same message ids), nothing new is stored.
    let (status, v) = post(port, "prod", "application/cloudevents+json", lines[1]);
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["events"][0]["duplicate"], true, "{v}");
    assert_eq!(v["events"][0]["stream_sequence"], 2, "{v}");

    // One more sale in binary mode, waiting for the fold.
    let sale = r#"{"sale_id":"INV-HTTP-1","partner_id":"P-100","region":"EMEA","lines":[{"line_id":"1","sku":"SKU-SW","product_family":"switches","quantity":1,"net_amount":"1000.00","currency":"EUR"}]}"#;
    let (status, text) = http(
        port,
        "POST",
        "/v1/events?wait=true",
        &[
            ("Authorization", "Bearer prod"),
            ("Content-Type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "sale-http-1"),
            ("ce-source", "erp/http%20test"),
            ("ce-type", "sale.recorded"),
            ("ce-time", "2026-03-20T10:00:00Z"),
        ],
        sale.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["folded"], true, "{v}");
    let position = v["log_position"].as_u64().unwrap();
    assert_eq!(position, lines.len() as u64 + 1);
    // What the fold made of it is readable at once.
    let (status, text) = http(
        port,
        "GET",
        &format!(
            "/v1/partners/P-100/statement?program=REB-EMEA-2026&period=2026-Q1&min_position={position}"
        ),
        &[("Authorization", "Bearer p100")],
        b"",
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("sale-http-1") || text.contains("INV-HTTP-1"),
        "{text}"
    );

    // The log equals a replay of the fixture and the converted sale.
    let binary_as_structured = format!(
        r#"{{"specversion":"1.0","id":"sale-http-1","source":"erp/http test","type":"sale.recorded","time":"2026-03-20T10:00:00Z","datacontenttype":"application/json","data":{sale}}}"#
    );
    let expected_file = tmp.path().join("expected.ndjson");
    let mut expected = std::fs::read_to_string(&file).unwrap();
    if !expected.ends_with('\n') {
        expected.push('\n');
    }
    expected.push_str(&binary_as_structured);
    std::fs::write(&expected_file, expected).unwrap();
    let doc = document(&expected_file);
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(s["digest"], doc["digest"]);
    service.terminate();
    assert_eq!(
        replay("--data-dir", &tmp.path().join("data"))["digest"],
        doc["digest"]
    );
}

/// Over NATS: a binary-mode CloudEvent (the NATS binding's `ce-*` headers) is taken as
/// its structured form; an event published on another type's subject is refused
/// (quarantined with the reason), so per-subject permissions mean per-type ones.
#[test]
fn nats_binary_mode_is_taken_and_a_type_off_its_subject_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let mut service = Service::start(&nats, &tmp.path().join("data"), &log);
    let program = r#"{"specversion":"1.0","id":"p1","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{"program_id":"R","version":1,"name":"R","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","requires_enrollment":false,"rules":{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}}}"#;
    let sale_data = r#"{"sale_id":"S1","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"100.00","currency":"EUR"}]}"#;
    let mut watch = Watch::start(&nats);
    assert!(wait_until(Duration::from_secs(30), || status(&nats).is_some()));
    let client = watch.client();
    watch.runtime.block_on(async {
        let js = async_nats::jetstream::new(client);
        let publish = |subject: &'static str, headers: async_nats::HeaderMap, body: String| {
            let js = js.clone();
            async move {
                js.publish_with_headers(subject, headers, body.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            }
        };
        publish(
            "incentive.events.program.published",
            async_nats::HeaderMap::new(),
            program.to_string(),
        )
        .await;
        let mut binary = async_nats::HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "s1"),
            ("ce-source", "erp"),
            ("ce-type", "sale.recorded"),
            ("ce-time", "2026-02-01T10:00:00Z"),
            ("content-type", "application/json"),
        ] {
            binary.insert(k, v);
        }
        publish(
            "incentive.events.sale.recorded",
            binary,
            sale_data.to_string(),
        )
        .await;
        // A program smuggled in under the subject of sales.
        let smuggled = program
            .replace("\"id\":\"p1\"", "\"id\":\"p2\"")
            .replace("\"version\":1", "\"version\":2");
        publish(
            "incentive.events.sale.recorded",
            async_nats::HeaderMap::new(),
            smuggled,
        )
        .await;
        // Binary mode whose body is not JSON.
        let mut broken = async_nats::HeaderMap::new();
        broken.insert("ce-specversion", "1.0");
        broken.insert("ce-id", "s2");
        publish("incentive.events.sale.recorded", broken, "{not json".into()).await;
    });
    let s = wait_for(&nats, 2, &log);
    assert_eq!(s["events"]["applied"], 2, "{s}");
    let refused = watch.refusals(2);
    assert_eq!(refused[0]["code"], "invalid_envelope", "{refused:?}");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(
        message.contains("came on incentive.events.sale.recorded")
            && message.contains("incentive.events.program.published"),
        "{message}"
    );
    assert_eq!(refused[1]["code"], "malformed_json", "{refused:?}");
    assert!(
        refused[1]["message"]
            .as_str()
            .unwrap()
            .contains("binary-mode CloudEvent"),
        "{refused:?}"
    );
    service.terminate();
    // The binary sale is in the log as its structured object: a replay folds it.
    let doc = replay("--data-dir", &tmp.path().join("data"));
    assert_eq!(doc["events"]["applied"], 2, "{doc}");
}

/// While the service holds its directory: `GET /v1/verify` checks it, `backup --url`
/// copies it into a directory that verifies and replays to the service's digest, and a
/// backup of the held directory itself says it is in use. Stopped, it is copied directly.
#[test]
fn a_running_service_is_verified_and_backed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let Served {
        nats: _nats,
        mut service,
        port,
        doc,
        ..
    } = Served::fixture(tmp.path(), TOKENS, "mdf_claims_fifo_expiry");
    let (status, text) = http(
        port,
        "GET",
        "/v1/verify",
        &[("Authorization", "Bearer fin")],
        b"",
    );
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let copy = tmp.path().join("copy");
    let out = succeeded(
        bin()
            .args([
                "backup",
                "--url",
                &format!("http://127.0.0.1:{port}"),
                "--token",
                "fin",
                "--to",
            ])
            .arg(&copy),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("backed up") && said.contains("verified"),
        "{said}"
    );
    assert_eq!(replay("--data-dir", &copy)["digest"], doc["digest"]);
    // A wrong token is refused by the service, and nothing is taken for a backup.
    let refused = bin()
        .args([
            "backup",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            "p100",
            "--to",
        ])
        .arg(tmp.path().join("partner-copy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("403"), "{err}");
    // The held directory itself: in use, one line, nothing written.
    let held = bin()
        .args(["backup", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--to")
        .arg(tmp.path().join("direct"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&held.stderr);
    assert!(
        !held.status.success() && err.contains("in use by another"),
        "{err}"
    );
    assert!(!tmp.path().join("direct").exists());
    service.terminate();
    let out = succeeded(
        bin()
            .args(["backup", "--data-dir"])
            .arg(tmp.path().join("data"))
            .arg("--to")
            .arg(tmp.path().join("direct")),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    assert_eq!(
        replay("--data-dir", &tmp.path().join("direct"))["digest"],
        doc["digest"]
    );
}
