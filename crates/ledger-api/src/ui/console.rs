//! The finance console (admin and finance sessions): the service's status and health,
//! programs with their rules in plain words and their reports, claims awaiting a
//! decision with approve (in full or in part) and reject forms, refusals by code,
//! payouts with filters and a CSV download, leaderboards. A partner session gets the
//! page of a missing thing, as for any page that is not its own.

use super::partner::publish;
use super::session::Session;
use super::{
    alert, csrf_refusal, enc, money, not_found, notice, page, page_with_status, unavailable,
};
use crate::routes::blocking;
use crate::ApiState;
use crate::Role;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use ledger_core::document::PayoutRow;
use ledger_service::PayoutFilter;
use maud::{html, Markup};
use serde::Deserialize;

/// Refusals looked through at most for one filtered page.
const REFUSAL_SCAN: usize = 20_000;
/// Payouts in one CSV download at most.
const CSV_LIMIT: usize = 100_000;

fn staff(s: &Session) -> bool {
    matches!(s.role, Role::Admin | Role::Finance)
}

/// A form a staff session posted with its CSRF token; else the page to answer with.
fn staff_form<T: Default>(
    s: &Session,
    posted: Result<Form<T>, FormRejection>,
    csrf: fn(&T) -> &str,
) -> Result<T, Box<Response>> {
    let form = posted.map(|Form(f)| f).unwrap_or_default();
    if let Some(refused) = csrf_refusal(s, csrf(&form)) {
        return Err(Box::new(refused));
    }
    if !staff(s) {
        return Err(Box::new(not_found(Some(s))));
    }
    Ok(form)
}

pub(crate) async fn overview(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let Ok(status) = blocking(move || handle.status()).await else {
        return not_found(Some(&s));
    };
    let m = state.handle.metrics();
    let budgets = state.handle.budgets();
    page(
        "Status",
        Some(&s),
        Some(status.position),
        html! {
            h1 { "Status" }
            @match &status.fault {
                Some(f) => (alert(&format!("Not ready: {f}"))),
                None => (notice("Healthy: ingesting, folding and publishing.")),
            }
            dl.summary {
                dt { "Log position" } dd { (status.position) }
                dt { "Digest" } dd { code { (status.digest.as_deref().unwrap_or("computing")) } " at " (status.digest_position.map_or("—".to_string(), |p| p.to_string())) }
                dt { "Events" } dd { (status.events.received) " received, " (status.events.applied) " applied, " (status.events.rejected) " refused, " (status.events.duplicates) " duplicates" }
                dt { "Consumer lag" } dd { (status.consumer_pending.map_or("unknown".to_string(), |n| n.to_string())) }
                dt { "Payout outbox" } dd { (status.outbox_backlog) " waiting" }
                dt { "Payouts issued" } dd { (m.payouts) }
                dt { "Checkpoint" } dd { "at " (status.checkpoint_seq) }
                dt { "Replica" } dd { (format!("{:?}", status.replication.role).to_lowercase()) @if let Some(r) = &status.replication.replica { " (" (r) ")" } }
            }
            @if !budgets.is_empty() {
                h2 { "Budgets" }
                div.scroll { table {
                    thead { tr { th scope="col" { "Program" } th scope="col" { "Budget" } th scope="col" { "Committed" } th scope="col" { "Used" } } }
                    tbody { @for (program, budget, committed) in &budgets {
                        tr {
                            th scope="row" { a href=(format!("/ui/console/programs/{}/report", enc(program))) { (program) } }
                            td.num { (budget) } td.num { (committed) }
                            td { (super::svg::progress(*committed, *budget, &format!("{committed} of {budget} committed"))) }
                        }
                    } }
                } }
            }
            @if !m.refused_by_code.is_empty() {
                h2 { "Refusals by code" }
                ul { @for (code, n) in &m.refused_by_code {
                    li { a href=(format!("/ui/console/refusals?code={code}")) { (code) } ": " (n) }
                } }
            }
        },
    )
}

pub(crate) async fn programs(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let programs = state.handle.programs();
    page(
        "Programs",
        Some(&s),
        Some(state.handle.position()),
        html! {
            h1 { "Programs" }
            @for p in &programs {
                @let d = &p.current;
                section.card {
                    h2 { (d.name) " " small { (d.program_id) " v" (d.version) } }
                    ul { @for line in ledger_core::describe::describe(d) { li { (line) } } }
                    p { "Versions: " (p.versions.iter().map(|v| v.version.to_string()).collect::<Vec<_>>().join(", ")) " · closed periods: " @if p.closed_periods.is_empty() { "none" } @else { (p.closed_periods.join(", ")) } }
                    p { a href=(format!("/ui/console/programs/{}/report", enc(&d.program_id))) { "Report: earned, paid, owed, attainment" }
                        " · " a href=(format!("/ui/console/leaderboards?program={}", enc(&d.program_id))) { "Leaderboard" }
                        " · " a href=(format!("/ui/console/simulate?program={}", enc(&d.program_id))) { "What if…" } }
                }
            }
            @if programs.is_empty() { p { "No program has been published." } }
        },
    )
}

pub(crate) async fn report(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let program = id.clone();
    let Ok(Some(report)) = blocking(move || handle.report(Some(&program))).await else {
        return not_found(Some(&s));
    };
    page(
        &format!("{id} · report"),
        Some(&s),
        Some(report.position),
        html! {
            p.crumbs { a href="/ui/console/programs" { "← Programs" } }
            h1 { "Report: " (id) }
            p { "Per period: partners, revenue, units, earned, paid, accrued liability, cost share and attainment (docs/PLANNING.md defines each figure)." }
            pre.report { (report.table()) }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct ClaimsQuery {
    decided: Option<String>,
    problem: Option<String>,
}

pub(crate) async fn claims(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Query(q): Query<ClaimsQuery>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    claims_page(
        &state,
        &s,
        StatusCode::OK,
        q.problem.as_deref(),
        q.decided.as_deref(),
    )
}

fn claims_page(
    state: &ApiState,
    s: &Session,
    status: StatusCode,
    problem: Option<&str>,
    decided: Option<&str>,
) -> Response {
    let pending = state.handle.claims(None, Some("pending"), 500);
    let funds = super::funds(state);
    let currency = |program: &str| funds.get(program).map_or("", |(_, c)| c.as_str());
    let decided_claim = decided.and_then(|id| state.handle.claim(id));
    page_with_status(
        status,
        "Claims",
        Some(s),
        Some(state.handle.position()),
        html! {
            h1 { "Claims awaiting a decision" }
            @if let Some(p) = problem { (alert(p)) }
            @if let Some(c) = &decided_claim {
                (notice(&format!("Claim {} is {}{}.", c.claim_id, c.status,
                    c.approved_amount.as_ref().map_or(String::new(), |a| format!(" ({a} approved)")))))
            }
            @if pending.is_empty() { p { "No claim is pending." } }
            @for c in &pending {
                section.card.claim {
                    h2 { (c.claim_id) " " small { (c.partner_id) " · " (c.program_id) } }
                    p { "Claimed " strong { (money(&c.amount, currency(&c.program_id))) } "." }
                    form.decision method="post" action=(format!("/ui/console/claims/{}", enc(&c.claim_id))) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="nonce" value=(&super::session::random_token()[..16]);
                        label for=(format!("amount-{}", c.claim_id)) { "Approve" }
                        input id=(format!("amount-{}", c.claim_id)) name="approved_amount" inputmode="decimal" value=(c.amount);
                        button type="submit" name="decision" value="approved" { "Approve" }
                        button.secondary type="submit" name="decision" value="rejected" { "Reject" }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize, Default)]
pub(crate) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    /// Made when the form is drawn: sending the same form twice is one decision.
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    approved_amount: String,
}

pub(crate) async fn decide(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Path(claim_id): Path<String>,
    posted: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let form = match staff_form(&s, posted, |f| &f.csrf) {
        Ok(f) => f,
        Err(answer) => return *answer,
    };
    let mut data = serde_json::json!({ "claim_id": claim_id, "decision": form.decision });
    if form.decision == "approved" && !form.approved_amount.trim().is_empty() {
        data["approved_amount"] = form.approved_amount.trim().into();
    }
    let source = format!("console/{}", s.name);
    let nonce: String = form
        .nonce
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    let event_id = format!("claim-decided:{claim_id}:{nonce}");
    match publish(&state, &s, &source, &event_id, "claim.decided", data).await {
        Ok(()) => {
            Redirect::to(&format!("/ui/console/claims?decided={}", enc(&claim_id))).into_response()
        }
        Err((status, why)) => claims_page(&state, &s, status, Some(&why), None),
    }
}

#[derive(Deserialize)]
pub(crate) struct RefusalQuery {
    code: Option<String>,
    after: Option<usize>,
}

pub(crate) async fn refusals(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Query(q): Query<RefusalQuery>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let code = q.code.filter(|c| !c.is_empty());
    let handle = state.handle.clone();
    let wanted = code.clone();
    let found = blocking(move || {
        // Up to 100 matches, looking through at most REFUSAL_SCAN refusals.
        let (mut matches, mut at, mut looked) = (Vec::new(), q.after.unwrap_or(0), 0usize);
        let next;
        loop {
            let page = handle.rejections(at, 1000)?;
            looked += page.items.len();
            for (i, r) in page.items.into_iter().enumerate() {
                if wanted.as_deref().is_none_or(|c| r.code.as_str() == c) {
                    matches.push(r);
                    if matches.len() == 100 {
                        return Ok::<_, ledger_service::LogError>((matches, Some(at + i + 1)));
                    }
                }
            }
            match page.next {
                Some(n) if looked < REFUSAL_SCAN => at = n,
                other => {
                    next = other;
                    break;
                }
            }
        }
        Ok((matches, next))
    })
    .await;
    let Ok(Ok((items, next))) = found else {
        return unavailable(&s, "Refusals", "refusals");
    };
    let codes = state.handle.metrics().refused_by_code;
    page(
        "Refusals",
        Some(&s),
        Some(state.handle.position()),
        html! {
            h1 { "Refusals" }
            form.filters method="get" action="/ui/console/refusals" {
                label for="code" { "Code" }
                select #code name="code" {
                    option value="" { "every code" }
                    @for (c, n) in &codes { option value=(c) selected[code.as_deref() == Some(*c)] { (c) " (" (n) ")" } }
                }
                button type="submit" { "Show" }
            }
            div.scroll { table {
                thead { tr { th scope="col" { "Line" } th scope="col" { "Stage" } th scope="col" { "Code" } th scope="col" { "Event" } th scope="col" { "Message" } } }
                tbody {
                    @for r in &items {
                        tr { td.num { (r.line) } td { (r.stage()) } td { code { (r.code.as_str()) } } td { (r.who()) } td { (r.message) } }
                    }
                    @if items.is_empty() { tr { td colspan="5" { "None." } } }
                }
            } }
            @if let Some(n) = next {
                p { a href=(format!("/ui/console/refusals?code={}&after={n}", enc(code.as_deref().unwrap_or("")))) { "More refusals →" } }
            }
            p.hint { "A refused event is kept: `incentive-ledger redrive` sends chosen ones again (docs/INTEGRATING.md)." }
        },
    )
}

/// Payouts as a table (the partner's page and the console share it).
pub(crate) fn payout_table(items: &[PayoutRow]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { "Payout" } th scope="col" { "Partner" } th scope="col" { "Program" } th scope="col" { "Period" }
                th scope="col" { "Reason" } th scope="col" { "Amount" }
            } }
            tbody {
                @for p in items {
                    tr {
                        td { code.id { (p.payout_id) } }
                        td { (p.partner_id.as_str()) }
                        td { (p.program_id.as_str()) }
                        td { (p.period.as_str()) }
                        td { (p.reason) }
                        td.num { (money(&p.amount, &p.currency)) }
                    }
                }
                @if items.is_empty() { tr { td colspan="6" { "No payouts." } } }
            }
        } }
    }
}

#[derive(Deserialize)]
pub(crate) struct PayoutQuery {
    partner: Option<String>,
    program: Option<String>,
    after: Option<usize>,
}

fn filter(q: &PayoutQuery) -> PayoutFilter {
    PayoutFilter {
        partner: q.partner.clone().filter(|p| !p.is_empty()),
        program: q.program.clone().filter(|p| !p.is_empty()),
    }
}

pub(crate) async fn payouts(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Query(q): Query<PayoutQuery>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let f = filter(&q);
    let after = q.after.unwrap_or(0);
    let Ok(Ok(found)) = blocking(move || handle.payouts(&f, after, 100)).await else {
        return unavailable(&s, "Payouts", "payouts");
    };
    let (partner, program) = (q.partner.unwrap_or_default(), q.program.unwrap_or_default());
    let query = format!("partner={}&program={}", enc(&partner), enc(&program));
    page(
        "Payouts",
        Some(&s),
        Some(state.handle.position()),
        html! {
            h1 { "Payouts" }
            form.filters method="get" action="/ui/console/payouts" {
                label for="partner" { "Partner" }
                input #partner name="partner" value=(partner);
                label for="program" { "Program" }
                input #program name="program" value=(program);
                button type="submit" { "Filter" }
                a.button href=(format!("/ui/console/payouts.csv?{query}")) download { "Download CSV" }
            }
            (payout_table(&found.items))
            @if let Some(n) = found.next {
                p { a href=(format!("/ui/console/payouts?{query}&after={n}")) { "More payouts →" } }
            }
        },
    )
}

pub(crate) async fn payouts_csv(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Query(q): Query<PayoutQuery>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let handle = state.handle.clone();
    let f = filter(&q);
    let rows = blocking(move || {
        let (mut all, mut at) = (Vec::new(), 0usize);
        loop {
            let page = handle.payouts(&f, at, 1000)?;
            all.extend(page.items);
            match page.next {
                Some(n) if all.len() < CSV_LIMIT => at = n,
                _ => return Ok::<_, ledger_service::LogError>(all),
            }
        }
    })
    .await;
    let Ok(Ok(rows)) = rows else {
        return unavailable(&s, "Payouts", "payouts");
    };
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"payouts.csv\"",
            ),
        ],
        ledger_core::document::to_csv(&rows),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct BoardQuery {
    program: Option<String>,
    period: Option<String>,
}

pub(crate) async fn leaderboards(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Query(q): Query<BoardQuery>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let programs = state.handle.programs();
    let program = q
        .program
        .filter(|p| !p.is_empty())
        .or_else(|| programs.first().map(|p| p.current.program_id.clone()));
    let period = q.period.filter(|p| !p.is_empty());
    let board = match (&program, &period) {
        (Some(p), Some(per)) => state.handle.leaderboard(p, per),
        _ => None,
    };
    page(
        "Leaderboards",
        Some(&s),
        Some(state.handle.position()),
        html! {
            h1 { "Leaderboards" }
            form.filters method="get" action="/ui/console/leaderboards" {
                label for="program" { "Program" }
                select #program name="program" {
                    @for p in &programs {
                        option value=(p.current.program_id) selected[program.as_deref() == Some(p.current.program_id.as_str())] { (p.current.name) }
                    }
                }
                label for="period" { "Period" }
                input #period name="period" placeholder="2026-Q1" value=(period.clone().unwrap_or_default());
                button type="submit" { "Show" }
            }
            @match (&board, &period) {
                (Some(rows), _) => div.scroll { table {
                    thead { tr { th scope="col" { "Rank" } th scope="col" { "Partner" } th scope="col" { "Basis" } th scope="col" { "Earned" } } }
                    tbody { @for r in rows {
                        tr { td.num { (r.rank) } td { a href=(format!("/ui/partners/{}", enc(&r.balance.partner_id))) { (r.balance.partner_id) } } td.num { (r.balance.basis) } td.num { (money(&r.balance.earned, &r.balance.currency)) } }
                    } }
                } },
                (None, Some(per)) => p { "No entries for " (program.as_deref().unwrap_or("")) " in " (per) "." },
                (None, None) => p { "Choose a program and a period (e.g. 2026-Q1, 2026-03, 2026)." },
            }
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct SimulateQuery {
    program: Option<String>,
}

/// The what-if form: a draft program (its `program.published` data), pre-filled with a
/// program's current version to edit.
pub(crate) async fn simulate_form(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    Query(q): Query<SimulateQuery>,
) -> Response {
    if !staff(&s) {
        return not_found(Some(&s));
    }
    let draft = q
        .program
        .and_then(|id| state.handle.program(&id))
        .map(|p| {
            let v = crate::views::ProgramVersion::of(&p.current);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        })
        .unwrap_or_default();
    simulate_page(&state, &s, StatusCode::OK, &draft, None, None)
}

fn simulate_page(
    state: &ApiState,
    s: &Session,
    status: StatusCode,
    draft: &str,
    problem: Option<&str>,
    result: Option<&str>,
) -> Response {
    page_with_status(
        status,
        "What if",
        Some(s),
        Some(state.handle.position()),
        html! {
            h1 { "What if: a draft program on the real log" }
            p.hint { "Edit the program (a new version, or a new program) and run it: the whole log is folded again with the draft in it and compared with the ledger as it is (docs/PLANNING.md). Nothing is published." }
            @if let Some(p) = problem { (alert(p)) }
            @if let Some(r) = result { pre.report { (r) } }
            form.card method="post" action="/ui/console/simulate" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="draft" { "Draft program (JSON)" }
                textarea #draft name="draft" rows="18" spellcheck="false" { (draft) }
                button type="submit" { "Run the simulation" }
            }
        },
    )
}

#[derive(Deserialize, Default)]
pub(crate) struct SimulateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    draft: String,
}

pub(crate) async fn simulate(
    State(state): State<ApiState>,
    Extension(s): Extension<Session>,
    posted: Result<Form<SimulateForm>, FormRejection>,
) -> Response {
    let form = match staff_form(&s, posted, |f| &f.csrf) {
        Ok(f) => f,
        Err(answer) => return *answer,
    };
    let plan = match ledger_core::simulate::Plan::new(form.draft.as_bytes(), None, vec![]) {
        Ok(p) => p,
        Err(e) => {
            return simulate_page(
                &state,
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form.draft,
                Some(&e.to_string()),
                None,
            )
        }
    };
    match state.handle.simulate(plan, 1000).await {
        Ok(done) => {
            let table = done.simulation.table(40);
            simulate_page(&state, &s, StatusCode::OK, &form.draft, None, Some(&table))
        }
        Err(e) => {
            let status = match e {
                ledger_service::HeavyError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            simulate_page(&state, &s, status, &form.draft, Some(&e.to_string()), None)
        }
    }
}
