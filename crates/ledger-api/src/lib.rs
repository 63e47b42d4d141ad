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
    /// A reader on the data directory, for `?as_of_seq=` (rebuilt from the log).
    pub log: Option<Arc<ledger_log::Log>>,
    /// token → role
    pub tokens: Arc<Vec<(String, Role)>>,
    /// Request latency per route pattern.
    pub http_latency: Arc<
        std::sync::Mutex<std::collections::BTreeMap<String, ledger_nats::histogram::Histogram>>,
    >,
}

impl ApiState {
    pub fn new(
        shared: Shared,
        log: Option<Arc<ledger_log::Log>>,
        tokens: Vec<(String, Role)>,
    ) -> ApiState {
        ApiState {
            shared,
            log,
            tokens: Arc::new(tokens),
            http_latency: Default::default(),
        }
    }
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

fn lock(shared: &Shared) -> std::sync::RwLockReadGuard<'_, ledger_nats::service::Projection> {
    shared.read().unwrap_or_else(|p| p.into_inner())
}

/// Every route with the status codes it can answer — the contract that
/// `schemas/openapi.json` documents (a test keeps the two equal).
pub const ROUTES: &[(&str, &str, &[u16])] = &[
    ("get", "/health/live", &[200]),
    ("get", "/health/ready", &[200, 503]),
    ("get", "/metrics", &[200, 400, 401, 403, 503]),
    ("get", "/v1/status", &[200, 400, 401, 403, 503]),
    (
        "get",
        "/v1/partners/{id}/balances",
        &[200, 400, 401, 404, 503],
    ),
    (
        "get",
        "/v1/partners/{id}/statement",
        &[200, 400, 401, 404, 503],
    ),
    ("get", "/v1/claims/{id}", &[200, 400, 401, 404, 503]),
    ("get", "/v1/payouts", &[200, 400, 401, 404, 503]),
    ("get", "/v1/rejected", &[200, 400, 401, 403, 503]),
    ("get", "/v1/programs", &[200, 400, 401, 503]),
    ("get", "/v1/programs/{id}", &[200, 400, 401, 404, 503]),
    (
        "get",
        "/v1/programs/{id}/leaderboard",
        &[200, 400, 401, 403, 404, 503],
    ),
];

/// The HTTP router over `state`.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/partners/{id}/balances", get(balances))
        .route("/v1/partners/{id}/statement", get(statement))
        .route("/v1/claims/{id}", get(claim))
        .route("/v1/payouts", get(payouts))
        .route("/v1/rejected", get(rejected))
        .route("/v1/programs", get(programs))
        .route("/v1/programs/{id}", get(program))
        .route("/v1/programs/{id}/leaderboard", get(leaderboard))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            read_your_writes,
        ))
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

/// Every response says which log position it reflects; its latency is recorded per
/// route pattern.
async fn position_header(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    if let Ok(mut h) = state.http_latency.lock() {
        h.entry(route).or_default().observe(started.elapsed());
    }
    let position = lock(&state.shared).seq;
    if let Ok(v) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert("x-ledger-position", v);
    }
    response
}

/// `?min_position=N`: wait (at most `MIN_POSITION_WAIT`) until the projection has
/// folded position N, else answer 503 with a retry hint.
const MIN_POSITION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn read_your_writes(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let wanted = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "min_position")
            .map(|(_, v)| v.parse::<u64>())
    });
    match wanted {
        None => next.run(req).await,
        Some(Err(_)) => ApiError::bad_request("min_position must be a log position (an integer)")
            .into_response(),
        Some(Ok(n)) => {
            let deadline = tokio::time::Instant::now() + MIN_POSITION_WAIT;
            loop {
                if lock(&state.shared).seq >= n {
                    return next.run(req).await;
                }
                if tokio::time::Instant::now() >= deadline {
                    let mut resp = ApiError {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        code: "position_not_reached",
                        message: format!(
                            "the ledger has not folded position {n} yet; retry shortly"
                        ),
                    }
                    .into_response();
                    resp.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        HeaderValue::from_static("1"),
                    );
                    return resp;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

#[derive(Deserialize)]
struct LeaderboardQuery {
    period: Option<String>,
}

/// Partners of a program ranked by basis (highest first), ties by partner id.
async fn leaderboard(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(id): Path<String>,
    Query(q): Query<LeaderboardQuery>,
) -> ApiResult {
    staff_only(&role)?;
    let Some(period) = q.period else {
        return Err(ApiError::bad_request(
            "the period query parameter is required (e.g. period=2026-Q1)",
        ));
    };
    let p = lock(&state.shared);
    let ledger = p.replay.ledger();
    if !ledger.programs().iter().any(|v| v.current.program_id == id) {
        return Err(ApiError::not_found(format!("no program {id}")));
    }
    let mut rows: Vec<_> = ledger
        .balances()
        .into_iter()
        .filter(|b| b.program_id == id && b.period == period)
        .collect();
    rows.sort_by(|a, b| {
        b.basis
            .cmp(&a.basis)
            .then_with(|| a.partner_id.cmp(&b.partner_id))
    });
    let items: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let row = BalanceRow::from(b);
            json!({ "rank": i + 1, "partner_id": row.partner_id, "basis": row.basis, "earned": row.earned, "currency": row.currency })
        })
        .collect();
    Ok(Json(json!({ "program_id": id, "period": period, "items": items })).into_response())
}

/// Prometheus text format: counts, positions, backlog and lag of the projection.
async fn metrics(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
) -> ApiResult {
    staff_only(&role)?;
    let p = lock(&state.shared);
    let h = ledger_nats::service::health(&p.health);
    let counts = p.replay.counts();
    let mut by_code: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for r in p.replay.rejections() {
        *by_code.entry(r.code.as_str()).or_default() += 1;
    }
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "ledger_events_received_total",
        "Inputs received (messages and lines).",
        "counter",
        vec![(String::new(), counts.received)],
    );
    metric(
        "ledger_events_applied_total",
        "Events applied by the fold.",
        "counter",
        vec![(String::new(), counts.applied)],
    );
    metric(
        "ledger_events_duplicate_total",
        "Exact duplicates (counted, ignored).",
        "counter",
        vec![(String::new(), counts.duplicates)],
    );
    let by_type: Vec<(Option<ledger_core::EventType>, [u64; 3])> = p
        .replay
        .counts_by_type()
        .iter()
        .map(|(t, c)| (*t, *c))
        .collect();
    let label = |t: &Option<ledger_core::EventType>| {
        format!("type=\"{}\"", t.map_or("unknown", |t| t.as_str()))
    };
    for (i, (name, help)) in [
        (
            "ledger_events_accepted_by_type_total",
            "Events applied, by event type.",
        ),
        (
            "ledger_events_refused_by_type_total",
            "Inputs refused, by event type (unknown: unreadable type).",
        ),
        (
            "ledger_events_duplicate_by_type_total",
            "Exact duplicates, by event type.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        metric(
            name,
            help,
            "counter",
            by_type
                .iter()
                .map(|(t, c)| (format!("{{{}}}", label(t)), c[i]))
                .collect(),
        );
    }
    metric(
        "ledger_events_refused_total",
        "Refused inputs by refusal code.",
        "counter",
        by_code
            .into_iter()
            .map(|(c, n)| (format!("{{code=\"{c}\"}}"), n))
            .collect(),
    );
    metric(
        "ledger_log_position",
        "Last log position folded.",
        "gauge",
        vec![(String::new(), p.seq)],
    );
    metric(
        "ledger_checkpoint_position",
        "Log position of the last checkpoint.",
        "gauge",
        vec![(String::new(), p.checkpoint_seq)],
    );
    metric(
        "ledger_outbox_backlog",
        "Payouts waiting for a JetStream acknowledgement.",
        "gauge",
        vec![(String::new(), h.outbox_backlog as u64)],
    );
    metric(
        "ledger_consumer_pending",
        "Inbound messages not yet delivered (consumer lag).",
        "gauge",
        vec![(String::new(), h.consumer_pending.unwrap_or(0))],
    );
    metric(
        "ledger_payouts_total",
        "Payouts issued.",
        "counter",
        vec![(String::new(), p.replay.payouts().len() as u64)],
    );
    metric(
        "ledger_fault",
        "1 while the service reports a fault.",
        "gauge",
        vec![(String::new(), u64::from(h.fault.is_some()))],
    );
    out.push_str("# HELP ledger_batch_flush_seconds Time of one group commit (checks, write, flush).\n# TYPE ledger_batch_flush_seconds histogram\n");
    h.batch_flush
        .render("ledger_batch_flush_seconds", "", &mut out);
    drop(h);
    drop(p);
    out.push_str("# HELP ledger_http_request_seconds HTTP request latency by route.\n# TYPE ledger_http_request_seconds histogram\n");
    if let Ok(h) = state.http_latency.lock() {
        for (route, hist) in h.iter() {
            hist.render(
                "ledger_http_request_seconds",
                &format!("route=\"{route}\""),
                &mut out,
            );
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

async fn ready(State(state): State<ApiState>) -> Response {
    let report = lock(&state.shared).health.clone();
    let fault = ledger_nats::service::health(&report).fault.clone();
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
    as_of_seq: Option<u64>,
}

/// The fold as it stood after log position `n`, rebuilt from the data directory (with
/// journals, for statements). Costs a replay of the log up to `n`: for audits.
async fn as_of(state: &ApiState, n: u64) -> Result<ledger_core::Replay, ApiError> {
    let Some(log) = state.log.clone() else {
        return Err(ApiError::bad_request(
            "as_of_seq needs the service's data directory, which this deployment does not expose",
        ));
    };
    let rebuilt = tokio::task::spawn_blocking(move || {
        ledger_log::history::rebuild_with_journal(&log, ledger_log::Bound::Seq(n), &mut |_| {})
    })
    .await
    .map_err(|e| ApiError::bad_request(format!("as_of_seq rebuild failed: {e}")))?
    .map_err(|e| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "log_unavailable",
        message: format!("cannot rebuild from the log: {e}"),
    })?;
    Ok(rebuilt.replay)
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
    let select = |ledger: &ledger_core::Ledger| -> Vec<BalanceRow> {
        ledger
            .partner_balances(&partner)
            .iter()
            .map(BalanceRow::from)
            .filter(|b| filter.program.as_ref().is_none_or(|p| &b.program_id == p))
            .filter(|b| filter.period.as_ref().is_none_or(|p| &b.period == p))
            .filter(|b| filter.kind.as_ref().is_none_or(|k| &b.kind == k))
            .collect()
    };
    let rows = match filter.as_of_seq {
        Some(n) => select(as_of(&state, n).await?.ledger()),
        None => select(lock(&state.shared).replay.ledger()),
    };
    if rows.is_empty()
        && filter.program.is_none()
        && filter.period.is_none()
        && filter.kind.is_none()
    {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    Ok(Json(json!({ "partner_id": partner, "balances": rows })).into_response())
}

#[derive(Deserialize)]
struct StatementQuery {
    program: Option<String>,
    period: Option<String>,
    as_of_seq: Option<u64>,
}

/// Explains every number of one entry: each event that moved it (basis, earned, paid
/// after it), each payout with its reason and cause, and how the rules read the basis.
async fn statement(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(partner): Path<String>,
    Query(q): Query<StatementQuery>,
) -> ApiResult {
    if !role.sees(&partner) {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    let (Some(program), Some(period)) = (q.program, q.period) else {
        return Err(ApiError::bad_request(
            "program and period are required, e.g. ?program=REB-EMEA-2026&period=2026-Q1",
        ));
    };
    let historic = match q.as_of_seq {
        Some(n) => Some(as_of(&state, n).await?),
        None => None,
    };
    let guard;
    let replay = match &historic {
        Some(r) => r,
        None => {
            guard = lock(&state.shared);
            &guard.replay
        }
    };
    let Some(st) = replay.ledger().statement(&partner, &program, &period) else {
        return Err(ApiError::not_found(format!(
            "no entry for partner {partner} in {program} {period}"
        )));
    };
    let currency = st.balance.currency;
    let money = |d| ledger_core::values::format_money(d, currency);
    let exact = ledger_core::values::format_exact;
    let mut previous: Option<&ledger_core::ledger::JournalLine> = None;
    let lines: Vec<serde_json::Value> = st
        .lines
        .iter()
        .map(|l| {
            let (db, de) = match previous {
                Some(prev) => (l.basis - prev.basis, l.earned - prev.earned),
                None => (l.basis, l.earned),
            };
            previous = Some(l);
            json!({
                "cause_source": l.cause.source, "cause_id": l.cause.id, "type": l.cause.event_type.as_str(), "time": l.cause.time,
                "basis": exact(l.basis), "basis_change": exact(db),
                "earned": money(l.earned), "earned_change": money(de),
                "adjustments": money(l.adjustments), "paid": money(l.paid), "reserved": money(l.reserved),
                "payout": l.payout.map(|(id, amount, reason)| json!({"payout_id": id.to_string(), "amount": money(amount), "reason": reason.as_str()})),
            })
        })
        .collect();
    let payouts: Vec<PayoutRow> = replay
        .payouts()
        .iter()
        .filter(|x| x.partner_id == partner && x.program_id == program && x.period == period)
        .map(PayoutRow::from)
        .collect();
    Ok(Json(json!({
        "balance": BalanceRow::from(&st.balance),
        "lines": lines,
        "payouts": payouts,
        "explanation": st.explanation,
    }))
    .into_response())
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
        let fits = partner.as_ref().is_none_or(|x| payout.partner_id == *x)
            && page
                .program
                .as_ref()
                .is_none_or(|x| payout.program_id == *x);
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
        .map(|r| r.to_json())
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

/// Serves the API on a bound listener until `shutdown` resolves. The caller binds, so
/// that an address already in use is reported before the service starts its work.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "HTTP API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
