//! `ledger-api`: HTTP queries over the live projection, for finance, partner portals and
//! ERP systems. JSON everywhere; errors are `{ "code", "message" }`; every response
//! carries the log position it reflects in `X-Ledger-Position`.
//!
//! Access is by bearer token with a role: `admin` and `finance` read everything;
//! `partner:<id>` reads only that partner's balances, claims and payouts (and the program
//! definitions) — asking for another partner's data answers 404, exactly as if it did
//! not exist. Health endpoints need no token.
//!
//! It reads the projection the service folds (`ledger_nats::service::Shared`); it never
//! writes.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ledger_core::document::{BalanceRow, ClaimRow, PayoutRow};
use ledger_nats::service::Shared;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Finance,
    Partner(String),
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "finance" => Some(Role::Finance),
            _ => s
                .strip_prefix("partner:")
                .filter(|id| !id.is_empty())
                .map(|id| Role::Partner(id.to_string())),
        }
    }

    /// Whether this role may see data of `partner_id`.
    fn sees(&self, partner_id: &str) -> bool {
        match self {
            Role::Admin | Role::Finance => true,
            Role::Partner(own) => own == partner_id,
        }
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub shared: Shared,
    /// token → role
    pub tokens: Arc<Vec<(String, Role)>>,
}

/// An API error: status, machine-readable code and a message.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn not_found(what: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: what.into(),
        }
    }

    fn forbidden() -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "this token's role may not read this resource".into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, ledger_nats::service::Projection> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The HTTP router over `state`.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/partners/{id}/balances", get(balances))
        .route("/v1/claims/{id}", get(claim))
        .route("/v1/payouts", get(payouts))
        .route("/v1/rejected", get(rejected))
        .route("/v1/programs", get(programs))
        .route("/v1/programs/{id}", get(program))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "live" })) }),
        )
        .route("/health/ready", get(ready))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            position_header,
        ))
        .with_state(state)
}

/// Bearer-token check; the role travels to the handlers as a request extension.
async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let role = token.and_then(|t| {
        state
            .tokens
            .iter()
            .find(|(known, _)| known == t)
            .map(|(_, r)| r.clone())
    });
    match role {
        Some(role) => {
            req.extensions_mut().insert(role);
            next.run(req).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({
                "code": "unauthorized",
                "message": if token.is_some() { "unknown bearer token" } else { "an Authorization: Bearer <token> header is required" },
            })),
        )
            .into_response(),
    }
}

/// Every response says which log position it reflects.
async fn position_header(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let position = lock(&state.shared).seq;
    if let Ok(v) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert("x-ledger-position", v);
    }
    response
}

async fn ready(State(state): State<ApiState>) -> Response {
    let fault = lock(&state.shared).fault.clone();
    match fault {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "code": "not_ready", "message": f })),
        )
            .into_response(),
    }
}

fn staff_only(role: &Role) -> Result<(), ApiError> {
    match role {
        Role::Admin | Role::Finance => Ok(()),
        Role::Partner(_) => Err(ApiError::forbidden()),
    }
}

async fn status(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
) -> ApiResult {
    staff_only(&role)?;
    let status = lock(&state.shared).status();
    Ok(Json(status).into_response())
}

#[derive(Deserialize)]
struct BalanceFilter {
    program: Option<String>,
    period: Option<String>,
    kind: Option<String>,
}

async fn balances(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(partner): Path<String>,
    Query(filter): Query<BalanceFilter>,
) -> ApiResult {
    if !role.sees(&partner) {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    let rows: Vec<BalanceRow> = lock(&state.shared)
        .replay
        .ledger()
        .balances()
        .iter()
        .filter(|b| b.partner_id == partner)
        .map(BalanceRow::from)
        .filter(|b| filter.program.as_ref().is_none_or(|p| &b.program_id == p))
        .filter(|b| filter.period.as_ref().is_none_or(|p| &b.period == p))
        .filter(|b| filter.kind.as_ref().is_none_or(|k| &b.kind == k))
        .collect();
    if rows.is_empty()
        && filter.program.is_none()
        && filter.period.is_none()
        && filter.kind.is_none()
    {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    Ok(Json(json!({ "partner_id": partner, "balances": rows })).into_response())
}

async fn claim(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(id): Path<String>,
) -> ApiResult {
    let found = lock(&state.shared)
        .replay
        .ledger()
        .claims()
        .iter()
        .find(|c| c.claim_id == id)
        .map(ClaimRow::from);
    match found {
        Some(c) if role.sees(&c.partner_id) => Ok(Json(c).into_response()),
        _ => Err(ApiError::not_found(format!("no claim {id}"))),
    }
}

#[derive(Deserialize)]
struct Page {
    partner: Option<String>,
    program: Option<String>,
    /// Cursor: the `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

const MAX_LIMIT: usize = 1000;

fn cursor(after: &Option<String>) -> Result<usize, ApiError> {
    match after {
        None => Ok(0),
        Some(c) => c.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "after must be a cursor returned as `next`, got {c:?}"
            ))
        }),
    }
}

async fn payouts(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Query(page): Query<Page>,
) -> ApiResult {
    let partner = match (&role, &page.partner) {
        (Role::Partner(own), Some(p)) if p != own => {
            return Err(ApiError::not_found(format!("no partner {p}")))
        }
        (Role::Partner(own), _) => Some(own.clone()),
        (_, p) => p.clone(),
    };
    let start = cursor(&page.after)?;
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let p = lock(&state.shared);
    let all = p.replay.payouts();
    let mut items = Vec::new();
    let mut next = None;
    for (i, payout) in all.iter().enumerate().skip(start) {
        let fits = partner.as_ref().is_none_or(|x| &payout.partner_id == x)
            && page
                .program
                .as_ref()
                .is_none_or(|x| &payout.program_id == x);
        if !fits {
            continue;
        }
        if items.len() == limit {
            next = Some(i.to_string());
            break;
        }
        items.push(PayoutRow::from(payout));
    }
    Ok(Json(json!({ "items": items, "next": next })).into_response())
}

async fn rejected(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Query(page): Query<Page>,
) -> ApiResult {
    staff_only(&role)?;
    let start = cursor(&page.after)?;
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let p = lock(&state.shared);
    let all = p.replay.rejections();
    let items: Vec<serde_json::Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|r| {
            let mut row = json!({
                "stage": if r.code.is_intake() { "quarantine" } else { "business" },
                "code": r.code.as_str(),
                "message": r.message,
                "line": r.line,
            });
            if let Some((source, id)) = &r.identity {
                row["source"] = source.as_str().into();
                row["id"] = id.as_str().into();
            }
            row
        })
        .collect();
    let next = (start + items.len() < all.len()).then(|| (start + items.len()).to_string());
    Ok(Json(json!({ "items": items, "next": next })).into_response())
}

fn program_json(v: &ledger_core::ledger::ProgramView, with_history: bool) -> serde_json::Value {
    let describe = |d: &ledger_core::event::ProgramDef| {
        json!({
            "program_id": d.program_id,
            "version": d.version,
            "name": d.name,
            "kind": d.kind.as_str(),
            "currency": d.currency.as_str(),
            "start_date": d.start_date.to_string(),
            "end_date": d.end_date.to_string(),
            "period": d.period.as_str(),
            "requires_enrollment": d.requires_enrollment,
            "rules": serde_json::to_value(&d.rules).unwrap_or_default(),
        })
    };
    let mut out = describe(&v.current);
    out["closed_periods"] = json!(v.closed_periods);
    if with_history {
        out["versions"] = v.versions.iter().map(|d| describe(d)).collect();
    }
    out
}

async fn programs(State(state): State<ApiState>) -> ApiResult {
    let items: Vec<serde_json::Value> = lock(&state.shared)
        .replay
        .ledger()
        .programs()
        .iter()
        .map(|v| program_json(v, false))
        .collect();
    Ok(Json(json!({ "items": items, "next": null })).into_response())
}

async fn program(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let found = lock(&state.shared)
        .replay
        .ledger()
        .programs()
        .into_iter()
        .find(|v| v.current.program_id == id);
    match found {
        Some(v) => Ok(Json(program_json(&v, true)).into_response()),
        None => Err(ApiError::not_found(format!("no program {id}"))),
    }
}

/// Serves the API on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: &str,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
