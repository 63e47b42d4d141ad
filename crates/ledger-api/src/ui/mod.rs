//! The web pages under `/ui/`: a partner portal and a finance console, rendered on the
//! server (maud templates compiled into the binary, one embedded style sheet, no
//! JavaScript), over the same [`Handle`](ledger_service::Handle) and the same role rules
//! as the JSON API — a page never shows what the API would not.
//!
//! Sign-in exchanges a configured bearer token for a session cookie ([`session`]); every
//! form carries the session's CSRF token. Pages only read; the two forms that change
//! anything (a partner's claim, finance's decision on a claim) publish CloudEvents to the
//! inbound stream through the API's [`EventSink`](crate::events::EventSink), with the
//! role checks of `POST /v1/events`, and show the result once the ledger has folded it.
//!
//! What a page does not do: keep state of its own (beyond sessions), or change the
//! ledger any other way than by an event.

use crate::{ApiState, Role};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup, DOCTYPE};

mod console;
mod partner;
pub mod session;
mod sign_in;
mod svg;

use session::Session;
pub use session::Sessions;

/// The style sheet, embedded: the service runs without internet.
const STYLE: &str = include_str!("style.css");

/// The `/ui` routes.
pub(crate) fn router(state: ApiState) -> Router<ApiState> {
    let signed_in = Router::new()
        .route("/ui/partners/{id}", get(partner::dashboard))
        .route("/ui/partners/{id}/statement", get(partner::statement))
        .route(
            "/ui/partners/{id}/claims",
            get(partner::claims).post(partner::submit_claim),
        )
        .route("/ui/partners/{id}/payouts", get(partner::payouts))
        .route("/ui/console", get(console::overview))
        .route("/ui/console/programs", get(console::programs))
        .route("/ui/console/programs/{id}/report", get(console::report))
        .route("/ui/console/claims", get(console::claims))
        .route("/ui/console/claims/{id}", post(console::decide))
        .route("/ui/console/refusals", get(console::refusals))
        .route("/ui/console/payouts", get(console::payouts))
        .route("/ui/console/payouts.csv", get(console::payouts_csv))
        .route("/ui/console/leaderboards", get(console::leaderboards))
        .route(
            "/ui/console/simulate",
            get(console::simulate_form).post(console::simulate),
        )
        .route("/ui/sign-out", post(sign_in::sign_out))
        // Any other page: the same answer as a page this session may not see.
        .route(
            "/ui/{*rest}",
            get(|Extension(s): Extension<Session>| async move { not_found(Some(&s)) }),
        )
        .route_layer(middleware::from_fn_with_state(state, require_session));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/sign-in") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/sign-in") }))
        .route("/ui/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/ui/style.css", get(style))
        .merge(signed_in)
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// The value of cookie `name` in the request's headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, for `/ui` only, `Secure` when
/// the request came through a TLS front end (`X-Forwarded-Proto: https`).
pub(crate) fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: u64,
) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let text = format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Lets a request through with its session, or sends the browser to sign in.
async fn require_session(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let session = cookie(req.headers(), session::COOKIE).and_then(|id| state.sessions.get(id));
    match session {
        Some(s) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        None => Redirect::to("/ui/sign-in").into_response(),
    }
}

/// The page refusing a posted form whose CSRF token is not the session's (`None`: it
/// is).
pub(crate) fn csrf_refusal(session: &Session, posted: &str) -> Option<Response> {
    if session::same(&session.csrf, posted) {
        return None;
    }
    Some(page_with_status(
        StatusCode::FORBIDDEN,
        "Form refused",
        Some(session),
        None,
        html! {
            h1 { "This form was refused" }
            p { "It did not carry this session's form token: it may be from another site, or from before you signed in again. Go back, reload the page and send it again." }
        },
    ))
}

/// The home page of a role: a partner's dashboard, or the console.
pub(crate) fn home(role: &Role) -> String {
    match role {
        Role::Partner(id) => format!("/ui/partners/{}", enc(id)),
        _ => "/ui/console".into(),
    }
}

/// What a path segment or query value keeps as is: letters, digits and `-._~`
/// (RFC 3986's unreserved characters).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment or query value, percent-encoded.
pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A whole page: header with the role's navigation, the body, and the log position it
/// reflects (`None` on pages that show no ledger data).
pub(crate) fn page(
    title: &str,
    session: Option<&Session>,
    position: Option<u64>,
    body: Markup,
) -> Response {
    page_with_status(StatusCode::OK, title, session, position, body)
}

pub(crate) fn page_with_status(
    status: StatusCode,
    title: &str,
    session: Option<&Session>,
    position: Option<u64>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · incentive-ledger" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header {
                    a.brand href=(session.map_or("/ui/sign-in".to_string(), |s| home(&s.role))) { "incentive-ledger" }
                    @if let Some(s) = session {
                        nav aria-label="main" {
                            @match &s.role {
                                Role::Partner(id) => {
                                    a href=(format!("/ui/partners/{}", enc(id))) { "Dashboard" }
                                    a href=(format!("/ui/partners/{}/claims", enc(id))) { "Claims" }
                                    a href=(format!("/ui/partners/{}/payouts", enc(id))) { "Payouts" }
                                }
                                _ => {
                                    a href="/ui/console" { "Status" }
                                    a href="/ui/console/programs" { "Programs" }
                                    a href="/ui/console/claims" { "Claims" }
                                    a href="/ui/console/refusals" { "Refusals" }
                                    a href="/ui/console/payouts" { "Payouts" }
                                    a href="/ui/console/leaderboards" { "Leaderboards" }
                                }
                            }
                            form.inline method="post" action="/ui/sign-out" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Sign out " (s.name) }
                            }
                        }
                    }
                }
                main { (body) }
                @if let Some(p) = position {
                    footer { "Figures as of log position " strong.position { (p) } "." }
                }
            }
        }
    };
    let mut r = (status, Html(markup.into_string())).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The page of a thing that does not exist — or that this session may not see: the
/// two are answered alike, so a partner learns nothing of others.
pub(crate) fn not_found(session: Option<&Session>) -> Response {
    page_with_status(
        StatusCode::NOT_FOUND,
        "Not found",
        session,
        None,
        html! {
            h1 { "Not found" }
            p { "There is no such page." }
        },
    )
}

/// The page of data that cannot be read now (the data directory failed): `title` and
/// what could not be read.
pub(crate) fn unavailable(session: &Session, title: &str, what: &str) -> Response {
    page_with_status(
        StatusCode::SERVICE_UNAVAILABLE,
        title,
        Some(session),
        None,
        alert(&format!(
            "The {what} cannot be read right now; try again shortly."
        )),
    )
}

/// An error message box.
pub(crate) fn alert(message: &str) -> Markup {
    html! { p.alert role="alert" { (message) } }
}

/// A notice box.
pub(crate) fn notice(message: &str) -> Markup {
    html! { p.notice role="status" { (message) } }
}

/// The programs claims are made against (MDF and co-op), by id: name and currency.
pub(crate) fn funds(state: &ApiState) -> std::collections::BTreeMap<String, (String, String)> {
    state
        .handle
        .programs()
        .iter()
        .filter(|p| matches!(p.current.kind.as_str(), "mdf" | "coop"))
        .map(|p| {
            let d = &p.current;
            (
                d.program_id.clone(),
                (d.name.clone(), d.currency.as_str().to_string()),
            )
        })
        .collect()
}

/// Money as the ledger states it (the currency's minor digits), with its currency.
pub(crate) fn money(amount: &str, currency: &str) -> Markup {
    html! { span.money { (amount) " " abbr title="currency" { (currency) } } }
}
