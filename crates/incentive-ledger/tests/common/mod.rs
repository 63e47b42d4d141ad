//! Helpers the service's end-to-end tests share: a nats-server on a free port, the
//! `serve` process, status, publishing, the expected document and the payout stream.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledger_core::gen::{GenConfig, Generator};

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

/// A nats-server with JetStream, killed on drop.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: PathBuf,
}

impl Nats {
    pub fn start(store: &Path) -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            store: store.to_path_buf(),
        };
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
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
    pub fn start(nats: &Nats, data: &Path, log: &Path) -> Service {
        Service::start_with(nats, data, log, &[])
    }

    /// `serve` with more arguments (a replica's id, its lease timing).
    pub fn start_with(nats: &Nats, data: &Path, log: &Path, extra: &[&str]) -> Service {
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

pub fn status(nats: &Nats) -> Option<serde_json::Value> {
    status_of(nats, None)
}

/// The status of replica `replica` (on its own subject), or of whichever answers first.
pub fn status_of(nats: &Nats, replica: Option<&str>) -> Option<serde_json::Value> {
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
pub fn wait_for(nats: &Nats, position: u64, log: &Path) -> serde_json::Value {
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

pub fn publish(nats: &Nats, file: &Path) -> (u64, u64) {
    let out = bin()
        .args(["publish", "--nats-url"])
        .arg(nats.url())
        .arg("--events")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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

pub fn stream_payouts(nats: &Nats) -> Vec<serde_json::Value> {
    let out = bin()
        .args(["payouts", "--nats-url"])
        .arg(nats.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
