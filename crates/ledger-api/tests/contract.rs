//! Every answer of the API checked against `schemas/openapi.json`: its status is one the
//! document lists for the route, its content type one the document gives for that
//! status, its body valid against that schema, and the headers the document declares
//! are there. Requests cover every route — good ones, each kind of refusal, CSV and
//! tables — over real data directories, so a response and its schema that disagree
//! fail here.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use ledger_api::events::{EventSink, Outgoing, Stored};
use ledger_api::{router, ApiState, Role, ROUTES};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

mod common;

fn document() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Follows a `#/components/...` reference within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .unwrap()
            .split('/')
            .fold(doc, |at, key| &at[key]),
        None => v,
    }
}

/// An in-memory inbound stream: numbers what it is given, or fails when told to.
#[derive(Default)]
struct Sink {
    stored: Mutex<Vec<Outgoing>>,
    failing: std::sync::atomic::AtomicBool,
}

impl EventSink for Sink {
    fn publish(&self, event: Outgoing) -> BoxFuture<'_, Result<Stored, String>> {
        Box::pin(async move {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("no responders".into());
            }
            let mut stored = self.stored.lock().unwrap();
            stored.push(event);
            Ok(Stored {
                stream_sequence: stored.len() as u64,
                duplicate: false,
            })
        })
    }

    fn stream(&self) -> &str {
        "INCENTIVE_EVENTS"
    }
}

struct Checker {
    doc: Value,
    state: ApiState,
    /// (method, route) pairs answered so far, with their statuses.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Checker {
    fn over(fixture: &str, dir: &std::path::Path) -> Checker {
        let state = ApiState::new(
            common::handle_over(fixture, dir),
            vec![
                ("t-admin".into(), Role::Admin),
                ("t-finance".into(), Role::Finance),
                ("t-producer".into(), Role::Producer),
                ("t-p1".into(), Role::Partner("P-1".into())),
                ("t-p100".into(), Role::Partner("P-100".into())),
            ],
        );
        Checker {
            doc: document(),
            state,
            seen: Mutex::default(),
        }
    }

    /// Sends a request for `route` (its pattern, `{id}` filled in by `path`) and checks
    /// the answer against the document; returns the status and body.
    async fn call(
        &self,
        method: &str,
        route: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = router(self.state.clone())
            .oneshot(req.body(body.map_or_else(Body::empty, Body::from)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let what = format!("{method} {path} → {status}");
        let op = &self.doc["paths"][route][method.to_lowercase()];
        assert!(
            op.is_object(),
            "{what}: the document has no {method} {route}"
        );
        let answer = &op["responses"][status.as_str()];
        assert!(
            answer.is_object(),
            "{what}: the document does not list status {status} for {route}"
        );
        let answer = resolve(&self.doc, answer);
        assert!(
            resp_headers.contains_key("x-ledger-position"),
            "{what}: no X-Ledger-Position"
        );
        if let Some(declared) = answer["headers"].as_object() {
            for name in declared.keys() {
                if name.eq_ignore_ascii_case("retry-after")
                    || name.eq_ignore_ascii_case("x-next-cursor")
                {
                    continue; // only with some answers of the status
                }
                assert!(
                    resp_headers.contains_key(name.to_lowercase().as_str()),
                    "{what}: no {name} header"
                );
            }
        }
        let content_type = resp_headers
            .get("content-type")
            .map(|v| {
                v.to_str()
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let Some(media) = answer["content"].get(&content_type) else {
            panic!(
                "{what}: content type {content_type:?} is not one the document gives ({:?})",
                answer["content"]
                    .as_object()
                    .map(|o| o.keys().collect::<Vec<_>>())
            );
        };
        if content_type == "application/x-ndjson" {
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<Value>(line)
                    .unwrap_or_else(|e| panic!("{what}: a line is not JSON ({e})"));
            }
        }
        let value = if content_type == "application/json" || content_type.ends_with("+json") {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{what}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        let schema = serde_json::json!({
            "allOf": [media["schema"]],
            "components": self.doc["components"],
        });
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match its schema: {errors:?}\n{value:#}"
        );
        self.seen.lock().unwrap().insert((
            method.to_lowercase(),
            route.to_string(),
            status.as_u16(),
        ));
        (status, bytes)
    }

    async fn get(&self, route: &str, path: &str, token: Option<&str>) -> StatusCode {
        self.call("GET", route, path, token, &[], None).await.0
    }
}

fn draft() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    let first = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let mut d = v["data"].clone();
    d["rules"]["tiers"][1]["rate"] = "0.04".into();
    serde_json::json!({ "program": d }).to_string()
}

/// Every route, with good requests and each kind of refusal, answers what the
/// document says it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_document() {
    let tmp = tempfile::tempdir().unwrap();
    let mdf = Checker::over("mdf_claims_fifo_expiry", &tmp.path().join("mdf"));
    let rebate = Checker::over("rebate_retroactive_tiers", &tmp.path().join("rebate"));
    use StatusCode as S;
    let csv = [("accept", "text/csv")];

    // Health, status, metrics.
    for c in [&mdf, &rebate] {
        assert_eq!(c.get("/health/live", "/health/live", None).await, S::OK);
        assert_eq!(c.get("/health/ready", "/health/ready", None).await, S::OK);
        assert_eq!(
            c.get("/v1/status", "/v1/status", Some("t-finance")).await,
            S::OK
        );
        assert_eq!(c.get("/metrics", "/metrics", Some("t-admin")).await, S::OK);
    }
    assert_eq!(
        mdf.get("/v1/status", "/v1/status", None).await,
        S::UNAUTHORIZED
    );
    assert_eq!(
        mdf.get("/v1/status", "/v1/status", Some("nope")).await,
        S::UNAUTHORIZED
    );
    assert_eq!(
        mdf.get("/v1/status", "/v1/status", Some("t-p1")).await,
        S::FORBIDDEN
    );
    assert_eq!(
        mdf.get("/v1/status", "/v1/status", Some("t-producer"))
            .await,
        S::FORBIDDEN
    );
    assert_eq!(
        mdf.get("/metrics", "/metrics", Some("t-p1")).await,
        S::FORBIDDEN
    );
    assert_eq!(
        mdf.get(
            "/v1/status",
            "/v1/status?min_position=999999",
            Some("t-admin")
        )
        .await,
        S::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        mdf.get("/v1/status", "/v1/status?min_position=x", Some("t-admin"))
            .await,
        S::BAD_REQUEST
    );

    // A partner's balances, statement, opportunities; claims; payouts; refusals.
    let r = "/v1/partners/{id}/balances";
    assert_eq!(
        mdf.get(r, "/v1/partners/P-1/balances", Some("t-p1")).await,
        S::OK
    );
    assert_eq!(
        mdf.get(
            r,
            "/v1/partners/P-1/balances?period=2026-Q2",
            Some("t-finance")
        )
        .await,
        S::OK
    );
    assert_eq!(
        mdf.get(r, "/v1/partners/P-2/balances", Some("t-p1")).await,
        S::NOT_FOUND
    );
    assert_eq!(
        mdf.get(r, "/v1/partners/P-1/balances?perod=x", Some("t-p1"))
            .await,
        S::BAD_REQUEST
    );
    assert_eq!(
        mdf.get(r, "/v1/partners/P-1/balances?as_of_seq=12", Some("t-p1"))
            .await,
        S::OK
    );
    let (s, _) = mdf
        .call(
            "GET",
            r,
            "/v1/partners/P-1/balances",
            Some("t-p1"),
            &csv,
            None,
        )
        .await;
    assert_eq!(s, S::OK);
    let r = "/v1/partners/{id}/statement";
    assert_eq!(
        rebate
            .get(
                r,
                "/v1/partners/P-100/statement?program=REB-EMEA-2026&period=2026-Q1",
                Some("t-p100")
            )
            .await,
        S::OK
    );
    assert_eq!(
        rebate
            .get(r, "/v1/partners/P-100/statement", Some("t-p100"))
            .await,
        S::BAD_REQUEST
    );
    assert_eq!(
        rebate
            .get(
                r,
                "/v1/partners/P-100/statement?program=NOPE&period=2026-Q1",
                Some("t-p100")
            )
            .await,
        S::NOT_FOUND
    );
    let r = "/v1/partners/{id}/opportunities";
    assert_eq!(
        rebate
            .get(r, "/v1/partners/P-100/opportunities", Some("t-p100"))
            .await,
        S::OK
    );
    assert_eq!(
        rebate
            .get(r, "/v1/partners/P-200/opportunities", Some("t-p100"))
            .await,
        S::NOT_FOUND
    );
    assert_eq!(
        rebate
            .get(r, "/v1/partners/P-100/opportunities?x=1", Some("t-p100"))
            .await,
        S::BAD_REQUEST
    );
    let r = "/v1/claims/{id}";
    assert_eq!(mdf.get(r, "/v1/claims/CLM-1", Some("t-p1")).await, S::OK);
    assert_eq!(
        mdf.get(r, "/v1/claims/CLM-404", Some("t-finance")).await,
        S::NOT_FOUND
    );
    assert_eq!(
        mdf.get(r, "/v1/claims/CLM-1?x=1", Some("t-finance")).await,
        S::BAD_REQUEST
    );
    let r = "/v1/payouts";
    assert_eq!(
        mdf.get(r, "/v1/payouts?limit=2", Some("t-finance")).await,
        S::OK
    );
    assert_eq!(
        mdf.get(r, "/v1/payouts?partner=P-1", Some("t-p1")).await,
        S::OK
    );
    assert_eq!(
        mdf.get(r, "/v1/payouts?partner=P-2", Some("t-p1")).await,
        S::NOT_FOUND
    );
    assert_eq!(
        mdf.get(r, "/v1/payouts?limit=0", Some("t-finance")).await,
        S::BAD_REQUEST
    );
    let (s, _) = mdf
        .call(
            "GET",
            r,
            "/v1/payouts?limit=1",
            Some("t-finance"),
            &csv,
            None,
        )
        .await;
    assert_eq!(s, S::OK);
    let r = "/v1/rejected";
    assert_eq!(mdf.get(r, "/v1/rejected", Some("t-finance")).await, S::OK);
    assert_eq!(mdf.get(r, "/v1/rejected", Some("t-p1")).await, S::FORBIDDEN);
    assert_eq!(
        mdf.get(r, "/v1/rejected?after=x", Some("t-finance")).await,
        S::BAD_REQUEST
    );
    let (s, _) = mdf
        .call("GET", r, "/v1/rejected", Some("t-finance"), &csv, None)
        .await;
    assert_eq!(s, S::OK);

    // Programs, leaderboards, reports, accruals.
    for c in [&mdf, &rebate] {
        assert_eq!(
            c.get("/v1/programs", "/v1/programs", Some("t-p1")).await,
            S::OK
        );
    }
    let r = "/v1/programs/{id}";
    assert_eq!(
        mdf.get(r, "/v1/programs/MDF-2026", Some("t-p1")).await,
        S::OK
    );
    assert_eq!(
        rebate
            .get(r, "/v1/programs/REB-EMEA-2026", Some("t-finance"))
            .await,
        S::OK
    );
    assert_eq!(
        mdf.get(r, "/v1/programs/NOPE", Some("t-p1")).await,
        S::NOT_FOUND
    );
    let r = "/v1/programs/{id}/leaderboard";
    assert_eq!(
        rebate
            .get(
                r,
                "/v1/programs/REB-EMEA-2026/leaderboard?period=2026-Q1",
                Some("t-finance")
            )
            .await,
        S::OK
    );
    assert_eq!(
        rebate
            .get(
                r,
                "/v1/programs/REB-EMEA-2026/leaderboard",
                Some("t-finance")
            )
            .await,
        S::BAD_REQUEST
    );
    assert_eq!(
        rebate
            .get(
                r,
                "/v1/programs/NOPE/leaderboard?period=2026-Q1",
                Some("t-finance")
            )
            .await,
        S::NOT_FOUND
    );
    let r = "/v1/programs/{id}/report";
    for format in ["", "?format=csv", "?format=table", "?as_of_seq=5"] {
        assert_eq!(
            rebate
                .get(
                    r,
                    &format!("/v1/programs/REB-EMEA-2026/report{format}"),
                    Some("t-finance")
                )
                .await,
            S::OK
        );
    }
    assert_eq!(
        rebate
            .get(r, "/v1/programs/NOPE/report", Some("t-finance"))
            .await,
        S::NOT_FOUND
    );
    assert_eq!(
        rebate
            .get(r, "/v1/programs/REB-EMEA-2026/report", Some("t-p100"))
            .await,
        S::FORBIDDEN
    );
    assert_eq!(
        rebate
            .get(
                r,
                "/v1/programs/REB-EMEA-2026/report?format=xml",
                Some("t-admin")
            )
            .await,
        S::BAD_REQUEST
    );
    let r = "/v1/reports/accruals";
    assert_eq!(mdf.get(r, r, Some("t-finance")).await, S::OK);
    assert_eq!(
        mdf.get(r, "/v1/reports/accruals?as_of_seq=4", Some("t-finance"))
            .await,
        S::OK
    );
    let (s, _) = mdf.call("GET", r, r, Some("t-finance"), &csv, None).await;
    assert_eq!(s, S::OK);
    assert_eq!(mdf.get(r, r, Some("t-p1")).await, S::FORBIDDEN);

    // Simulations, and the background slot they share with verify and past reports.
    let r = "/v1/simulations";
    for format in ["", "?format=csv", "?format=table"] {
        let (s, _) = rebate
            .call(
                "POST",
                r,
                &format!("{r}{format}"),
                Some("t-finance"),
                &[],
                Some(draft()),
            )
            .await;
        assert_eq!(s, S::OK);
    }
    let (s, _) = rebate
        .call(
            "POST",
            r,
            r,
            Some("t-admin"),
            &[],
            Some("{\"draft\":1}".into()),
        )
        .await;
    assert_eq!(s, S::BAD_REQUEST);
    let bad = draft().replace("\"EUR\"", "\"euro\"");
    let (s, _) = rebate
        .call("POST", r, r, Some("t-admin"), &[], Some(bad))
        .await;
    assert_eq!(s, S::UNPROCESSABLE_ENTITY);
    let (s, _) = rebate
        .call("POST", r, r, Some("t-p100"), &[], Some(draft()))
        .await;
    assert_eq!(s, S::FORBIDDEN);
    {
        let _held = rebate.state.handle.hold_background_slot().unwrap();
        let (s, _) = rebate
            .call("POST", r, r, Some("t-admin"), &[], Some(draft()))
            .await;
        assert_eq!(s, S::TOO_MANY_REQUESTS);
        assert_eq!(
            rebate
                .get("/v1/verify", "/v1/verify", Some("t-admin"))
                .await,
            S::TOO_MANY_REQUESTS
        );
        assert_eq!(
            rebate
                .get(
                    "/v1/programs/{id}/report",
                    "/v1/programs/REB-EMEA-2026/report?as_of_seq=3",
                    Some("t-admin")
                )
                .await,
            S::TOO_MANY_REQUESTS
        );
        assert_eq!(
            rebate
                .get(
                    "/v1/reports/accruals",
                    "/v1/reports/accruals?as_of_seq=3",
                    Some("t-admin")
                )
                .await,
            S::TOO_MANY_REQUESTS
        );
    }

    // Export, verify, backup.
    for (r, path) in [
        ("/v1/export", "/v1/export"),
        ("/v1/export", "/v1/export?with_chain=true"),
        ("/v1/verify", "/v1/verify"),
        ("/v1/backup", "/v1/backup"),
    ] {
        assert_eq!(mdf.get(r, path, Some("t-finance")).await, S::OK, "{path}");
        assert_eq!(mdf.get(r, path, Some("t-p1")).await, S::FORBIDDEN, "{path}");
        assert_eq!(
            mdf.get(
                r,
                &format!("{path}{}x=1", if path.contains('?') { '&' } else { '?' }),
                Some("t-finance")
            )
            .await,
            S::BAD_REQUEST
        );
    }

    // Events in: without a stream; then through one, every mode and refusal.
    let r = "/v1/events";
    let sale = r#"{"specversion":"1.0","id":"s-new","source":"erp","type":"sale.recorded","time":"2026-05-01T00:00:00Z","data":{"sale_id":"S-NEW","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"10.00","currency":"EUR"}]}}"#;
    let ce = [("content-type", "application/cloudevents+json")];
    let (s, _) = mdf
        .call("POST", r, r, Some("t-producer"), &ce, Some(sale.into()))
        .await;
    assert_eq!(s, S::SERVICE_UNAVAILABLE, "no sink: events are not taken");
    let sink = Arc::new(Sink::default());
    let events = Checker {
        doc: document(),
        state: mdf.state.clone().with_events(sink.clone()),
        seen: Mutex::default(),
    };
    let (s, _) = events
        .call("POST", r, r, Some("t-producer"), &ce, Some(sale.into()))
        .await;
    assert_eq!(s, S::ACCEPTED);
    let batch = [("content-type", "application/cloudevents-batch+json")];
    let (s, _) = events
        .call(
            "POST",
            r,
            r,
            Some("t-producer"),
            &batch,
            Some(format!("[{sale},{sale}]")),
        )
        .await;
    assert_eq!(s, S::ACCEPTED);
    let binary = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "s-bin"),
        ("ce-source", "erp"),
        ("ce-type", "sale.recorded"),
        ("ce-time", "2026-05-01T00:00:00Z"),
    ];
    let data = r#"{"sale_id":"S-BIN","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"10.00","currency":"EUR"}]}"#;
    let (s, _) = events
        .call("POST", r, r, Some("t-producer"), &binary, Some(data.into()))
        .await;
    assert_eq!(s, S::ACCEPTED);
    let (s, _) = events
        .call("POST", r, r, Some("t-finance"), &ce, Some(sale.into()))
        .await;
    assert_eq!(s, S::FORBIDDEN);
    let (s, _) = events
        .call(
            "POST",
            r,
            r,
            Some("t-producer"),
            &ce,
            Some("{\"specversion\":\"1.0\"}".into()),
        )
        .await;
    assert_eq!(s, S::UNPROCESSABLE_ENTITY);
    let (s, _) = events
        .call(
            "POST",
            r,
            r,
            Some("t-producer"),
            &binary,
            Some("{no".into()),
        )
        .await;
    assert_eq!(s, S::UNPROCESSABLE_ENTITY);
    let (s, _) = events
        .call("POST", r, r, Some("t-producer"), &batch, Some("[]".into()))
        .await;
    assert_eq!(s, S::BAD_REQUEST);
    let (s, _) = events
        .call(
            "POST",
            r,
            r,
            Some("t-producer"),
            &[("content-type", "text/plain")],
            Some(sale.into()),
        )
        .await;
    assert_eq!(s, S::UNSUPPORTED_MEDIA_TYPE);
    let (s, _) = events
        .call(
            "POST",
            r,
            r,
            Some("t-producer"),
            &ce,
            Some("x".repeat(3 << 20)),
        )
        .await;
    assert_eq!(s, S::PAYLOAD_TOO_LARGE);
    sink.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, _) = events
        .call("POST", r, r, Some("t-producer"), &ce, Some(sale.into()))
        .await;
    assert_eq!(s, S::SERVICE_UNAVAILABLE);
    assert_eq!(
        sink.stored.lock().unwrap().len(),
        4,
        "only the accepted requests were published"
    );

    // Every route of the server was answered at least once with a success.
    let mut seen: BTreeSet<(String, String, u16)> = BTreeSet::new();
    for c in [&mdf, &rebate, &events] {
        seen.extend(c.seen.lock().unwrap().iter().cloned());
    }
    for (method, route, _) in ROUTES {
        assert!(
            seen.iter()
                .any(|(m, r, s)| m == method && r == route && *s < 300),
            "{method} {route} was never answered with a success here"
        );
    }
}

/// Every operation has an operationId (unique), and no answer is left untyped.
#[test]
fn every_operation_is_named_and_every_answer_typed() {
    let doc = document();
    let mut ids = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            for (status, answer) in op["responses"].as_object().unwrap() {
                let answer = resolve(&doc, answer);
                for (media, content) in answer["content"].as_object().into_iter().flatten() {
                    let schema = &content["schema"];
                    assert!(
                        schema != &serde_json::json!({ "type": "object" }) && !schema.is_null(),
                        "{method} {path} {status} {media}: untyped"
                    );
                }
            }
        }
    }
}
