//! `bench-service`: end-to-end figures of the service against a running nats-server —
//! events published to JetStream → durable in the log → acked → folded → payouts
//! published — as sustained throughput over a pre-filled stream, and publish-to-payout
//! latency at a moderate publishing rate, and the transport's own ceiling (fetch + ack
//! with nothing behind it) for comparison. Prints figures; asserts nothing.

use crate::config::Config;
use anyhow::{Context, Result};
use clap::Args;
use futures::StreamExt;
use ledger_core::gen::{GenConfig, Generator};
use ledger_core::Replay;
use ledger_service::Handle;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchServiceArgs {
    /// A nats-server with JetStream (scripts/bench-service starts one).
    #[arg(
        long,
        env = "INCENTIVE_LEDGER_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Events for the throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Events for the latency run.
    #[arg(long, default_value_t = 50_000)]
    pub latency_events: usize,
    /// Publishing rate of the latency run, events/s.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// HTTP queries per second during the latency run (balances, statements, status).
    #[arg(long, default_value_t = 1000)]
    pub query_rate: u64,
    /// Messages per fetch / group commit (the service's default).
    #[arg(long, default_value_t = 4000)]
    pub fetch_batch: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The nats-server's process id, when it runs on this machine: its CPU time per
    /// message over the throughput run is printed too (scripts/bench-service passes it).
    #[arg(long)]
    pub nats_server_pid: Option<u32>,
}

fn config(url: &str, tag: &str, data: &std::path::Path, fetch_batch: usize) -> Config {
    let mut c = Config::default();
    c.nats.urls = vec![url.to_string()];
    c.data_dir = data.to_path_buf();
    c.inbound.stream = format!("BENCH_EVENTS_{tag}");
    c.inbound.subjects = vec![format!("bench.{tag}.events.>")];
    c.inbound.consumer = format!("bench-{tag}");
    c.inbound.fetch_batch = fetch_batch;
    c.inbound.max_ack_pending = (fetch_batch as i64 * 4).max(1000);
    c.payouts.stream = format!("BENCH_PAYOUTS_{tag}");
    c.payouts.subject_prefix = format!("bench.{tag}.payouts");
    c.status_subject = format!("bench.{tag}.status");
    c.rejected_subject = format!("bench.{tag}.rejected");
    c.checkpoint_every = 250_000;
    c
}

/// Log positions a stream occupies (applied + business refusals), and its payouts.
fn expected(lines: &[String]) -> (u64, usize) {
    let mut replay = Replay::new();
    for (i, l) in lines.iter().enumerate() {
        replay.push(l.as_bytes(), i as u64 + 1);
    }
    let business = replay
        .rejections()
        .iter()
        .filter(|r| !r.code.is_intake())
        .count() as u64;
    (replay.counts().applied + business, replay.payouts().len())
}

async fn wait_folded(handle: &Handle, positions: u64, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if handle.position() >= positions && handle.metrics().outbox_backlog == 0 {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "the service did not fold {positions} positions in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Running = (
    crate::nats_cmd::Running,
    tokio::sync::oneshot::Sender<()>,
    Handle,
);

/// Starts the service in this process; it stops when the returned sender fires.
async fn start_service(c: Config) -> Result<Running> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle, service) = crate::nats_cmd::start(&c, async {
        let _ = stop_rx.await;
    })
    .await
    .context("the service did not start")?;
    Ok((service, stop_tx, handle))
}

/// The names of the streams a run creates (kept before its config moves into the service).
fn streams_of(c: &Config) -> [String; 2] {
    [c.inbound.stream.clone(), c.payouts.stream.clone()]
}

/// Deletes a finished run's streams (best effort: a bench cleaning up after itself).
async fn delete_streams(js: &async_nats::jetstream::Context, streams: &[String; 2]) {
    for stream in streams {
        let _ = js.delete_stream(stream).await;
    }
}

/// Drains the pre-filled inbound stream with a second durable pull consumer configured
/// as the service's (explicit ack, the same batch and ack-pending limits) that only acks
/// — the cost of the transport on its own. Returns the time to ack `messages`.
async fn transport_ceiling(
    js: &async_nats::jetstream::Context,
    c: &Config,
    messages: u64,
) -> Result<Duration> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let stream = js
        .get_stream(&c.inbound.stream)
        .await
        .map_err(|e| anyhow::anyhow!("inbound stream: {e}"))?;
    let name = format!("{}-transport", c.inbound.consumer);
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: c.inbound.max_ack_pending,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("transport consumer: {e}"))?;
    let mut incoming = consumer
        .stream()
        .max_messages_per_batch(c.inbound.fetch_batch.max(1))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("transport message stream: {e}"))?;
    let start = Instant::now();
    let mut acked = 0u64;
    while acked < messages {
        let m = tokio::time::timeout(Duration::from_secs(30), incoming.next())
            .await
            .context("the transport run stalled")?
            .context("the transport message stream ended")?
            .map_err(|e| anyhow::anyhow!("transport message: {e}"))?;
        m.ack()
            .await
            .map_err(|e| anyhow::anyhow!("transport ack: {e}"))?;
        acked += 1;
    }
    let took = start.elapsed();
    drop(incoming);
    let _ = stream.delete_consumer(&name).await;
    Ok(took)
}

/// CPU time this process has used so far: user and system.
#[derive(Clone, Copy)]
struct Cpu(Duration, Duration);

impl std::ops::Sub for Cpu {
    type Output = (Duration, Duration);
    fn sub(self, earlier: Cpu) -> (Duration, Duration) {
        (
            self.0.saturating_sub(earlier.0),
            self.1.saturating_sub(earlier.1),
        )
    }
}

fn process_cpu() -> Cpu {
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    // SAFETY: getrusage writes into the struct it is given; RUSAGE_SELF is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Cpu(Duration::ZERO, Duration::ZERO);
    }
    Cpu(tv(usage.ru_utime), tv(usage.ru_stime))
}

/// The kernel's clock ticks per second, the unit of `/proc`'s CPU times.
fn ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some(hz as f64)
}

/// CPU time (user + system) of another process so far, from `/proc/PID/stat`.
fn other_process_cpu(pid: u32) -> Option<Duration> {
    let ticks = cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_second()?))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The
/// command name (field 2, in parentheses) may hold spaces and parentheses itself.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The machine's CPU time so far, all cores, in clock ticks (`/proc/stat`'s `cpu` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HostCpu {
    /// user + nice + system + irq + softirq.
    busy: u64,
    /// idle + iowait.
    idle: u64,
    /// Time the hypervisor gave this machine's virtual CPUs to someone else.
    steal: u64,
}

fn host_cpu() -> Option<HostCpu> {
    parse_host_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal …
fn parse_host_cpu(stat: &str) -> Option<HostCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let at = |i: usize| f.get(i).copied();
    Some(HostCpu {
        busy: at(0)? + at(1)? + at(2)? + at(5)? + at(6)?,
        idle: at(3)? + at(4)?,
        // Absent on old kernels: nothing was measured as stolen.
        steal: at(7).unwrap_or(0),
    })
}

/// How the machine's CPU time went during a run, in percent of all of it: what the
/// ledger and nats-server used, what every other process used, idle, and stolen by the
/// hypervisor. Others or steal above a few percent mean the run shared the machine.
fn machine_line(
    before: HostCpu,
    after: HostCpu,
    ledger: Duration,
    server: Option<Duration>,
) -> String {
    let per_second = ticks_per_second().unwrap_or(1.0);
    let ticks = |d: Duration| d.as_secs_f64() * per_second;
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let idle = after.idle.saturating_sub(before.idle) as f64;
    let steal = after.steal.saturating_sub(before.steal) as f64;
    let total = (busy + idle + steal).max(1.0);
    let pct = |x: f64| (x * 100.0 / total).max(0.0);
    let ledger = ticks(ledger);
    match server {
        Some(server) => {
            let server = ticks(server);
            format!(
                "ledger {:.0}%, nats-server {:.0}%, other processes {:.0}%, idle {:.0}%, stolen by the hypervisor {:.0}%",
                pct(ledger),
                pct(server),
                pct(busy - ledger - server),
                pct(idle),
                pct(steal)
            )
        }
        None => format!(
            "ledger {:.0}%, everything else {:.0}%, idle {:.0}%, stolen by the hypervisor {:.0}%",
            pct(ledger),
            pct(busy - ledger),
            pct(idle),
            pct(steal)
        ),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(args: BenchServiceArgs) -> Result<()> {
    // Runs the service in this process: with its memory setting.
    crate::set_purge_delay();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

/// Long by design: the benchmark's script — throughput run, cleanup, latency run — printed
/// in order; its parts are helpers above.
async fn run_async(args: BenchServiceArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INCENTIVE_LEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let tmp = std::env::temp_dir().join(format!("il-bench-service-{}", std::process::id()));
    let client = async_nats::connect(&args.nats_url)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats_url))?;
    let js = async_nats::jetstream::new(client.clone());

    // 1. Throughput over a pre-filled stream.
    eprintln!(
        "generating {} events and their expected outcome ...",
        args.events
    );
    let lines: Vec<String> = Generator::new(GenConfig::new(args.seed, args.events)).collect();
    let (positions, payouts) = expected(&lines);
    let tag = format!("T{}", std::process::id());
    let c = config(
        &args.nats_url,
        &tag,
        &tmp.join("throughput"),
        args.fetch_batch,
    );
    ledger_nats::ensure_streams(&js, &c.nats()).await?;
    let throughput_streams = streams_of(&c);
    let start = Instant::now();
    let summary = ledger_nats::publish::publish_all(
        &js,
        &format!("bench.{tag}.events"),
        lines.iter().map(|l| l.clone().into_bytes()),
        4096,
    )
    .await?;
    let publish_time = start.elapsed();
    println!(
        "publish to JetStream: {:>9.0} events/s ({} stored, {} dropped as re-sends, {:.2} s)",
        lines.len() as f64 / publish_time.as_secs_f64(),
        summary.published,
        summary.duplicates,
        publish_time.as_secs_f64()
    );
    drop(lines);
    let ceiling = transport_ceiling(&js, &c, summary.published).await?;
    println!(
        "transport alone:      {:>9.0} events/s (fetch + explicit ack of every message, no log, no fold: the ceiling nats-server and the client set on this machine)",
        summary.published as f64 / ceiling.as_secs_f64()
    );
    let cpu_before = process_cpu();
    let server_before = args.nats_server_pid.and_then(other_process_cpu);
    let host_before = host_cpu();
    let (service, stop_tx, shared) = start_service(c).await?;
    let took = wait_folded(&shared, positions, Duration::from_secs(3600)).await?;
    let (user, system) = process_cpu() - cpu_before;
    let host_after = host_cpu();
    let server_cpu = args
        .nats_server_pid
        .and_then(other_process_cpu)
        .zip(server_before)
        .map(|(after, before)| after.saturating_sub(before));
    println!(
        "service end to end:   {:>9.0} events/s ({} messages → {} log positions → {} payouts published, {:.2} s, fetch batch {})",
        summary.published as f64 / took.as_secs_f64(),
        summary.published,
        positions,
        payouts,
        took.as_secs_f64(),
        args.fetch_batch
    );
    println!(
        "ledger CPU:           {:>9.1} µs per message (user {:.2} s + system {:.2} s over the run, {:.0}% of one core; nats-server's is not counted)",
        (user + system).as_secs_f64() * 1e6 / summary.published.max(1) as f64,
        user.as_secs_f64(),
        system.as_secs_f64(),
        (user + system).as_secs_f64() * 100.0 / took.as_secs_f64()
    );
    if let Some(server) = server_cpu {
        println!(
            "nats-server CPU:      {:>9.1} µs per message ({:.2} s over the run, {:.0}% of one core)",
            server.as_secs_f64() * 1e6 / summary.published.max(1) as f64,
            server.as_secs_f64(),
            server.as_secs_f64() * 100.0 / took.as_secs_f64()
        );
    }
    if let Some((before, after)) = host_before.zip(host_after) {
        println!(
            "machine's CPU:        {} (all cores, over the run)",
            machine_line(before, after, user + system, server_cpu)
        );
    }
    let _ = stop_tx.send(());
    service.await??;
    // The latency run starts on a quiet machine: the throughput run's streams and data
    // directory go, and what it wrote is on disk (else its write-back competes with
    // the latency run's flushes).
    delete_streams(&js, &throughput_streams).await;
    let _ = std::fs::remove_dir_all(tmp.join("throughput"));
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };

    // 2. Latency at a moderate rate: publish → payout.issued received.
    let lines: Vec<String> =
        Generator::new(GenConfig::new(args.seed + 1, args.latency_events)).collect();
    let (positions, payouts) = expected(&lines);
    let tag = format!("L{}", std::process::id());
    let c = config(&args.nats_url, &tag, &tmp.join("latency"), args.fetch_batch);
    let latency_streams = streams_of(&c);
    ledger_nats::ensure_streams(&js, &c.nats()).await?;
    let mut sub = client.subscribe(format!("bench.{tag}.payouts.>")).await?;
    let (service, stop_tx, shared) = start_service(c).await?;
    // The HTTP API over the same projection, queried at a fixed rate while ingesting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_port = listener.local_addr()?.port();
    let api_state = ledger_api::ApiState::new(
        shared.clone(),
        vec![("bench".to_string(), ledger_api::Role::Finance)],
    );
    let api = tokio::spawn(ledger_api::serve(
        listener,
        api_state,
        std::future::pending(),
    ));
    let query_rate = args.query_rate;
    let query_duration =
        Duration::from_secs_f64(args.latency_events as f64 / args.rate.max(1) as f64);
    // Two client threads, each at half the rate, so that one slow answer does not hold
    // back the schedule.
    let queries = tokio::task::spawn_blocking(move || {
        let half = (query_rate / 2).max(1);
        let other = std::thread::spawn(move || http_load(http_port, half, query_duration, 1));
        let (mut lat, mut f) = http_load(http_port, half, query_duration, 0);
        if let Ok((lat2, f2)) = other.join() {
            for (mine, theirs) in lat.iter_mut().zip(lat2) {
                mine.extend(theirs);
            }
            f += f2;
        }
        (lat, f)
    });
    let sent: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let sent_pub = sent.clone();
    let js_pub = js.clone();
    let prefix = format!("bench.{tag}.events");
    let rate = args.rate.max(1);
    let publisher = tokio::spawn(async move {
        let per_tick = (rate / 100).max(1) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut acks = Vec::new();
        for chunk in lines.chunks(per_tick) {
            tick.tick().await;
            for line in chunk {
                let (subject, msg_id) = ledger_nats::publish::route(&prefix, line.as_bytes());
                let id = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string));
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id.as_str());
                if let Some(id) = id {
                    sent_pub
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id)
                        .or_insert_with(Instant::now);
                }
                if let Ok(ack) = js_pub
                    .publish_with_headers(subject, headers, line.clone().into_bytes().into())
                    .await
                {
                    acks.push(ack);
                }
            }
        }
        for a in acks {
            let _ = a.await;
        }
    });
    let mut latencies = Vec::with_capacity(payouts);
    let deadline = Instant::now() + Duration::from_secs(600);
    while latencies.len() < payouts && Instant::now() < deadline {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await else {
            break;
        };
        let now = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        if let Some(cause) = v["data"]["cause_id"].as_str() {
            if let Some(t) = sent.lock().unwrap_or_else(|e| e.into_inner()).get(cause) {
                latencies.push(now - *t);
            }
        }
    }
    publisher.await?;
    wait_folded(&shared, positions, Duration::from_secs(600)).await?;
    let (mut query_lat, failures) = queries.await?;
    api.abort();
    let _ = stop_tx.send(());
    service.await??;
    for lat in query_lat.iter_mut() {
        lat.sort();
    }
    for (what, lat) in QUERIES.iter().zip(&query_lat) {
        println!(
            "{what} at {} req/s during ingest: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
            args.query_rate,
            percentile(lat, 0.50).as_secs_f64() * 1000.0,
            percentile(lat, 0.99).as_secs_f64() * 1000.0,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            lat.len()
        );
    }
    if failures > 0 {
        println!("({failures} HTTP requests failed)");
    }
    latencies.sort();
    println!(
        "publish → payout at {} events/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} payouts timed)",
        args.rate,
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        latencies.len()
    );
    // Leave a reused nats-server as it was found: its stores grow with every run.
    delete_streams(&js, &latency_streams).await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// What the HTTP load asks for, in turn.
const QUERIES: [&str; 3] = ["balance query", "statement query", "status query"];

/// Issues GETs over loopback at `rate` per second for `duration`, in turn a partner's
/// balances, a statement and `/v1/status`; returns the latencies of each (in
/// [`QUERIES`]' order) and the failures.
fn http_load(port: u16, rate: u64, duration: Duration, offset: u64) -> ([Vec<Duration>; 3], u64) {
    use std::io::{Read, Write};
    let mut latencies: [Vec<Duration>; 3] = Default::default();
    let mut failures = 0;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < duration {
        let due = start + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let partner = format!("P-{:03}", (n + offset * 7) % 40);
        let kind = ((n + offset) % 3) as usize;
        let path = match kind {
            0 => format!("/v1/partners/{partner}/balances"),
            1 => format!("/v1/partners/{partner}/statement?program=REBATE-0&period=2026-Q1"),
            _ => "/v1/status".to_string(),
        };
        let t = Instant::now();
        let ok = (|| -> std::io::Result<bool> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_nodelay(true)?;
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench\r\nConnection: close\r\n\r\n")?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            Ok(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 404"))
        })();
        let took = t.elapsed();
        match ok {
            Ok(true) => latencies[kind].push(took),
            _ => failures += 1,
        }
        n += 1;
    }
    (latencies, failures)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (nats (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 12";
        assert_eq!(super::cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(super::cpu_ticks("4242 (cut short) S 1 2"), None);
        assert!(super::other_process_cpu(std::process::id()).is_some());
    }

    #[test]
    fn the_machines_cpu_line_is_split_into_busy_idle_and_stolen() {
        let stat = "cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n";
        let host = super::parse_host_cpu(stat);
        assert_eq!(
            host,
            Some(super::HostCpu {
                busy: 100 + 2 + 30 + 6 + 7,
                idle: 400 + 5,
                steal: 8
            })
        );
        // A kernel without the steal column.
        let old = super::parse_host_cpu("cpu 1 2 3 4 5 6 7\n").map(|h| h.steal);
        assert_eq!(old, Some(0));
        assert_eq!(super::parse_host_cpu("cpu 1 2 x 4 5 6 7\n"), None);
        assert_eq!(super::parse_host_cpu("intr 1\n"), None);
        assert!(super::host_cpu().is_some());
    }

    #[test]
    fn the_machine_line_shares_out_the_runs_cpu_time() {
        use std::time::Duration;
        let hz = super::ticks_per_second().unwrap() as u64;
        let before = super::HostCpu {
            busy: 0,
            idle: 0,
            steal: 0,
        };
        // 10 s of two cores: 12 s busy, 6 s idle, 2 s stolen.
        let after = super::HostCpu {
            busy: 12 * hz,
            idle: 6 * hz,
            steal: 2 * hz,
        };
        let line = super::machine_line(
            before,
            after,
            Duration::from_secs(6),
            Some(Duration::from_secs(4)),
        );
        assert_eq!(
            line,
            "ledger 30%, nats-server 20%, other processes 10%, idle 30%, stolen by the hypervisor 10%"
        );
        let line = super::machine_line(before, after, Duration::from_secs(6), None);
        assert_eq!(
            line,
            "ledger 30%, everything else 30%, idle 30%, stolen by the hypervisor 10%"
        );
    }
}
