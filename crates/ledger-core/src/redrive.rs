//! Re-driving a refused event: the same content under a new identity derived from the
//! original, with the original named in the event itself.
//!
//! An event the fold refused is in the log for ever (CONTRACT §1): sent again as it is,
//! it is an exact duplicate and changes nothing. When the refusal's cause has gone away
//! — an enrollment refused as `unknown_program` because the program came later — the
//! event is sent again as a *new* event: id `redrive:<id>` (or, when that would be
//! longer than an id may be, `redrive:<hash of the identity>`), and the extension
//! attributes `redrivessource` and `redrivesid` naming the original. The new identity
//! is a function of the old, so re-driving twice sends the same event twice — an exact
//! duplicate, re-driven once.

use crate::ids::fitting_id;
use serde_json::{Map, Value};

/// The prefix of a re-driven event's id.
pub const PREFIX: &str = "redrive:";

/// The id the event `(source, id)` is re-driven under.
pub fn redrive_id(source: &str, id: &str) -> String {
    fitting_id(PREFIX, id, source)
}

/// The re-driven form of an event's raw JSON object: the same attributes and data, the
/// new id, and the original's identity in `redrivessource` / `redrivesid`. `None` if
/// `raw` is not an object with string `source` and `id`.
pub fn redriven(raw: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut event: Map<String, Value> = serde_json::from_slice(raw).ok()?;
    let source = event.get("source")?.as_str()?.to_string();
    let id = event.get("id")?.as_str()?.to_string();
    let new_id = redrive_id(&source, &id);
    event.insert("id".into(), Value::String(new_id.clone()));
    event.insert("redrivessource".into(), Value::String(source));
    event.insert("redrivesid".into(), Value::String(id));
    let bytes = serde_json::to_vec(&event).ok()?;
    Some((new_id, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::MAX_ID_CHARS;

    const ENROLL: &str = r#"{"specversion":"1.0","id":"enr-1","source":"crm","type":"partner.enrolled","time":"2026-01-02T00:00:00Z","data":{"partner_id":"P-1","program_id":"LATE"}}"#;

    #[test]
    fn a_redriven_event_is_the_same_event_under_a_derived_identity() {
        let (id, bytes) = redriven(ENROLL.as_bytes()).unwrap();
        assert_eq!(id, "redrive:enr-1");
        let accepted = crate::intake::check(&bytes).unwrap();
        assert_eq!(accepted.event.id.as_str(), "redrive:enr-1");
        assert_eq!(accepted.event.source.as_str(), "crm");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["redrivessource"], "crm");
        assert_eq!(v["redrivesid"], "enr-1");
        let original: Value = serde_json::from_str(ENROLL).unwrap();
        assert_eq!(v["data"], original["data"]);
        assert_eq!(v["time"], original["time"]);
        // The same every time: a second re-drive is an exact duplicate.
        assert_eq!(redriven(ENROLL.as_bytes()).unwrap().1, bytes);
    }

    #[test]
    fn a_long_id_is_redriven_under_a_hash_that_fits() {
        let long = "x".repeat(MAX_ID_CHARS);
        let id = redrive_id("crm", &long);
        assert!(
            id.starts_with(PREFIX) && id.chars().count() <= MAX_ID_CHARS,
            "{id}"
        );
        assert_ne!(id, redrive_id("crm", &"y".repeat(MAX_ID_CHARS)));
        assert!(redriven(b"not json").is_none());
        assert!(redriven(br#"{"id":1,"source":"s"}"#).is_none());
    }
}
