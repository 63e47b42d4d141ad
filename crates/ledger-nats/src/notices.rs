//! Refusal notices: each refused input announced as a `refusal.recorded` CloudEvent on
//! the rejected subject. Best effort — the refusal is in the log either way.

use async_nats::Client;
use ledger_core::replay::Rejection;
use serde::Serialize;
use tracing::warn;

/// Publishes refusal notices on the service's NATS connection.
pub struct JetStreamNotices {
    pub client: Client,
    pub subject: String,
    /// Only the replica that may publish announces.
    pub leadership: ledger_service::Leadership,
}

impl ledger_service::Notices for JetStreamNotices {
    async fn announce(&self, refused: Vec<Rejection>) {
        if !self.leadership.may_publish() {
            return;
        }
        for r in &refused {
            if let Err(e) = self
                .client
                .publish(self.subject.clone(), notice(r).into())
                .await
            {
                warn!("refusal notice not published: {e}");
            }
        }
    }
}

/// The notice's id: uuid v5 of the refusal's stage and arrival (the same after a
/// restart re-announces nothing new: notices are sent when a refusal is folded).
fn notice_id(r: &Rejection) -> String {
    ledger_core::uuid_v5(&format!(
        "incentive-ledger:rejected:{}:{}",
        r.stage(),
        r.line
    ))
    .to_string()
}

/// A refusal notice (a CloudEvent). Members are written in key order at both levels —
/// the bytes `serde_json::Value` would print — straight from the rejection, without
/// building a `Value` (the service sends one per refusal).
pub fn notice(r: &Rejection) -> Vec<u8> {
    /// The row of `Rejection::to_json` plus the arrival number, keys in order.
    #[derive(Serialize)]
    struct Data<'a> {
        /// For messages the line is the arrival number (SPEC §7).
        arrival: u64,
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        line: u64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a str>,
        stage: &'a str,
    }
    #[derive(Serialize)]
    struct Notice<'a> {
        data: Data<'a>,
        datacontenttype: &'a str,
        id: &'a str,
        source: &'a str,
        specversion: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
    }
    let id = notice_id(r);
    let notice = Notice {
        data: Data {
            arrival: r.line,
            code: r.code.as_str(),
            id: r.identity.as_ref().map(|(_, id)| id.as_str()),
            line: r.line,
            message: &r.message,
            source: r.identity.as_ref().map(|(source, _)| source.as_str()),
            stage: r.stage(),
        },
        datacontenttype: "application/json",
        id: &id,
        source: "incentive-ledger",
        specversion: "1.0",
        event_type: "refusal.recorded",
    };
    serde_json::to_vec(&notice).expect("a notice of strings and integers serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::Code;

    /// The notice as it was built before: through `serde_json::Value`.
    fn through_value(r: &Rejection) -> Vec<u8> {
        let mut data = r.to_json();
        data["arrival"] = r.line.into();
        serde_json::json!({
            "specversion": "1.0",
            "id": notice_id(r),
            "source": "incentive-ledger",
            "type": "refusal.recorded",
            "datacontenttype": "application/json",
            "data": data,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_notice_has_the_bytes_of_its_value_form() {
        let cases = [
            Rejection {
                code: Code::MalformedJson,
                message: "not I-JSON: \"x\"\n\u{2028} at byte 3".into(),
                identity: None,
                line: 7,
            },
            Rejection {
                code: Code::UnknownSale,
                message: "sale INV-1 is not known — é".into(),
                identity: Some(("erp/sap".into(), "e:1/\\x".into())),
                line: u64::MAX,
            },
        ];
        for r in &cases {
            assert_eq!(
                String::from_utf8(notice(r)).unwrap(),
                String::from_utf8(through_value(r)).unwrap()
            );
        }
    }

    #[test]
    fn a_notice_id_is_a_version_5_uuid() {
        let r = Rejection {
            code: Code::MalformedJson,
            message: String::new(),
            identity: None,
            line: 7,
        };
        let id: uuid::Uuid = notice_id(&r).parse().unwrap();
        assert_eq!(id.get_version_num(), 5);
    }
}
