//! The whole service — ingest loop, projector, outbox, publisher — over a simulated
//! transport in this process (no NATS): it folds to the digest of a replay, publishes
//! every payout once, reports the source's real lag once it is drained, and raises the
//! stalled-outbox alarm when payouts stop moving.

use ledger_core::gen::{GenConfig, Generator};
use ledger_core::replay::Rejection;
use ledger_core::Replay;
use ledger_service::{
    Delivery, Handle, InStream, Inbound, Notices, OutboxEntry, PayoutSink, Service, ServiceConfig,
    TransportError,
};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A source of messages in batches; it reports as pending what it has not delivered.
struct SimInbound {
    batches: VecDeque<Vec<Vec<u8>>>,
    delivered: u64,
    /// What `pending` answers: the messages not yet delivered.
    left: Arc<AtomicUsize>,
}

struct SimMessage {
    payload: Vec<u8>,
    position: u64,
    acked: Arc<AtomicUsize>,
}

impl Delivery for SimMessage {
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn position(&self) -> Option<u64> {
        Some(self.position)
    }
    async fn ack(&self) -> Result<(), TransportError> {
        self.acked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn in_progress(&self) {}
    async fn nak(&self) {}
}

struct Source {
    inbound: SimInbound,
    acked: Arc<AtomicUsize>,
}

impl Inbound for Source {
    type Message = SimMessage;

    async fn next_batch(&mut self) -> Result<Vec<SimMessage>, TransportError> {
        let Some(batch) = self.inbound.batches.pop_front() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Ok(Vec::new());
        };
        let messages = batch
            .into_iter()
            .map(|payload| {
                self.inbound.delivered += 1;
                SimMessage {
                    payload,
                    position: self.inbound.delivered,
                    acked: self.acked.clone(),
                }
            })
            .collect::<Vec<_>>();
        self.inbound
            .left
            .fetch_sub(messages.len(), Ordering::Relaxed);
        Ok(messages)
    }

    async fn pending(&mut self) -> Option<u64> {
        Some(self.inbound.left.load(Ordering::Relaxed) as u64)
    }
}

/// A payout stream that stores everything, or (when `hang`) never answers at all.
#[derive(Default)]
struct Stream {
    stored: Mutex<Vec<String>>,
    hang: bool,
}

/// The service's end of a shared [`Stream`].
struct Sink(Arc<Stream>);

impl PayoutSink for Sink {
    async fn send(&self, payout: &OutboxEntry, _after: Option<&str>) -> Result<(), TransportError> {
        if self.0.hang {
            std::future::pending::<()>().await;
        }
        self.0.store(&payout.payout_id);
        Ok(())
    }

    async fn send_acked(
        &self,
        payout: &OutboxEntry,
        _after: Option<&str>,
    ) -> Result<
        impl Future<Output = Result<InStream, TransportError>> + Send + 'static,
        TransportError,
    > {
        if self.0.hang {
            std::future::pending::<()>().await;
        }
        let (sequence, duplicate) = self.0.store(&payout.payout_id);
        Ok(std::future::ready(Ok(InStream {
            sequence,
            duplicate,
        })))
    }
}

impl Stream {
    fn store(&self, id: &str) -> (u64, bool) {
        let mut stored = self.stored.lock().unwrap();
        if let Some(at) = stored.iter().position(|s| s == id) {
            return (at as u64 + 1, true);
        }
        stored.push(id.to_string());
        (stored.len() as u64, false)
    }
}

#[derive(Default, Clone)]
struct Announced(Arc<Mutex<Vec<Rejection>>>);

impl Notices for Announced {
    async fn announce(&self, refused: Vec<Rejection>) {
        self.0.lock().unwrap().extend(refused);
    }
}

fn lines(seed: u64, n: usize) -> Vec<String> {
    Generator::new(GenConfig::new(seed, n)).collect()
}

fn source(lines: &[String], batch: usize) -> (Source, Arc<AtomicUsize>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let batches = lines
        .chunks(batch)
        .map(|c| c.iter().map(|l| l.as_bytes().to_vec()).collect())
        .collect();
    (
        Source {
            inbound: SimInbound {
                batches,
                delivered: 0,
                left: Arc::new(AtomicUsize::new(lines.len())),
            },
            acked: acked.clone(),
        },
        acked,
    )
}

/// Waits (bounded) until `done` holds of the handle.
async fn until(handle: &Handle, limit: Duration, done: impl Fn(&Handle) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done(handle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done(handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_folds_publishes_once_and_reports_a_drained_source_as_such() {
    let lines = lines(11, 3000);
    let mut expected = Replay::new();
    for (i, l) in lines.iter().enumerate() {
        expected.push(l.as_bytes(), i as u64 + 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = ServiceConfig {
        data_dir: dir.path().join("data"),
        ..ServiceConfig::default()
    };
    let (service, handle) = tokio::task::block_in_place(|| Service::open(config)).unwrap();
    let (inbound, acked) = source(&lines, 400);
    let stream = Arc::new(Stream::default());
    let notices = Announced::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running =
        tokio::spawn(
            service.run(inbound, Sink(stream.clone()), notices.clone(), async {
                let _ = stopped.await;
            }),
        );
    let payouts = expected.payouts().len();
    let all_out = until(&handle, Duration::from_secs(120), |h| {
        h.metrics().outbox_backlog == 0 && stream.stored.lock().unwrap().len() == payouts
    })
    .await;
    assert!(all_out, "every payout reached the stream");
    // The lag it reports is the source's now, not the last value seen mid-stream.
    assert!(
        until(&handle, Duration::from_secs(10), |h| h
            .status()
            .consumer_pending
            == Some(0))
        .await,
        "consumer_pending {:?} once the source is drained",
        handle.status().consumer_pending
    );
    let status = handle.status_exact();
    assert_eq!(status.digest, Some(expected.document().digest));
    assert_eq!(status.fault, None);
    assert_eq!(
        acked.load(Ordering::Relaxed),
        lines.len(),
        "every message acked"
    );
    let _ = stop.send(());
    let last = running.await.unwrap().unwrap();
    assert_eq!(last.digest, Some(expected.document().digest));
    let ids: Vec<String> = expected
        .payouts()
        .iter()
        .map(|p| p.payout_id.to_string())
        .collect();
    assert_eq!(*stream.stored.lock().unwrap(), ids, "once each, in order");
    let business = expected
        .rejections()
        .iter()
        .filter(|r| !r.code.is_intake())
        .count();
    assert!(business > 0);
    assert_eq!(
        notices.0.lock().unwrap().len(),
        expected.rejections().len(),
        "every refusal announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_that_stop_moving_raise_the_stalled_outbox_alarm() {
    let lines = lines(12, 1500);
    let dir = tempfile::tempdir().unwrap();
    let config = ServiceConfig {
        data_dir: dir.path().join("data"),
        // A transport that never answers, and deadlines far away: only the alarm tells.
        publish_timeout: Duration::from_secs(3600),
        outbox_stall_after: Duration::from_millis(300),
        ..ServiceConfig::default()
    };
    let (service, handle) = tokio::task::block_in_place(|| Service::open(config)).unwrap();
    let (inbound, _) = source(&lines, 500);
    let stream = Arc::new(Stream {
        hang: true,
        ..Stream::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(
        service.run(inbound, Sink(stream), Announced::default(), async {
            let _ = stopped.await;
        }),
    );
    let alarmed = until(&handle, Duration::from_secs(60), |h| {
        h.fault().is_some_and(|f| f.starts_with("outbox:"))
    })
    .await;
    let fault = handle.fault();
    assert!(alarmed, "fault {fault:?}");
    let status = handle.status();
    assert!(status.outbox_backlog > 0);
    assert_eq!(status.fault, fault, "status reports it too");
    assert_eq!(handle.metrics().fault, fault, "and /metrics");
    let _ = stop.send(());
    // The publisher is stuck in the transport: the service still stops (bounded).
    let ended = tokio::time::timeout(Duration::from_secs(30), running).await;
    assert!(
        ended.is_ok(),
        "the service stops even with a transport that never answers"
    );
}
