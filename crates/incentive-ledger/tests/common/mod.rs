//! Helpers the service's end-to-end tests share: a nats-server on a free port, the
//! `serve` process, status, publishing, the expected document and the payout stream.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledger_core::gen::{GenConfig, Generator};

pub mod browser;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_incentive-ledger"))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let local = root().join(".tools/venv/bin/nats-server");
    assert!(
        local.is_file(),
        "nats-server not found: run scripts/test (it installs one) or set NATS_SERVER_BIN"
    );
    local
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Children that die with the test process, even when it is killed (a timeout): no
/// server or service is left running after a test.
pub trait DiesWithTheTest {
    fn dies_with_the_test(&mut self) -> &mut Self;
}

impl DiesWithTheTest for Command {
    fn dies_with_the_test(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
        // the parent.
        unsafe {
            self.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        }
    }
}

/// A nats-server with these arguments, quiet, dying with the test.
pub fn nats_server(args: &[&str]) -> Child {
    Command::new(nats_server_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .dies_with_the_test()
        .spawn()
        .expect("nats-server starts")
}

/// A child process killed and reaped when the guard goes (a test's helper server).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the NATS clients of a test connect: one server or a cluster.
pub trait Endpoint {
    /// The client URL(s), comma-separated.
    fn url(&self) -> String;
}

impl Endpoint for Nats {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A nats-server with JetStream, killed on drop.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
}

impl Nats {
    pub fn start(store: &Path) -> Nats {
        Nats::start_on(store, free_port())
    }

    /// A JetStream server on `port` (one a service was told of before it started).
    pub fn start_on(store: &Path, port: u16) -> Nats {
        let mut n = Nats {
            child: None,
            port,
            store: store.to_path_buf(),
        };
        n.restart();
        n
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = nats_server(&[
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
            &self.store.display().to_string(),
        ]);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `incentive-ledger serve`, killed on drop.
pub struct Service {
    pub child: Option<Child>,
}

impl Service {
    pub fn start(nats: &impl Endpoint, data: &Path, log: &Path) -> Service {
        Service::start_with(nats, data, log, &[])
    }

    /// `serve` with more arguments (a replica's id, its lease timing).
    pub fn start_with(nats: &impl Endpoint, data: &Path, log: &Path, extra: &[&str]) -> Service {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = bin()
            .arg("serve")
            .arg("--nats-url")
            .arg(nats.url())
            .arg("--data-dir")
            .arg(data)
            .args([
                "--fetch-batch",
                "256",
                "--checkpoint-every",
                "3000",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .dies_with_the_test()
            .spawn()
            .unwrap();
        Service { child: Some(child) }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sets the service's limit on the size of files it writes (RLIMIT_FSIZE): with 0,
    /// every write that would grow a file fails, as on a full disk.
    pub fn limit_file_size(&self, bytes: u64) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: libc::RLIM_INFINITY,
        };
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    /// SIGTERM and wait; the service must exit 0.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let status = c.wait().unwrap();
            assert!(status.success(), "serve exited with {status:?}");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn status(nats: &impl Endpoint) -> Option<serde_json::Value> {
    status_of(nats, None)
}

/// The status of replica `replica` (on its own subject), or of whichever answers first.
pub fn status_of(nats: &impl Endpoint, replica: Option<&str>) -> Option<serde_json::Value> {
    let mut command = bin();
    command
        .args(["status", "--timeout", "2", "--nats-url"])
        .arg(nats.url());
    if let Some(r) = replica {
        command.args(["--replica", r]);
    }
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Log positions the document's inputs occupy: applied events and business refusals.
pub fn positions(doc: &serde_json::Value) -> u64 {
    const INTAKE: [&str; 6] = [
        "too_large",
        "malformed_json",
        "invalid_envelope",
        "unknown_type",
        "invalid_data",
        "duplicate_conflict",
    ];
    let business = doc["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !INTAKE.contains(&r["code"].as_str().unwrap()))
        .count() as u64;
    doc["events"]["applied"].as_u64().unwrap() + business
}

/// Waits until the service has folded `position` log records, published its outbox and
/// computed the status digest of that position.
pub fn wait_for(nats: &impl Endpoint, position: u64, log: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = status(nats) {
            if s["position"].as_u64() == Some(position)
                && s["outbox_backlog"] == 0
                && s["digest_position"].as_u64() == Some(position)
            {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service did not reach position {position}: {:?}\n{}",
            status(nats),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` to its end; it must succeed (its stderr is the failure message).
pub fn succeeded(command: &mut Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn publish(nats: &impl Endpoint, file: &Path) -> (u64, u64) {
    let out = succeeded(
        bin()
            .args(["publish", "--nats-url"])
            .arg(nats.url())
            .arg("--events")
            .arg(file),
    );
    // "sent N: S stored by JetStream, D dropped as exact re-sends"
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let numbers: Vec<u64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    (numbers[1], numbers[2])
}

/// The replay document of an events file (`--events`) or a data directory (`--data-dir`).
pub fn replay(input: &str, path: &Path) -> serde_json::Value {
    let out = bin().arg("replay").arg(input).arg(path).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn document(file: &Path) -> serde_json::Value {
    replay("--events", file)
}

/// A generated stream of `n` events written to `dir` as `first.ndjson` (up to `at`),
/// `second.ndjson` (the rest) and `all.ndjson`, in that order.
pub fn split_stream(dir: &Path, seed: u64, n: usize, at: usize) -> [PathBuf; 3] {
    let lines: Vec<String> = Generator::new(GenConfig::new(seed, n)).collect();
    [
        ("first.ndjson", &lines[..at]),
        ("second.ndjson", &lines[at..]),
        ("all.ndjson", &lines[..]),
    ]
    .map(|(name, part)| {
        let path = dir.join(name);
        std::fs::write(&path, part.join("\n") + "\n").unwrap();
        path
    })
}

pub fn stream_payouts(nats: &impl Endpoint) -> Vec<serde_json::Value> {
    let out = succeeded(bin().args(["payouts", "--nats-url"]).arg(nats.url()));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A 3-node JetStream cluster on 127.0.0.1 (free client, route and monitoring ports),
/// each node's store under the test's directory; killed on drop.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

pub struct Node {
    pub name: String,
    child: Option<Child>,
    pub client: u16,
    pub monitor: u16,
    conf: PathBuf,
}

impl Endpoint for Cluster {
    fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        let names = ["n1", "n2", "n3"];
        let routes: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let nodes = names
            .iter()
            .zip(&routes)
            .map(|(name, route)| {
                let client = free_port();
                let monitor = free_port();
                let conf = dir.join(format!("{name}.conf"));
                let store = dir.join(format!("{name}-js"));
                std::fs::write(
                    &conf,
                    format!(
                        "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                         jetstream {{ store_dir: \"{}\" }}\n\
                         cluster {{ name: ledger-test\n listen: 127.0.0.1:{route}\n routes: [{}] }}\n",
                        store.display(),
                        route_urls.join(", ")
                    ),
                )
                .unwrap();
                Node {
                    name: name.to_string(),
                    child: None,
                    client,
                    monitor,
                    conf,
                }
            })
            .collect();
        let mut cluster = Cluster { nodes };
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster.wait_ready();
        cluster
    }

    /// Starts node `i` (again), with its store as it was.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let node = &mut self.nodes[i];
        let child = nats_server(&["-c", &node.conf.display().to_string()]);
        node.child = Some(child);
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running node reports JetStream healthy (bounded).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !healthy(node.monitor) {
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} did not become healthy",
                    node.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The index of the node leading stream `stream` (from the monitoring endpoint of
    /// any running node), if one leads it.
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(body) = http_get(node.monitor, "/jsz?streams=true") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let leader = v["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
                .find(|s| s["name"] == stream)
                .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_string));
            if let Some(leader) = leader {
                return self.nodes.iter().position(|n| n.name == leader);
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `GET path` on a local port: the status code and the body.
pub fn http_answer(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// `GET path` on a local monitoring port: the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_answer(port, path)
        .filter(|(code, _)| *code == 200)
        .map(|(_, body)| body)
}

fn healthy(monitor: u16) -> bool {
    http_get(monitor, "/healthz").is_some()
}

/// Short lease timing, so that a takeover takes seconds.
pub const LEASE: [&str; 4] = ["--lease-ttl-ms", "2000", "--lease-renew-ms", "250"];

pub struct Replica {
    pub id: &'static str,
    pub data: PathBuf,
    pub log: PathBuf,
    pub service: Service,
    /// More `serve` arguments (stream replicas on a cluster).
    extra: Vec<String>,
}

impl Replica {
    pub fn start(nats: &impl Endpoint, dir: &Path, id: &'static str) -> Replica {
        Replica::start_with(nats, dir, id, &[])
    }

    pub fn start_with(
        nats: &impl Endpoint,
        dir: &Path,
        id: &'static str,
        extra: &[&str],
    ) -> Replica {
        let mut replica = Replica {
            id,
            data: dir.join(id),
            log: dir.join(format!("{id}.log")),
            service: Service { child: None },
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        replica.restart(nats);
        replica
    }

    pub fn restart(&mut self, nats: &impl Endpoint) {
        self.service.kill();
        let mut args = vec!["--replica-id", self.id];
        args.extend(LEASE);
        args.extend(self.extra.iter().map(String::as_str));
        self.service = Service::start_with(nats, &self.data, &self.log, &args);
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.service.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    pub fn status(&self, nats: &impl Endpoint) -> Option<serde_json::Value> {
        status_of(nats, Some(self.id))
    }

    pub fn role(&self, nats: &impl Endpoint) -> Option<String> {
        self.status(nats)
            .and_then(|s| s["role"].as_str().map(str::to_string))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the replica has folded `position` records, has no payout left to
    /// publish as far as it knows, and has the digest of that position.
    pub fn wait_for(&self, nats: &impl Endpoint, position: u64) -> serde_json::Value {
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

    pub fn wait_role(&self, nats: &impl Endpoint, role: &str, within: Duration) {
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
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
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
pub fn assert_stream_is_the_fold(nats: &impl Endpoint, doc: &serde_json::Value) {
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

/// SIGSTOPs the active replica past its lease: the standby takes over and publishes
/// what arrives meanwhile; SIGCONT: the paused one publishes nothing more and becomes a
/// standby. The payout stream holds the fold's payouts once each, in order.
pub fn paused_active_replica(server: &impl Endpoint, dir: &Path, extra: &[&str]) {
    let [first, second, all] = split_stream(dir, 21, 5_000, 2_000);
    let a = Replica::start_with(server, dir, "a", extra);
    a.wait_role(server, "active", Duration::from_secs(60));
    let b = Replica::start_with(server, dir, "b", extra);
    b.wait_role(server, "standby", Duration::from_secs(60));
    publish(server, &first);
    let at = positions(&document(&first));
    a.wait_for(server, at);
    b.wait_for(server, at);

    a.signal(libc::SIGSTOP);
    b.wait_role(server, "active", Duration::from_secs(30));
    // Published while a is paused: only b can publish these payouts.
    publish(server, &second);
    let doc = document(&all);
    b.wait_for(server, positions(&doc));
    a.signal(libc::SIGCONT);
    a.wait_role(server, "standby", Duration::from_secs(30));
    assert_eq!(a.status(server).unwrap()["lease_holder"], "b");
    let sa = a.wait_for(server, positions(&doc));
    assert_eq!(sa["digest"], doc["digest"]);
    // Some time for anything a might still send.
    std::thread::sleep(Duration::from_millis(1_000));
    assert_stream_is_the_fold(server, &doc);
    assert!(
        a.logs().contains("the lease was taken over"),
        "{}",
        a.logs()
    );
}

/// A minimal HTTP/1.1 request over loopback: (status, body). `headers` are sent as
/// given; the body with its length.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read the head, then the body by its length, its chunks, or to the end: some
    // servers keep the connection open despite `Connection: close`.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break raw.len();
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let have = raw.len().saturating_sub(split + 4);
        let done = match length {
            Some(n) => have >= n,
            None if chunked => raw.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = raw.get(split + 4..).unwrap_or_default();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A chunked HTTP/1.1 body, joined.
fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let n =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// `serve` with a configuration file of `toml` (its `http_addr` on `http_port`).
pub fn serve_with_config(
    nats: &impl Endpoint,
    dir: &Path,
    http_port: u16,
    toml: &str,
    log: &Path,
) -> Service {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("http_addr = \"127.0.0.1:{http_port}\"\n{toml}"),
    )
    .unwrap();
    let stderr = std::fs::File::create(log).unwrap();
    Service {
        child: Some(
            bin()
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .arg("--nats-url")
                .arg(nats.url())
                .arg("--data-dir")
                .arg(dir.join("data"))
                .stdout(Stdio::null())
                .stderr(stderr)
                .dies_with_the_test()
                .spawn()
                .unwrap(),
        ),
    }
}

/// A NATS client subscribed to `incentive.rejected`, on a runtime of its own (the
/// client and the subscription spawn and drop tasks: they are dropped inside it).
pub struct Watch {
    pub runtime: tokio::runtime::Runtime,
    client: Option<async_nats::Client>,
    notices: Option<async_nats::Subscriber>,
}

impl Watch {
    pub fn start(nats: &impl Endpoint) -> Watch {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, notices) = runtime.block_on(async {
            let client = async_nats::connect(nats.url()).await.unwrap();
            let notices = client.subscribe("incentive.rejected").await.unwrap();
            client.flush().await.unwrap();
            (client, notices)
        });
        Watch {
            runtime,
            client: Some(client),
            notices: Some(notices),
        }
    }

    pub fn client(&self) -> async_nats::Client {
        self.client.clone().unwrap()
    }

    /// The `data` of the next `n` refusal notices (each within 10 s).
    pub fn refusals(&mut self, n: usize) -> Vec<serde_json::Value> {
        use futures::StreamExt;
        let notices = self.notices.as_mut().unwrap();
        self.runtime.block_on(async {
            let mut got = Vec::new();
            while got.len() < n {
                let m = tokio::time::timeout(Duration::from_secs(10), notices.next())
                    .await
                    .expect("a refusal notice within 10 s")
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                got.push(v["data"].clone());
            }
            got
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _inside = self.runtime.enter();
        self.notices.take();
        self.client.take();
    }
}

/// A nats-server and `serve` (with the configuration `toml` and its HTTP API on a free
/// port) that have folded a fixture: what the HTTP and browser tests start from.
pub struct Served {
    pub nats: Nats,
    pub service: Service,
    pub port: u16,
    pub log: PathBuf,
    /// The fixture's replay document.
    pub doc: serde_json::Value,
}

impl Served {
    pub fn fixture(dir: &Path, toml: &str, fixture: &str) -> Served {
        let nats = Nats::start(&dir.join("js"));
        let port = free_port();
        let log = dir.join("serve.log");
        let service = serve_with_config(&nats, dir, port, toml, &log);
        let file = root().join(format!("replay-fixtures/{fixture}/events.ndjson"));
        publish(&nats, &file);
        let doc = document(&file);
        wait_for(&nats, positions(&doc), &log);
        Served {
            nats,
            service,
            port,
            log,
            doc,
        }
    }
}
