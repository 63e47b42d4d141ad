//! The `incentive-ledger` binary as a user runs it: replay of every fixture, several
//! files and stdin, exit codes and messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_incentive-ledger"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replay-fixtures")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON document")
}

/// The replay document of `replay ARGS PATH` (`--events FILE` or `--data-dir DIR`).
fn replay(args: &[&str], path: &Path) -> serde_json::Value {
    json(&bin().arg("replay").args(args).arg(path).output().unwrap())
}

fn expected(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn replay_prints_the_expected_document_for_every_fixture() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let doc = replay(&["--events"], &fixtures().join(&name).join("events.ndjson"));
        assert_eq!(doc, expected(&name), "{name}");
    }
}

#[test]
fn several_files_number_lines_on_and_stdin_works() {
    let name = "duplicates_and_refusals";
    let text = std::fs::read_to_string(fixtures().join(name).join("events.ndjson")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let dir = std::env::temp_dir().join(format!("il-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.ndjson"), dir.join("b.ndjson"));
    std::fs::write(&a, lines[..12].join("\n") + "\n").unwrap();
    std::fs::write(&b, lines[12..].join("\n")).unwrap();
    let out = bin()
        .args(["replay", "--events"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(json(&out), expected(name), "split in two files");

    // The second half from stdin after the first from a file.
    let mut child = bin()
        .args(["replay", "--compact", "--events"])
        .arg(&a)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines[12..].join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(json(&out), expected(name), "file then stdin");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn refusal_messages_go_to_stderr_on_request() {
    let out = bin()
        .args(["replay", "--messages", "--events"])
        .arg(fixtures().join("duplicates_and_refusals/events.ndjson"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(stderr.contains("malformed_json"), "{stderr}");
    assert!(stderr.contains("data.lines[0].quantity"), "{stderr}");
    assert!(
        stderr.contains(":19: - : too_large") || stderr.contains(":19: -: too_large"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 30, "one line per refusal: {stderr}");
}

#[test]
fn an_unreadable_file_fails_with_a_clear_message() {
    let out = bin()
        .args(["replay", "--events", "/nonexistent/events.ndjson"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/events.ndjson"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn generated_streams_replay_and_help_is_there() {
    let out = bin()
        .args(["generate", "--events", "300", "--seed", "9"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 300);
    let mut child = bin()
        .args(["replay", "--events", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let doc = json(&child.wait_with_output().unwrap());
    assert_eq!(doc["events"]["received"], 300);
    let help = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in ["replay", "bench", "generate"] {
        assert!(text.contains(cmd), "{text}");
    }
}

/// `--version` names the version and the git revision it was built from.
#[test]
fn the_version_names_the_revision() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let revision = text
        .trim()
        .strip_prefix(concat!(
            "incentive-ledger ",
            env!("CARGO_PKG_VERSION"),
            " ("
        ))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{text}"));
    let hex = revision.trim_end_matches("-dirty");
    assert!(
        hex == "unknown" || (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
}

/// `replay --format csv --table T` writes the document's table T as CSV: a header and
/// one row per row of the JSON document, the same values, from files or a directory.
#[test]
fn replay_writes_each_table_as_csv() {
    let file = fixtures().join("mdf_claims_fifo_expiry/events.ndjson");
    let doc = replay(&["--events"], &file);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = bin()
        .args(["ingest", "--data-dir"])
        .arg(&dir)
        .arg("--events")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    for (table, key, first_column) in [
        ("balances", "balances", "partner_id"),
        ("claims", "claims", "claim_id"),
        ("payouts", "payouts", "payout_id"),
        ("rejected", "rejected", "stage"),
    ] {
        for input in [
            ["--events", file.to_str().unwrap()],
            ["--data-dir", dir.to_str().unwrap()],
        ] {
            let out = bin()
                .arg("replay")
                .args(input)
                .args(["--format", "csv", "--table", table])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert!(lines[0].starts_with(first_column), "{table}: {text}");
            let rows = doc[key].as_array().unwrap();
            assert_eq!(lines.len() - 1, rows.len(), "{table} {input:?}: {text}");
            if table == "payouts" {
                for (line, row) in lines[1..].iter().zip(rows) {
                    assert!(
                        line.starts_with(row["payout_id"].as_str().unwrap()),
                        "{line}"
                    );
                    assert!(
                        line.contains(&format!(",{},", row["amount"].as_str().unwrap())),
                        "{line}"
                    );
                }
            }
        }
    }
}

/// A tool piped into a reader that stops early (`| head -1`) ends quietly by SIGPIPE,
/// as Unix tools do — no panic about a broken pipe.
#[test]
fn a_closed_pipe_ends_a_tool_quietly() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let mut child = bin()
        .args(["generate", "--events", "2000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    // The reader is gone; the generator's next writes meet a closed pipe.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `import` of the example exports, piped into `ingest` after a program and its
/// enrollments: the sales and the return fold as the same events written by hand would;
/// a bad row stops everything with its line named, and nothing reaches stdout.
#[test]
fn imported_csv_exports_fold_like_hand_written_events() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/import");
    let import = |name: &str| {
        let out = bin()
            .arg("import")
            .arg("--csv")
            .arg(examples.join(format!("{name}.csv")))
            .arg("--mapping")
            .arg(examples.join(format!("{name}.toml")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let setup: String =
        std::fs::read_to_string(fixtures().join("rebate_retroactive_tiers/events.ndjson"))
            .unwrap()
            .lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut ingest = bin()
        .args(["ingest", "--events", "-", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = format!("{setup}{}{}", import("sales"), import("returns"));
    ingest
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(ingest.wait_with_output().unwrap().status.success());
    let from_dir = replay(&["--data-dir"], &dir);
    // The same business facts written by hand.
    let by_hand = format!(
        "{setup}{}\n{}\n{}\n",
        r#"{"specversion":"1.0","id":"h1","source":"erp","type":"sale.recorded","time":"2026-01-15T00:00:00Z","data":{"sale_id":"INV-2026-0001","partner_id":"P-100","region":"EMEA","lines":[{"line_id":"1","sku":"SKU-SW","product_family":"switches","quantity":10,"net_amount":"60000.00","currency":"EUR"},{"line_id":"2","sku":"SKU-FW","product_family":"firewalls","quantity":2,"net_amount":"5000.00","currency":"EUR"}]}}"#,
        r#"{"specversion":"1.0","id":"h2","source":"erp","type":"sale.recorded","time":"2026-02-03T00:00:00Z","data":{"sale_id":"INV-2026-0002","partner_id":"P-200","region":"EMEA","lines":[{"line_id":"1","sku":"SKU-RT","product_family":"routers","quantity":4,"net_amount":"12500.50","currency":"EUR"}]}}"#,
        r#"{"specversion":"1.0","id":"h3","source":"erp","type":"sale.returned","time":"2026-03-02T09:30:00+01:00","data":{"return_id":"CN-77","sale_id":"INV-2026-0001","partner_id":"P-100","lines":[{"line_id":"1","quantity":2,"net_amount":"12000.00"}]}}"#
    );
    let file = tmp.path().join("by-hand.ndjson");
    std::fs::write(&file, by_hand).unwrap();
    let expected = replay(&["--events"], &file);
    assert_eq!(from_dir["events"]["applied"], 6, "{from_dir}");
    assert_eq!(from_dir["balances"], expected["balances"]);
    assert!(
        !expected["balances"].as_array().unwrap().is_empty(),
        "the imported sales count"
    );
    // A bad row: nothing on stdout, the line and the reason on stderr, exit 1.
    let bad = tmp.path().join("bad.csv");
    let mut text = std::fs::read_to_string(examples.join("sales.csv")).unwrap();
    text = text.replacen(";10;", ";zehn;", 1);
    std::fs::write(&bad, text).unwrap();
    let out = bin()
        .arg("import")
        .arg("--csv")
        .arg(&bad)
        .arg("--mapping")
        .arg(examples.join("sales.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains("line 2: quantity (column Menge) \"zehn\": is not a number")
            && err.contains("nothing was imported"),
        "{err}"
    );
}

/// Completions and manual pages come from the command line itself: every command is in
/// each shell's script and has its page, which says what `--help` says.
#[test]
fn completions_and_manual_pages_cover_every_command() {
    let help = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let commands: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(commands.len() > 15, "{commands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell}: no {c}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["man", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = std::fs::read_to_string(tmp.path().join("incentive-ledger.1")).unwrap();
    assert!(main.starts_with(".ie") || main.starts_with(".TH"), "{main}");
    for c in &commands {
        let page = std::fs::read_to_string(tmp.path().join(format!("incentive-ledger-{c}.1")))
            .unwrap_or_else(|_| panic!("no page for {c}"));
        assert!(page.contains(".TH"), "{c}");
        assert!(
            page.contains(".SH OPTIONS") || page.contains(".SH SUBCOMMANDS"),
            "{c}"
        );
        assert!(
            main.contains(&c.replace('-', "\\-")),
            "the main page does not list {c}"
        );
    }
    assert!(tmp
        .path()
        .join("incentive-ledger-program-check.1")
        .is_file());
}
