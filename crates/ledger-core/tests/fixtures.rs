//! Golden scenarios: every folder of `replay-fixtures/` holds `events.ndjson` and the
//! `expected.json` replay document; `check` runs one and compares whole documents as
//! JSON values, digest included. `UPDATE_EXPECT=1` rewrites the expectations (check
//! every changed number by hand before committing it).

use ledger_core::replay::{ndjson_lines, Replay};
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replay-fixtures")
}

fn replay_file(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut replay = Replay::new();
    for (line, raw) in ndjson_lines(&bytes, 1) {
        replay.push(raw, line);
    }
    serde_json::to_value(replay.document()).expect("document serializes")
}

fn check(dir: &Path) -> Result<(), String> {
    let got = replay_file(&dir.join("events.ndjson"));
    let expected_path = dir.join("expected.json");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let text = serde_json::to_string_pretty(&got).map_err(|e| e.to_string())?;
        std::fs::write(&expected_path, text + "\n").map_err(|e| e.to_string())?;
        return Ok(());
    }
    let text = std::fs::read_to_string(&expected_path).map_err(|e| e.to_string())?;
    let expected: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if got == expected {
        return Ok(());
    }
    // Name the first differing section and row, to make failures readable.
    for key in [
        "events", "balances", "claims", "payouts", "rejected", "digest",
    ] {
        if got[key] != expected[key] {
            if let (Some(g), Some(e)) = (got[key].as_array(), expected[key].as_array()) {
                for (i, (a, b)) in g.iter().zip(e).enumerate() {
                    if a != b {
                        return Err(format!("{key}[{i}]:\n  got      {a}\n  expected {b}"));
                    }
                }
                return Err(format!("{key}: {} rows, expected {}", g.len(), e.len()));
            }
            return Err(format!(
                "{key}: got {}, expected {}",
                got[key], expected[key]
            ));
        }
    }
    Err("documents differ".into())
}

#[test]
fn every_replay_fixture_reproduces_its_document() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("replay-fixtures/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("events.ndjson").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 14,
        "expected the public scenarios, found {}",
        dirs.len()
    );
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| check(d).err().map(|e| format!("{}: {e}", d.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_notices_a_changed_number() {
    // The helper must fail when a document differs: alter one expected amount.
    let dir = fixtures_dir().join("rebate_retroactive_tiers");
    let tmp = std::env::temp_dir().join(format!("il-fixture-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(dir.join("events.ndjson"), tmp.join("events.ndjson")).unwrap();
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    std::fs::write(
        tmp.join("expected.json"),
        text.replacen("3750.00", "3750.01", 1),
    )
    .unwrap();
    let result = if std::env::var_os("UPDATE_EXPECT").is_some() {
        Err(String::new())
    } else {
        check(&tmp)
    };
    std::fs::remove_dir_all(&tmp).ok();
    assert!(result.is_err());
}
