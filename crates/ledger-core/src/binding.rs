//! CloudEvents *binary* content mode (HTTP and NATS protocol bindings) turned into the
//! structured JSON object the contract reads (CONTRACT §1).
//!
//! In binary mode the attributes travel as `ce-<name>` headers, `Content-Type` is the
//! `datacontenttype`, and the message body is the `data`. The log keeps one form only —
//! the structured object — so a binary message is rewritten into it here, once, before
//! intake: attributes in a fixed order (`specversion`, `id`, `source`, `type`,
//! `subject`, `time`, `datacontenttype`, then the extensions by name), then `data`, the
//! body's own bytes. The rewrite is a function of the headers and the body: the same
//! message always gives the same bytes, so a re-send is an exact duplicate.
//!
//! Every value is a JSON string (the contract's attributes are strings); intake then
//! checks the object exactly as it checks a structured one.

use crate::json;
use crate::refusal::Code;

/// The prefix of an attribute header in both bindings.
pub const HEADER_PREFIX: &str = "ce-";

/// Why a binary-mode message could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRefusal {
    pub code: Code,
    pub message: String,
}

/// How header values are written: the HTTP binding percent-encodes characters outside
/// printable ASCII (and `%` itself); the NATS binding carries UTF-8 as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    PercentEncoded,
    Plain,
}

/// Whether a message's headers make it a binary-mode CloudEvent (a `ce-specversion`
/// header is present).
pub fn is_binary<'a>(mut header_names: impl Iterator<Item = &'a str>) -> bool {
    header_names.any(|n| n.eq_ignore_ascii_case("ce-specversion"))
}

/// The structured object of a binary-mode message: `headers` are every header of the
/// message (others than `ce-*` and `content-type` are ignored), `body` its data.
pub fn structured<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body: &[u8],
    encoding: Encoding,
) -> Result<Vec<u8>, BindingRefusal> {
    let refuse = |code, message: String| BindingRefusal { code, message };
    let mut attributes: Vec<(String, String)> = Vec::new();
    let mut content_type: Option<String> = None;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let attribute = if lower == "content-type" {
            None
        } else if let Some(a) = lower.strip_prefix(HEADER_PREFIX) {
            Some(a.to_string())
        } else {
            continue;
        };
        let decoded = match encoding {
            Encoding::PercentEncoded => percent_encoding::percent_decode(value).collect(),
            Encoding::Plain => value.to_vec(),
        };
        let text = String::from_utf8(decoded).map_err(|_| {
            refuse(
                Code::InvalidEnvelope,
                format!("header {name} is not UTF-8 (percent-encode other bytes as UTF-8)"),
            )
        })?;
        match attribute {
            None => {
                if content_type.replace(text).is_some() {
                    return Err(refuse(
                        Code::InvalidEnvelope,
                        "Content-Type given twice".into(),
                    ));
                }
            }
            Some(a) => {
                if a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(refuse(
                        Code::InvalidEnvelope,
                        format!("header {name}: an attribute name is lower-case letters and digits (CloudEvents 1.0)"),
                    ));
                }
                if a == "data" || a == "data_base64" || a == "datacontenttype" {
                    return Err(refuse(
                        Code::InvalidEnvelope,
                        format!("header {name}: in binary mode the data is the body and its type is Content-Type"),
                    ));
                }
                if attributes.iter().any(|(known, _)| *known == a) {
                    return Err(refuse(
                        Code::InvalidEnvelope,
                        format!("header {name} given twice"),
                    ));
                }
                attributes.push((a, text));
            }
        }
    }
    if let Some(ct) = &content_type {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(refuse(
                Code::InvalidEnvelope,
                format!(
                    "Content-Type {ct:?}: the data of every event is a JSON object; send it as application/json"
                ),
            ));
        }
    }
    if let Err(e) = json::parse(body) {
        return Err(refuse(
            Code::MalformedJson,
            format!("the body (the event's data) is not I-JSON: {e}"),
        ));
    }
    const ORDER: [&str; 6] = ["specversion", "id", "source", "type", "subject", "time"];
    attributes.sort_by(|(a, _), (b, _)| {
        let rank = |n: &str| ORDER.iter().position(|o| *o == n).unwrap_or(ORDER.len());
        (rank(a), a.as_str()).cmp(&(rank(b), b.as_str()))
    });
    let mut out = Vec::with_capacity(body.len() + 256);
    out.push(b'{');
    let field = |out: &mut Vec<u8>, name: &str, value: &str| {
        // Writing a `String` as JSON cannot fail.
        serde_json::to_writer(&mut *out, name).expect("a string serializes");
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("a string serializes");
        out.push(b',');
    };
    let mut extensions_at = None;
    for (i, (name, value)) in attributes.iter().enumerate() {
        if extensions_at.is_none() && !ORDER.contains(&name.as_str()) {
            extensions_at = Some(i);
            if content_type.is_some() {
                field(&mut out, "datacontenttype", "application/json");
            }
        }
        field(&mut out, name, value);
    }
    if extensions_at.is_none() && content_type.is_some() {
        field(&mut out, "datacontenttype", "application/json");
    }
    out.extend_from_slice(b"\"data\":");
    out.extend_from_slice(body);
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(
        headers: &[(&str, &str)],
        body: &str,
        encoding: Encoding,
    ) -> Result<String, BindingRefusal> {
        structured(
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            body.as_bytes(),
            encoding,
        )
        .map(|b| String::from_utf8(b).unwrap())
    }

    const SALE: &[(&str, &str)] = &[
        ("ce-type", "sale.recorded"),
        ("Ce-Id", "sale-1"),
        ("ce-specversion", "1.0"),
        ("ce-source", "erp/sap%20emea"),
        ("ce-time", "2026-03-01T10:00:00Z"),
        ("ce-traceparent", "00-abc"),
        ("content-type", "application/json; charset=utf-8"),
        ("x-other", "ignored"),
    ];

    /// The binary form becomes the structured object intake reads, attributes in a fixed
    /// order, the body as `data`; the same message gives the same bytes.
    #[test]
    fn binary_mode_becomes_the_structured_object() {
        let body = r#"{"partner_id":"P-1"}"#;
        let out = convert(SALE, body, Encoding::PercentEncoded).unwrap();
        assert_eq!(
            out,
            r#"{"specversion":"1.0","id":"sale-1","source":"erp/sap emea","type":"sale.recorded","time":"2026-03-01T10:00:00Z","datacontenttype":"application/json","traceparent":"00-abc","data":{"partner_id":"P-1"}}"#
        );
        let mut reversed = SALE.to_vec();
        reversed.reverse();
        assert_eq!(
            convert(&reversed, body, Encoding::PercentEncoded).unwrap(),
            out
        );
        // NATS carries UTF-8 as is: `%20` stays.
        let plain = convert(SALE, body, Encoding::Plain).unwrap();
        assert!(plain.contains(r#""source":"erp/sap%20emea""#), "{plain}");
        // Without Content-Type there is no datacontenttype.
        let bare = convert(&SALE[..5], body, Encoding::Plain).unwrap();
        assert!(!bare.contains("datacontenttype"), "{bare}");
        assert!(crate::json::parse(bare.as_bytes()).is_ok());
        assert!(is_binary(SALE.iter().map(|(n, _)| *n)));
        assert!(!is_binary(["content-type", "x-ce-specversion"].into_iter()));
    }

    /// What cannot be an event says so, naming the header or the body.
    #[test]
    fn refusals_name_the_header_or_the_body() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Code, &'a str);
        let cases: &[Case] = &[
            (&SALE[..5], "{\"a\":", Code::MalformedJson, "the body"),
            (
                &SALE[..5],
                "{} , \"id\": \"x\"",
                Code::MalformedJson,
                "the body",
            ),
            (
                &[("ce-specversion", "1.0"), ("content-type", "text/plain")],
                "{}",
                Code::InvalidEnvelope,
                "application/json",
            ),
            (
                &[("ce-specversion", "1.0"), ("ce-id", "a"), ("CE-ID", "b")],
                "{}",
                Code::InvalidEnvelope,
                "given twice",
            ),
            (
                &[("ce-specversion", "1.0"), ("ce-data", "{}")],
                "{}",
                Code::InvalidEnvelope,
                "the data is the body",
            ),
            (
                &[("ce-specversion", "1.0"), ("ce-my_ext", "x")],
                "{}",
                Code::InvalidEnvelope,
                "lower-case letters and digits",
            ),
            (
                &[("ce-specversion", "1.0"), ("ce-id", "%FF")],
                "{}",
                Code::InvalidEnvelope,
                "not UTF-8",
            ),
        ];
        for (headers, body, code, says) in cases {
            let e = convert(headers, body, Encoding::PercentEncoded).unwrap_err();
            assert_eq!(e.code, *code, "{headers:?}: {e:?}");
            assert!(e.message.contains(says), "{headers:?}: {}", e.message);
        }
    }

    /// A converted event goes through intake like a structured one.
    #[test]
    fn a_converted_event_passes_intake() {
        let body = r#"{"sale_id":"S-1","partner_id":"P-1","region":"EMEA","lines":[{"line_id":"1","sku":"SKU-1","quantity":2,"net_amount":"100.00","currency":"EUR"}]}"#;
        let raw = structured(
            SALE.iter().map(|(n, v)| (*n, v.as_bytes())),
            body.as_bytes(),
            Encoding::PercentEncoded,
        )
        .unwrap();
        let accepted = crate::intake::check(&raw).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(accepted.event.id.as_str(), "sale-1");
        assert_eq!(accepted.event.source.as_str(), "erp/sap emea");
    }
}
