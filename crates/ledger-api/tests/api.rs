//! The router over a real projection (a fixture folded in memory): every endpoint, its
//! status codes, pagination, the position header, and the scoping of every role.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ledger_api::{router, ApiState, Role};
use ledger_core::replay::{ndjson_lines, Replay};
use ledger_service::Handle;
use tower::ServiceExt;

mod common;

fn state() -> ApiState {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures/mdf_claims_fifo_expiry/events.ndjson");
    let bytes = std::fs::read(path).unwrap();
    let mut replay = Replay::new();
    replay.enable_journal();
    for (n, line) in ndjson_lines(&bytes, 1) {
        replay.push(line, n);
    }
    let seq = replay.counts().applied + 2; // any position; shown in the header
    ApiState::new(
        Handle::from_replay(replay, seq, seq, None).unwrap(),
        vec![
            ("t-admin".into(), Role::Admin),
            ("t-finance".into(), Role::Finance),
            ("t-p1".into(), Role::Partner("P-1".into())),
            ("t-p2".into(), Role::Partner("P-2".into())),
        ],
    )
}

async fn get(path: &str, token: Option<&str>) -> (StatusCode, serde_json::Value, Option<String>) {
    let mut req = Request::builder().uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router(state())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let position = resp
        .headers()
        .get("x-ledger-position")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json, position)
}

#[tokio::test]
async fn health_needs_no_token_and_everything_else_does() {
    assert_eq!(get("/health/live", None).await.0, StatusCode::OK);
    assert_eq!(get("/health/ready", None).await.0, StatusCode::OK);
    for path in [
        "/v1/status",
        "/v1/partners/P-1/balances",
        "/v1/claims/CLM-1",
        "/v1/payouts",
        "/v1/rejected",
        "/v1/programs",
        "/v1/programs/MDF-2026",
    ] {
        let (status, body, position) = get(path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["code"], "unauthorized");
        assert!(
            position.is_some(),
            "{path}: every response carries the position"
        );
        assert_eq!(
            get(path, Some("nope")).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
}

#[tokio::test]
async fn staff_read_everything() {
    for token in ["t-admin", "t-finance"] {
        // The digest is computed off the request path: a status answers at once, with
        // the digest once a thread has computed it (and the position it belongs to).
        let mut tries = 0;
        let (s, body, position) = loop {
            let (s, body, position) = get("/v1/status", Some(token)).await;
            if body["digest"].is_string() || tries == 200 {
                break (s, body, position);
            }
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["digest"].as_str().map(str::len), Some(64));
        assert_eq!(body["digest_position"], body["position"]);
        assert!(position.is_some());
        let (s, body, _) = get("/v1/partners/P-1/balances", Some(token)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["balances"].as_array().unwrap().len(), 3);
        let (s, body, _) = get("/v1/partners/P-1/balances?period=2026-Q3", Some(token)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body["balances"][0]["available"], "600.00");
        assert_eq!(get("/v1/claims/CLM-7", Some(token)).await.0, StatusCode::OK);
        assert_eq!(get("/v1/rejected", Some(token)).await.0, StatusCode::OK);
    }
    let (s, body, _) = get("/v1/claims/CLM-1", Some("t-finance")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "approved");
    assert_eq!(body["approved_amount"], "1500.00");
}

#[tokio::test]
async fn a_partner_sees_only_its_own_data_and_never_learns_of_others() {
    // Own data.
    assert_eq!(
        get("/v1/partners/P-1/balances", Some("t-p1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get("/v1/claims/CLM-1", Some("t-p1")).await.0,
        StatusCode::OK
    );
    // Another partner's existing data answers exactly like data that does not exist.
    let other = get("/v1/partners/P-2/balances", Some("t-p1")).await;
    let missing = get("/v1/partners/P-999/balances", Some("t-finance")).await;
    assert_eq!(other.0, StatusCode::NOT_FOUND);
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    assert_eq!(other.1["code"], missing.1["code"]);
    assert_eq!(
        get("/v1/claims/CLM-7", Some("t-p1")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/v1/claims/CLM-404", Some("t-p1")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/v1/payouts?partner=P-2", Some("t-p1")).await.0,
        StatusCode::NOT_FOUND
    );
    // Payouts are filtered to the partner's own.
    let (s, body, _) = get("/v1/payouts", Some("t-p2")).await;
    assert_eq!(s, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items.iter().all(|p| p["partner_id"] == "P-2"));
    // Staff-only resources.
    assert_eq!(
        get("/v1/status", Some("t-p1")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get("/v1/rejected", Some("t-p1")).await.0,
        StatusCode::FORBIDDEN
    );
    // Program definitions are readable by partners.
    assert_eq!(get("/v1/programs", Some("t-p1")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn lists_paginate_with_cursors() {
    let mut after = None::<String>;
    let mut seen = Vec::new();
    loop {
        let path = match &after {
            Some(c) => format!("/v1/payouts?limit=1&after={c}"),
            None => "/v1/payouts?limit=1".to_string(),
        };
        let (s, body, _) = get(&path, Some("t-admin")).await;
        assert_eq!(s, StatusCode::OK);
        for p in body["items"].as_array().unwrap() {
            seen.push(p["payout_id"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "all payouts, each once");
    let (s, body, _) = get("/v1/rejected?limit=2", Some("t-admin")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    let next = body["next"].as_str().unwrap().to_string();
    let (_, rest, _) = get(
        &format!("/v1/rejected?limit=2&after={next}"),
        Some("t-admin"),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    assert_eq!(
        get("/v1/payouts?after=x", Some("t-admin")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn programs_and_unknown_routes() {
    let (s, body, _) = get("/v1/programs", Some("t-finance")).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["program_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["COOP-1", "MDF-2026"]);
    let (s, body, _) = get("/v1/programs/MDF-2026", Some("t-finance")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["versions"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["closed_periods"],
        serde_json::json!(["2026-Q1", "2026-Q2", "2026-Q3"])
    );
    assert_eq!(
        get("/v1/programs/NOPE", Some("t-finance")).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, body, _) = get("/v2/anything", Some("t-finance")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
}

#[test]
fn the_openapi_file_lists_exactly_the_routes_and_statuses_of_the_server() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in op["responses"].as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone(), status.parse::<u16>().unwrap()));
            }
        }
    }
    let served: std::collections::BTreeSet<(String, String, u16)> = ledger_api::ROUTES
        .iter()
        .flat_map(|(m, p, codes)| {
            codes
                .iter()
                .map(move |c| (m.to_string(), p.to_string(), *c))
        })
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.json but not served: {extra:?}"
    );
}

#[tokio::test]
async fn every_listed_route_is_routed() {
    // A route of ROUTES that the router lacks would fall through to the fallback, whose
    // 404 carries the message "no such endpoint".
    for (_, path, _) in ledger_api::ROUTES {
        let concrete = path.replace("{id}", "X");
        let (_, body, _) = get(&concrete, Some("t-admin")).await;
        assert_ne!(body["message"], "no such endpoint", "{path} is not routed");
    }
}

#[tokio::test]
async fn leaderboard_metrics_and_read_your_writes() {
    let (s, body, _) = get(
        "/v1/programs/MDF-2026/leaderboard?period=2026-Q1",
        Some("t-finance"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["items"][0]["partner_id"], "P-1");
    assert_eq!(body["items"][0]["rank"], 1);
    assert_eq!(
        get("/v1/programs/MDF-2026/leaderboard", Some("t-finance"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(
            "/v1/programs/MDF-2026/leaderboard?period=2026-Q1",
            Some("t-p1")
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // /metrics: counters, gauges and the two latency histograms.
    let st = state();
    let app = router(st.clone());
    let req = |path: &str| {
        Request::builder()
            .uri(path)
            .header("authorization", "Bearer t-admin")
            .body(Body::empty())
            .unwrap()
    };
    app.clone().oneshot(req("/v1/status")).await.unwrap();
    let resp = app.oneshot(req("/metrics")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for needle in [
        "ledger_events_received_total 26",
        "ledger_events_refused_total{code=\"claim_not_pending\"} 2",
        "# TYPE ledger_batch_flush_seconds histogram",
        "ledger_http_request_seconds_count{route=\"/v1/status\"} 1",
        "ledger_events_accepted_by_type_total{type=\"claim.submitted\"}",
        "ledger_events_refused_by_type_total{type=\"claim.decided\"} 3",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert_eq!(get("/metrics", None).await.0, StatusCode::UNAUTHORIZED);
    // Position already folded: answered at once; far ahead: 503 after the bounded wait.
    assert_eq!(
        get("/v1/programs?min_position=1", Some("t-p1")).await.0,
        StatusCode::OK
    );
    let (s, body, _) = get("/v1/programs?min_position=999999", Some("t-p1")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "position_not_reached");
    assert_eq!(
        get("/v1/programs?min_position=x", Some("t-p1")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_statement_explains_every_number_of_an_entry() {
    let (s, body, _) = get(
        "/v1/partners/P-1/statement?program=MDF-2026&period=2026-Q1",
        Some("t-p1"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["balance"]["earned"], "2500.00");
    assert_eq!(body["balance"]["expired"], "1000.00");
    let lines = body["lines"].as_array().unwrap();
    let causes: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    // Sale, reservation, approval, two closes (the second expires it), the late sale.
    assert_eq!(causes.first(), Some(&"sale.recorded"));
    assert!(
        causes.contains(&"claim.submitted")
            && causes.contains(&"claim.decided")
            && causes.contains(&"period.closed"),
        "{causes:?}"
    );
    assert_eq!(lines[0]["basis"], "40000");
    assert_eq!(lines[0]["earned_change"], "2000.00");
    let last = lines.last().unwrap();
    assert_eq!(last["basis"], "50000");
    assert_eq!(last["basis_change"], "10000");
    assert_eq!(body["explanation"]["expired"], true);
    assert_eq!(body["explanation"]["expires_when_closed"], "2026-Q2");
    // Scoping and shape.
    assert_eq!(
        get(
            "/v1/partners/P-1/statement?program=MDF-2026&period=2026-Q1",
            Some("t-p2")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/v1/partners/P-1/statement?program=MDF-2026", Some("t-p1"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(
            "/v1/partners/P-1/statement?program=MDF-2026&period=2027-Q1",
            Some("t-p1")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_seq_answers_from_the_log_as_it_stood() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rebuilt) = common::logged_fixture("mdf_claims_fifo_expiry", &dir.path().join("data"));
    let mut st = state();
    st.handle = Handle::from_replay(
        rebuilt.replay,
        rebuilt.seq,
        rebuilt.arrival,
        Some(log.reader()),
    )
    .unwrap();
    let call = |path: String| {
        let st = st.clone();
        async move {
            let resp = router(st)
                .oneshot(
                    Request::builder()
                        .uri(path)
                        .header("authorization", "Bearer t-finance")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
            )
        }
    };
    // Now: Q1 earned 2500.00 after the late sale. After position 4 (the first sale): 2000.00.
    let (s, now) = call("/v1/partners/P-1/balances?period=2026-Q1".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(now["balances"][0]["earned"], "2500.00");
    let (s, then) = call("/v1/partners/P-1/balances?period=2026-Q1&as_of_seq=4".into()).await;
    assert_eq!(s, StatusCode::OK, "{then}");
    assert_eq!(then["balances"][0]["earned"], "2000.00");
    let (s, st_then) =
        call("/v1/partners/P-1/statement?program=MDF-2026&period=2026-Q1&as_of_seq=4".into()).await;
    assert_eq!(s, StatusCode::OK, "{st_then}");
    assert_eq!(st_then["lines"].as_array().unwrap().len(), 1);
    let (s, _) = call("/v1/partners/P-1/balances?as_of_seq=0".into()).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "nothing had happened at position 0"
    );
}

#[tokio::test]
async fn as_of_seq_without_a_data_directory_is_a_clear_error() {
    let (s, body, _) = get("/v1/partners/P-1/balances?as_of_seq=3", Some("t-finance")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("as_of_seq"));
}

#[test]
fn queries_are_answered_while_the_projection_is_read_for_a_checkpoint() {
    let st = state();
    let handle = st.handle.clone();
    // What the projector holds while it encodes a checkpoint: a read of the projection.
    let held = handle.hold_read();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let req = Request::builder()
            .uri("/v1/partners/P-1/balances")
            .header("authorization", "Bearer t-finance")
            .body(Body::empty())
            .unwrap();
        let status = rt.block_on(router(st).oneshot(req)).unwrap().status();
        let _ = tx.send(status);
    });
    // Generous: this checks that the query does not wait for the checkpoint at all
    // (with an exclusive lock it would wait until `held` is dropped, i.e. forever here).
    let status = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the query waited for the checkpoint's read of the projection");
    assert_eq!(status, StatusCode::OK);
    drop(held);
}

/// Programs and their rules are written in the spec's words — the shape of
/// `program.published` — never as internal Rust enums.
#[tokio::test]
async fn programs_are_written_in_the_words_of_program_published() {
    let (s, body, _) = get("/v1/programs/MDF-2026", Some("t-finance")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["kind"], "mdf");
    assert_eq!(body["period"], "quarter");
    let rules = body["rules"].as_object().unwrap();
    let keys: Vec<&str> = rules.keys().map(String::as_str).collect();
    for key in &keys {
        assert!(
            ["accrual_rate", "cap_per_period", "expires_after_periods"].contains(key),
            "{key} is not a rule of SPEC §4.2: {body}"
        );
    }
    assert!(rules["accrual_rate"].is_string(), "{body}");
    let text = body.to_string();
    for rust in [
        "\"Fund\"",
        "\"Rebate\"",
        "NetAmount",
        "PerUnit",
        "PeriodClose",
    ] {
        assert!(!text.contains(rust), "{rust} leaked into {text}");
    }
}

/// Every refusal is JSON with a code and a message: a value of the wrong type, a
/// parameter the route does not take (a mistyped filter must not widen the answer),
/// a limit out of range (refused, not clamped), a method the route does not have.
#[tokio::test]
async fn bad_requests_are_refused_in_json() {
    for (path, says) in [
        ("/v1/payouts?limit=abc", "limit"),
        ("/v1/payouts?partnr=P-1", "partnr"),
        ("/v1/payouts?limit=0", "between 1 and 1000"),
        ("/v1/payouts?limit=5000", "between 1 and 1000"),
        ("/v1/rejected?partner=P-1", "partner"),
        ("/v1/partners/P-1/balances?progam=X", "progam"),
        (
            "/v1/partners/P-1/statement?program=MDF-2026&period=2026-Q1&as_of=3",
            "as_of",
        ),
        (
            "/v1/programs/MDF-2026/leaderboard?period=2026-Q1&top=3",
            "top",
        ),
    ] {
        let (s, body, _) = get(path, Some("t-admin")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], "bad_request", "{path}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    assert_eq!(
        get("/v1/payouts?limit=1000", Some("t-admin")).await.0,
        StatusCode::OK
    );
    let resp = router(state())
        .oneshot(
            Request::builder()
                .method("DELETE")
                .uri("/v1/status")
                .header("authorization", "Bearer t-admin")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "method_not_allowed", "{body}");
    assert!(
        allow.as_deref().is_some_and(|a| a.contains("GET")),
        "{allow:?}"
    );
}

/// `Accept: text/csv` on the lists: a header line, one row per item (the JSON's), the
/// next page's cursor in `X-Next-Cursor`.
#[tokio::test]
async fn lists_answer_csv_on_request() {
    let fetch = |path: &'static str| async move {
        let resp = router(state())
            .oneshot(
                Request::builder()
                    .uri(path)
                    .header("authorization", "Bearer t-finance")
                    .header("accept", "text/csv")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
        let next = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (String::from_utf8(body.to_vec()).unwrap(), next)
    };
    let (text, next) = fetch("/v1/payouts?limit=2").await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("payout_id,partner_id,program_id,period,kind,amount"),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(next.as_deref(), Some("2"));
    let (json_status, json, _) = get("/v1/payouts?limit=2", Some("t-finance")).await;
    assert_eq!(json_status, StatusCode::OK);
    assert!(lines[1].starts_with(json["items"][0]["payout_id"].as_str().unwrap()));
    let (text, _) = fetch("/v1/partners/P-1/balances").await;
    assert!(text.starts_with("partner_id,program_id,period,kind,currency,basis,earned,paid,closed"));
    assert_eq!(text.lines().count(), 4, "{text}");
    let (text, _) = fetch("/v1/rejected").await;
    assert!(
        text.starts_with("stage,code,message,line,source,id"),
        "{text}"
    );
    assert!(text.contains("claim_not_pending"), "{text}");
}
