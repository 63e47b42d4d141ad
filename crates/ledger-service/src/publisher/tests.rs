//! The publisher against a simulated payout stream that behaves as JetStream does: one
//! message per id (checked first), then the expected last sequence; a refused message is
//! dropped in silence unless acknowledged. The stream can lose messages, lose or delay
//! acknowledgements, fail sends, hang for ever, and let another writer in.

use super::*;
use ledger_core::gen::Rng;
use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Default)]
struct Stream {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The id and payout number of each stored message, in sequence order.
    stored: Vec<(String, Option<u64>)>,
    lose: HashSet<String>,
    foreign_after: Option<String>,
    acked_sends: usize,
    plain_sends: usize,
    /// Random faults, when set.
    faults: Option<Faults>,
}

/// Percent chances per call, and the seeded generator that draws them.
struct Faults {
    rng: Rng,
    /// A send fails with an error (nothing stored).
    send_error: u64,
    /// A plain send is lost on the way (nothing stored, no error).
    lost_message: u64,
    /// A send never completes (nothing stored).
    send_hangs: u64,
    /// Stored, but the acknowledgement is lost: an error.
    ack_lost: u64,
    /// Stored, but the acknowledgement never comes.
    ack_hangs: u64,
    /// What happened, for the test to check that every fault was met.
    seen: [usize; 5],
}

enum Ack {
    Now(Result<InStream, TransportError>),
    Never,
}

fn err(what: &str) -> TransportError {
    TransportError::new(std::io::Error::other(what.to_string()))
}

impl Stream {
    /// A stream holding `ids` as payouts `0..`, with their numbers.
    fn holding(ids: &[String]) -> Stream {
        let s = Stream::default();
        s.state.lock().unwrap().stored = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), Some(i as u64)))
            .collect();
        s
    }

    fn store(
        state: &mut State,
        payout: &OutboxEntry,
        expect: Expect<'_>,
    ) -> Result<InStream, TransportError> {
        let id = &payout.payout_id;
        if let Some(at) = state.stored.iter().position(|s| &s.0 == id) {
            return Ok(InStream {
                sequence: at as u64 + 1,
                duplicate: true,
            });
        }
        match expect {
            Expect::LastSequence(n) if state.stored.len() as u64 != n => {
                return Err(err(&format!("wrong last sequence: {}", state.stored.len())));
            }
            Expect::LastId(after) if state.stored.last().map(|s| s.0.as_str()) != Some(after) => {
                return Err(err("wrong last msg ID"));
            }
            _ => {}
        }
        state.stored.push((id.clone(), Some(payout.number)));
        let sequence = state.stored.len() as u64;
        if state.foreign_after.as_deref() == Some(id) {
            state.stored.push(("foreign".into(), None));
        }
        Ok(InStream {
            sequence,
            duplicate: false,
        })
    }

    fn stored(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.stored.iter().map(|s| s.0.clone()).collect()
    }

    fn sends(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.acked_sends, state.plain_sends)
    }

    /// Draws the fault of one send: `Err` fails it, `Ok(None)` hangs it.
    fn draw_send(state: &mut State) -> Result<Option<()>, TransportError> {
        let Some(f) = state.faults.as_mut() else {
            return Ok(Some(()));
        };
        if f.rng.chance(f.send_error) {
            f.seen[0] += 1;
            return Err(err("connection reset"));
        }
        if f.rng.chance(f.send_hangs) {
            f.seen[2] += 1;
            return Ok(None);
        }
        Ok(Some(()))
    }
}

impl PayoutSink for Stream {
    async fn send(&self, payout: &OutboxEntry, expect: Expect<'_>) -> Result<(), TransportError> {
        let hang = {
            let mut state = self.state.lock().unwrap();
            state.plain_sends += 1;
            match Stream::draw_send(&mut state)? {
                None => true,
                Some(()) => {
                    let lost = state.faults.as_mut().is_some_and(|f| {
                        let lost = f.rng.chance(f.lost_message);
                        f.seen[1] += usize::from(lost);
                        lost
                    });
                    if !state.lose.remove(&payout.payout_id) && !lost {
                        let _ = Stream::store(&mut state, payout, expect);
                    }
                    false
                }
            }
        };
        if hang {
            std::future::pending::<()>().await;
        }
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
        let ack = {
            let mut state = self.state.lock().unwrap();
            state.acked_sends += 1;
            match Stream::draw_send(&mut state)? {
                None => None,
                Some(()) => {
                    let stored = Stream::store(&mut state, payout, expect);
                    let fault = state.faults.as_mut().and_then(|f| {
                        if f.rng.chance(f.ack_lost) {
                            f.seen[3] += 1;
                            Some(Ack::Now(Err(err("timed out: didn't receive ack in time"))))
                        } else if f.rng.chance(f.ack_hangs) {
                            f.seen[4] += 1;
                            Some(Ack::Never)
                        } else {
                            None
                        }
                    });
                    Some(fault.unwrap_or(Ack::Now(stored)))
                }
            }
        };
        let Some(ack) = ack else {
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes");
        };
        Ok(async move {
            match ack {
                Ack::Now(result) => result,
                Ack::Never => std::future::pending().await,
            }
        })
    }

    async fn tail(&self) -> Result<StreamTail, TransportError> {
        let state = self.state.lock().unwrap();
        Ok(StreamTail {
            last_sequence: state.stored.len() as u64,
            number: state.stored.iter().rev().take(64).find_map(|s| s.1),
            payout_id: state.stored.last().map(|s| s.0.clone()),
        })
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("payout-{i}")).collect()
}

/// The window of payouts `range`, numbered as the fold numbers them.
fn window(range: std::ops::Range<usize>) -> Vec<OutboxEntry> {
    range
        .map(|i| OutboxEntry {
            subject: "incentive.payouts.rebate".into(),
            number: i as u64,
            payout_id: format!("payout-{i}"),
            payload: format!("payout-{i}").into(),
        })
        .collect()
}

const TIMEOUT: Duration = Duration::from_millis(50);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn publish(s: &Stream, range: std::ops::Range<usize>, last: u64) -> Result<u64, PublishError> {
    runtime().block_on(publish_window(s, window(range), last, TIMEOUT))
}

#[test]
fn a_window_is_chained_and_confirmed_by_its_last_acknowledgement() {
    let s = Stream::default();
    assert_eq!(publish(&s, 0..10, 0).unwrap(), 10);
    assert_eq!(s.sends(), (1, 9));
    assert_eq!(publish(&s, 10..20, 10).unwrap(), 20);
    assert_eq!(publish(&s, 20..21, 20).unwrap(), 21);
    assert_eq!(s.sends(), (3, 18));
    assert_eq!(s.stored(), ids(0..21));
}

#[test]
fn a_lost_payout_stops_the_rest_of_its_window() {
    let s = Stream::holding(&ids(0..10));
    s.state.lock().unwrap().lose.insert("payout-13".into());
    let e = publish(&s, 10..20, 10).unwrap_err();
    assert!(matches!(e, PublishError::NotAcknowledged { .. }), "{e:?}");
    assert_eq!(s.stored(), ids(0..13), "nothing after the gap was stored");
}

/// A message that is no payout of the ledger's (something else publishing on the
/// payout subjects, which the deployment's permissions forbid) stops the window at the
/// payout after it: the chain names ids, so the sequences falling back in step do not
/// let a later payout in.
#[test]
fn another_writers_message_stops_the_window() {
    let s = Stream::holding(&ids(0..10));
    s.state.lock().unwrap().foreign_after = Some("payout-12".into());
    let e = publish(&s, 10..20, 10).unwrap_err();
    assert!(matches!(e, PublishError::NotAcknowledged { .. }), "{e:?}");
    let mut expected = ids(0..13);
    expected.push("foreign".into());
    assert_eq!(s.stored(), expected, "nothing after the foreign message");
}

#[test]
fn a_window_the_stream_already_holds_is_not_taken_for_a_confirmation() {
    let s = Stream::holding(&ids(0..20));
    let e = publish(&s, 10..20, 9).unwrap_err();
    assert!(
        matches!(e, PublishError::Moved { sequence: 20, .. }),
        "{e:?}"
    );
    assert_eq!(s.stored(), ids(0..20));
}

#[test]
fn an_acknowledgement_that_never_comes_is_a_timeout_not_a_stall() {
    let s = Stream::holding(&ids(0..10));
    s.state.lock().unwrap().faults = Some(Faults {
        rng: Rng::new(1),
        send_error: 0,
        lost_message: 0,
        send_hangs: 0,
        ack_lost: 0,
        ack_hangs: 100,
        seen: [0; 5],
    });
    let started = Instant::now();
    let result = publish(&s, 10..20, 10);
    assert!(
        matches!(result, Err(PublishError::TimedOut { .. })),
        "{result:?}"
    );
    // Bounded by the deadline, generously: a hung future would never return at all.
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A fold with payouts, a data directory whose outbox records them in steps, and a
/// handle on the fold, as the service has them.
fn service_parts(dir: &std::path::Path) -> (Outbox, Handle, Vec<String>) {
    let mut replay = ledger_core::Replay::new();
    for (i, line) in
        ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(5, 6_000)).enumerate()
    {
        replay.push(line.as_bytes(), i as u64 + 1);
    }
    let payouts: Vec<String> = replay
        .payouts()
        .iter()
        .map(|p| p.payout_id.to_string())
        .collect();
    assert!(payouts.len() > 1000, "{} payouts", payouts.len());
    let log = ledger_log::Log::open(dir).unwrap();
    let outbox = Outbox::new(
        log.outbox().unwrap(),
        "incentive.payouts",
        "incentive-ledger",
    )
    .unwrap();
    let mut at = 0u64;
    for step in [1usize, 7, 300, 5000, usize::MAX] {
        let n = step.min(payouts.len() - at as usize) as u64;
        outbox.record(at, n, at + n).unwrap();
        at += n;
    }
    let handle = Handle::from_replay(replay, 6_000, 6_000, None).unwrap();
    (outbox, handle, payouts)
}

/// Drives `publisher` as its task does until the outbox is empty (bounded).
fn drain_all(
    rt: &tokio::runtime::Runtime,
    publisher: &mut Publisher,
    s: &Stream,
    outbox: &Outbox,
    handle: &Handle,
    window: usize,
) -> usize {
    let settings = PublishSettings {
        window,
        timeout: Duration::from_millis(20),
    };
    let mut failures = 0;
    for _ in 0..5_000 {
        if rt
            .block_on(publisher.drain(s, outbox, handle, settings))
            .is_err()
        {
            failures += 1;
        }
        if outbox.backlog() == 0 && outbox.next_range().unwrap().is_none() {
            return failures;
        }
    }
    panic!("the outbox did not drain ({} left)", outbox.backlog());
}

/// A new publisher drains the outbox in windows of 64.
fn drain_fresh(s: &Stream, outbox: &Outbox, handle: &Handle) {
    drain_all(&runtime(), &mut Publisher::default(), s, outbox, handle, 64);
}

/// The publisher, driven as its task drives it, through random send failures, lost
/// messages, lost and never-arriving acknowledgements and sends that hang: it drains
/// the whole outbox, the stream holds every payout once and in the fold's order, and no
/// call waits for ever.
#[test]
fn random_faults_never_stall_the_outbox_and_never_lose_or_double_a_payout() {
    for seed in [1u64, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, handle, payouts) = service_parts(dir.path());
        let s = Stream::default();
        s.state.lock().unwrap().faults = Some(Faults {
            rng: Rng::new(seed),
            send_error: 1,
            lost_message: 2,
            send_hangs: 1,
            // A window awaits one acknowledgement: its faults are drawn more often.
            ack_lost: 8,
            ack_hangs: 8,
            seen: [0; 5],
        });
        let rt = runtime();
        let failures = drain_all(&rt, &mut Publisher::default(), &s, &outbox, &handle, 32);
        assert_eq!(
            s.stored(),
            payouts,
            "seed {seed}: each payout once, in order"
        );
        let seen = s.state.lock().unwrap().faults.as_ref().unwrap().seen;
        assert!(
            seen.iter().all(|&n| n > 0),
            "seed {seed}: every kind of fault was met ({seen:?})"
        );
        assert!(failures > 0, "seed {seed}");
        assert_eq!(handle.health().outbox_backlog, 0, "seed {seed}");
    }
}

/// A new active replica (or this one after a crash) starts where the stream ends,
/// whoever wrote it: with its whole outbox pending, it publishes only what follows.
#[test]
fn publishing_resumes_where_the_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, handle, payouts) = service_parts(dir.path());
    let s = Stream::default();
    s.state.lock().unwrap().stored = payouts[..700]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), Some(i as u64)))
        .collect();
    let rt = runtime();
    drain_all(&rt, &mut Publisher::default(), &s, &outbox, &handle, 64);
    assert_eq!(s.stored(), payouts);
    assert_eq!(
        s.sends().0,
        (payouts.len() - 700).div_ceil(64),
        "a window per ack"
    );
}

/// A stream written by a version before payout numbers: its last message's id is
/// looked up among the outbox's payouts.
#[test]
fn a_last_message_without_a_number_is_found_by_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, handle, payouts) = service_parts(dir.path());
    let s = Stream::default();
    s.state.lock().unwrap().stored = payouts[..321].iter().map(|id| (id.clone(), None)).collect();
    drain_fresh(&s, &outbox, &handle);
    assert_eq!(s.stored(), payouts);
}

/// A message that is no payout of the ledger's at the stream's end: the stream's end is
/// found behind it, and publishing resumes after the foreign message with the payout
/// that follows, losing nothing and doubling nothing.
#[test]
fn a_foreign_last_message_is_followed_by_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, handle, payouts) = service_parts(dir.path());
    let s = Stream::default();
    {
        let mut state = s.state.lock().unwrap();
        state.stored = payouts[..300]
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), Some(i as u64)))
            .collect();
        state.stored.push(("foreign".into(), None));
    }
    drain_fresh(&s, &outbox, &handle);
    let mut expected = payouts[..300].to_vec();
    expected.push("foreign".into());
    expected.extend_from_slice(&payouts[300..]);
    assert_eq!(s.stored(), expected);
}

/// A standby publishes nothing and drops from its outbox what the active published.
#[test]
fn a_standby_publishes_nothing_and_trims_its_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, handle, payouts) = service_parts(dir.path());
    handle.leadership().join("b");
    let s = Stream::holding(&payouts[..500]);
    let rt = runtime();
    let settings = PublishSettings {
        window: 64,
        timeout: TIMEOUT,
    };
    let mut publisher = Publisher::default();
    assert_eq!(
        rt.block_on(publisher.drain(&s, &outbox, &handle, settings))
            .unwrap(),
        0
    );
    assert_eq!(s.stored().len(), 500, "a standby sent nothing");
    assert_eq!(s.sends(), (0, 0));
    assert_eq!(outbox.backlog(), payouts.len() - 500);
    // Granted the lease, it goes on from there.
    handle
        .leadership()
        .granted(Instant::now() + Duration::from_secs(60));
    drain_all(&rt, &mut publisher, &s, &outbox, &handle, 64);
    assert_eq!(s.stored(), payouts);
}

/// Two publishers on one stream — an active replica and one that lost its lease
/// without knowing it — never store a payout twice or out of order: the chain of
/// expected sequences refuses the stale one's window, and it reads the stream's end
/// before it sends again.
#[test]
fn a_stale_publisher_is_fenced_by_the_stream() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (outbox_a, handle_a, payouts) = service_parts(dir_a.path());
    let (outbox_b, handle_b, _) = service_parts(dir_b.path());
    let s = Stream::default();
    let rt = runtime();
    let settings = PublishSettings {
        window: 50,
        timeout: TIMEOUT,
    };
    let (mut a, mut b) = (Publisher::default(), Publisher::default());
    // A publishes a first part, then stops mid-outbox (its task paused).
    let cursor = rt
        .block_on(a.sync(&s, &outbox_a, &handle_a, TIMEOUT))
        .unwrap();
    let first = rt
        .block_on(publish_window(
            &s,
            window_of(&outbox_a, &handle_a, cursor.next, 50),
            cursor.last_sequence,
            TIMEOUT,
        ))
        .unwrap();
    a.cursor = Some(Cursor {
        next: 50,
        last_sequence: first,
    });
    // B takes over and publishes some windows.
    for _ in 0..4 {
        rt.block_on(b.drain(
            &s,
            &outbox_b,
            &handle_b,
            PublishSettings {
                window: 50,
                ..settings
            },
        ))
        .ok();
        if s.stored().len() >= 250 {
            break;
        }
    }
    // A wakes with its stale cursor: refused, then it resumes after B's last.
    let e = rt.block_on(a.drain(&s, &outbox_a, &handle_a, settings));
    assert!(e.is_err(), "the stale window was refused: {e:?}");
    assert_eq!(
        s.stored(),
        payouts[..s.stored().len()].to_vec(),
        "nothing doubled"
    );
    drain_all(&rt, &mut a, &s, &outbox_a, &handle_a, 50);
    assert_eq!(s.stored(), payouts);
}

fn window_of(outbox: &Outbox, handle: &Handle, first: u64, count: u64) -> Vec<OutboxEntry> {
    outbox_entries(outbox, handle, first, count).unwrap()
}
