//! Tests of the simulation plan and the transformation's choices (the equivalence with
//! a replay of the transformed log is tested over real directories in
//! `ledger_log::simulation`).

use super::*;

const DRAFT: &str = r#"{"program_id":"REB","name":"Rebate","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","rules":{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}}"#;

fn published(id: &str, version: u64, rate: &str) -> (Vec<u8>, Event) {
    let raw = DRAFT
        .replace(
            r#""program_id""#,
            &format!(r#""version":{version},"program_id""#),
        )
        .replace("0.02", rate);
    let raw = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{raw}}}"#
    )
    .into_bytes();
    let event = intake::check_event(&raw).unwrap();
    (raw, event)
}

#[test]
fn a_plan_checks_its_draft_and_extra_events_as_intake_would() {
    assert!(Plan::new(DRAFT.as_bytes(), None, vec![]).is_ok());
    let cases: [(&[u8], Code); 4] = [
        (b"{\"a\":1,\"a\":2}", Code::MalformedJson),
        (b"[1]", Code::InvalidData),
        (b"{\"program_id\":\"REB\"}", Code::InvalidData),
        (b"not json", Code::MalformedJson),
    ];
    for (draft, code) in cases {
        match Plan::new(draft, None, vec![]) {
            Err(PlanError::Draft { code: c, .. }) => assert_eq!(c, code),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        Plan::new(DRAFT.as_bytes(), Some(0), vec![]).unwrap_err(),
        PlanError::FromSeq
    );
    let (e, _) = published("x", 1, "0.02");
    match Plan::new(DRAFT.as_bytes(), None, vec![(4, b"{}".to_vec())]) {
        Err(PlanError::Extra { line: 4, code, .. }) => assert_eq!(code, Code::InvalidEnvelope),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Plan::new(DRAFT.as_bytes(), None, vec![(1, e.clone()), (3, e)]).unwrap_err(),
        PlanError::ExtraTwice {
            first: 1,
            second: 3
        }
    );
}

/// Applied versions at or after the position are replaced (numbers kept); a refused one
/// and those before stay; the draft is inserted at the position as the next version.
#[test]
fn the_transformer_replaces_applied_versions_and_inserts_the_next() {
    let plan = Plan::new(DRAFT.replace("0.02", "0.05").as_bytes(), Some(3), vec![]).unwrap();
    let mut t = Transformer::new(&plan, true);
    let (raw1, v1) = published("v1", 1, "0.02");
    assert!(t.before(1, &v1.time).is_empty());
    assert!(
        t.replace(1, &v1, Some(&raw1)).is_none(),
        "before the position"
    );
    let inserted = t.before(3, "2026-02-01T00:00:00Z");
    assert_eq!(inserted.len(), 1);
    assert_eq!(inserted[0].change.version, Some(2));
    assert_eq!(inserted[0].change.position, 3);
    let event = intake::check_event(&inserted[0].raw).unwrap();
    assert_eq!(&*event.source, SOURCE);
    assert_eq!(&*event.time, "2026-02-01T00:00:00Z");
    // A refused version (a conflict in the real log) stays as it is.
    let (raw_bad, bad) = published("bad", 5, "0.02");
    assert!(t.replace(3, &bad, Some(&raw_bad)).is_none());
    let (raw2, v2) = published("v2", 2, "0.03");
    let replaced = t.replace(4, &v2, Some(&raw2)).unwrap();
    assert_eq!(replaced.change.action, "replaced");
    let event = intake::check_event(&replaced.raw).unwrap();
    let EventData::ProgramPublished(def) = &event.data else {
        panic!()
    };
    assert_eq!((def.version, &*event.id), (2, "v2"));
    assert!(String::from_utf8_lossy(&replaced.raw).contains("0.05"));
    assert!(t.at_end(10, None).is_empty(), "inserted once");
}

/// A program the log never applied is inserted as version 1, at the end when the
/// position lies beyond the log.
#[test]
fn a_new_program_goes_in_as_version_one() {
    let plan = Plan::new(DRAFT.as_bytes(), Some(100), vec![]).unwrap();
    let mut t = Transformer::new(&plan, false);
    let (_, e) = published("REB", 1, "0.02");
    assert!(t.before(5, &e.time).is_empty());
    let at_end = t.at_end(7, Some(&e.time));
    assert_eq!(at_end.len(), 1);
    assert_eq!(
        (at_end[0].change.version, at_end[0].change.position),
        (Some(1), 8)
    );
}
