//! The partner portal: a dashboard of the partner's programs and periods (earned, paid,
//! what is pending or available, progress to the next tier or threshold and what it
//! would pay, its place on each leaderboard, earned against paid per period), the
//! statement of one entry, its claims with the form to submit one, and its payouts.
//!
//! A partner session opens its own pages only: another partner's answer is the page of
//! a missing thing. Staff sessions open any partner's pages (finance looking at what a
//! partner sees); only the partner itself submits its claims.

use super::session::Session;
use super::svg::{self, PeriodBar};
use super::{
    alert, csrf_refusal, enc, money, not_found, notice, page, page_with_status, unavailable,
};
use crate::events::{admit, Admission};
use crate::routes::blocking;
use crate::views::StatementBody;
use crate::{ApiState, Role};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ledger_core::document::BalanceRow;
use ledger_core::ledger::Opportunity;
use ledger_service::PayoutFilter;
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a form waits for the ledger to fold what it published.
const FOLD_WAIT: Duration = Duration::from_secs(5);

/// Whether this session may open partner `id`'s pages.
fn opens(s: &Session, id: &str) -> bool {
    s.role.sees(id)
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

/// Earned less paid: what the partner has earned and not yet received.
fn pending(b: &BalanceRow) -> Decimal {
    dec(&b.earned) - dec(&b.paid)
}

pub(crate) async fn dashboard(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if !opens(&s, &id) {
        return not_found(Some(&s));
    }
    let position = state.handle.position();
    let balances = state.handle.partner_balances(&id);
    if balances.is_empty() && !matches!(s.role, Role::Partner(_)) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let who = id.clone();
    let opportunities = blocking(move || handle.opportunities(&who))
        .await
        .unwrap_or_default();
    let mut by_program: BTreeMap<String, Vec<BalanceRow>> = BTreeMap::new();
    for b in balances {
        by_program.entry(b.program_id.clone()).or_default().push(b);
    }
    let mut cards = Vec::new();
    for (program_id, rows) in &by_program {
        cards.push(program_card(&state, &id, program_id, rows, &opportunities));
    }
    page(
        &format!("{id} · dashboard"),
        Some(&s),
        Some(position),
        html! {
            h1 { "Partner " (id) }
            @if cards.is_empty() {
                p { "No programs have counted anything for you yet." }
            }
            @for c in &cards { (c) }
        },
    )
}

/// One program's periods, progress and place.
fn program_card(
    state: &ApiState,
    partner: &str,
    program_id: &str,
    rows: &[BalanceRow],
    opportunities: &[Opportunity],
) -> Markup {
    let view = state.handle.program(program_id);
    let name = view
        .as_ref()
        .map_or(program_id.to_string(), |v| v.current.name.clone());
    let kind = rows.first().map_or("", |r| r.kind.as_str());
    let currency = rows.first().map_or("", |r| r.currency.as_str());
    let fund = matches!(kind, "mdf" | "coop");
    let latest = rows.last().map(|r| r.period.clone()).unwrap_or_default();
    let place = state
        .handle
        .leaderboard(program_id, &latest)
        .and_then(|board| {
            let total = board.len();
            board
                .iter()
                .find(|r| r.balance.partner_id == partner)
                .map(|r| (r.rank, total))
        });
    let bars: Vec<PeriodBar> = rows
        .iter()
        .map(|r| PeriodBar {
            period: r.period.clone(),
            earned: dec(&r.earned),
            paid: dec(&r.paid),
        })
        .collect();
    let statement = |period: &str| {
        format!(
            "/ui/partners/{}/statement?program={}&period={}",
            enc(partner),
            enc(program_id),
            enc(period)
        )
    };
    html! {
        section.card aria-labelledby=(format!("p-{program_id}")) {
            h2 id=(format!("p-{program_id}")) { (name) " " small { "(" (kind) ", " (currency) ")" } }
            @if let Some((rank, total)) = place {
                p.place { "Place " strong { (rank) } " of " (total) " in " (latest) "." }
            }
            @for o in opportunities.iter().filter(|o| o.program_id == program_id) {
                @let basis = dec(&o.basis);
                @let goal = basis + dec(&o.additional_basis);
                @let label = format!("{} of {} towards {} in {}", o.basis, goal, o.next_level, o.period);
                div.opportunity {
                    p {
                        (o.period) ": " (o.additional_basis) " more "
                        (if o.measure == "quantity" { "units" } else { "in net sales" })
                        " reach " strong { (o.next_level) } " — it would pay "
                        (money(&o.pays_more, &o.currency)) " more."
                    }
                    (svg::progress(basis, goal, &label))
                }
            }
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Period" }
                        th scope="col" { "Basis" }
                        th scope="col" { "Earned" }
                        th scope="col" { "Paid" }
                        @if fund { th scope="col" { "Reserved" } th scope="col" { "Available" } }
                        @else { th scope="col" { "Pending" } }
                        th scope="col" { "Period state" }
                        th scope="col" { span.visually-hidden { "Statement" } }
                    } }
                    tbody {
                        @for r in rows {
                            tr {
                                th scope="row" { (r.period) }
                                td.num { (r.basis) }
                                td.num { (money(&r.earned, &r.currency)) }
                                td.num { (money(&r.paid, &r.currency)) }
                                @if fund {
                                    td.num { (money(r.reserved.as_deref().unwrap_or("0"), &r.currency)) }
                                    td.num { (money(r.available.as_deref().unwrap_or("0"), &r.currency)) }
                                } @else {
                                    td.num { (money(&pending(r).to_string(), &r.currency)) }
                                }
                                td { @if r.closed { "closed" } @else { "open" } }
                                td { a href=(statement(&r.period)) { "Statement" span.visually-hidden { " of " (r.period) } } }
                            }
                        }
                    }
                }
            }
            (svg::earned_and_paid(&bars, currency))
            p.legend { span.key.earned {} "earned " span.key.paid {} "paid" }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct EntryQuery {
    program: Option<String>,
    period: Option<String>,
}

pub(crate) async fn statement(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<EntryQuery>,
) -> Response {
    let (Some(program), Some(period)) = (q.program, q.period) else {
        return not_found(Some(&s));
    };
    if !opens(&s, &id) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let (who, prog, per) = (id.clone(), program.clone(), period.clone());
    let found = blocking(move || handle.statement(&who, &prog, &per)).await;
    let Ok(Ok(Some(st))) = found else {
        return not_found(Some(&s));
    };
    let body = StatementBody::of(&st);
    let b = &body.balance;
    page(
        &format!("{program} {period} · statement"),
        Some(&s),
        Some(state.handle.position()),
        html! {
            p.crumbs { a href=(format!("/ui/partners/{}", enc(&id))) { "← " (id) } }
            h1 { "Statement: " (program) ", " (period) }
            dl.summary {
                dt { "Basis" } dd { (b.basis) }
                dt { "Earned" } dd { (money(&b.earned, &b.currency)) }
                dt { "Paid" } dd { (money(&b.paid, &b.currency)) }
                dt { "Period" } dd { @if b.closed { "closed" } @else { "open" } }
            }
            h2 { "How it was earned" }
            dl.explanation {
                @if let Some(fields) = body.explanation.as_object() {
                    @for (k, v) in fields {
                        dt { (k.replace('_', " ")) }
                        dd { (plain(v)) }
                    }
                }
            }
            h2 { "Every event behind it" }
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "Basis" }
                        th scope="col" { "Earned" } th scope="col" { "Change" } th scope="col" { "Paid" }
                        th scope="col" { "Payout" }
                    } }
                    tbody {
                        @for l in &body.lines {
                            tr {
                                td { (l.time) }
                                td { (l.event_type) br; small { (l.cause_source) " / " (l.cause_id) } }
                                td.num { (l.basis) }
                                td.num { (money(&l.earned, &b.currency)) }
                                td.num { (l.earned_change) }
                                td.num { (money(&l.paid, &b.currency)) }
                                td { @if let Some(p) = &l.payout { (money(&p.amount, &b.currency)) " " small { (p.reason) } } }
                            }
                        }
                    }
                }
            }
            @if let Some(o) = &body.opportunity {
                (notice(&format!(
                    "{} more reach {}: it would pay {} {} more.",
                    o.additional_basis, o.next_level, o.pays_more, o.currency
                )))
            }
        },
    )
}

/// A JSON value of an explanation in words.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{} {}", k.replace('_', " "), plain(v)))
            .collect::<Vec<_>>()
            .join(", "),
        serde_json::Value::Array(a) => a.iter().map(plain).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

/// What the claim form posts.
#[derive(Deserialize, Default, Clone)]
pub(crate) struct ClaimForm {
    #[serde(default)]
    csrf: String,
    /// Made when the form is drawn: sending the same form twice is one claim.
    #[serde(default)]
    claim_id: String,
    #[serde(default)]
    program_id: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    activity: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
pub(crate) struct ClaimsQuery {
    submitted: Option<String>,
}

pub(crate) async fn claims(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<ClaimsQuery>,
) -> Response {
    if !opens(&s, &id) {
        return not_found(Some(&s));
    }
    claims_page(
        &state,
        &s,
        &id,
        StatusCode::OK,
        None,
        q.submitted.as_deref(),
        ClaimForm::default(),
    )
}

/// The partner's claims and the form (with what was typed, after a failure).
fn claims_page(
    state: &ApiState,
    s: &Session,
    id: &str,
    status: StatusCode,
    problem: Option<&str>,
    submitted: Option<&str>,
    typed: ClaimForm,
) -> Response {
    let claims = state.handle.claims(Some(id), None, 500);
    let funds = super::funds(state);
    let currency = |program: &str| funds.get(program).map_or("", |(_, c)| c.as_str());
    let may_submit = matches!(&s.role, Role::Partner(own) if own == id);
    let claim_id = if typed.claim_id.is_empty() {
        format!("CLM-{}", &super::session::random_token()[..16])
    } else {
        typed.claim_id.clone()
    };
    page_with_status(
        status,
        &format!("{id} · claims"),
        Some(s),
        Some(state.handle.position()),
        html! {
            h1 { "Claims of " (id) }
            @if let Some(p) = problem { (alert(p)) }
            @if let Some(c) = submitted {
                @match claims.iter().find(|x| x.claim_id == c) {
                    Some(x) => (notice(&format!("Claim {c} is {}.", x.status))),
                    None => (notice(&format!("Claim {c} was sent; it will show here once the ledger has taken it."))),
                }
            }
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Claim" } th scope="col" { "Program" } th scope="col" { "Amount" }
                        th scope="col" { "Status" } th scope="col" { "Approved" }
                    } }
                    tbody {
                        @for c in &claims {
                            tr {
                                th scope="row" { (c.claim_id) }
                                td { (c.program_id) }
                                td.num { (money(&c.amount, currency(&c.program_id))) }
                                td { span class=(format!("status {}", c.status)) { (c.status) } }
                                td.num { (c.approved_amount.as_deref().unwrap_or("")) }
                            }
                        }
                        @if claims.is_empty() { tr { td colspan="5" { "No claims yet." } } }
                    }
                }
            }
            @if may_submit {
                h2 { "Submit a claim" }
                form.card method="post" action=(format!("/ui/partners/{}/claims", enc(id))) {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="claim_id" value=(claim_id);
                    label for="program_id" { "Fund" }
                    select #program_id name="program_id" required {
                        @for (pid, (name, _)) in &funds {
                            option value=(pid) selected[*pid == typed.program_id] { (name) " (" (pid) ")" }
                        }
                    }
                    label for="amount" { "Amount" }
                    input #amount name="amount" inputmode="decimal" required value=(typed.amount) placeholder="2500.00";
                    label for="activity" { "Activity" }
                    input #activity name="activity" required maxlength="200" value=(typed.activity) placeholder="trade show";
                    label for="description" { "Description (optional)" }
                    textarea #description name="description" maxlength="2000" { (typed.description) }
                    button type="submit" { "Submit claim" }
                }
            }
        },
    )
}

pub(crate) async fn submit_claim(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    posted: Result<Form<ClaimForm>, FormRejection>,
) -> Response {
    let form = posted.map(|Form(f)| f).unwrap_or_default();
    if let Some(refused) = csrf_refusal(&s, &form.csrf) {
        return refused;
    }
    if !matches!(&s.role, Role::Partner(own) if *own == id) {
        return not_found(Some(&s));
    }
    let mut data = serde_json::json!({
        "claim_id": form.claim_id.trim(),
        "partner_id": id,
        "program_id": form.program_id.trim(),
        "amount": form.amount.trim(),
        "activity": form.activity.trim(),
    });
    if !form.description.trim().is_empty() {
        data["description"] = form.description.trim().into();
    }
    let source = format!("portal/{id}");
    let event_id = format!("claim-submitted:{}", form.claim_id.trim());
    match publish(&state, &s, &source, &event_id, "claim.submitted", data).await {
        Ok(()) => Redirect::to(&format!(
            "/ui/partners/{}/claims?submitted={}",
            enc(&id),
            enc(form.claim_id.trim())
        ))
        .into_response(),
        Err((status, why)) => claims_page(&state, &s, &id, status, Some(&why), None, form),
    }
}

/// Publishes one event made by a form — checked as intake would and against the
/// session's role, exactly as `POST /v1/events` checks — and waits (a few seconds) for
/// the ledger to fold it. `Err` says why not, for the page.
pub(crate) async fn publish(
    state: &ApiState,
    s: &Session,
    source: &str,
    event_id: &str,
    event_type: &str,
    data: serde_json::Value,
) -> Result<(), (StatusCode, String)> {
    let Some(sink) = state.events.clone() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "This server takes no events (it has no NATS connection); nothing was sent.".into(),
        ));
    };
    let now: chrono::DateTime<chrono::Utc> = std::time::SystemTime::now().into();
    let time = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = serde_json::json!({
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "time": time,
        "data": data,
    });
    let raw = serde_json::to_vec(&event)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let event = match admit(&s.role, raw) {
        Admission::Refused(r) => {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Not sent: {}", r.message),
            ))
        }
        Admission::Checked {
            forbidden: Some(why),
            ..
        } => return Err((StatusCode::FORBIDDEN, format!("Not sent: {why}"))),
        Admission::Checked { event, .. } => event,
    };
    let stored = sink
        .publish(event)
        .await
        .map_err(|why| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Not sent — the event stream did not take it ({why}). Nothing was lost: send the form again."),
            )
        })?;
    // Read your writes: the next page shows what the ledger made of it.
    state
        .handle
        .wait_for_source(stored.stream_sequence, FOLD_WAIT)
        .await;
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct AfterQuery {
    after: Option<usize>,
}

pub(crate) async fn payouts(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> Response {
    if !opens(&s, &id) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let filter = PayoutFilter {
        partner: Some(id.clone()),
        program: None,
    };
    let found = blocking(move || handle.payouts(&filter, q.after.unwrap_or(0), 100)).await;
    let Ok(Ok(found)) = found else {
        return unavailable(&s, "Payouts", "payouts");
    };
    page(
        &format!("{id} · payouts"),
        Some(&s),
        Some(state.handle.position()),
        html! {
            h1 { "Payouts to " (id) }
            (super::console::payout_table(&found.items))
            @if let Some(next) = found.next {
                p { a href=(format!("/ui/partners/{}/payouts?after={next}", enc(&id))) { "More payouts →" } }
            }
        },
    )
}
