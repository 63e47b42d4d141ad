//! The whole service — ingest loop, projector, outbox, publisher — over a simulated
//! transport in this process (no NATS): it folds to the digest of a replay, publishes
//! every payout once, reports the source's real lag once it is drained, and raises the
//! stalled-outbox alarm when payouts stop moving. Its history archive answers as a
//! replay that kept its history does, is rebuilt when it is missing, behind or not of
//! this log, and a write failure holds history in memory until it can be written.

use ledger_core::gen::{GenConfig, Generator};
use ledger_core::replay::Rejection;
use ledger_core::Replay;
use ledger_service::{
    Delivery, Expect, Handle, InStream, Inbound, Notices, OutboxEntry, PayoutSink, Service,
    ServiceConfig, StreamTail, TransportError,
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

/// A payout stream that stores what follows its last message (by id once, as
/// JetStream), or (when `hang`) never answers at all.
#[derive(Default)]
struct Stream {
    /// Ids and payout numbers, in sequence order.
    stored: Mutex<Vec<(String, u64)>>,
    hang: bool,
}

/// The service's end of a shared [`Stream`].
struct Sink(Arc<Stream>);

impl PayoutSink for Sink {
    async fn send(&self, payout: &OutboxEntry, expect: Expect<'_>) -> Result<(), TransportError> {
        if self.0.hang {
            std::future::pending::<()>().await;
        }
        let _ = self.0.store(payout, expect);
        Ok(())
    }

    async fn send_acked(
        &self,
        payout: &OutboxEntry,
        expect: Expect<'_>,
    ) -> Result<
        impl Future<Output = Result<InStream, TransportError>> + Send + 'static,
        TransportError,
    > {
        if self.0.hang {
            std::future::pending::<()>().await;
        }
        Ok(std::future::ready(self.0.store(payout, expect)))
    }

    async fn tail(&self) -> Result<StreamTail, TransportError> {
        if self.0.hang {
            std::future::pending::<()>().await;
        }
        let stored = self.0.stored.lock().unwrap();
        Ok(StreamTail {
            last_sequence: stored.len() as u64,
            number: stored.last().map(|s| s.1),
            payout_id: stored.last().map(|s| s.0.clone()),
        })
    }
}

impl Stream {
    fn store(&self, payout: &OutboxEntry, expect: Expect<'_>) -> Result<InStream, TransportError> {
        let mut stored = self.stored.lock().unwrap();
        if let Some(at) = stored.iter().position(|s| s.0 == payout.payout_id) {
            return Ok(InStream {
                sequence: at as u64 + 1,
                duplicate: true,
            });
        }
        let follows = match expect {
            Expect::LastSequence(n) => stored.len() as u64 == n,
            Expect::LastId(after) => stored.last().is_some_and(|s| s.0 == after),
        };
        if !follows {
            return Err(TransportError::message(format!(
                "wrong last message ({expect:?}): {}",
                stored.len()
            )));
        }
        stored.push((payout.payout_id.clone(), payout.number));
        Ok(InStream {
            sequence: stored.len() as u64,
            duplicate: false,
        })
    }

    fn ids(&self) -> Vec<String> {
        self.stored
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect()
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

/// Runs `service` over `inbound` on a task, publishing to `stream`: the sender stops
/// it, the task ends with its final status.
fn spawn(
    service: Service,
    inbound: impl Inbound + Sync + 'static,
    stream: &Arc<Stream>,
    notices: &Announced,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<ledger_service::Status, ledger_service::ServiceError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running =
        tokio::spawn(
            service.run(inbound, Sink(stream.clone()), notices.clone(), async {
                let _ = stopped.await;
            }),
        );
    (stop, running)
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

/// The replay of `lines` in memory, and a service opened on a new data directory.
fn fresh_service(lines: &[String]) -> (Replay, tempfile::TempDir, Service, Handle) {
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
    (expected, dir, service, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_folds_publishes_once_and_reports_a_drained_source_as_such() {
    let lines = lines(11, 3000);
    let (expected, _dir, service, handle) = fresh_service(&lines);
    let (inbound, acked) = source(&lines, 400);
    let stream = Arc::new(Stream::default());
    let notices = Announced::default();
    let (stop, running) = spawn(service, inbound, &stream, &notices);
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
    assert_eq!(stream.ids(), ids, "once each, in order");
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
    let (stop, running) = spawn(service, inbound, &stream, &Announced::default());
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

/// Everything the history-reading queries answer, as text: every payout page, every
/// refusal page, and the statement of every entry (journal lines and payouts).
fn history_answers(h: &Handle, entries: &[(String, String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = 0;
    for _ in 0..100_000 {
        let page = h
            .payouts(&ledger_service::PayoutFilter::default(), after, 97)
            .unwrap();
        out.push(format!("{:?}", page.items));
        match page.next {
            Some(n) => after = n,
            None => break,
        }
    }
    let mut after = 0;
    for _ in 0..100_000 {
        let page = h.rejections(after, 41).unwrap();
        out.push(format!("{:?}", page.items));
        match page.next {
            Some(n) => after = n,
            None => break,
        }
    }
    for (partner, program, period) in entries {
        let st = h.statement(partner, program, period).unwrap();
        out.push(format!("{st:?}"));
    }
    out
}

/// A replay of `lines` that kept all its history (journals included), and its entries.
fn replay_with_journal(lines: &[String]) -> (Replay, Vec<(String, String, String)>) {
    let mut r = Replay::new();
    r.enable_journal();
    for (i, l) in lines.iter().enumerate() {
        r.push(l.as_bytes(), i as u64 + 1);
    }
    let entries = r
        .ledger()
        .balances()
        .iter()
        .map(|b| (b.partner_id.clone(), b.program_id.clone(), b.period.clone()))
        .collect();
    (r, entries)
}

/// A generated stream, its entries, its digest and the history answers of a replay of
/// it that kept its history (what the service's answers must equal).
struct Expected {
    lines: Vec<String>,
    entries: Vec<(String, String, String)>,
    digest: String,
    truth: Vec<String>,
}

fn expected_history(seed: u64, n: usize) -> Expected {
    let lines = lines(seed, n);
    let (expected, entries) = replay_with_journal(&lines);
    let digest = expected.document().digest;
    let handle = Handle::from_replay(expected, 0, 0, None).unwrap();
    let truth = history_answers(&handle, &entries);
    Expected {
        lines,
        entries,
        digest,
        truth,
    }
}

/// Runs the service over `lines` until every payout is out, then stops it.
async fn run_to_the_end(config: ServiceConfig, lines: &[String], before: impl FnOnce(&Handle)) {
    let (service, handle) = tokio::task::block_in_place(|| Service::open(config)).unwrap();
    before(&handle);
    let (inbound, _) = source(lines, 300);
    let stream = Arc::new(Stream::default());
    let (stop, running) = spawn(service, inbound, &stream, &Announced::default());
    let (expected, _) = replay_with_journal(lines);
    let payouts = expected.payouts().len();
    let done = until(&handle, Duration::from_secs(120), |h| {
        h.position()
            == expected.counts().received
                - expected.counts().duplicates
                - expected
                    .rejections()
                    .iter()
                    .filter(|r| r.code.is_intake())
                    .count() as u64
            && stream.stored.lock().unwrap().len() == payouts
    })
    .await;
    assert!(done, "{:?}", handle.status());
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_archive_answers_as_a_replay_and_is_rebuilt_when_missing_behind_or_foreign() {
    let Expected {
        lines,
        entries,
        digest: expected_digest,
        truth,
    } = expected_history(13, 3000);
    assert!(truth.len() > entries.len() + 10, "payout and refusal pages");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = || ServiceConfig {
        data_dir: data.clone(),
        checkpoint_every: 500,
        // Runs written and merged many times over.
        lookups_in_memory: 400,
        ..ServiceConfig::default()
    };
    run_to_the_end(config(), &lines, |_| {}).await;
    let runs = std::fs::read_dir(data.join(ledger_log::lookups::DIR))
        .unwrap()
        .count();
    assert!(runs > 0, "lookups went to runs");

    // Opens the directory as the service does; what its queries answer.
    let reopen = || {
        let (service, handle) = tokio::task::block_in_place(|| Service::open(config())).unwrap();
        let answers = history_answers(&handle, &entries);
        let status = handle.status_exact();
        drop(service);
        (answers, status)
    };
    let (answers, status) = reopen();
    assert_eq!(status.digest.as_deref(), Some(expected_digest.as_str()));
    assert!(status.checkpoint_seq > 0, "resumed from a checkpoint");
    assert!(answers == truth, "live history equals a replay's");
    // A replay of the directory resumes from the service's checkpoint, its history
    // read back from the archive, to the same document.
    {
        let log = ledger_log::Log::open(&data).unwrap();
        let rebuilt = ledger_log::rebuild(&log, ledger_log::Bound::All, true, &mut |_| {}).unwrap();
        assert_eq!(rebuilt.resumed_from, Some(status.checkpoint_seq));
        assert_eq!(rebuilt.replay.document().digest, expected_digest);
    }

    let history = data.join(ledger_log::archive::DIR);
    let len = |name: &str| std::fs::metadata(history.join(name)).unwrap().len();

    // Written after the checkpoint and lost to a crash: cut back, folded again.
    let journal_len = len("journal");
    for name in ["payouts", "payouts.offsets", "journal"] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(history.join(name))
            .unwrap();
        std::io::Write::write_all(&mut f, &[0xAB; 77]).unwrap();
    }
    let (answers, status) = reopen();
    assert!(
        answers == truth,
        "an archive longer than its checkpoint is cut back"
    );
    assert!(status.checkpoint_seq > 0, "and the checkpoint still used");
    assert_eq!(len("journal"), journal_len);

    // Behind the checkpoint (a file shorter than it says), or gone: rebuilt from the log.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(history.join("journal"))
        .unwrap();
    f.set_len(journal_len / 2).unwrap();
    drop(f);
    let (answers, status) = reopen();
    assert!(
        answers == truth,
        "an archive behind its checkpoint is rebuilt"
    );
    assert_eq!(status.digest.as_deref(), Some(expected_digest.as_str()));
    std::fs::remove_dir_all(&history).unwrap();
    let (answers, _) = reopen();
    assert!(answers == truth, "a missing archive is rebuilt");
    // A lookup run the checkpoint names, gone: everything is rebuilt from the log.
    let lookups = data.join(ledger_log::lookups::DIR);
    let run = std::fs::read_dir(&lookups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::remove_file(run.path()).unwrap();
    let (answers, status) = reopen();
    assert!(
        answers == truth,
        "a missing lookup run costs a rebuild, not an answer"
    );
    assert_eq!(status.digest.as_deref(), Some(expected_digest.as_str()));

    // A damaged payout: `verify` names it, and a query of it fails rather than
    // answering something else.
    let log = ledger_log::Log::open(&data).unwrap();
    let report = ledger_log::verify(&log, &mut |_| {}).unwrap();
    assert!(report.ok(), "{report:?}");
    drop(log);
    let mut bytes = std::fs::read(history.join("payouts")).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(history.join("payouts"), &bytes).unwrap();
    let log = ledger_log::Log::open(&data).unwrap();
    let report = ledger_log::verify(&log, &mut |_| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("checkpoint: history archive: payouts")),
        "{report:?}"
    );
    drop(log);
    let (service, handle) = tokio::task::block_in_place(|| Service::open(config())).unwrap();
    let mut failed = false;
    let mut after = 0;
    for _ in 0..100_000 {
        match handle.payouts(&ledger_service::PayoutFilter::default(), after, 97) {
            Err(_) => {
                failed = true;
                break;
            }
            Ok(page) => match page.next {
                Some(n) => after = n,
                None => break,
            },
        }
    }
    assert!(failed, "the damaged payout is an error, not an answer");
    drop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_cannot_be_written_holds_history_in_memory_until_it_can() {
    let Expected {
        lines,
        entries,
        digest: expected_digest,
        truth,
    } = expected_history(14, 2400);
    let dir = tempfile::tempdir().unwrap();
    let config = ServiceConfig {
        data_dir: dir.path().join("data"),
        checkpoint_every: 400,
        ..ServiceConfig::default()
    };
    let (service, handle) = tokio::task::block_in_place(|| Service::open(config)).unwrap();
    handle.fail_next_archive_writes(u64::MAX);
    let (inbound, _) = source(&lines, 300);
    let stream = Arc::new(Stream::default());
    let (stop, running) = spawn(service, inbound, &stream, &Announced::default());
    let faulted = until(&handle, Duration::from_secs(60), |h| {
        h.fault().is_some_and(|f| f.starts_with("history:"))
    })
    .await;
    assert!(faulted, "{:?}", handle.status());
    // Nothing is published while the payouts are not in the archive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stream.stored.lock().unwrap().is_empty());
    handle.fail_next_archive_writes(0);
    let payouts = {
        let (r, _) = replay_with_journal(&lines);
        r.payouts().len()
    };
    let recovered = until(&handle, Duration::from_secs(120), |h| {
        h.fault().is_none() && stream.stored.lock().unwrap().len() == payouts
    })
    .await;
    assert!(recovered, "{:?}", handle.status());
    let answers = history_answers(&handle, &entries);
    assert!(answers == truth, "nothing held was lost");
    assert_eq!(
        handle.status_exact().digest.as_deref(),
        Some(expected_digest.as_str())
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// A broker killed before it wrote its last messages to disk comes back without them and
/// gives their positions to new messages. The service had logged the lost ones: the
/// redeliveries before them are recognised as such, and the new messages at re-used
/// positions — a refused one first — are taken, not passed over as redeliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_messages_at_positions_the_log_consumed_are_taken_when_the_source_went_back() {
    let mut lines = lines(23, 1200);
    // The first message at a re-used position is one intake refuses: it has no
    // identity to tell it by, and is taken with the new message after it.
    lines.insert(
        150,
        "{\"specversion\": \"1.0\", \"not\": \"an event\"}".to_string(),
    );
    let (expected, dir, service, handle) = fresh_service(&lines);
    let line = |i: usize| lines[i].as_bytes().to_vec();
    // Positions 1..=150 carry lines 0..150; the broker loses 121..=150 (logged by the
    // service, not yet on the broker's disk), redelivers 101..=120 and numbers the
    // lines from 150 on from 121.
    let mut script: VecDeque<Vec<(u64, Vec<u8>)>> = VecDeque::new();
    script.push_back((0..150).map(|i| (i as u64 + 1, line(i))).collect());
    let mut again: Vec<(u64, Vec<u8>)> = (100..120).map(|i| (i as u64 + 1, line(i))).collect();
    again.extend((150..lines.len()).map(|i| (i as u64 - 29, line(i))));
    for chunk in again.chunks(200) {
        script.push_back(chunk.to_vec());
    }
    let source = Scripted { script };
    let stream = Arc::new(Stream::default());
    let (stop, running) = spawn(service, source, &stream, &Announced::default());
    let n = lines.len() as u64;
    let taken = until(&handle, Duration::from_secs(30), |h| {
        h.status().arrival >= n
    })
    .await;
    let status = handle.status_exact();
    assert!(taken, "every new message taken: {status:?}");
    assert_eq!(status.arrival, n, "each message taken once");
    assert_eq!(status.digest, Some(expected.document().digest));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    drop(handle);
    // The source position was moved back durably: a restart resumes after the last
    // re-used position the log took, not after the lost ones.
    let config = ServiceConfig {
        data_dir: dir.path().join("data"),
        ..ServiceConfig::default()
    };
    let (reopened, _) = tokio::task::block_in_place(|| Service::open(config)).unwrap();
    assert_eq!(reopened.resume_after(), n - 30);
}

/// A source that delivers scripted batches of (position, payload), then nothing.
struct Scripted {
    script: VecDeque<Vec<(u64, Vec<u8>)>>,
}

impl Inbound for Scripted {
    type Message = SimMessage;

    async fn next_batch(&mut self) -> Result<Vec<SimMessage>, TransportError> {
        let Some(batch) = self.script.pop_front() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Ok(Vec::new());
        };
        Ok(batch
            .into_iter()
            .map(|(position, payload)| SimMessage {
                payload,
                position,
                acked: Arc::new(AtomicUsize::new(0)),
            })
            .collect())
    }

    async fn pending(&mut self) -> Option<u64> {
        Some(self.script.iter().map(Vec::len).sum::<usize>() as u64)
    }
}

/// A source that misbehaves as a JetStream consumer can across a leader change or a
/// broken connection: it delivers again messages already taken, and loses one on the
/// way; rewound, it delivers in order from there.
struct Unruly {
    lines: Vec<Vec<u8>>,
    script: VecDeque<Vec<u64>>,
    /// After a rewind: the next position to deliver.
    next: Option<u64>,
    rewinds: Arc<AtomicUsize>,
}

impl Inbound for Unruly {
    type Message = SimMessage;

    async fn next_batch(&mut self) -> Result<Vec<SimMessage>, TransportError> {
        let positions: Vec<u64> = if let Some(batch) = self.script.pop_front() {
            batch
        } else if let Some(from) = self.next {
            let to = (from + 300).min(self.lines.len() as u64 + 1);
            self.next = Some(to);
            (from..to).collect()
        } else {
            Vec::new()
        };
        if positions.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(positions
            .into_iter()
            .map(|p| SimMessage {
                payload: self.lines[p as usize - 1].clone(),
                position: p,
                acked: Arc::new(AtomicUsize::new(0)),
            })
            .collect())
    }

    async fn pending(&mut self) -> Option<u64> {
        None
    }

    async fn rewind(&mut self, after: u64) -> Result<(), TransportError> {
        self.rewinds.fetch_add(1, Ordering::Relaxed);
        self.script.clear();
        self.next = Some(after + 1);
        Ok(())
    }
}

/// Redelivered messages are not logged twice and a lost one is fetched again before
/// anything after it: the log keeps the source's order, record for record, as every
/// replica must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_and_a_lost_message_leave_the_log_in_the_sources_order() {
    let lines = lines(17, 2000);
    let (expected, _dir, service, handle) = fresh_service(&lines);
    let rewinds = Arc::new(AtomicUsize::new(0));
    let source = Unruly {
        lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
        script: VecDeque::from([
            (1..=100).collect(),
            (90..=150).collect(),
            (152..=200).collect(),
        ]),
        next: None,
        rewinds: rewinds.clone(),
    };
    let stream = Arc::new(Stream::default());
    let (stop, running) = spawn(service, source, &stream, &Announced::default());
    let n = lines.len() as u64;
    assert!(
        until(&handle, Duration::from_secs(120), |h| h.status().arrival
            >= n)
        .await,
        "{:?}",
        handle.status()
    );
    let status = handle.status_exact();
    assert_eq!(status.arrival, n, "each message taken once");
    assert_eq!(
        status.events,
        expected.counts(),
        "a redelivery is no re-send"
    );
    assert_eq!(status.digest, Some(expected.document().digest));
    assert_eq!(rewinds.load(Ordering::Relaxed), 1);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
