//! Ledger replicas on a real `nats-server` (a free 127.0.0.1 port, JetStream in a
//! temporary directory): two `serve` processes with their own data directories fold
//! the same stream, exactly one publishes, a second process of one replica refuses to
//! start, and killing or pausing the active one hands over to the standby without a
//! payout lost, doubled or out of the fold's order. Multi-node clusters are
//! `scripts/cluster`'s and the cluster suite's.

mod common;
use common::*;

use ledger_core::gen::Rng;
use std::time::{Duration, Instant};

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
    paused_active_replica(&nats, tmp.path(), &[]);
}
