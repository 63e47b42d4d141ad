//! The publishing tool: sends NDJSON events to the inbound subjects
//! (`incentive.events.<type>`) with a `Nats-Msg-Id` made from the source, the id and a
//! hash of the content — so JetStream drops an exact re-send within its duplicate
//! window, while a conflicting re-send still reaches the ledger and is quarantined.
//! Waits for JetStream acks in bounded windows. A line that is not JSON is sent as it is
//! (to `incentive.events.unparsed`), to be quarantined by the ledger.

use async_nats::jetstream;
use ledger_core::hex;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PublishSummary {
    pub published: u64,
    /// Messages JetStream recognised as re-sends (same `Nats-Msg-Id`).
    pub duplicates: u64,
}

/// Subject and message id of one raw input.
pub fn route(prefix: &str, raw: &[u8]) -> (String, String) {
    let content = hex(&Sha256::digest(raw)[..16]);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(raw).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 128
            && t.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
    };
    let subject = match field("type") {
        Some(t) if token_ok(&t) => format!("{prefix}.{t}"),
        Some(_) => format!("{prefix}.invalid"),
        None => format!("{prefix}.unparsed"),
    };
    let msg_id = match (field("source"), field("id")) {
        (Some(source), Some(id)) => {
            format!(
                "{}-{content}",
                hex(&ledger_core::identity_key(&source, &id))
            )
        }
        _ => format!("raw-{content}"),
    };
    (subject, msg_id)
}

/// Why publishing inputs stopped (what was acknowledged before is stored).
#[derive(Debug, thiserror::Error)]
pub enum PublishFailed {
    #[error("an input could not be sent")]
    Send(#[source] jetstream::context::PublishError),
    #[error("JetStream did not acknowledge an input")]
    NotAcknowledged(#[source] jetstream::context::PublishError),
}

/// Publishes every input in order; at most `window` unacknowledged at a time.
pub async fn publish_all(
    js: &jetstream::Context,
    prefix: &str,
    inputs: impl IntoIterator<Item = Vec<u8>>,
    window: usize,
) -> Result<PublishSummary, PublishFailed> {
    let mut summary = PublishSummary::default();
    let mut pending: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::new();
    for raw in inputs {
        if pending.len() >= window.max(1) {
            if let Some(ack) = pending.pop_front() {
                record(
                    &mut summary,
                    ack.await.map_err(PublishFailed::NotAcknowledged)?,
                );
            }
        }
        let (subject, msg_id) = route(prefix, &raw);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let ack = js
            .publish_with_headers(subject, headers, raw.into())
            .await
            .map_err(PublishFailed::Send)?;
        pending.push_back(ack);
    }
    while let Some(ack) = pending.pop_front() {
        record(
            &mut summary,
            ack.await.map_err(PublishFailed::NotAcknowledged)?,
        );
    }
    Ok(summary)
}

fn record(summary: &mut PublishSummary, ack: jetstream::publish::PublishAck) {
    if ack.duplicate {
        summary.duplicates += 1;
    } else {
        summary.published += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_type_and_identity() {
        let e = br#"{"specversion":"1.0","id":"e1","source":"erp","type":"sale.recorded"}"#;
        let (subject, id) = route("incentive.events", e);
        assert_eq!(subject, "incentive.events.sale.recorded");
        let edited =
            br#"{"specversion":"1.0","id":"e1","source":"erp","type":"sale.recorded","x":1}"#;
        let (_, id2) = route("incentive.events", edited);
        assert_ne!(id, id2, "a conflicting re-send gets another message id");
        assert_eq!(id[..32], id2[..32], "but the same identity part");
        assert_eq!(
            route("incentive.events", b"{not json").0,
            "incentive.events.unparsed"
        );
        assert_eq!(
            route("incentive.events", br#"{"type":"a b.*"}"#).0,
            "incentive.events.invalid"
        );
    }
}
