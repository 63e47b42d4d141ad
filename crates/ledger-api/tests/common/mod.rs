//! Shared by the API's tests: a data directory holding a fixture, and the projection
//! rebuilt from it.
#![allow(dead_code)]

use ledger_core::replay::ndjson_lines;

/// `fixture`'s events appended to a log in `dir`, and the fold of the whole log (with
/// statement journals, as the service keeps them).
pub fn logged_fixture(
    fixture: &str,
    dir: &std::path::Path,
) -> (ledger_log::Log, ledger_log::Rebuilt) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../replay-fixtures/{fixture}/events.ndjson"));
    let bytes = std::fs::read(path).unwrap();
    let mut log = ledger_log::Log::open(dir).unwrap();
    let inputs: Vec<ledger_log::Input> = ndjson_lines(&bytes, 1)
        .map(|(n, raw)| ledger_log::Input {
            raw,
            line: Some(n),
            time_ns: n,
            transport: ledger_log::Transport::None,
        })
        .collect();
    log.append_batch(&inputs).unwrap();
    let rebuilt =
        ledger_log::rebuild_with_journal(&log, ledger_log::Bound::All, &mut |_| {}).unwrap();
    (log, rebuilt)
}

/// A service handle over a data directory holding `fixture` (in `dir/data`), as the
/// service has one: the projection rebuilt from the log, the log readable for past
/// states, simulations, exports and backups.
pub fn handle_over(fixture: &str, dir: &std::path::Path) -> ledger_service::Handle {
    let (log, rebuilt) = logged_fixture(fixture, &dir.join("data"));
    ledger_service::Handle::from_replay(
        rebuilt.replay,
        rebuilt.seq,
        rebuilt.arrival,
        Some(log.reader()),
    )
    .unwrap()
}
