//! The server's limits against hostile clients, on a real socket (127.0.0.1, a free
//! port): a client that never finishes its headers is dropped, a body that stops
//! arriving ends its request, connections past the limit are closed at once, an
//! oversized head is refused, and guessed tokens are counted and slowed — while a normal
//! client goes on being served.

use ledger_api::server::{serve_with, HttpLimits};
use ledger_api::{ApiState, Role};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

const LIMITS: HttpLimits = HttpLimits {
    max_connections: 4,
    header_read_timeout: Duration::from_millis(500),
    body_idle_timeout: Duration::from_millis(500),
    max_header_bytes: 8192,
    shutdown_grace: Duration::from_secs(2),
};

struct Server {
    port: u16,
    state: ApiState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let state = ApiState::new(
            common::handle_over("rebate_retroactive_tiers", dir.path()),
            vec![
                ("fin".into(), Role::Finance),
                ("prod".into(), Role::Producer),
            ],
        );
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                serve_with(listener, served, LIMITS, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        Server {
            port: port_rx.recv().unwrap(),
            state,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A whole request on a new connection; its status.
    fn get(&self, path: &str, token: Option<&str>) -> u16 {
        let mut s = self.connect();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads until the server closes the connection; how long that took and what came.
fn until_closed(mut s: TcpStream) -> (Duration, String) {
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

#[test]
fn slow_and_greedy_clients_are_cut_off_and_others_are_served() {
    let server = Server::start();
    assert_eq!(server.get("/health/live", None), 200);

    // Headers that never end: dropped after the header deadline.
    let mut slow = server.connect();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (took, _) = until_closed(slow);
    assert!(
        took < Duration::from_secs(3),
        "a half-sent head was held {took:?}"
    );
    // Nothing at all: the same.
    let (took, _) = until_closed(server.connect());
    assert!(
        took < Duration::from_secs(3),
        "a silent connection was held {took:?}"
    );

    // A body that stops arriving ends its request.
    let mut trickle = server.connect();
    write!(
        trickle,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer prod\r\nContent-Type: application/cloudevents+json\r\nContent-Length: 1000\r\n\r\n{{\"specversion\""
    )
    .unwrap();
    let (took, answer) = until_closed(trickle);
    assert!(
        took < Duration::from_secs(3),
        "a stalled body was held {took:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        server.state.counters.bodies_stalled.load(Ordering::Relaxed),
        1
    );

    // An oversized head is refused.
    let mut big = server.connect();
    // The server may cut the connection before the head is all written (a broken
    // pipe here): that is a refusal too.
    let _ = write!(
        big,
        "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (_, answer) = until_closed(big);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Past the connection limit: closed at once, counted; served again once the
    // holders are dropped.
    let holders: Vec<TcpStream> = (0..LIMITS.max_connections)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"GET /health/live HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let (took, answer) = until_closed(server.connect());
    assert!(
        took < Duration::from_secs(1) && answer.is_empty(),
        "{took:?} {answer}"
    );
    assert!(
        server
            .state
            .counters
            .connections_refused
            .load(Ordering::Relaxed)
            >= 1
    );
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.get("/health/live", None) != 200 {
        assert!(
            Instant::now() < deadline,
            "not served again after the holders left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Silent connections filling every slot give way, oldest first, to one that speaks.
    let silent: Vec<TcpStream> = (0..LIMITS.max_connections)
        .map(|_| server.connect())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.get("/health/live", None),
        200,
        "a flood of silent connections locked a client out"
    );
    let (took, _) = until_closed(silent.into_iter().next().unwrap());
    assert!(
        took < Duration::from_millis(400),
        "the oldest silent connection was not the one closed: {took:?}"
    );

    // Guessed tokens: counted, and answered later after the first few.
    let mut took = Vec::new();
    for i in 0..6 {
        let started = Instant::now();
        assert_eq!(server.get("/v1/status", Some(&format!("guess-{i}"))), 401);
        took.push(started.elapsed());
    }
    assert!(took[5] >= Duration::from_millis(200), "{took:?}");
    assert_eq!(server.state.sessions.failures(), 6);
    assert_eq!(
        server.get("/v1/status", Some("fin")),
        200,
        "a right token is not slowed"
    );
    let mut s = server.connect();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fin\r\nConnection: close\r\n\r\n").unwrap();
    let (_, metrics) = until_closed(s);
    for line in [
        "ledger_auth_failures_total 6",
        "ledger_http_bodies_stalled_total 1",
        "ledger_http_connections_refused_total",
    ] {
        assert!(metrics.contains(line), "{line}");
    }
}
