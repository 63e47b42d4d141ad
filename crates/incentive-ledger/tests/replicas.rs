//! Ledger replicas on a real `nats-server` (a free 127.0.0.1 port, JetStream in a
//! temporary directory): two `serve` processes with their own data directories fold
//! the same stream, exactly one publishes, a second process of one replica refuses to
//! start, and killing or pausing the active one hands over to the standby without a
//! payout lost, doubled or out of the fold's order. Multi-node clusters are
//! `scripts/cluster`'s and the cluster suite's.

mod common;
use common::*;

use ledger_core::gen::Rng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Short lease timing, so that a takeover takes seconds.
const LEASE: [&str; 4] = ["--lease-ttl-ms", "2000", "--lease-renew-ms", "250"];

struct Replica {
    id: &'static str,
    data: PathBuf,
    log: PathBuf,
    service: Service,
}

impl Replica {
    fn start(nats: &Nats, dir: &Path, id: &'static str) -> Replica {
        let data = dir.join(id);
        let log = dir.join(format!("{id}.log"));
        let mut args = vec!["--replica-id", id];
        args.extend(LEASE);
        let service = Service::start_with(nats, &data, &log, &args);
        Replica {
            id,
            data,
            log,
            service,
        }
    }

    fn restart(&mut self, nats: &Nats) {
        self.service.kill();
        let mut args = vec!["--replica-id", self.id];
        args.extend(LEASE);
        self.service = Service::start_with(nats, &self.data, &self.log, &args);
    }

    fn signal(&self, signal: i32) {
        let pid = self.service.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn status(&self, nats: &Nats) -> Option<serde_json::Value> {
        status_of(nats, Some(self.id))
    }

    fn role(&self, nats: &Nats) -> Option<String> {
        self.status(nats)
            .and_then(|s| s["role"].as_str().map(str::to_string))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the replica has folded `position` records, has no payout left to
    /// publish as far as it knows, and has the digest of that position.
    fn wait_for(&self, nats: &Nats, position: u64) -> serde_json::Value {
        let mut last = None;
        let reached = wait_until(Duration::from_secs(120), || {
            last = self.status(nats);
            last.as_ref().is_some_and(|s| {
                s["position"].as_u64() == Some(position)
                    && s["outbox_backlog"] == 0
                    && s["digest_position"].as_u64() == Some(position)
            })
        });
        assert!(
            reached,
            "replica {} did not reach position {position}: {last:?}\n{}",
            self.id,
            self.logs()
        );
        last.unwrap()
    }

    fn wait_role(&self, nats: &Nats, role: &str, within: Duration) {
        let reached = wait_until(within, || self.role(nats).as_deref() == Some(role));
        assert!(
            reached,
            "replica {} is not {role} after {within:?}: {:?}\n{}",
            self.id,
            self.status(nats),
            self.logs()
        );
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The payout stream holds exactly the document's payouts: each once, with its
/// content, in the fold's order.
fn assert_stream_is_the_fold(nats: &Nats, doc: &serde_json::Value) {
    let stored = stream_payouts(nats);
    let ids: Vec<&str> = stored.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = doc["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["payout_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), expected.len(), "payouts in the stream");
    assert!(
        ids == expected,
        "the stream holds the fold's payouts in its order"
    );
    for (m, p) in stored.iter().zip(doc["payouts"].as_array().unwrap()) {
        assert_eq!(&m["data"], p, "payout {}", p["payout_id"]);
    }
}

#[test]
fn a_second_data_directory_is_a_standby_and_a_second_process_of_one_replica_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let a = Replica::start(&nats, tmp.path(), "a");
    a.wait_role(&nats, "active", Duration::from_secs(30));
    let b = Replica::start(&nats, tmp.path(), "b");
    b.wait_role(&nats, "standby", Duration::from_secs(30));
    assert_eq!(b.status(&nats).unwrap()["lease_holder"], "a");

    // A copy of replica a (its id, another directory) while a runs: refused, and a's
    // consumer untouched.
    let copy_log = tmp.path().join("copy.log");
    let mut copy = Service::start_with(
        &nats,
        &tmp.path().join("copy"),
        &copy_log,
        &["--replica-id", "a", LEASE[0], LEASE[1], LEASE[2], LEASE[3]],
    );
    let child = copy.child.as_mut().unwrap();
    let mut exit = None;
    wait_until(Duration::from_secs(30), || {
        exit = child.try_wait().unwrap();
        exit.is_some()
    });
    let exit = exit.expect("the copy stopped by itself");
    assert!(!exit.success());
    let said = std::fs::read_to_string(&copy_log).unwrap();
    assert!(
        said.contains("replica \"a\" is already running"),
        "the copy says why: {said}"
    );

    let file = tmp.path().join("events.ndjson");
    let lines: Vec<String> =
        ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(5, 3_000)).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    publish(&nats, &file);
    let doc = document(&file);
    let at = positions(&doc);
    let sa = a.wait_for(&nats, at);
    let sb = b.wait_for(&nats, at);
    assert_eq!(sa["digest"], doc["digest"]);
    assert_eq!(sb["digest"], doc["digest"]);
    assert_stream_is_the_fold(&nats, &doc);
    assert_eq!(a.role(&nats).as_deref(), Some("active"));
}

#[test]
fn killing_the_active_replica_hands_over_without_losing_or_doubling_a_payout() {
    for seed in [11u64, 12] {
        let tmp = tempfile::tempdir().unwrap();
        let nats = Nats::start(&tmp.path().join("js"));
        let [first, second, all] = split_stream(tmp.path(), seed, 6_000, 2_500);
        let doc = document(&all);
        let mut a = Replica::start(&nats, tmp.path(), "a");
        a.wait_role(&nats, "active", Duration::from_secs(30));
        let b = Replica::start(&nats, tmp.path(), "b");
        b.wait_role(&nats, "standby", Duration::from_secs(30));
        publish(&nats, &first);
        // The rest arrives while the active replica dies at a seeded moment.
        let url = nats.url();
        let rest = std::thread::spawn(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_incentive-ledger"))
                .args(["publish", "--nats-url", &url, "--events"])
                .arg(&second)
                .output()
                .unwrap();
            assert!(out.status.success());
        });
        let mut rng = Rng::new(seed);
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        a.service.kill();
        let killed = Instant::now();
        b.wait_role(&nats, "active", Duration::from_secs(20));
        println!(
            "seed {seed}: the standby was active {:.2} s after the active replica was killed",
            killed.elapsed().as_secs_f64()
        );
        rest.join().unwrap();
        let sb = b.wait_for(&nats, positions(&doc));
        assert_eq!(sb["digest"], doc["digest"], "seed {seed}");
        assert_stream_is_the_fold(&nats, &doc);
        // The killed replica comes back as a standby and catches up.
        a.restart(&nats);
        a.wait_role(&nats, "standby", Duration::from_secs(30));
        let sa = a.wait_for(&nats, positions(&doc));
        assert_eq!(sa["digest"], doc["digest"], "seed {seed}");
        assert_stream_is_the_fold(&nats, &doc);
    }
}

#[test]
fn a_paused_active_replica_is_fenced_and_becomes_a_standby() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("js"));
    let [first, second, all] = split_stream(tmp.path(), 21, 5_000, 2_000);
    let a = Replica::start(&nats, tmp.path(), "a");
    a.wait_role(&nats, "active", Duration::from_secs(30));
    let b = Replica::start(&nats, tmp.path(), "b");
    b.wait_role(&nats, "standby", Duration::from_secs(30));
    publish(&nats, &first);
    let at = positions(&document(&first));
    a.wait_for(&nats, at);
    b.wait_for(&nats, at);

    a.signal(libc::SIGSTOP);
    b.wait_role(&nats, "active", Duration::from_secs(20));
    // Published while a is paused: only b can publish these payouts.
    publish(&nats, &second);
    let doc = document(&all);
    b.wait_for(&nats, positions(&doc));
    a.signal(libc::SIGCONT);
    a.wait_role(&nats, "standby", Duration::from_secs(20));
    assert_eq!(a.status(&nats).unwrap()["lease_holder"], "b");
    let sa = a.wait_for(&nats, positions(&doc));
    assert_eq!(sa["digest"], doc["digest"]);
    // Some time for anything a might still send.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_stream_is_the_fold(&nats, &doc);
    assert!(
        a.logs().contains("the lease was taken over"),
        "{}",
        a.logs()
    );
}
