//! Planning and evaluation over HTTP (issue 17): simulations, program reports, accruals,
//! opportunities — their answers equal the library's, their scoping, one simulation at
//! a time.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ledger_api::{router, ApiState, Role};
use tower::ServiceExt;

mod common;

/// A service state over a data directory holding a fixture, and the directory.
fn state_over(fixture: &str) -> (ApiState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState::new(
        common::handle_over(fixture, dir.path()),
        vec![
            ("t-admin".into(), Role::Admin),
            ("t-finance".into(), Role::Finance),
            ("t-p100".into(), Role::Partner("P-100".into())),
            ("t-p200".into(), Role::Partner("P-200".into())),
        ],
    );
    (state, dir)
}

async fn call(
    st: &ApiState,
    method: &str,
    path: &str,
    token: &str,
    body: Option<String>,
) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    let resp = router(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json, headers)
}

/// Checks `value` against schema `name` of `schemas/openapi.json` (its refs resolved
/// within the document).
fn conforms(value: &serde_json::Value, name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema = serde_json::json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    let v = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

/// The draft of the README's worked example: tier 2 of the fixture's rebate raised.
fn raised_draft() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    let first = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let mut d = v["data"].clone();
    d["rules"]["tiers"][1]["rate"] = "0.04".into();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_over_http_equals_the_library_and_is_for_staff_only() {
    let (st, dir) = state_over("rebate_retroactive_tiers");
    let body = serde_json::json!({ "program": raised_draft() }).to_string();
    let (s, got, _) = call(
        &st,
        "POST",
        "/v1/simulations",
        "t-finance",
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    // The same plan through the library, over the same directory.
    let _ = &dir;
    let plan =
        ledger_core::simulate::Plan::new(raised_draft().to_string().as_bytes(), None, vec![])
            .unwrap();
    let expected = st.handle.simulate(plan, 1000).await.unwrap().simulation;
    assert_eq!(got["simulation"], serde_json::to_value(&expected).unwrap());
    assert_eq!(
        got["simulation"]["programs"][0]["earned_difference"],
        "2250.02"
    );
    conforms(&got["simulation"], "Simulation");
    // CSV and the table.
    let (s, csv, h) = call(
        &st,
        "POST",
        "/v1/simulations?format=csv",
        "t-admin",
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert!(csv
        .as_str()
        .unwrap()
        .starts_with("partner_id,program_id,period"));
    // Partners may not simulate; bad bodies and drafts are clear.
    let (s, _, _) = call(&st, "POST", "/v1/simulations", "t-p100", Some(body)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e, _) = call(
        &st,
        "POST",
        "/v1/simulations",
        "t-admin",
        Some("{\"draft\":1}".into()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("program"), "{e}");
    let mut bad = raised_draft();
    bad["currency"] = "euro".into();
    let (s, e, _) = call(
        &st,
        "POST",
        "/v1/simulations",
        "t-admin",
        Some(serde_json::json!({ "program": bad }).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["code"], "plan_refused");
    assert!(e["message"].as_str().unwrap().contains("currency"), "{e}");
}

/// While one simulation (or past report) runs, another is answered 429 with
/// Retry-After; once it is done, the next one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_simulation_at_a_time() {
    let (st, _dir) = state_over("rebate_retroactive_tiers");
    let body = serde_json::json!({ "program": raised_draft() }).to_string();
    let held = st.handle.hold_background_slot().unwrap();
    for (method, path, body) in [
        ("POST", "/v1/simulations", Some(body.clone())),
        ("GET", "/v1/programs/REB-EMEA-2026/report?as_of_seq=3", None),
    ] {
        let (s, e, h) = call(&st, method, path, "t-admin", body).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{path}: {e}");
        assert_eq!(e["code"], "busy");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry >= 1);
    }
    // The live report needs no background fold.
    let (s, _, _) = call(
        &st,
        "GET",
        "/v1/programs/REB-EMEA-2026/report",
        "t-admin",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    drop(held);
    let (s, _, _) = call(&st, "POST", "/v1/simulations", "t-admin", Some(body)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_accruals_live_and_as_of_a_position() {
    let (st, _dir) = state_over("rebate_retroactive_tiers");
    let (s, r, _) = call(
        &st,
        "GET",
        "/v1/programs/REB-EMEA-2026/report",
        "t-finance",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let report = &r["report"];
    conforms(report, "ProgramReport");
    assert_eq!(report["totals"]["earned"], "17150.04");
    assert_eq!(report["totals"]["accrued_liability"], "3000.04");
    assert_eq!(report["periods"][0]["period"], "2026-Q1");
    assert_eq!(report["periods"][0]["cost_share"], "0.0368");
    // As of position 4 (the program, two enrollments, one sale): nothing paid yet.
    let (s, then, _) = call(
        &st,
        "GET",
        "/v1/programs/REB-EMEA-2026/report?as_of_seq=4",
        "t-finance",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{then}");
    assert_eq!(then["position"], 4);
    assert_eq!(then["report"]["totals"]["paid"], "0.00");
    assert_eq!(then["report"]["totals"]["revenue"], "60000");
    let (s, _, _) = call(&st, "GET", "/v1/programs/NOPE/report", "t-finance", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &st,
        "GET",
        "/v1/programs/REB-EMEA-2026/report",
        "t-p100",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e, _) = call(
        &st,
        "GET",
        "/v1/programs/REB-EMEA-2026/report?as_of_time=yesterday",
        "t-admin",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("RFC 3339"));
    let (s, e, _) = call(
        &st,
        "GET",
        "/v1/reports/accruals?partnr=P-1",
        "t-admin",
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a mistyped parameter is refused: {e}"
    );
    let (s, a, _) = call(&st, "GET", "/v1/reports/accruals", "t-admin", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["items"][0]["program_id"], "REB-EMEA-2026");
    conforms(&a["items"][0], "Accrual");
    assert_eq!(a["items"][0]["accrued_liability"], "3000.04");
    let (s, a4, _) = call(
        &st,
        "GET",
        "/v1/reports/accruals?as_of_seq=4",
        "t-admin",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a4["items"][0]["earned"], "1200.00");
    let (s, _, _) = call(&st, "GET", "/v1/reports/accruals", "t-p200", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_sees_its_own_opportunities_only() {
    let (st, _dir) = state_over("rebate_retroactive_tiers");
    let (s, o, _) = call(
        &st,
        "GET",
        "/v1/partners/P-100/opportunities",
        "t-p100",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    // P-100's open Q2 entry: 100,001.5 in tier 2 (3 %); tier 3 from 250,000 needs
    // 149,998.5 more and pays 4 % on the whole 250,000 = 10,000.00 (now 3,000.04).
    let item = &o["items"][0];
    conforms(item, "Opportunity");
    assert_eq!(item["period"], "2026-Q2");
    assert_eq!(item["additional_basis"], "149998.5");
    assert_eq!(item["earned_then"], "10000.00");
    assert_eq!(item["pays_more"], "6999.96");
    for (path, token) in [
        ("/v1/partners/P-100/opportunities", "t-p200"),
        ("/v1/partners/NOBODY/opportunities", "t-admin"),
    ] {
        let (s, _, _) = call(&st, "GET", path, token, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path} {token}");
    }
    let (s, _, _) = call(
        &st,
        "GET",
        "/v1/partners/P-100/opportunities",
        "t-finance",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_budget_utilization() {
    let (st, _dir) = state_over("program_budget");
    let (s, m, _) = call(&st, "GET", "/metrics", "t-admin", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = m.as_str().unwrap();
    assert!(
        text.contains("ledger_program_budget{program=\"REB-B\"} 80000"),
        "{text}"
    );
    assert!(text.contains("ledger_program_budget_committed{program=\"REB-B\"} 600"));
    assert!(text.contains("ledger_program_budget_utilization{program=\"REB-B\"} 0.0075"));
}

/// `GET /v1/export` is the log byte for byte, as `export` prints it, while the service
/// holds the directory; staff only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_exported_through_the_service() {
    let (st, _dir) = state_over("rebate_retroactive_tiers");
    let req = |path: &str, token: &str| {
        Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let resp = router(st.clone())
        .oneshot(req("/v1/export", "t-finance"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    assert_eq!(resp.headers()["x-ledger-export-through"], "16");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    let expected: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    let resp = router(st.clone())
        .oneshot(req("/v1/export?with_chain=true", "t-admin"))
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let lines: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 16);
    assert_eq!(lines[15]["seq"], 16);
    assert_eq!(lines[0]["hash"].as_str().map(str::len), Some(64));
    let resp = router(st)
        .oneshot(req("/v1/export", "t-p100"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// `GET /v1/verify` re-checks the directory the service holds; `GET /v1/backup` streams
/// a backup that restores into a directory equal to it: same records, a sound verify,
/// the same replay. Staff only; a second verify while one runs is told to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_directory_is_verified_and_backed_up_through_the_api() {
    let (st, dir) = state_over("mdf_claims_fifo_expiry");
    let (status, v, _) = call(&st, "GET", "/v1/verify", "t-finance", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["records"].as_u64().unwrap() > 10, "{v}");
    conforms(&v, "VerifyReport");
    let (status, _, _) = call(&st, "GET", "/v1/verify", "t-p100", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let held = st.handle.hold_background_slot().unwrap();
    let (status, _, headers) = call(&st, "GET", "/v1/verify", "t-admin", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    drop(held);
    let (status, _, _) = call(&st, "GET", "/v1/backup", "t-p100", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let req = Request::builder()
        .uri("/v1/backup")
        .header("authorization", "Bearer t-admin")
        .body(Body::empty())
        .unwrap();
    let resp = router(st.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let through: u64 = resp.headers()["x-ledger-backup-through"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let stream = resp.into_body().collect().await.unwrap().to_bytes();
    let to = dir.path().join("copy");
    let summary = ledger_log::backup::restore(&mut stream.as_ref(), &to).unwrap();
    assert_eq!(summary.head.last_seq, through);
    let copy = ledger_log::Log::open_existing(&to).unwrap();
    let report = ledger_log::verify(&copy, &mut |_| {}).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, through);
    let replayed =
        ledger_log::rebuild_with_journal(&copy, ledger_log::Bound::All, &mut |_| {}).unwrap();
    let (_, expected) = common::logged_fixture("mdf_claims_fifo_expiry", &dir.path().join("again"));
    assert_eq!(
        replayed.replay.document().digest,
        expected.replay.document().digest
    );
}
