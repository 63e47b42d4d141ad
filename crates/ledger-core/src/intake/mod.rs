//! Intake: from one input's raw bytes to a typed [`Event`], or a refusal (SPEC §1–§3).
//!
//! Runs the checks of SPEC §1 in order — `too_large`, `malformed_json`,
//! `invalid_envelope`, `unknown_type`, `invalid_data` — and returns the event together
//! with its content digest, which the caller uses for the identity check
//! (`duplicate_conflict` or exact duplicate) against its log. It keeps no state and does
//! no business checks: those belong to the fold.

use crate::event::{
    Eligibility, Event, EventData, EventType, ProgramDef, Return, ReturnLine, Sale, SaleLine, Text,
};
use crate::json::{self, Json};
use crate::refusal::Code;
use crate::rules::{
    Accelerator, Kind, Measure, RebateMode, Reward, Rules, SpifPayout, SpifRate, Threshold, Tier,
};
use crate::values::{
    char_len, is_identifier, parse_amount, parse_date, parse_time_utc_date, Currency, PeriodKind,
    PeriodLabel,
};
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::fmt;

/// Largest input accepted, in bytes (an NDJSON line without its line ending).
pub const MAX_INPUT_BYTES: usize = 65_536;

/// Longest `id`, in Unicode scalar values.
pub const MAX_ID_CHARS: usize = 128;

/// An input that passed intake: the typed event and the digest of its JSON content.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event: Event,
    pub content_digest: [u8; 32],
}

/// An input refused at intake, kept in quarantine by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeRefusal {
    pub code: Code,
    pub message: String,
    /// `(source, id)` when the input was a JSON object whose `source` and `id` are
    /// strings within their bounds (SPEC §7), even if the rest is invalid.
    pub identity: Option<(String, String)>,
    /// The `type` attribute when it is one of the event types (for metrics by type).
    pub event_type: Option<EventType>,
}

/// Runs SPEC §1 checks 1–5 on one input.
pub fn check(raw: &[u8]) -> Result<Accepted, IntakeRefusal> {
    check_inner(raw, true).map(|(event, digest)| Accepted {
        event,
        content_digest: digest.unwrap_or_default(),
    })
}

/// As [`check`], without the content digest: for inputs already in a log, whose digest
/// was recorded when they were appended (the identity check is not repeated on replay).
pub fn check_event(raw: &[u8]) -> Result<Event, IntakeRefusal> {
    check_inner(raw, false).map(|(event, _)| event)
}

fn check_inner(raw: &[u8], digest: bool) -> Result<(Event, Option<[u8; 32]>), IntakeRefusal> {
    let refuse = |code, message: String, identity| IntakeRefusal {
        code,
        message,
        identity,
        event_type: None,
    };
    if raw.len() > MAX_INPUT_BYTES {
        return Err(refuse(
            Code::TooLarge,
            format!(
                "the input is {} bytes; at most {MAX_INPUT_BYTES} bytes are accepted",
                raw.len()
            ),
            None,
        ));
    }
    let root = json::parse(raw)
        .map_err(|e| refuse(Code::MalformedJson, format!("not I-JSON: {e}"), None))?;
    // Only refusals need the identity as owned strings.
    let identity = || identity_of(&root);
    let envelope = envelope(&root).map_err(|m| refuse(Code::InvalidEnvelope, m, identity()))?;
    let Some(event_type) = EventType::parse(envelope.type_name) else {
        return Err(refuse(
            Code::UnknownType,
            format!(
                "type {:?} is not an event type the ledger accepts (expected one of {})",
                envelope.type_name,
                EventType::ALL.map(|t| t.as_str()).join(", ")
            ),
            identity(),
        ));
    };
    let data = event_data(event_type, envelope.data).map_err(|e| IntakeRefusal {
        event_type: Some(event_type),
        ..refuse(
            Code::InvalidData,
            format!("{}: {}", e.path, e.problem),
            identity(),
        )
    })?;
    let event = Event {
        source: Text::from(envelope.source),
        id: Text::from(envelope.id),
        time: Text::from(envelope.time),
        date: envelope.date,
        data,
    };
    Ok((event, digest.then(|| root.content_digest())))
}

fn identity_of(root: &Json) -> Option<(String, String)> {
    match (root.get("source"), root.get("id")) {
        (Some(Json::Str(source)), Some(Json::Str(id)))
            if (1..=256).contains(&char_len(source))
                && (1..=MAX_ID_CHARS).contains(&char_len(id)) =>
        {
            Some((source.to_string(), id.to_string()))
        }
        _ => None,
    }
}

struct Envelope<'a> {
    source: &'a str,
    id: &'a str,
    type_name: &'a str,
    time: &'a str,
    date: chrono::NaiveDate,
    data: &'a [(Cow<'a, str>, Json<'a>)],
}

/// A short rendering of a JSON value for messages.
fn show(v: &Json) -> String {
    let mut s = match v {
        Json::Null => "null".to_string(),
        Json::Bool(b) => b.to_string(),
        Json::Num(n) => n.to_string(),
        Json::Str(s) => format!("{s:?}"),
        Json::Arr(items) => format!("an array of {} items", items.len()),
        Json::Obj(_) => "an object".to_string(),
    };
    if s.chars().count() > 80 {
        s = s.chars().take(77).collect::<String>() + "...";
    }
    s
}

/// A present, non-null attribute (SPEC §1: an optional field that is `null` is absent).
fn present<'a>(v: Option<&'a Json<'a>>) -> Option<&'a Json<'a>> {
    v.filter(|j| !matches!(j, Json::Null))
}

fn envelope<'a>(root: &'a Json<'a>) -> Result<Envelope<'a>, String> {
    let Json::Obj(_) = root else {
        return Err(format!(
            "the event must be a JSON object (a CloudEvent), got {}",
            root.type_name()
        ));
    };
    let string_attr = |name: &str, min: usize, max: usize| -> Result<&'a str, String> {
        match present(root.get(name)) {
            None => Err(format!("attribute {name} is required but missing")),
            Some(Json::Str(s)) => {
                let n = char_len(s);
                if n < min || n > max {
                    Err(format!(
                        "attribute {name} must be {min}–{max} characters, got {n}"
                    ))
                } else {
                    Ok(s.as_ref())
                }
            }
            Some(other) => Err(format!(
                "attribute {name} must be a string, got {}",
                show(other)
            )),
        }
    };
    let specversion = string_attr("specversion", 0, usize::MAX)?;
    if specversion != "1.0" {
        return Err(format!(
            "attribute specversion must be \"1.0\", got {specversion:?}"
        ));
    }
    let id = string_attr("id", 1, MAX_ID_CHARS)?;
    let source = string_attr("source", 1, 256)?;
    let type_name = string_attr("type", 0, usize::MAX)?;
    let time = string_attr("time", 0, usize::MAX)?;
    let date = parse_time_utc_date(time).ok_or_else(|| {
        format!(
            "attribute time must be an RFC 3339 date-time with an offset, within years \
             0001–9999 in UTC (e.g. \"2026-03-01T10:00:00Z\"), got {time:?}"
        )
    })?;
    let data = match present(root.get("data")) {
        None => return Err("attribute data is required but missing".into()),
        Some(Json::Obj(members)) => members.as_slice(),
        Some(other) => {
            return Err(format!(
                "attribute data must be a JSON object, got {}",
                show(other)
            ))
        }
    };
    match present(root.get("subject")) {
        None => {}
        Some(Json::Str(s)) if !s.is_empty() => {}
        Some(other) => {
            return Err(format!(
                "attribute subject, when present, must be a non-empty string, got {}",
                show(other)
            ))
        }
    }
    match present(root.get("datacontenttype")) {
        None => {}
        Some(Json::Str(s)) if s == "application/json" => {}
        Some(other) => {
            return Err(format!(
                "attribute datacontenttype, when present, must be \"application/json\", got {}",
                show(other)
            ))
        }
    }
    Ok(Envelope {
        source,
        id,
        type_name,
        time,
        date,
        data,
    })
}

mod data;
mod fields;
#[cfg(test)]
mod tests;

use data::*;
use fields::*;
