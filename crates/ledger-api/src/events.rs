//! `POST /v1/events`: CloudEvents over HTTP for systems that cannot speak NATS.
//!
//! The three content modes of the CloudEvents HTTP binding — structured
//! (`application/cloudevents+json`), binary (`ce-*` headers, the body as data) and
//! batched (`application/cloudevents-batch+json`) — are read into structured events,
//! checked as intake would (CONTRACT §1), checked against what the token's role may
//! post ([`may_post`]), and then published, in order, to the inbound stream through an
//! [`EventSink`]. The answer comes once JetStream has stored every event, with its
//! stream sequence: the log stays fed by the stream alone, so order and durability are
//! the same as for a NATS producer.
//!
//! A request is all or nothing up to the publish: one event refused (ill-formed, or not
//! this role's to post) and none is published — the answer lists each event's verdict,
//! so the caller fixes it and sends the request again. Publishing stops at the first
//! failure; what was stored before it is said, and sending the whole request again is
//! safe (identities make re-sends exact duplicates).

use crate::{ApiError, ApiResult, ApiState, Role};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use futures::future::BoxFuture;
use ledger_core::binding;
use ledger_core::{EventData, EventType};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Events one request may carry.
pub const MAX_BATCH: usize = 1_000;

/// The longest `?wait=true` waits for the fold.
const FOLD_WAIT: Duration = Duration::from_secs(10);

/// An event ready to be published: its type (which decides the subject), identity and
/// structured bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub event_type: EventType,
    pub source: String,
    pub id: String,
    pub raw: Vec<u8>,
}

/// Where the stream stored an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub stream_sequence: u64,
    /// JetStream had it already (the same message id within its duplicate window); the
    /// sequence is the first copy's.
    pub duplicate: bool,
}

/// Publishes events to the inbound stream (JetStream in `ledger-nats`).
pub trait EventSink: Send + Sync {
    /// Publishes one event and waits for the stream's acknowledgement; an error is a
    /// message for the caller (the event may or may not have been stored: a re-send is
    /// safe).
    fn publish(&self, event: Outgoing) -> BoxFuture<'_, Result<Stored, String>>;
    /// The stream's name, for answers.
    fn stream(&self) -> &str;
}

/// The event types each role may post — the same split `deploy/nats-accounts.conf`
/// gives the NATS users on the inbound subjects (`producer`, `finance`, `programs`,
/// `portal`); a test keeps the two equal. A partner posts only its own claims.
pub const POSTING: &[(&str, &[EventType])] = &[
    (
        "producer",
        &[
            EventType::SaleRecorded,
            EventType::SaleReturned,
            EventType::PartnerEnrolled,
            EventType::PartnerWithdrawn,
            EventType::TrainingCompleted,
        ],
    ),
    (
        "finance",
        &[
            EventType::AdjustmentPosted,
            EventType::ClaimDecided,
            EventType::PeriodClosed,
        ],
    ),
    ("admin", &[EventType::ProgramPublished]),
    ("partner", &[EventType::ClaimSubmitted]),
];

/// Whether `role` may post `data` (of type `t`); `Err` says why not.
pub fn may_post(role: &Role, t: EventType, data: &EventData) -> Result<(), String> {
    let name = match role {
        Role::Producer => "producer",
        Role::Finance => "finance",
        Role::Admin => "admin",
        Role::Partner(_) => "partner",
    };
    let allowed = POSTING
        .iter()
        .find(|(r, _)| *r == name)
        .map_or(&[][..], |(_, types)| *types);
    if !allowed.contains(&t) {
        let list: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
        return Err(format!(
            "a {name} token may not post {}; it may post {}",
            t.as_str(),
            list.join(", ")
        ));
    }
    if let (Role::Partner(own), EventData::ClaimSubmitted { partner_id, .. }) = (role, data) {
        if partner_id.as_str() != own {
            return Err(format!(
                "a token of partner {own} may submit claims for {own} only, not for {}",
                partner_id.as_str()
            ));
        }
    }
    Ok(())
}

/// What the checks of an event posted by a role came to.
pub(crate) enum Admission {
    /// Intake refuses it (CONTRACT §1).
    Refused(ledger_core::IntakeRefusal),
    /// Well formed; `forbidden` says why it is not this role's to post, if it is not.
    Checked {
        event: Outgoing,
        forbidden: Option<String>,
    },
}

/// The checks every event posted over HTTP meets — by `POST /v1/events` and by the web
/// pages' forms alike: intake's (steps 1–5), then what `role` may post ([`may_post`]).
pub(crate) fn admit(role: &Role, raw: Vec<u8>) -> Admission {
    let accepted = match ledger_core::intake::check(&raw) {
        Ok(a) => a,
        Err(r) => return Admission::Refused(r),
    };
    let event = accepted.event;
    let event_type = event.event_type();
    Admission::Checked {
        forbidden: may_post(role, event_type, &event.data).err(),
        event: Outgoing {
            event_type,
            source: event.source.to_string(),
            id: event.id.to_string(),
            raw,
        },
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostQuery {
    /// Wait (at most 10 s) until the ledger has folded the events.
    #[serde(default)]
    wait: bool,
}

/// One event's verdict in an answer.
#[derive(Serialize, Default)]
struct Verdict {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    event_type: Option<&'static str>,
    /// `stored`, `refused`, `forbidden` or `not_published`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn unsupported(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "unsupported_media_type",
        message: message.into(),
    }
}

/// The request's events as structured bytes, in order.
fn read_events(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let names = || headers.keys().map(|n| n.as_str());
    if binding::is_binary(names()) {
        let all = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        return binding::structured(all, body, binding::Encoding::PercentEncoded)
            .map(|raw| vec![raw])
            .map_err(|r| ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: r.code.as_str(),
                message: format!("binary mode: {}", r.message),
            });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/cloudevents+json" => Ok(vec![body.to_vec()]),
        "application/cloudevents-batch+json" => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!(
                        "a batch is a JSON array of CloudEvents objects: {e}"
                    ))
                })?;
            if items.is_empty() {
                return Err(ApiError::bad_request("the batch is empty"));
            }
            if items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(format!(
                    "a batch holds at most {MAX_BATCH} events, this one {}",
                    items.len()
                )));
            }
            Ok(items.iter().map(|i| i.get().as_bytes().to_vec()).collect())
        }
        _ => Err(unsupported(format!(
            "Content-Type {content_type:?}: send one event as application/cloudevents+json, \
             several as application/cloudevents-batch+json (a JSON array), or one in binary \
             mode (ce-specversion, ce-id, ce-source, ce-type, ce-time headers and the data \
             as an application/json body)"
        ))),
    }
}

pub(crate) async fn post(
    State(state): State<ApiState>,
    axum::Extension(role): axum::Extension<Role>,
    headers: HeaderMap,
    q: Result<Query<PostQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = crate::routes::query(q)?;
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        code: "bad_body",
        message: e.body_text(),
    })?;
    let Some(sink) = state.events.clone() else {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "no_event_sink",
            message: "this server does not take events over HTTP (no NATS connection)".into(),
        });
    };
    let raws = read_events(&headers, &body)?;
    let mut verdicts = Vec::with_capacity(raws.len());
    let mut outgoing = Vec::with_capacity(raws.len());
    let (mut refused, mut forbidden) = (0usize, 0usize);
    for (index, raw) in raws.into_iter().enumerate() {
        match admit(&role, raw) {
            Admission::Refused(r) => {
                refused += 1;
                verdicts.push(Verdict {
                    index,
                    source: r.identity.as_ref().map(|(s, _)| s.clone()),
                    id: r.identity.map(|(_, i)| i),
                    event_type: r.event_type.map(|t| t.as_str()),
                    status: "refused",
                    code: Some(r.code.as_str()),
                    message: Some(r.message),
                    ..Verdict::default()
                });
            }
            Admission::Checked {
                event,
                forbidden: why,
            } => {
                let mut v = Verdict {
                    index,
                    source: Some(event.source.clone()),
                    id: Some(event.id.clone()),
                    event_type: Some(event.event_type.as_str()),
                    status: "not_published",
                    ..Verdict::default()
                };
                if let Some(why) = why {
                    forbidden += 1;
                    v.status = "forbidden";
                    v.code = Some("forbidden");
                    v.message = Some(why);
                }
                verdicts.push(v);
                outgoing.push(event);
            }
        }
    }
    let total = verdicts.len();
    if refused + forbidden > 0 {
        let (status, code) = if refused > 0 {
            (StatusCode::UNPROCESSABLE_ENTITY, "events_refused")
        } else {
            (StatusCode::FORBIDDEN, "forbidden")
        };
        tracing::info!(refused, forbidden, total, "events posted over HTTP refused");
        return Ok((
            status,
            Json(serde_json::json!({
                "code": code,
                "message": format!(
                    "{} of {total} events refused ({refused} ill-formed, {forbidden} not this token's to post); nothing was published",
                    refused + forbidden
                ),
                "events": verdicts,
            })),
        )
            .into_response());
    }
    let mut last = 0u64;
    for (verdict, event) in verdicts.iter_mut().zip(outgoing) {
        match sink.publish(event).await {
            Ok(stored) => {
                verdict.status = "stored";
                verdict.stream_sequence = Some(stored.stream_sequence);
                verdict.duplicate = Some(stored.duplicate);
                last = last.max(stored.stream_sequence);
            }
            Err(message) => {
                let done = verdict.index;
                verdict.code = Some("not_published");
                verdict.message = Some(message.clone());
                tracing::warn!(
                    index = done,
                    "publishing an event posted over HTTP failed: {message}"
                );
                return Ok((
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    Json(serde_json::json!({
                        "code": "not_published",
                        "message": format!(
                            "the stream did not take event {done} ({message}); the {done} before it are stored; sending the request again is safe"
                        ),
                        "stream": sink.stream(),
                        "events": verdicts,
                    })),
                )
                    .into_response());
            }
        }
    }
    let folded = if q.wait {
        Some(state.handle.wait_for_source(last, FOLD_WAIT).await)
    } else {
        None
    };
    let mut answer = serde_json::json!({
        "stream": sink.stream(),
        "events": verdicts,
    });
    if let Some(folded) = folded {
        answer["folded"] = serde_json::json!(folded);
        if folded {
            answer["log_position"] = serde_json::json!(state.handle.position());
        }
    }
    let status = if folded == Some(true) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The NATS user of `deploy/nats-accounts.conf` that posts what each role posts.
    const NATS_USER: &[(&str, &str)] = &[
        ("producer", "producer"),
        ("finance", "finance"),
        ("admin", "programs"),
        ("partner", "portal"),
    ];

    /// The inbound subjects each user of the accounts file may publish on.
    fn conf_subjects() -> Vec<(String, BTreeSet<String>)> {
        let conf = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/nats-accounts.conf"),
        )
        .unwrap();
        conf.split("user: ")
            .skip(1)
            .map(|block| {
                let name = block.split_whitespace().next().unwrap().to_string();
                let subjects = block
                    .split('"')
                    .filter_map(|s| s.strip_prefix("incentive.events."))
                    .map(str::to_string)
                    .collect();
                (name, subjects)
            })
            .collect()
    }

    /// An HTTP role posts exactly the event types its NATS user may publish: the rules
    /// are the same whichever way an event comes in.
    #[test]
    fn roles_post_what_their_nats_users_may_publish() {
        let users = conf_subjects();
        for (role, types) in POSTING {
            let user = NATS_USER.iter().find(|(r, _)| r == role).unwrap().1;
            let (_, allowed) = users
                .iter()
                .find(|(u, _)| u == user)
                .unwrap_or_else(|| panic!("no user {user} in deploy/nats-accounts.conf"));
            let mut expected: BTreeSet<String> =
                types.iter().map(|t| t.as_str().to_string()).collect();
            expected.extend(["unparsed".to_string(), "invalid".to_string()]);
            assert_eq!(allowed, &expected, "role {role}, NATS user {user}");
        }
        // Every type is some role's to post.
        let all: BTreeSet<EventType> = POSTING
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        assert_eq!(all.len(), EventType::ALL.len());
        // The ledger's own user publishes what HTTP takes, and only it also the payouts.
        let ledger = &users.iter().find(|(u, _)| u == "ledger").unwrap().1;
        assert!(ledger.contains(">"), "{ledger:?}");
    }

    fn claim(partner: &str) -> EventData {
        let line = format!(
            r#"{{"specversion":"1.0","id":"c","source":"portal","type":"claim.submitted","time":"2026-01-01T00:00:00Z","data":{{"claim_id":"C-1","partner_id":"{partner}","program_id":"MDF","amount":"10.00","activity":"fair"}}}}"#
        );
        ledger_core::intake::check(line.as_bytes())
            .unwrap()
            .event
            .data
    }

    #[test]
    fn a_partner_submits_its_own_claims_only() {
        let me = Role::Partner("P-1".into());
        assert_eq!(
            may_post(&me, EventType::ClaimSubmitted, &claim("P-1")),
            Ok(())
        );
        let e = may_post(&me, EventType::ClaimSubmitted, &claim("P-2")).unwrap_err();
        assert!(e.contains("for P-1 only, not for P-2"), "{e}");
        let e = may_post(&Role::Finance, EventType::ClaimSubmitted, &claim("P-1")).unwrap_err();
        assert!(
            e.contains(
                "a finance token may not post claim.submitted; it may post adjustment.posted"
            ),
            "{e}"
        );
    }
}
