//! The web pages' sign-in, sessions and scoping, in process (the browser test in
//! `incentive-ledger/tests/ui.rs` drives the same pages in Chromium): cookies are
//! `HttpOnly` and `SameSite=Strict`, a sign-in form needs its own CSRF cookie, failed
//! sign-ins are counted and slowed, a producer token has no pages, a partner's console
//! and other partners' pages answer as missing pages, and forms without their CSRF token
//! change nothing.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use ledger_api::{router, ApiState, Role};
use tower::ServiceExt;

mod common;

fn state(dir: &std::path::Path) -> ApiState {
    ApiState::new(
        common::handle_over("mdf_claims_fifo_expiry", dir),
        vec![
            ("fin".into(), Role::Finance),
            ("p1".into(), Role::Partner("P-1".into())),
            ("prod".into(), Role::Producer),
        ],
    )
}

struct Answer {
    status: StatusCode,
    cookies: Vec<String>,
    location: Option<String>,
    body: String,
}

async fn send(
    st: &ApiState,
    method: &str,
    path: &str,
    cookie: &str,
    form: Option<String>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, cookie);
    }
    if form.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let resp = router(st.clone())
        .oneshot(req.body(form.map_or_else(Body::empty, Body::from)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string());
    let body =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    Answer {
        status,
        cookies,
        location,
        body,
    }
}

fn value_of<'a>(cookies: &'a [String], name: &str) -> &'a str {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap())
        .unwrap_or_else(|| panic!("no cookie {name} in {cookies:?}"))
}

/// Signs in with `token`: the session cookie header for the next requests.
async fn signed_in(st: &ApiState, token: &str) -> (String, Answer) {
    let form = send(st, "GET", "/ui/sign-in", "", None).await;
    let csrf = value_of(&form.cookies, "ledger_sign_in").to_string();
    let cookie = format!("ledger_sign_in={csrf}");
    let answer = send(
        st,
        "POST",
        "/ui/sign-in",
        &cookie,
        Some(format!("csrf={csrf}&token={token}")),
    )
    .await;
    let session = answer
        .cookies
        .iter()
        .find(|c| c.starts_with("ledger_session=") && !c.starts_with("ledger_session=;"))
        .map(|c| c.split(';').next().unwrap().to_string())
        .unwrap_or_default();
    (session, answer)
}

fn csrf_of(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_forms_and_scoping() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    // Pages need a session.
    let a = send(&st, "GET", "/ui/console", "", None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location.as_deref(), Some("/ui/sign-in"));

    // The session cookie is HttpOnly, SameSite=Strict, for /ui.
    let (fin, a) = signed_in(&st, "fin").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location.as_deref(), Some("/ui/console"));
    let set = a
        .cookies
        .iter()
        .find(|c| c.starts_with("ledger_session="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let console = send(&st, "GET", "/ui/console", &fin, None).await;
    assert_eq!(console.status, StatusCode::OK);
    assert!(console.body.contains("Figures as of log position"));

    // A sign-in without its CSRF cookie is refused, and so is a wrong token, counted.
    let a = send(
        &st,
        "POST",
        "/ui/sign-in",
        "",
        Some("csrf=x&token=fin".into()),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.cookies.iter().all(|c| !c.starts_with("ledger_session=")));
    for _ in 0..3 {
        let (session, a) = signed_in(&st, "guess").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.body.contains("That token cannot sign in here."));
        assert!(session.is_empty());
    }
    let started = std::time::Instant::now();
    let (_, a) = signed_in(&st, "guess").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(100),
        "the fourth failure waits"
    );
    let (_, a) = signed_in(&st, "prod").await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "a producer token has no pages"
    );
    let metrics = send(&st, "GET", "/metrics", "", None).await;
    assert_eq!(
        metrics.status,
        StatusCode::UNAUTHORIZED,
        "metrics need a bearer token"
    );
    assert_eq!(st.sessions.failures(), 5, "a refused form is not a guess");

    // A partner: its own pages; the console and other partners' pages are missing pages.
    let (p1, a) = signed_in(&st, "p1").await;
    assert_eq!(a.location.as_deref(), Some("/ui/partners/P-1"));
    assert_eq!(
        send(&st, "GET", "/ui/partners/P-1", &p1, None).await.status,
        StatusCode::OK
    );
    let missing = send(&st, "GET", "/ui/no-such-page", &p1, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    for path in [
        "/ui/partners/P-2",
        "/ui/partners/P-2/claims",
        "/ui/console",
        "/ui/console/claims",
    ] {
        let a = send(&st, "GET", path, &p1, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(a.body, missing.body, "{path}");
    }
    // Staff open a partner's pages.
    assert_eq!(
        send(&st, "GET", "/ui/partners/P-1", &fin, None)
            .await
            .status,
        StatusCode::OK
    );

    // Forms without their CSRF token are refused; with it, a server without a stream
    // says so and keeps what was typed.
    let claims = send(&st, "GET", "/ui/partners/P-1/claims", &p1, None).await;
    let form = "claim_id=CLM-T&program_id=MDF-2026&amount=10.00&activity=fair";
    let a = send(
        &st,
        "POST",
        "/ui/partners/P-1/claims",
        &p1,
        Some(format!("csrf=wrong&{form}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("This form was refused"));
    let csrf = csrf_of(&claims.body);
    let a = send(
        &st,
        "POST",
        "/ui/partners/P-1/claims",
        &p1,
        Some(format!("csrf={csrf}&{form}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.contains("nothing was sent"), "{}", a.body);
    assert!(
        a.body.contains("value=\"fair\"") && a.body.contains("value=\"CLM-T\""),
        "what was typed is kept"
    );
    // Finance cannot submit a partner's claim.
    let fin_csrf = csrf_of(&console.body);
    let a = send(
        &st,
        "POST",
        "/ui/partners/P-1/claims",
        &fin,
        Some(format!("csrf={fin_csrf}&{form}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // What if: the form comes with a program's current version; run, it shows the
    // comparison with the ledger as it is.
    let form = send(
        &st,
        "GET",
        "/ui/console/simulate?program=MDF-2026",
        &fin,
        None,
    )
    .await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.body
            .contains("&quot;program_id&quot;: &quot;MDF-2026&quot;"),
        "{}",
        form.body
    );
    let draft = r#"{"program_id":"MDF-2026","version":2,"name":"MDF-2026 v2","kind":"mdf","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","requires_enrollment":true,"rules":{"accrual_rate":"0.10","cap_per_period":"3000","expires_after_periods":1}}"#;
    let body = format!(
        "csrf={}&draft={}",
        csrf_of(&form.body),
        percent_encoding::utf8_percent_encode(draft, percent_encoding::NON_ALPHANUMERIC)
    );
    let run = send(&st, "POST", "/ui/console/simulate", &fin, Some(body)).await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    assert!(run.body.contains("<pre class=\"report\">"), "{}", run.body);
    let bad = format!("csrf={}&draft=%7B%7D", csrf_of(&form.body));
    let run = send(&st, "POST", "/ui/console/simulate", &fin, Some(bad)).await;
    assert_eq!(run.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(run.body.contains("class=\"alert\""));
    assert_eq!(
        send(&st, "GET", "/ui/console/simulate", &p1, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Signing out ends the session.
    let a = send(
        &st,
        "POST",
        "/ui/sign-out",
        &p1,
        Some(format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = send(&st, "GET", "/ui/partners/P-1", &p1, None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
}
