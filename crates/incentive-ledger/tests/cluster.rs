//! The ledger on a 3-node JetStream cluster (three nats-servers on 127.0.0.1, free
//! ports, stores in a temporary directory; everything stopped when the test ends), with
//! two replicas and every stream on three nodes: the standby takes over from a killed
//! or paused active replica (the paused one publishes nothing after it wakes), the
//! inbound stream's leader dies mid-publish without losing an
//! acknowledged event, and a rolling restart of the three servers under load leaves
//! the ledger's answer unchanged — each time the payout stream holds exactly the fold's
//! payouts, once each and in order, and both replicas' digests equal `replay --events`.

mod common;
use common::*;

use ledger_core::gen::{GenConfig, Generator, Rng};
use std::time::{Duration, Instant};

const CLUSTER: [&str; 2] = ["--stream-replicas", "3"];

/// An at-least-once producer (as an ERP's outbox is): each event is published until
/// JetStream acknowledges it, in order, through whichever node answers. Returns how
/// many were acknowledged and how many attempts failed.
fn produce(url: String, lines: Vec<String>, pace: Duration) -> (usize, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url.split(',').collect::<Vec<_>>())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let (mut acked, mut failed) = (0, 0);
        for line in lines {
            let (subject, id) = ledger_nats::publish::route("incentive.events", line.as_bytes());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "an event was never acknowledged");
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let sent = js
                    .publish_with_headers(subject.clone(), headers, line.clone().into())
                    .await;
                let stored = match sent {
                    Ok(ack) => tokio::time::timeout(Duration::from_secs(2), ack).await,
                    Err(e) => Ok(Err(e)),
                };
                if let Ok(Ok(_)) = stored {
                    acked += 1;
                    break;
                }
                failed += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
        (acked, failed)
    })
}

fn lines(seed: u64, n: usize) -> Vec<String> {
    Generator::new(GenConfig::new(seed, n)).collect()
}

fn write(dir: &std::path::Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `n` generated events (`seed`), their document, and a producer publishing them in a
/// thread of its own, one every `pace_us` microseconds.
fn producing(
    cluster: &Cluster,
    dir: &std::path::Path,
    seed: u64,
    n: usize,
    pace_us: u64,
) -> (
    Vec<String>,
    serde_json::Value,
    std::thread::JoinHandle<(usize, usize)>,
) {
    let all = lines(seed, n);
    let doc = document(&write(dir, "all.ndjson", &all));
    let (url, events) = (cluster.url(), all.clone());
    let producer = std::thread::spawn(move || produce(url, events, Duration::from_micros(pace_us)));
    (all, doc, producer)
}

/// A cluster with replicas a (active) and b (standby), streams created with 3 replicas.
fn cluster_with_replicas(dir: &std::path::Path) -> (Cluster, Replica, Replica) {
    let cluster = Cluster::start(dir);
    let a = Replica::start_with(&cluster, dir, "a", &CLUSTER);
    a.wait_role(&cluster, "active", Duration::from_secs(60));
    let b = Replica::start_with(&cluster, dir, "b", &CLUSTER);
    b.wait_role(&cluster, "standby", Duration::from_secs(60));
    (cluster, a, b)
}

fn assert_both_equal(cluster: &Cluster, a: &Replica, b: &Replica, doc: &serde_json::Value) {
    let at = positions(doc);
    for r in [a, b] {
        let s = r.wait_for(cluster, at);
        assert_eq!(
            s["digest"], doc["digest"],
            "replica {}: events {} (the file's: {})",
            r.id, s["events"], doc["events"]
        );
    }
    assert_stream_is_the_fold(cluster, doc);
}

#[test]
fn on_a_cluster_the_standby_takes_over_from_a_killed_active_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, mut a, b) = cluster_with_replicas(tmp.path());
    let all = lines(31, 4_000);
    let doc = document(&write(tmp.path(), "all.ndjson", &all));
    let (first, second) = all.split_at(1_500);
    // The publishing tool on a clustered stream: its exact re-sends meet their twins
    // still being replicated ("in process"), and are sent again until answered.
    let (stored, dropped) = publish(&cluster, &write(tmp.path(), "first.ndjson", first));
    assert_eq!(stored + dropped, first.len() as u64);
    let url = cluster.url();
    let rest = second.to_vec();
    let producer = std::thread::spawn(move || produce(url, rest, Duration::ZERO));
    std::thread::sleep(Duration::from_millis(Rng::new(31).below(800)));
    a.service.kill();
    let killed = Instant::now();
    b.wait_role(&cluster, "active", Duration::from_secs(30));
    println!(
        "the standby was active {:.2} s after the active replica was killed",
        killed.elapsed().as_secs_f64()
    );
    let (acked, _) = producer.join().unwrap();
    assert_eq!(acked, second.len());
    a.restart(&cluster);
    a.wait_role(&cluster, "standby", Duration::from_secs(60));
    assert_both_equal(&cluster, &a, &b, &doc);
}

#[test]
fn on_a_cluster_a_paused_active_replica_is_fenced_and_becomes_a_standby() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(tmp.path());
    paused_active_replica(&cluster, tmp.path(), &CLUSTER);
}

#[test]
fn killing_the_inbound_streams_leader_mid_publish_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, a, b) = cluster_with_replicas(tmp.path());
    let (all, doc, producer) = producing(&cluster, tmp.path(), 32, 3_000, 500);
    std::thread::sleep(Duration::from_millis(700));
    let leader = cluster
        .leader_of("INCENTIVE_EVENTS")
        .expect("the inbound stream has a leader");
    cluster.kill(leader);
    println!(
        "killed {} (leader of the inbound stream)",
        cluster.nodes[leader].name
    );
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(leader);
    let (acked, failed) = producer.join().unwrap();
    println!("{acked} events acknowledged, {failed} attempts failed and were retried");
    assert_eq!(acked, all.len(), "every event was acknowledged in the end");
    cluster.wait_ready();
    assert_both_equal(&cluster, &a, &b, &doc);
}

#[test]
fn a_rolling_restart_of_the_cluster_under_load_keeps_the_ledger_going() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cluster, a, b) = cluster_with_replicas(tmp.path());
    let (all, doc, producer) = producing(&cluster, tmp.path(), 33, 4_000, 1_500);
    for i in 0..cluster.nodes.len() {
        std::thread::sleep(Duration::from_millis(800));
        cluster.kill(i);
        std::thread::sleep(Duration::from_millis(800));
        cluster.restart(i);
        cluster.wait_ready();
        println!("restarted {}", cluster.nodes[i].name);
    }
    let (acked, failed) = producer.join().unwrap();
    println!("{acked} events acknowledged, {failed} attempts failed and were retried");
    assert_eq!(acked, all.len());
    assert_both_equal(&cluster, &a, &b, &doc);
}
