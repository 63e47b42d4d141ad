//! The handlers: each checks the role, asks the handle one typed query, and writes the
//! answer in the API's own shapes. Queries that read the whole state once (the status
//! digest, past states) run on a blocking thread.

use crate::views::{Program, StatementBody};
use crate::{ApiError, ApiResult, ApiState, Role};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_service::{Handle, HistoricError, PayoutFilter};
use serde::Deserialize;
use serde_json::json;

pub(crate) fn staff_only(role: &Role) -> Result<(), ApiError> {
    match role {
        Role::Admin | Role::Finance => Ok(()),
        Role::Producer | Role::Partner(_) => Err(ApiError::forbidden()),
    }
}

/// The query parameters, or a JSON 400 naming what was wrong: a value of the wrong
/// type, or a parameter the route does not take (a mistyped filter must not widen the
/// answer).
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The query of a route that takes none but `min_position` (the middleware's): any
/// other parameter is refused, so that a mistyped filter is never silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {
    #[allow(dead_code)]
    min_position: Option<u64>,
}

/// Whether the client asked for CSV (`Accept: text/csv`).
fn wants_csv(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

/// A CSV answer; the next page's cursor, if any, in `X-Next-Cursor`.
fn csv(body: String, next: Option<String>) -> Response {
    let mut r = (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response();
    if let Some(v) = next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
        r.headers_mut().insert("x-next-cursor", v);
    }
    r
}

/// Runs a query that may read the whole state on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "query_failed",
        message: format!("the query did not complete: {e}"),
    })
}

/// A query of the history archive failed (a storage fault; the fold goes on).
fn history_unavailable(e: ledger_service::LogError) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "history_unavailable",
        message: ledger_service::error_chain(&e),
    }
}

/// The handle to answer from: the live one, or the state after position `n`, rebuilt
/// from the data directory (a replay up to `n`: for audits).
async fn at(state: &ApiState, as_of_seq: Option<u64>) -> Result<Handle, ApiError> {
    let Some(n) = as_of_seq else {
        return Ok(state.handle.clone());
    };
    let live = state.handle.clone();
    match blocking(move || live.as_of(n)).await? {
        Ok(h) => Ok(h),
        Err(HistoricError::NoDataDirectory) => Err(ApiError::bad_request(
            "as_of_seq needs the service's data directory, which this deployment does not expose",
        )),
        Err(e) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "log_unavailable",
            message: ledger_service::error_chain(&e),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaderboardQuery {
    /// Read-your-writes (the middleware's).
    #[allow(dead_code)]
    min_position: Option<u64>,
    period: Option<String>,
}

/// Partners of a program ranked by basis (highest first), ties by partner id.
pub(crate) async fn leaderboard(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(id): Path<String>,
    q: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    staff_only(&role)?;
    let Some(period) = q.period else {
        return Err(ApiError::bad_request(
            "the period query parameter is required (e.g. period=2026-Q1)",
        ));
    };
    let Some(rows) = state.handle.leaderboard(&id, &period) else {
        return Err(ApiError::not_found(format!("no program {id}")));
    };
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let b = &r.balance;
            json!({ "rank": r.rank, "partner_id": b.partner_id, "basis": b.basis, "earned": b.earned, "currency": b.currency })
        })
        .collect();
    Ok(Json(json!({ "program_id": id, "period": period, "items": items })).into_response())
}

/// Prometheus text format: counts, positions, backlog and lag of the projection.
pub(crate) async fn metrics(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    query(q)?;
    let m = state.handle.metrics();
    let handle = state.handle.clone();
    let budgets = blocking(move || handle.budgets()).await?;
    let mut out = String::new();
    event_counters(&m, &mut out);
    state_gauges(&m, &mut out);
    budget_gauges(&budgets, &mut out);
    metric(
        &mut out,
        "ledger_auth_failures_total",
        "Unknown bearer tokens and refused sign-ins to the web pages (answered later the more come in a minute).",
        "counter",
        vec![(String::new(), state.sessions.failures())],
    );
    let c = &state.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    metric(
        &mut out,
        "ledger_http_connections_open",
        "HTTP connections open now.",
        "gauge",
        vec![(String::new(), load(&c.connections_open))],
    );
    metric(
        &mut out,
        "ledger_http_connections_refused_total",
        "HTTP connections closed at once: the connection limit was reached.",
        "counter",
        vec![(String::new(), load(&c.connections_refused))],
    );
    metric(
        &mut out,
        "ledger_http_bodies_stalled_total",
        "Requests ended because their body stopped arriving.",
        "counter",
        vec![(String::new(), load(&c.bodies_stalled))],
    );
    out.push_str("# HELP ledger_batch_flush_seconds Time of one group commit (checks, write, flush).\n# TYPE ledger_batch_flush_seconds histogram\n");
    m.batch_flush
        .render("ledger_batch_flush_seconds", "", &mut out);
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

/// One metric in the Prometheus text format: its help, its type, a line per label set.
fn metric(out: &mut String, name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, v) in lines {
        out.push_str(&format!("{name}{labels} {v}\n"));
    }
}

fn one(v: u64) -> Vec<(String, u64)> {
    vec![(String::new(), v)]
}

/// What the inputs came to: received, applied, duplicates, refusals, by type and code.
fn event_counters(m: &ledger_service::Metrics, out: &mut String) {
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
        metric(out, name, help, kind, lines)
    };
    metric(
        "ledger_events_received_total",
        "Inputs received (messages and lines).",
        "counter",
        one(m.counts.received),
    );
    metric(
        "ledger_events_applied_total",
        "Events applied by the fold.",
        "counter",
        one(m.counts.applied),
    );
    metric(
        "ledger_events_duplicate_total",
        "Exact duplicates (counted, ignored).",
        "counter",
        one(m.counts.duplicates),
    );
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
            m.by_type
                .iter()
                .map(|(t, c)| (format!("{{{}}}", label(t)), c[i]))
                .collect(),
        );
    }
    metric(
        "ledger_events_refused_total",
        "Refused inputs by refusal code.",
        "counter",
        m.refused_by_code
            .iter()
            .map(|(c, n)| (format!("{{code=\"{c}\"}}"), *n))
            .collect(),
    );
}

/// Where the service stands: position, checkpoint, outbox, lag, payouts, fault.
fn state_gauges(m: &ledger_service::Metrics, out: &mut String) {
    let mut metric = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
        metric(out, name, help, kind, lines)
    };
    metric(
        "ledger_log_position",
        "Last log position folded.",
        "gauge",
        one(m.position),
    );
    metric(
        "ledger_checkpoint_position",
        "Log position of the last checkpoint.",
        "gauge",
        one(m.checkpoint_seq),
    );
    metric(
        "ledger_outbox_backlog",
        "Payouts waiting for a JetStream acknowledgement.",
        "gauge",
        one(m.outbox_backlog as u64),
    );
    metric(
        "ledger_consumer_pending",
        "Inbound messages not yet delivered (consumer lag).",
        "gauge",
        one(m.consumer_pending.unwrap_or(0)),
    );
    metric(
        "ledger_payouts_total",
        "Payouts issued.",
        "counter",
        one(m.payouts),
    );
    metric(
        "ledger_fault",
        "1 while the service reports a fault (storage, publishing, a stalled outbox).",
        "gauge",
        one(u64::from(m.fault.is_some())),
    );
}

/// Budget, committed (earned) and utilization of every program with a budget: what an
/// operator alerts on at 0.8 and 1.0.
type Budget = (String, rust_decimal::Decimal, rust_decimal::Decimal);
/// A gauge: its name, its help, its value for one budget.
type Gauge = (&'static str, &'static str, fn(&Budget) -> String);

fn budget_gauges(budgets: &[Budget], out: &mut String) {
    use std::fmt::Write;
    let gauges: [Gauge; 3] = [
        (
            "ledger_program_budget",
            "A program's budget (program.published `budget`), in its currency.",
            |b| b.1.normalize().to_string(),
        ),
        (
            "ledger_program_budget_committed",
            "What a program has earned so far over every period, in its currency.",
            |b| b.2.normalize().to_string(),
        ),
        (
            "ledger_program_budget_utilization",
            "Committed ÷ budget (alert at 0.8 and 1).",
            |b| {
                b.2.checked_div(b.1)
                    .map_or_else(|| "0".into(), |r| r.round_dp(6).normalize().to_string())
            },
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for b in budgets {
            let _ = writeln!(out, "{name}{{program=\"{}\"}} {}", b.0, value(b));
        }
    }
}

pub(crate) async fn ready(State(state): State<ApiState>) -> Response {
    match state.handle.fault() {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "code": "not_ready", "message": f })),
        )
            .into_response(),
    }
}

pub(crate) async fn status(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    query(q)?;
    let handle = state.handle.clone();
    let status = blocking(move || handle.status()).await?;
    Ok(Json(status).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BalanceFilter {
    /// Read-your-writes (the middleware's).
    #[allow(dead_code)]
    min_position: Option<u64>,
    program: Option<String>,
    period: Option<String>,
    kind: Option<String>,
    as_of_seq: Option<u64>,
}

pub(crate) async fn balances(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(partner): Path<String>,
    headers: axum::http::HeaderMap,
    filter: Result<Query<BalanceFilter>, QueryRejection>,
) -> ApiResult {
    let filter = query(filter)?;
    if !role.sees(&partner) {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    let rows: Vec<_> = at(&state, filter.as_of_seq)
        .await?
        .partner_balances(&partner)
        .into_iter()
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
    if wants_csv(&headers) {
        return Ok(csv(ledger_core::document::to_csv(&rows), None));
    }
    Ok(Json(json!({ "partner_id": partner, "balances": rows })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatementQuery {
    /// Read-your-writes (the middleware's).
    #[allow(dead_code)]
    min_position: Option<u64>,
    program: Option<String>,
    period: Option<String>,
    as_of_seq: Option<u64>,
}

/// Explains every number of one entry: each event that moved it (basis, earned, paid
/// after it), each payout with its reason and cause, and how the rules read the basis.
pub(crate) async fn statement(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(partner): Path<String>,
    q: Result<Query<StatementQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    if !role.sees(&partner) {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    let (Some(program), Some(period)) = (q.program, q.period) else {
        return Err(ApiError::bad_request(
            "program and period are required, e.g. ?program=REB-EMEA-2026&period=2026-Q1",
        ));
    };
    let handle = at(&state, q.as_of_seq).await?;
    let found = blocking(move || {
        handle
            .statement(&partner, &program, &period)
            .map(|st| (st, partner, program, period))
    })
    .await?
    .map_err(history_unavailable)?;
    let (found, partner, program, period) = found;
    let Some(st) = found else {
        return Err(ApiError::not_found(format!(
            "no entry for partner {partner} in {program} {period}"
        )));
    };
    Ok(Json(StatementBody::of(&st)).into_response())
}

pub(crate) async fn claim(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(id): Path<String>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    query(q)?;
    match state.handle.claim(&id) {
        Some(c) if role.sees(&c.partner_id) => Ok(Json(c).into_response()),
        _ => Err(ApiError::not_found(format!("no claim {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// Read-your-writes (the middleware's).
    #[allow(dead_code)]
    min_position: Option<u64>,
    partner: Option<String>,
    program: Option<String>,
    /// Cursor: the `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

const MAX_LIMIT: usize = 1000;

/// A page size: 100 by default, 1 to [`MAX_LIMIT`] when given (refused, not clamped).
fn limit(given: Option<usize>) -> Result<usize, ApiError> {
    match given {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
    }
}

/// A page of refusals: no filters (`rejected` lists every refusal in order).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RejectedPage {
    /// Read-your-writes (the middleware's).
    #[allow(dead_code)]
    min_position: Option<u64>,
    /// Cursor: the `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

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

pub(crate) async fn payouts(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    headers: axum::http::HeaderMap,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult {
    let page = query(page)?;
    let partner = match (&role, &page.partner) {
        (Role::Partner(own), Some(p)) if p != own => {
            return Err(ApiError::not_found(format!("no partner {p}")))
        }
        (Role::Partner(own), _) => Some(own.clone()),
        (_, p) => p.clone(),
    };
    let start = cursor(&page.after)?;
    let limit = limit(page.limit)?;
    let filter = PayoutFilter {
        partner,
        program: page.program,
    };
    let handle = state.handle.clone();
    let found = blocking(move || handle.payouts(&filter, start, limit))
        .await?
        .map_err(history_unavailable)?;
    if wants_csv(&headers) {
        return Ok(csv(
            ledger_core::document::to_csv(&found.items),
            found.next.map(|n| n.to_string()),
        ));
    }
    Ok(Json(json!({
        "items": found.items,
        "next": found.next.map(|n| n.to_string()),
    }))
    .into_response())
}

pub(crate) async fn rejected(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    headers: axum::http::HeaderMap,
    page: Result<Query<RejectedPage>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    let page = query(page)?;
    let start = cursor(&page.after)?;
    let limit = limit(page.limit)?;
    let handle = state.handle.clone();
    let found = blocking(move || handle.rejections(start, limit))
        .await?
        .map_err(history_unavailable)?;
    if wants_csv(&headers) {
        return Ok(csv(
            ledger_core::document::to_csv(&found.items),
            found.next.map(|n| n.to_string()),
        ));
    }
    let items: Vec<serde_json::Value> = found.items.iter().map(|r| r.to_json()).collect();
    Ok(Json(json!({ "items": items, "next": found.next.map(|n| n.to_string()) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// Read-your-writes (the middleware's).
    #[allow(dead_code)]
    min_position: Option<u64>,
    /// Wrap each event as `{"seq":N,"hash":"…","event":…}` (as `export --with-chain`).
    #[serde(default)]
    with_chain: bool,
}

/// `GET /v1/export`: the log as NDJSON, byte-identical to `incentive-ledger export`,
/// through the last position stored when the request came (`X-Ledger-Export-Through`):
/// what finance reads while the service holds the directory. Streamed from a thread
/// of its own, a bounded number of chunks ahead of the client.
pub(crate) async fn export(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    let q = query(q)?;
    let through = stored_head(&state).await?.last_seq;
    let handle = state.handle.clone();
    streamed(
        "export",
        "application/x-ndjson",
        ("x-ledger-export-through", through),
        move |out| {
            handle
                .export(through, q.with_chain, &mut |chunk| out.send(chunk))
                .map_err(|e| ledger_service::error_chain(&e))
        },
    )
}

/// The head of the log as stored, which an export or a backup ends at.
pub(crate) async fn stored_head(state: &ApiState) -> Result<ledger_service::LogHead, ApiError> {
    let handle = state.handle.clone();
    blocking(move || handle.stored_head())
        .await?
        .map_err(|e| match e {
            HistoricError::NoDataDirectory => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "no_data_directory",
                message: e.to_string(),
            },
            other => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "log_unavailable",
                message: ledger_service::error_chain(&other),
            },
        })
}

/// Where a streamed answer's bytes go: to the client, a bounded number of chunks ahead
/// of it (the writer waits while the client is slow).
pub(crate) struct Chunks(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl Chunks {
    /// Sends `chunk`; false once the client has gone.
    pub(crate) fn send(&self, chunk: &[u8]) -> bool {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(chunk)))
            .is_ok()
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.send(buf) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client left",
            ))
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An answer of `content_type` whose body `work` writes from a thread of its own
/// (`name`), with the header `position` naming where it ends. An error of `work` ends
/// the body early, with the error: the client sees a broken answer, never a short one
/// that looks whole.
pub(crate) fn streamed(
    name: &str,
    content_type: &'static str,
    position: (&'static str, u64),
    work: impl FnOnce(&mut Chunks) -> Result<(), String> + Send + 'static,
) -> ApiResult {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut out = Chunks(tx.clone());
            if let Err(e) = work(&mut out) {
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
            }
        })
        .map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "query_failed",
            message: format!("the {name} could not start: {e}"),
        })?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&position.1.to_string()) {
        headers.insert(position.0, v);
    }
    Ok(response)
}

pub(crate) async fn programs(
    State(state): State<ApiState>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    query(q)?;
    let items: Vec<Program> = state
        .handle
        .programs()
        .iter()
        .map(|v| Program::of(v, false))
        .collect();
    Ok(Json(json!({ "items": items, "next": null })).into_response())
}

pub(crate) async fn program(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<NoQuery>, QueryRejection>,
) -> ApiResult {
    query(q)?;
    match state.handle.program(&id) {
        Some(v) => Ok(Json(Program::of(&v, true)).into_response()),
        None => Err(ApiError::not_found(format!("no program {id}"))),
    }
}
