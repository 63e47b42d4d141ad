//! Planning and evaluation endpoints (issue 17): what-if simulations, program reports,
//! accruals (finance and admin) and a partner's next-tier opportunities (the partner
//! itself, finance and admin). Simulations and past reports fold the data directory in
//! the background, one at a time: a second answers 429 with `Retry-After`.

use crate::routes::{query, staff_only};
use crate::{ApiError, ApiResult, ApiState, Role};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_service::HeavyError;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

/// `json` (default), `csv`, or `table` (text for people).
#[derive(Deserialize, Clone, Copy, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Json,
    Csv,
    Table,
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn heavy_error(e: HeavyError) -> ApiError {
    match e {
        HeavyError::Busy { .. } => unreachable!("answered as 429 by busy()"),
        HeavyError::NoDataDirectory => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "no_data_directory",
            message: e.to_string(),
        },
        HeavyError::Plan(p) => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "plan_refused",
            message: p.to_string(),
        },
        HeavyError::Log(l) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "log_unavailable",
            message: ledger_service::error_chain(&l),
        },
        HeavyError::Stopped => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "query_failed",
            message: e.to_string(),
        },
    }
}

/// The answer to a background fold's error: 429 with `Retry-After` when busy.
pub(crate) fn answer_error(e: HeavyError) -> Response {
    if let HeavyError::Busy { retry_after } = e {
        let mut r = ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "busy",
            message: e.to_string(),
        }
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    heavy_error(e).into_response()
}

/// A simulation's inputs, as JSON: the draft (a program.published's `data`), the
/// position, extra CloudEvents (kept byte for byte for intake).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulationRequest {
    program: Box<RawValue>,
    from_seq: Option<u64>,
    #[serde(default)]
    events: Vec<Box<RawValue>>,
    max_payouts: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatQuery {
    #[serde(default)]
    format: Format,
    /// Read-your-writes (handled by the middleware).
    #[allow(dead_code)]
    min_position: Option<u64>,
}

/// `POST /v1/simulations`: what the draft would have earned and paid on the real log.
pub(crate) async fn simulate(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<FormatQuery>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    staff_only(&role)?;
    let q = query(q)?;
    let req: SimulationRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"program\": <program data>, \"from_seq\"?: N, \"events\"?: [<CloudEvent>…], \"max_payouts\"?: N}}: {e}"
        ))
    })?;
    let extras = req
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e.get().as_bytes().to_vec()))
        .collect();
    let plan = match ledger_core::simulate::Plan::new(
        req.program.get().as_bytes(),
        req.from_seq,
        extras,
    ) {
        Ok(p) => p,
        Err(e) => return Err(heavy_error(HeavyError::Plan(e))),
    };
    let max = req.max_payouts.unwrap_or(1000).min(100_000);
    match state.handle.simulate(plan, max).await {
        Ok(done) => {
            let s = done.simulation;
            Ok(match q.format {
                Format::Json => {
                    Json(json!({ "simulation": s, "warnings": done.warnings })).into_response()
                }
                Format::Csv => text("text/csv; charset=utf-8", s.csv()),
                Format::Table => text("text/plain; charset=utf-8", s.table(40)),
            })
        }
        Err(e) => Ok(answer_error(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    as_of_seq: Option<u64>,
    as_of_time: Option<String>,
    #[serde(default)]
    format: Format,
    /// Read-your-writes (handled by the middleware).
    #[allow(dead_code)]
    min_position: Option<u64>,
}

impl ReportQuery {
    /// The past position asked for, if any.
    fn bound(&self) -> Result<Option<ledger_service::Bound>, ApiError> {
        match (self.as_of_seq, &self.as_of_time) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give as_of_seq or as_of_time, not both",
            )),
            (Some(n), None) => Ok(Some(ledger_service::Bound::Seq(n))),
            (None, Some(t)) => {
                let ns = chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .and_then(|t| t.timestamp_nanos_opt())
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "as_of_time must be an RFC 3339 time such as 2026-03-01T12:00:00Z, got {t:?}"
                        ))
                    })?;
                Ok(Some(ledger_service::Bound::Time(ns as u64)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The report of `program` (every program with `None`) live or as of the query's bound.
async fn report_of(
    state: &ApiState,
    q: &ReportQuery,
    program: Option<String>,
) -> Result<Result<Option<ledger_core::report::Report>, Response>, ApiError> {
    Ok(match q.bound()? {
        None => {
            let handle = state.handle.clone();
            let program = program.clone();
            Ok(crate::routes::blocking(move || handle.report(program.as_deref())).await?)
        }
        Some(bound) => match state.handle.report_as_of(bound, program).await {
            Ok(r) => Ok(r),
            Err(e) => Err(answer_error(e)),
        },
    })
}

/// `GET /v1/programs/{id}/report`.
pub(crate) async fn program_report(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(id): Path<String>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    let q = query(q)?;
    let report = match report_of(&state, &q, Some(id.clone())).await? {
        Ok(Some(r)) => r,
        Ok(None) => return Err(ApiError::not_found(format!("no program {id}"))),
        Err(busy_or_failed) => return Ok(busy_or_failed),
    };
    Ok(match q.format {
        Format::Csv => text("text/csv; charset=utf-8", report.csv()),
        Format::Table => text("text/plain; charset=utf-8", report.table()),
        Format::Json => {
            let program = report.programs.into_iter().next();
            Json(json!({ "position": report.position, "report": program })).into_response()
        }
    })
}

/// `GET /v1/reports/accruals`: every program's liability.
pub(crate) async fn accruals(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> ApiResult {
    staff_only(&role)?;
    let q = query(q)?;
    let (position, accruals) = match q.bound()? {
        None => {
            let handle = state.handle.clone();
            crate::routes::blocking(move || handle.accruals()).await?
        }
        Some(_) => match report_of(&state, &q, None).await? {
            Ok(Some(r)) => (r.position, r.accruals),
            Ok(None) => (0, Vec::new()),
            Err(busy_or_failed) => return Ok(busy_or_failed),
        },
    };
    Ok(match q.format {
        Format::Json => Json(json!({ "position": position, "items": accruals })).into_response(),
        Format::Csv | Format::Table => text(
            "text/csv; charset=utf-8",
            ledger_core::document::to_csv(&accruals),
        ),
    })
}

/// `GET /v1/partners/{id}/opportunities`: what the next tier, threshold or cap of each
/// open entry takes and would pay.
pub(crate) async fn opportunities(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    Path(partner): Path<String>,
    q: Result<Query<crate::routes::NoQuery>, QueryRejection>,
) -> ApiResult {
    query(q)?;
    if !role.sees(&partner) {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    let handle = state.handle.clone();
    let who = partner.clone();
    let (known, items) = crate::routes::blocking(move || {
        (
            !handle.partner_balances(&who).is_empty(),
            handle.opportunities(&who),
        )
    })
    .await?;
    if !known {
        return Err(ApiError::not_found(format!("no partner {partner}")));
    }
    Ok(Json(json!({ "partner_id": partner, "items": items })).into_response())
}
