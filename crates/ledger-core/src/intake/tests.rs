//! Intake's rule tables: every refusal code with the message it gives.

use super::*;

fn envelope_with(data: &str, event_type: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"e1","source":"erp","type":"{event_type}","time":"2026-02-01T10:00:00Z","data":{data}}}"#
    )
}

fn code_of(input: &str) -> Option<Code> {
    check(input.as_bytes()).err().map(|r| r.code)
}

#[test]
fn intake_order_and_codes() {
    let sale = r#"{"sale_id":"S1","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"1.00","currency":"EUR"}]}"#;
    assert_eq!(code_of(&envelope_with(sale, "sale.recorded")), None);
    assert_eq!(
        code_of(&envelope_with(sale, "sale.deleted")),
        Some(Code::UnknownType)
    );
    assert_eq!(code_of("{\"a\":"), Some(Code::MalformedJson));
    assert_eq!(code_of("[1]"), Some(Code::InvalidEnvelope));
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_INPUT_BYTES));
    assert_eq!(code_of(&big), Some(Code::TooLarge));
    // An unknown type with a bad envelope is an envelope problem first.
    let no_time = r#"{"specversion":"1.0","id":"e1","source":"erp","type":"nope","data":{}}"#;
    assert_eq!(code_of(no_time), Some(Code::InvalidEnvelope));
    // Unknown type is decided before the data shape.
    assert_eq!(
        code_of(&envelope_with("{}", "nope")),
        Some(Code::UnknownType)
    );
    assert_eq!(
        code_of(&envelope_with("{}", "sale.recorded")),
        Some(Code::InvalidData)
    );
}

#[test]
fn envelope_attributes() {
    let base = |extra: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"e1","source":"erp","type":"period.closed","time":"2026-02-01T10:00:00Z","data":{{"program_id":"P","period":"2026"}}{extra}}}"#
        )
    };
    assert_eq!(code_of(&base("")), None);
    assert_eq!(code_of(&base(r#","subject":null"#)), None);
    assert_eq!(code_of(&base(r#","subject":"x""#)), None);
    assert_eq!(code_of(&base(r#","x-ext":{"any":[1]}"#)), None);
    assert_eq!(
        code_of(&base(r#","datacontenttype":"application/json""#)),
        None
    );
    assert_eq!(
        code_of(&base(r#","subject":"""#)),
        Some(Code::InvalidEnvelope)
    );
    assert_eq!(
        code_of(&base(r#","datacontenttype":"text/plain""#)),
        Some(Code::InvalidEnvelope)
    );
    let id129 = base("").replace("\"e1\"", &format!("\"{}\"", "i".repeat(129)));
    assert_eq!(code_of(&id129), Some(Code::InvalidEnvelope));
    let id128 = base("").replace("\"e1\"", &format!("\"{}\"", "é".repeat(128)));
    assert_eq!(code_of(&id128), None, "lengths count scalar values");
    let num_id = base("").replace("\"e1\"", "1");
    assert_eq!(code_of(&num_id), Some(Code::InvalidEnvelope));
    let refusal = check(base(r#","subject":"""#).as_bytes()).unwrap_err();
    assert_eq!(refusal.identity, Some(("erp".into(), "e1".into())));
    assert!(refusal.message.contains("subject"), "{}", refusal.message);
}

#[test]
fn data_shapes() {
    let rows: &[(&str, &str, Option<Code>)] = &[
        (
            "partner.enrolled",
            r#"{"partner_id":"P-1","program_id":"X"}"#,
            None,
        ),
        (
            "partner.enrolled",
            r#"{"partner_id":"P-1","program_id":"X","target":"0"}"#,
            Some(Code::InvalidData),
        ),
        (
            "partner.enrolled",
            r#"{"partner_id":"P-1","program_id":"X","target":null}"#,
            None,
        ),
        (
            "partner.enrolled",
            r#"{"partner_id":"P 1","program_id":"X"}"#,
            Some(Code::InvalidData),
        ),
        (
            "claim.submitted",
            r#"{"claim_id":"C","partner_id":"P","program_id":"M","amount":"0","activity":"a"}"#,
            Some(Code::InvalidData),
        ),
        (
            "claim.submitted",
            r#"{"claim_id":"C","partner_id":"P","program_id":"M","amount":"5","activity":"a","description":""}"#,
            Some(Code::InvalidData),
        ),
        (
            "claim.decided",
            r#"{"claim_id":"C","decision":"maybe"}"#,
            Some(Code::InvalidData),
        ),
        (
            "claim.decided",
            r#"{"claim_id":"C","decision":"approved","approved_amount":"0"}"#,
            None,
        ),
        (
            "period.closed",
            r#"{"program_id":"P","period":"2026-13"}"#,
            Some(Code::InvalidData),
        ),
        (
            "adjustment.posted",
            r#"{"adjustment_id":"A","partner_id":"P","program_id":"R","period":"2026-Q1","amount":"-0.01","reason":"r"}"#,
            None,
        ),
        (
            "adjustment.posted",
            r#"{"adjustment_id":"A","partner_id":"P","program_id":"R","period":"2026-Q1","amount":"0.00","reason":"r"}"#,
            Some(Code::InvalidData),
        ),
        (
            "sale.returned",
            r#"{"return_id":"R","sale_id":"S","partner_id":"P","lines":[{"line_id":"1","quantity":1}]}"#,
            Some(Code::InvalidData),
        ),
        (
            "sale.recorded",
            r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":1.0,"net_amount":"1","currency":"EUR"}]}"#,
            Some(Code::InvalidData),
        ),
        (
            "sale.recorded",
            r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":1000000001,"net_amount":"1","currency":"EUR"}]}"#,
            Some(Code::InvalidData),
        ),
        (
            "sale.recorded",
            r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"1","currency":"eur"}]}"#,
            Some(Code::InvalidData),
        ),
        (
            "training.completed",
            r#"{"partner_id":"P","person_id":"x","course_id":"c"}"#,
            None,
        ),
    ];
    for (t, data, want) in rows {
        assert_eq!(code_of(&envelope_with(data, t)), *want, "{t} {data}");
    }
}

/// Long by design: a rule table, one row per rules shape and its refusal.
#[test]
fn program_rules_shapes() {
    let program = |kind: &str, period: &str, rules: &str, extra: &str| {
        envelope_with(
            &format!(
                r#"{{"program_id":"X","version":1,"name":"n","kind":"{kind}","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"{period}","rules":{rules}{extra}}}"#
            ),
            "program.published",
        )
    };
    let rows: &[(&str, &str, &str, &str, Option<Code>)] = &[
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}"#,
            "",
            None,
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"1","rate":"0.02"}]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"},{"from":"0","rate":"0.03"}]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"12"}]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"quantity","mode":"retroactive","tiers":[{"from":"0","rate":"12"}]}"#,
            "",
            None,
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02","note":"x"}]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "rebate",
            "quarter",
            r#"{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}],"cap":"1"}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "spif",
            "month",
            r#"{"per_unit":"1","rate":"0.1","payout":"immediate"}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "spif",
            "month",
            r#"{"payout":"immediate"}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "spif",
            "month",
            r#"{"rate":"0.1"}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "bonus",
            "year",
            r#"{"measure":"net_amount","thresholds":[{"attainment":"0","payout":"1"}]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "bonus",
            "year",
            r#"{"measure":"net_amount","thresholds":[{"attainment":"1","payout":"1"}],"accelerator":{"above":"1","rate":"0.1","x":1}}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "training",
            "year",
            r#"{"rewards":[{"certification":"A","amount":"1"},{"certification":"A","amount":"2"}]}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "mdf",
            "program",
            r#"{"accrual_rate":"0.1","expires_after_periods":1}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "mdf",
            "program",
            r#"{"accrual_rate":"0.1","expires_after_periods":0}"#,
            "",
            None,
        ),
        (
            "coop",
            "quarter",
            r#"{"accrual_rate":"0.1","expires_after_periods":-1}"#,
            "",
            Some(Code::InvalidData),
        ),
        (
            "mdf",
            "quarter",
            r#"{"accrual_rate":"0.1"}"#,
            r#","eligibility":{"skus":[],"colors":["red"]}"#,
            Some(Code::InvalidData),
        ),
        (
            "mdf",
            "quarter",
            r#"{"accrual_rate":"0.1"}"#,
            r#","eligibility":{"skus":[]},"unknown_top":1"#,
            None,
        ),
        (
            "mdf",
            "quarter",
            r#"{"accrual_rate":"0.1"}"#,
            r#","requires_enrollment":"yes""#,
            Some(Code::InvalidData),
        ),
    ];
    for (kind, period, rules, extra, want) in rows {
        let input = program(kind, period, rules, extra);
        let got = check(input.as_bytes()).err();
        assert_eq!(
            got.as_ref().map(|r| r.code),
            *want,
            "{kind} {rules} {extra}: {got:?}"
        );
    }
}

#[test]
fn messages_name_the_field() {
    let input = envelope_with(
        r#"{"sale_id":"S","partner_id":"P","lines":[{"line_id":"1","sku":"A","quantity":0,"net_amount":"1","currency":"EUR"}]}"#,
        "sale.recorded",
    );
    let r = check(input.as_bytes()).unwrap_err();
    assert_eq!(r.code, Code::InvalidData);
    assert!(
        r.message.starts_with("data.lines[0].quantity"),
        "{}",
        r.message
    );
    assert!(r.message.contains("got 0"), "{}", r.message);
}
