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
        (Some(source), Some(id)) => message_id(&source, &id, raw),
        _ => format!("raw-{content}"),
    };
    (subject, msg_id)
}

/// The `Nats-Msg-Id` of an event: its identity and a hash of its content, so that
/// JetStream drops an exact re-send, while a conflicting one (same identity, other
/// content) reaches the ledger and is quarantined.
pub fn message_id(source: &str, id: &str, raw: &[u8]) -> String {
    format!(
        "{}-{}",
        hex(&ledger_core::identity_key(source, id)),
        hex(&Sha256::digest(raw)[..16])
    )
}

/// Publishes one checked event to `<prefix>.<its type>` and waits for the stream to
/// store it: (stream sequence, whether it was a re-send JetStream already had).
pub async fn publish_event(
    js: &jetstream::Context,
    prefix: &str,
    event_type: &str,
    source: &str,
    id: &str,
    raw: Vec<u8>,
) -> Result<(u64, bool), PublishFailed> {
    let subject = format!("{prefix}.{event_type}");
    let msg_id = message_id(source, id, &raw);
    let raw = bytes::Bytes::from(raw);
    let ack = send(js, &subject, &msg_id, raw.clone()).await?;
    let ack = settle(
        js,
        InFlight {
            ack,
            subject,
            msg_id,
            raw,
        },
    )
    .await?;
    Ok((ack.sequence, ack.duplicate))
}

/// Why publishing inputs stopped (what was acknowledged before is stored).
#[derive(Debug, thiserror::Error)]
pub enum PublishFailed {
    #[error("an input could not be sent")]
    Send(#[source] jetstream::context::PublishError),
    #[error("JetStream did not acknowledge an input")]
    NotAcknowledged(#[source] jetstream::context::PublishError),
}

/// A message sent and not yet acknowledged, kept to be sent again.
struct InFlight {
    ack: jetstream::context::PublishAckFuture,
    subject: String,
    msg_id: String,
    raw: bytes::Bytes,
}

/// How often an input whose twin is still being stored is sent again.
const IN_PROCESS_RETRIES: u32 = 50;

/// Publishes every input in order; at most `window` unacknowledged at a time.
pub async fn publish_all(
    js: &jetstream::Context,
    prefix: &str,
    inputs: impl IntoIterator<Item = Vec<u8>>,
    window: usize,
) -> Result<PublishSummary, PublishFailed> {
    let mut summary = PublishSummary::default();
    let mut pending: VecDeque<InFlight> = VecDeque::new();
    for raw in inputs {
        if pending.len() >= window.max(1) {
            if let Some(sent) = pending.pop_front() {
                record(&mut summary, settle(js, sent).await?);
            }
        }
        let (subject, msg_id) = route(prefix, &raw);
        let raw = bytes::Bytes::from(raw);
        let ack = send(js, &subject, &msg_id, raw.clone()).await?;
        pending.push_back(InFlight {
            ack,
            subject,
            msg_id,
            raw,
        });
    }
    while let Some(sent) = pending.pop_front() {
        record(&mut summary, settle(js, sent).await?);
    }
    Ok(summary)
}

async fn send(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    raw: bytes::Bytes,
) -> Result<jetstream::context::PublishAckFuture, PublishFailed> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(subject.to_string(), headers, raw)
        .await
        .map_err(PublishFailed::Send)
}

/// Waits for a message's acknowledgement. On a clustered stream an exact re-send that
/// arrives while its twin is still being replicated is answered "duplicate message id
/// is in process" (JetStream error 10158) rather than as a duplicate: it is sent again
/// until the stream answers either way.
async fn settle(
    js: &jetstream::Context,
    mut sent: InFlight,
) -> Result<jetstream::publish::PublishAck, PublishFailed> {
    let mut retries = 0;
    loop {
        match sent.ack.await {
            Ok(ack) => return Ok(ack),
            Err(e) if retries < IN_PROCESS_RETRIES && e.to_string().contains("10158") => {
                retries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                sent.ack = send(js, &sent.subject, &sent.msg_id, sent.raw.clone()).await?;
            }
            Err(e) => return Err(PublishFailed::NotAcknowledged(e)),
        }
    }
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
