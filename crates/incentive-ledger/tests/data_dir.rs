//! Data directories end to end: ingest + replay equals replay of the files, as-of
//! queries, checkpoints, idempotent ingest, detection of damage, and crash safety under
//! SIGKILL. Every test uses its own temporary directory.

use ledger_core::gen::{GenConfig, Generator, Rng};
use ledger_log::layout::decode_segment;
use ledger_log::Log;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_incentive-ledger"))
}

/// A log the test opens itself, before a child process opens the same directory.
/// Dropping a `Log` does not release sled's lock on the directory at once: sled's
/// background writer threads keep the database file open until their last task ends,
/// and a child started before then is refused ("could not acquire lock"). This handle
/// waits, when dropped, until the lock is free.
struct TestLog {
    log: Option<Log>,
    dir: PathBuf,
}

fn open_log(dir: &Path) -> Result<TestLog, ledger_log::LogError> {
    Ok(TestLog {
        log: Some(Log::open(dir)?),
        dir: dir.to_path_buf(),
    })
}

impl std::ops::Deref for TestLog {
    type Target = Log;
    fn deref(&self) -> &Log {
        self.log
            .as_ref()
            .expect("the log is open until the handle drops")
    }
}

impl Drop for TestLog {
    fn drop(&mut self) {
        drop(self.log.take());
        // sled locks its `db` file with flock(2); another open file description is
        // refused while sled holds it, in this process too.
        use std::os::fd::AsRawFd;
        let Ok(file) = std::fs::File::open(self.dir.join("sled").join("db")) else {
            return;
        };
        for _ in 0..1000 {
            // SAFETY: flock on a descriptor this function owns; closing it unlocks.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Still held after 10 s: the child that follows will say so.
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../replay-fixtures")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn doc(out: Output) -> serde_json::Value {
    serde_json::from_slice(&ok(out).stdout).expect("a JSON document")
}

fn ingest(dir: &Path, file: &Path) -> String {
    let out = ok(bin()
        .arg("ingest")
        .arg("--data-dir")
        .arg(dir)
        .arg("--events")
        .arg(file)
        .output()
        .unwrap());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replay_dir(dir: &Path, extra: &[&str]) -> serde_json::Value {
    doc(bin()
        .arg("replay")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap())
}

/// `replay --data-dir` as it ran, for tests that look at its exit status and stderr.
fn replay_dir_raw(dir: &Path) -> Output {
    bin()
        .arg("replay")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn replay_file(file: &Path) -> serde_json::Value {
    doc(bin()
        .arg("replay")
        .arg("--events")
        .arg(file)
        .output()
        .unwrap())
}

fn generated(dir: &Path, seed: u64, n: usize) -> (PathBuf, Vec<String>) {
    let lines: Vec<String> = Generator::new(GenConfig::new(seed, n)).collect();
    let path = dir.join(format!("gen-{seed}-{n}.ndjson"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines)
}

#[test]
fn ingest_then_replay_equals_replay_of_the_files_and_ingest_is_idempotent() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let fixture = entry.unwrap().path();
        let events = fixture.join("events.ndjson");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        ingest(&dir, &events);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
                .unwrap();
        assert_eq!(
            replay_dir(&dir, &["--no-checkpoint"]),
            expected,
            "{}",
            fixture.display()
        );
        // Twice: nothing is appended again, and balances, payouts and digest stay.
        let second = ingest(&dir, &events);
        assert!(second.contains("appended 0,"), "{second}");
        let again = replay_dir(&dir, &[]);
        assert_eq!(again["digest"], expected["digest"], "{}", fixture.display());
        assert_eq!(again["payouts"], expected["payouts"]);
    }
}

#[test]
fn generated_streams_as_of_positions_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, lines) = generated(tmp.path(), 11, 4000);
    let dir = tmp.path().join("data");
    ingest(&dir, &file);
    let whole = replay_file(&file);
    assert_eq!(replay_dir(&dir, &["--no-checkpoint"]), whole);

    // As of a position: equal to replaying the input up to that record's line.
    let record_lines: Vec<(u64, u64)> = {
        let log = open_log(&dir).unwrap();
        log.records_from(1)
            .map(|r| r.unwrap())
            .map(|r| (r.seq, r.line))
            .collect()
    };
    let mut rng = Rng::new(11);
    for _ in 0..4 {
        let (seq, line) = record_lines[rng.below(record_lines.len() as u64) as usize];
        let prefix = tmp.path().join(format!("prefix-{seq}.ndjson"));
        std::fs::write(&prefix, lines[..line as usize].join("\n") + "\n").unwrap();
        let as_of = replay_dir(&dir, &["--as-of-seq", &seq.to_string()]);
        assert_eq!(
            as_of,
            replay_file(&prefix),
            "as of sequence {seq} (line {line})"
        );
    }

    // Checkpoint: a replay leaves one; after more input, resuming equals a full replay.
    replay_dir(&dir, &[]);
    let (more, _) = generated(tmp.path(), 12, 1500);
    ingest(&dir, &more);
    let resumed = replay_dir(&dir, &[]);
    assert_eq!(resumed, replay_dir(&dir, &["--no-checkpoint"]));
    let verify = ok(bin()
        .arg("verify")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains("equal to a fresh fold"), "{text}");
}

#[test]
fn as_of_time_splits_between_two_ingests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = fixtures().join("rebate_retroactive_tiers/events.ndjson");
    let second = fixtures().join("spif_immediate_cap/events.ndjson");
    ingest(&dir, &first);
    std::thread::sleep(std::time::Duration::from_millis(20)); // two distinct arrival times
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let between = chrono::DateTime::from_timestamp(now.as_secs() as i64, now.subsec_nanos())
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    std::thread::sleep(std::time::Duration::from_millis(20));
    ingest(&dir, &second);
    assert_eq!(
        replay_dir(&dir, &["--as-of-time", &between]),
        replay_file(&first)
    );
    let bad = bin()
        .args(["replay", "--as-of-time", "yesterday", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
}

/// Rewrites the records of the first segment with `edit`, then closes the directory.
fn edit_first_segment(dir: &Path, edit: impl FnOnce(&mut Vec<ledger_log::layout::Record>)) {
    let log = open_log(dir).unwrap();
    let bytes = log.raw_segment(1).unwrap().unwrap();
    let mut records = decode_segment(&bytes).unwrap();
    edit(&mut records);
    let mut out = Vec::new();
    for r in &records {
        r.encode_into(&mut out);
    }
    log.overwrite_raw_segment(1, &out).unwrap();
    log.flush().unwrap();
}

fn verify_output(dir: &Path) -> (i32, String) {
    let out = bin()
        .arg("verify")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn verify_detects_damage_and_names_the_first_bad_sequence() {
    let events = fixtures().join("random_seed2/events.ndjson");
    let fresh = || {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        ingest(&dir, &events);
        (tmp, dir)
    };
    let (_t0, dir) = fresh();
    let (code, text) = verify_output(&dir);
    assert_eq!(code, 0, "{text}");

    // A flipped byte inside record 5's event.
    let (_t1, dir) = fresh();
    edit_first_segment(&dir, |rs| {
        let r = &mut rs[4];
        let i = r.raw.len() / 2;
        r.raw[i] ^= 0x01;
    });
    let (code, text) = verify_output(&dir);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("first bad sequence 5"), "{text}");

    // A removed record (record 7).
    let (_t2, dir) = fresh();
    edit_first_segment(&dir, |rs| {
        rs.remove(6);
    });
    let (code, text) = verify_output(&dir);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("7"), "{text}");

    // Two records swapped (10 and 11).
    let (_t3, dir) = fresh();
    edit_first_segment(&dir, |rs| rs.swap(9, 10));
    let (code, text) = verify_output(&dir);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("10"), "{text}");

    // Damaged sled files on disk: flip bytes across the data files.
    let (_t4, dir) = fresh();
    let mut files: Vec<PathBuf> = walk(&dir.join("sled"));
    files.sort();
    for f in files {
        let mut bytes = std::fs::read(&f).unwrap();
        if bytes.len() > 64 {
            for i in (32..bytes.len()).step_by(97) {
                bytes[i] ^= 0x5a;
            }
            std::fs::write(&f, bytes).unwrap();
        }
    }
    let (code, text) = verify_output(&dir);
    assert_ne!(code, 0, "{text}");

    // A directory of another format version.
    let (_t5, dir) = fresh();
    std::fs::write(
        dir.join("FORMAT"),
        "incentive-ledger data directory, format 999\n",
    )
    .unwrap();
    let out = replay_dir_raw(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("format"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn sigkill_during_ingest_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261127);
    eprintln!("crash test seed {seed} (rerun with CRASH_SEED={seed})");
    let tmp = tempfile::tempdir().unwrap();
    let (file, lines) = generated(tmp.path(), seed, 120_000);
    let dir = tmp.path().join("data");
    let mut rng = Rng::new(seed);
    let mut acknowledged_seq = 0u64;
    for round in 0..20 {
        let mut child = bin()
            .arg("ingest")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--events")
            .arg(&file)
            .args(["--batch-size", "512", "--print-durable"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut max_seq = 0u64;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.strip_prefix("durable ") {
                    if let Some(seq) = rest.split(' ').nth(1).and_then(|s| s.parse::<u64>().ok()) {
                        max_seq = max_seq.max(seq);
                    }
                }
            }
            max_seq
        });
        let delay = 30 + rng.below(900);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        acknowledged_seq = acknowledged_seq.max(reader.join().unwrap());
        // The log is a gap-free prefix (open checks the sequence and the head) whose
        // records are input lines in input order, and nothing acknowledged was lost.
        let log = open_log(&dir).unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        assert!(
            log.head().last_seq >= acknowledged_seq,
            "seed {seed} round {round}: acknowledged {acknowledged_seq}, log ends at {}",
            log.head().last_seq
        );
        let mut last_line = 0;
        for r in log.records_from(1) {
            let r = r.unwrap();
            assert!(
                r.line > last_line,
                "seed {seed} round {round}: record {} out of input order",
                r.seq
            );
            assert_eq!(
                r.raw,
                lines[r.line as usize - 1].as_bytes(),
                "seed {seed} round {round}: record {}",
                r.seq
            );
            last_line = r.line;
        }
    }
    // Finish the ingest; the result equals a clean run.
    ingest(&dir, &file);
    let clean = replay_file(&file);
    let crashed = replay_dir(&dir, &[]);
    assert_eq!(crashed["digest"], clean["digest"], "seed {seed}");
    assert_eq!(crashed["balances"], clean["balances"]);
    assert_eq!(crashed["payouts"], clean["payouts"]);
    let (code, text) = verify_output(&dir);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_a_full_replay_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let events = fixtures().join("mdf_claims_fifo_expiry/events.ndjson");
    ingest(&dir, &events);
    let expected = replay_file(&events);
    assert_eq!(replay_dir(&dir, &[]), expected); // leaves a checkpoint
    {
        let log = open_log(&dir).unwrap();
        let mut bytes = log
            .load_checkpoint()
            .unwrap()
            .expect("a checkpoint was written");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        log.save_checkpoint(&bytes).unwrap();
    }
    let out = replay_dir_raw(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("warning: checkpoint not used"), "{stderr}");
    assert_eq!(doc(out), expected);
    let (code, text) = verify_output(&dir);
    assert_eq!(code, 0, "the rewritten checkpoint is valid again: {text}");
}

/// Commands that read a data directory never create one: a path without one is "no
/// data directory at …" (exit 1), and `ingest` with an unreadable input writes nothing.
#[test]
fn read_commands_on_a_missing_directory_fail_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("mistyped");
    let draft = tmp.path().join("draft.json");
    std::fs::write(&draft, "{}").unwrap();
    let commands: [&[&str]; 6] = [
        &["verify"],
        &["replay"],
        &["export"],
        &["rejected"],
        &["report"],
        &["simulate", "--program", draft.to_str().unwrap()],
    ];
    for args in commands {
        let out = bin()
            .args(args)
            .arg("--data-dir")
            .arg(&missing)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("no data directory at {}", missing.display())),
            "{args:?}: {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("OK"),
            "{args:?}"
        );
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    let out = bin()
        .args(["ingest", "--data-dir"])
        .arg(&missing)
        .arg("--events")
        .arg(tmp.path().join("no-such-file.ndjson"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read events file"));
    assert!(
        !missing.exists(),
        "ingest created the directory for nothing"
    );
}

/// A directory held by another process (a running service) is named as such in one
/// line, exit 1 — never "DAMAGED", never a storage-error dump.
#[test]
fn a_directory_in_use_says_so_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let held = open_log(&dir).unwrap();
    for args in [
        &["verify"][..],
        &["replay"],
        &["export"],
        &["rejected"],
        &["report"],
    ] {
        let out = bin()
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is in use by another incentive-ledger process"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("DAMAGED"),
            "{args:?}"
        );
    }
    drop(held);
    let out = bin()
        .arg("verify")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What `ingest` writes is readable by its user alone: no file or directory of the
/// data directory grants anything to the group or to others.
#[test]
fn data_files_are_private_to_their_user() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let events = tmp.path().join("events.ndjson");
    let lines: Vec<String> = Generator::new(GenConfig::new(3, 500)).collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    let out = bin()
        .arg("ingest")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .arg("replay")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut seen = 0;
    let mut stack = vec![dir.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o077,
            0,
            "{} is {:o}",
            path.display(),
            meta.permissions().mode()
        );
        seen += 1;
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(seen > 5, "{seen}");
}

/// `redrive`: an enrollment refused because its program came later is sent again under
/// a derived id naming the original, chosen by code and program; a quarantined input
/// intake still refuses is listed with why; a second run re-drives nothing twice.
#[test]
fn redrive_sends_refused_events_again_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let enroll = r#"{"specversion":"1.0","id":"enr-1","source":"crm","type":"partner.enrolled","time":"2026-01-02T00:00:00Z","data":{"partner_id":"P-1","program_id":"LATE"}}"#;
    let other = r#"{"specversion":"1.0","id":"enr-2","source":"crm","type":"partner.enrolled","time":"2026-01-02T00:00:00Z","data":{"partner_id":"P-2","program_id":"NEVER"}}"#;
    let program = r#"{"specversion":"1.0","id":"p1","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{"program_id":"LATE","version":1,"name":"Late","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","rules":{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}}}"#;
    let sale = r#"{"specversion":"1.0","id":"s1","source":"erp","type":"sale.recorded","time":"2026-02-01T10:00:00Z","data":{"sale_id":"S1","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"100.00","currency":"EUR"}]}}"#;
    let file = tmp.path().join("events.ndjson");
    std::fs::write(
        &file,
        [enroll, other, program, "{broken", sale].join("\n") + "\n",
    )
    .unwrap();
    ingest(&dir, &file);
    let before = replay_dir(&dir, &[]);
    let earned = |doc: &serde_json::Value| {
        doc["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["partner_id"] == "P-1")
            .map(|b| b["earned"].clone())
    };
    assert_eq!(
        earned(&before),
        None,
        "P-1 is not enrolled: its sale counts nowhere"
    );
    let redrive = |extra: &[&str]| {
        let out = ok(bin()
            .arg("redrive")
            .arg("--data-dir")
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap());
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Listing only: the quarantined line says why it stays, nothing is written.
    let (listed, said) = redrive(&[]);
    assert!(listed.contains("re-drive as redrive:enr-1"), "{listed}");
    assert!(listed.contains("re-drive as redrive:enr-2"), "{listed}");
    assert!(
        listed.contains("malformed_json") && listed.contains("skip: intake still refuses it"),
        "{listed}"
    );
    assert!(said.contains("would be re-driven"), "{said}");
    // The chosen ones: the program's, by code and program.
    let out = tmp.path().join("redrive.ndjson");
    let (listed, _) = redrive(&[
        "--code",
        "unknown_program",
        "--program",
        "LATE",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!listed.contains("enr-2"), "{listed}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 1, "{written}");
    let event: serde_json::Value = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(event["id"], "redrive:enr-1");
    assert_eq!(event["redrivessource"], "crm");
    assert_eq!(event["redrivesid"], "enr-1");
    ingest(&dir, &out);
    // The re-driven enrollment is applied.
    let after = replay_dir(&dir, &[]);
    assert_eq!(
        after["events"]["applied"].as_u64().unwrap(),
        before["events"]["applied"].as_u64().unwrap() + 1
    );
    // Run again: the enrollment is re-driven already; nothing is sent twice.
    let (listed, said) = redrive(&["--code", "unknown_program", "--program", "LATE"]);
    assert!(
        listed.contains("skip: re-driven already as redrive:enr-1 (log position"),
        "{listed}"
    );
    assert!(said.contains("0 events would be re-driven"), "{said}");
    // A code that does not exist is refused by name.
    let bad = bin()
        .args(["redrive", "--code", "no_such_code", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a refusal code"));
}

/// Copies directory `from` into `to`, file by file.
fn copy_dir(from: &Path, to: &Path) {
    for f in walk(from) {
        let target = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&f, &target).unwrap();
    }
}

/// The fast subset of `scripts/damage-census`: seeded byte flips spread over every file
/// of a small directory (with a checkpoint, its history, quarantined and duplicate
/// inputs), and every file deleted. No damaged copy may verify OK and then replay to a
/// different document.
#[test]
fn a_seeded_damage_sample_is_never_silent() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, mut lines) = generated(tmp.path(), 3, 150);
    lines.insert(5, "{not json".into());
    lines.extend(lines[10..13].to_vec());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let pristine = tmp.path().join("pristine");
    ingest(&pristine, &file);
    let digest = replay_dir(&pristine, &[])["digest"].clone();
    let files: Vec<(PathBuf, u64)> = walk(&pristine)
        .into_iter()
        .map(|p| {
            let n = std::fs::metadata(&p).unwrap().len();
            (p.strip_prefix(&pristine).unwrap().to_path_buf(), n)
        })
        .collect();
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let mut rng = Rng::new(20);
    let mut cases: Vec<(PathBuf, Option<u64>)> = (0..60)
        .map(|_| {
            let mut at = rng.below(total);
            let (rel, _) = files
                .iter()
                .find(|(_, n)| {
                    let here = at < *n;
                    if !here {
                        at -= n;
                    }
                    here
                })
                .unwrap();
            (rel.clone(), Some(at))
        })
        .collect();
    cases.extend(files.iter().map(|(rel, _)| (rel.clone(), None)));
    let (mut detected, mut harmless) = (0, 0);
    for (i, (rel, at)) in cases.iter().enumerate() {
        let copy = tmp.path().join(format!("copy-{i}"));
        copy_dir(&pristine, &copy);
        let path = copy.join(rel);
        match at {
            Some(at) => {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[*at as usize] ^= 0x5a;
                std::fs::write(&path, bytes).unwrap();
            }
            None => std::fs::remove_file(&path).unwrap(),
        }
        let (code, _) = verify_output(&copy);
        if code != 0 {
            detected += 1;
            std::fs::remove_dir_all(&copy).unwrap();
            continue;
        }
        let out = replay_dir_raw(&copy);
        let silent = out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|d| d["digest"] != digest);
        assert!(
            !silent,
            "{} damaged at {at:?} verified OK and replayed to another document",
            rel.display()
        );
        if out.status.success() {
            harmless += 1;
        } else {
            detected += 1;
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    assert_eq!(detected + harmless, cases.len());
    assert!(
        detected > 0,
        "no damage was detected: the sample hit nothing"
    );
}

/// sled's own recovery may bring its files back in an older state (a lost tail, an old
/// copy restored by mistake): what the log acknowledged is then missing without any
/// record being damaged. `HIGHWATER`, outside sled, names the last acknowledged
/// position; a directory whose sled files are older than it is refused by every
/// command, and nothing is appended on top of the older state.
#[test]
fn sled_files_rolled_back_to_an_older_state_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, lines) = generated(tmp.path(), 61, 3000);
    let first = tmp.path().join("first.ndjson");
    std::fs::write(&first, lines[..1000].join("\n") + "\n").unwrap();
    let dir = tmp.path().join("data");
    ingest(&dir, &first);
    let older = tmp.path().join("older-sled");
    copy_dir(&dir.join("sled"), &older);
    ingest(&dir, &all);
    let replayed = |dir: &Path| {
        bin()
            .args(["replay", "--compact", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    assert!(replayed(&dir).status.success());

    std::fs::remove_dir_all(dir.join("sled")).unwrap();
    copy_dir(&older, &dir.join("sled"));
    for out in [
        replayed(&dir),
        bin()
            .args(["verify", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap(),
        bin()
            .args(["ingest", "--data-dir"])
            .arg(&dir)
            .arg("--events")
            .arg(&all)
            .output()
            .unwrap(),
    ] {
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "a rolled-back directory was used: {err}"
        );
        assert!(
            err.contains("were acknowledged, but the log holds only"),
            "{err}"
        );
    }
    // Nothing was appended on top of the older state: without the mark (and the later
    // checkpoint) it replays as the first thousand events do.
    std::fs::remove_file(dir.join("HIGHWATER")).unwrap();
    let _ = std::fs::remove_file(dir.join("CHECKPOINT"));
    let digest = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["digest"].clone()
    };
    let of_first = bin()
        .args(["replay", "--compact", "--events"])
        .arg(&first)
        .output()
        .unwrap();
    assert_eq!(digest(replayed(&dir)), digest(of_first));
}
