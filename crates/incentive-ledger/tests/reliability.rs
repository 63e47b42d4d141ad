//! The reliability campaign's fast subsets (issue 20): the scripts that produce the
//! figures of docs/RELIABILITY.md, run small. Each script exits 1 when a promise was
//! broken — an acknowledged event lost, a payout published twice with different content,
//! a final digest other than a clean replay's, a fault not reported or not recovered
//! from — and prints its figures, which a failure shows.

use std::path::PathBuf;
use std::process::Command;

mod common;
use common::*;

/// Runs `scripts/<name> <binary> <args…>` with the tests' nats-server first on PATH and
/// 6,000 events a fault case.
fn script(name: &str, args: &[&str]) {
    let nats_dir = nats_server_bin()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(nats_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new(root().join("scripts").join(name))
        .arg(env!("CARGO_BIN_EXE_incentive-ledger"))
        .args(args)
        .env("PATH", path)
        .env("RELIABILITY_EVENTS", "6000")
        .dies_with_the_test()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "scripts/{name} {}: {:?}\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
}

#[test]
fn a_short_crash_loop_loses_nothing_acknowledged_and_publishes_each_payout_once() {
    let seed = std::env::var("CRASH_SEED").unwrap_or_else(|_| "20261204".into());
    eprintln!("crash loop seed {seed} (rerun with CRASH_SEED={seed})");
    script("crash-loop", &["16", &seed]);
}

#[test]
fn nats_faults_lose_nothing_and_publish_no_payout_twice() {
    // The broker SIGKILLed in the payout window loses messages it had not written to
    // disk: the ledger must take the new messages that re-use their positions, and is
    // compared with a replay in the stream's order (RELIABILITY.md, finding 7).
    script(
        "nats-faults",
        &["store-deleted", "redelivery", "kill-payouts"],
    );
}

/// EIO and short writes through the LD_PRELOAD shim everywhere; ENOSPC on a tmpfs and
/// an ext4 turned read-only by its own error handling where this runs as root with
/// loop devices (CI does).
#[test]
fn disk_faults_are_reported_held_and_recovered_from() {
    let mut cases = vec!["eio", "short"];
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        cases.push("enospc");
        if std::path::Path::new("/dev/loop-control").exists()
            && std::path::Path::new("/sys/fs/ext4").exists()
        {
            cases.push("readonly");
        }
    }
    eprintln!("disk-fault cases run: {cases:?}");
    script("disk-faults", &cases);
}
