//! The properties the fuzz targets check (`fuzz/`, `cargo +nightly fuzz run …`), as
//! plain functions, so that the normal test suite replays the committed corpora through
//! the very same checks on stable (`tests/fuzz_corpus.rs`). Each panics when its
//! property fails; a fuzzer reports that as a finding.

use crate::json::{self, Json};

/// Runs `check` over every input of the committed corpus of fuzz target `target`
/// (`fuzz/corpus/<target>/` of this source tree) and returns how many there were;
/// panics naming the first input whose check fails. For the suite's corpus tests.
pub fn replay_corpus(target: &str, check: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("a corpus entry").path();
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
        let caught = std::panic::catch_unwind(|| check(&bytes));
        assert!(caught.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}

/// Intake on arbitrary bytes: never panics; an accepted input written back compactly
/// (another spelling of the same JSON) is accepted again, as the same event with the
/// same content digest.
pub fn intake(bytes: &[u8]) {
    let Ok(accepted) = crate::intake::check(bytes) else {
        return;
    };
    let parsed = json::parse(bytes).expect("intake accepted what the parser refuses");
    let mut rewritten = Vec::with_capacity(bytes.len());
    write_compact(&parsed, &mut rewritten);
    let again = crate::intake::check(&rewritten).unwrap_or_else(|r| {
        panic!(
            "accepted, then refused once written compactly: {:?}\n{}",
            r,
            String::from_utf8_lossy(&rewritten)
        )
    });
    assert_eq!(
        again.content_digest, accepted.content_digest,
        "content digest changed"
    );
    assert_eq!(again.event.id, accepted.event.id);
    assert_eq!(again.event.source, accepted.event.source);
    assert_eq!(again.event.event_type(), accepted.event.event_type());
}

/// The I-JSON parser against serde_json: whatever it accepts, serde_json accepts too,
/// with the same value.
pub fn json_against_serde(bytes: &[u8]) {
    let Ok(ours) = json::parse(bytes) else {
        return;
    };
    let theirs: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "accepted here, refused by serde_json ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert_eq!(
        to_serde(&ours),
        theirs,
        "{}",
        String::from_utf8_lossy(bytes)
    );
}

/// `value` as serde_json reads it (numbers parsed from their text as serde_json does).
fn to_serde(value: &Json) -> serde_json::Value {
    match value {
        Json::Null => serde_json::Value::Null,
        Json::Bool(b) => serde_json::Value::Bool(*b),
        Json::Num(text) => serde_json::from_str(text).expect("a number the parser checked"),
        Json::Str(s) => serde_json::Value::String(s.to_string()),
        Json::Arr(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        Json::Obj(members) => serde_json::Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.to_string(), to_serde(v)))
                .collect(),
        ),
    }
}

/// `value` without white space, numbers as written, strings escaped anew.
fn write_compact(value: &Json, out: &mut Vec<u8>) {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Num(text) => out.extend_from_slice(text.as_bytes()),
        Json::Str(s) => string(s, out),
        Json::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_compact(item, out);
            }
            out.push(b']');
        }
        Json::Obj(members) => {
            out.push(b'{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write_compact(v, out);
            }
            out.push(b'}');
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a `&str` as JSON into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("a string serializes");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checks_hold_on_plain_inputs_and_catch_a_broken_property() {
        let sale = br#"{ "specversion" : "1.0", "id":"s\u0031", "source":"erp","type":"sale.recorded","time":"2026-01-10T10:00:00Z","data":{"sale_id":"INV-1","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1e0,"net_amount":"10.00","currency":"EUR"}]}}"#;
        super::intake(sale);
        super::json_against_serde(sale);
        for junk in [&b"{"[..], b"\xff", b"[1,2", b"1e400", b"\"\\ud800\""] {
            super::intake(junk);
            super::json_against_serde(junk);
        }
        // The comparison is not vacuous: a different value is caught.
        let caught = std::panic::catch_unwind(|| {
            let ours = crate::json::parse(b"[1]").unwrap();
            assert_eq!(super::to_serde(&ours), serde_json::json!([2]));
        });
        assert!(caught.is_err());
    }
}
