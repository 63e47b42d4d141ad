//! Signing in and out. The sign-in form has no session to take a CSRF token from, so it
//! gets one of its own in a short-lived cookie, which the form must post back (a
//! cross-site page cannot read it). A wrong token gets one message and nothing else,
//! after the throttle's wait; `producer` tokens have no pages.

use super::session::{self, SESSION_TTL, SIGN_IN_COOKIE};
use super::{alert, cookie, csrf_refusal, home, page, page_with_status, set_cookie};
use crate::{ApiState, Role};
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

fn form_page(headers: &HeaderMap, status: StatusCode, problem: Option<&str>) -> Response {
    let token = session::random_token();
    let mut r = page_with_status(
        status,
        "Sign in",
        None,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem { (alert(p)) }
            form.card method="post" action="/ui/sign-in" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Access token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p.hint { "The token your administrator gave you (a partner token opens your portal; a finance or admin token the console)." }
                button type="submit" { "Sign in" }
            }
        },
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, SIGN_IN_COOKIE, &token, 3600),
    );
    r
}

pub(crate) async fn form(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    // Already signed in: straight home.
    if let Some(s) = cookie(&headers, session::COOKIE).and_then(|id| state.sessions.get(id)) {
        return Redirect::to(&home(&s.role)).into_response();
    }
    form_page(&headers, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    csrf: String,
    token: String,
}

pub(crate) async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    posted: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let Ok(Form(posted)) = posted else {
        return form_page(
            &headers,
            StatusCode::BAD_REQUEST,
            Some("The form was not complete."),
        );
    };
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same(expected, &posted.csrf) {
        return form_page(
            &headers,
            StatusCode::FORBIDDEN,
            Some("This form has expired or did not come from this site; send it again."),
        );
    }
    let known = state.known_token(posted.token.trim());
    let Some((role, name)) = known.filter(|(r, _)| *r != Role::Producer) else {
        let wait = state.sessions.failed();
        tokio::time::sleep(wait).await;
        return form_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("That token cannot sign in here."),
        );
    };
    let (id, s) = state.sessions.open(role, name);
    let mut r = Redirect::to(&home(&s.role)).into_response();
    let cookies = r.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&headers, session::COOKIE, &id, SESSION_TTL.as_secs()),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&headers, SIGN_IN_COOKIE, "", 0),
    );
    r
}

#[derive(Deserialize)]
pub(crate) struct SignOut {
    csrf: String,
}

pub(crate) async fn sign_out(
    State(state): State<ApiState>,
    Extension(s): Extension<session::Session>,
    headers: HeaderMap,
    posted: Result<Form<SignOut>, FormRejection>,
) -> Response {
    let posted = posted.map(|Form(f)| f.csrf).unwrap_or_default();
    if let Some(refused) = csrf_refusal(&s, &posted) {
        return refused;
    }
    if let Some(id) = cookie(&headers, session::COOKIE) {
        state.sessions.close(id);
    }
    let mut r = page(
        "Signed out",
        None,
        None,
        html! { h1 { "Signed out" } p { a href="/ui/sign-in" { "Sign in again" } } },
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, session::COOKIE, "", 0),
    );
    r
}
