//! The publisher against a simulated payout stream that behaves as JetStream does: one
//! message per id (checked first), then the expected last id; a refused message is
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
    /// The id of each stored message, in sequence order.
    stored: Vec<String>,
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
    fn holding(ids: &[String]) -> Stream {
        let s = Stream::default();
        s.state.lock().unwrap().stored = ids.to_vec();
        s
    }

    fn store(state: &mut State, id: &str, after: Option<&str>) -> Result<InStream, TransportError> {
        if let Some(at) = state.stored.iter().position(|s| s == id) {
            return Ok(InStream {
                sequence: at as u64 + 1,
                duplicate: true,
            });
        }
        if let Some(after) = after {
            if state.stored.last().map(String::as_str) != Some(after) {
                return Err(err(&format!(
                    "wrong last msg ID: {:?}",
                    state.stored.last()
                )));
            }
        }
        state.stored.push(id.to_string());
        let sequence = state.stored.len() as u64;
        if state.foreign_after.as_deref() == Some(id) {
            state.stored.push("foreign".into());
        }
        Ok(InStream {
            sequence,
            duplicate: false,
        })
    }

    fn stored(&self) -> Vec<String> {
        self.state.lock().unwrap().stored.clone()
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
    async fn send(&self, payout: &OutboxEntry, after: Option<&str>) -> Result<(), TransportError> {
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
                        let _ = Stream::store(&mut state, &payout.payout_id, after);
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
        after: Option<&str>,
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
                    let stored = Stream::store(&mut state, &payout.payout_id, after);
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
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("payout-{i}")).collect()
}

fn window(ids: &[String]) -> Vec<OutboxEntry> {
    ids.iter()
        .map(|id| OutboxEntry {
            subject: "incentive.payouts.rebate".into(),
            payout_id: id.clone(),
            payload: id.clone().into(),
        })
        .collect()
}

const TIMEOUT: Duration = Duration::from_millis(50);

fn publish(s: &Stream, ids: &[String], tail: Option<&str>) -> Option<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(publish_window(
            s,
            window(ids),
            tail.map(str::to_string),
            TIMEOUT,
        ))
        .unwrap()
        .0
}

/// Every payout stored exactly once, in window order after the stream's own.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn the_first_window_is_acked_per_payout_and_later_ones_by_their_last() {
    let s = Stream::default();
    let tail = publish(&s, &ids(0..10), None);
    assert_eq!(tail.as_deref(), Some("payout-9"));
    assert_eq!(s.sends(), (10, 0));
    let tail = publish(&s, &ids(10..20), tail.as_deref());
    assert_eq!(tail.as_deref(), Some("payout-19"));
    assert_eq!(s.sends(), (11, 9));
    let tail = publish(&s, &ids(20..21), tail.as_deref());
    assert_eq!(tail.as_deref(), Some("payout-20"));
    assert_eq!(s.sends(), (12, 9));
    assert_eq!(s.stored(), ids(0..21));
}

#[test]
fn a_lost_payout_breaks_the_chain_and_the_window_is_sent_again() {
    let s = Stream::holding(&ids(0..10));
    s.state.lock().unwrap().lose.insert("payout-13".into());
    let tail = publish(&s, &ids(10..20), Some("payout-9"));
    assert_eq!(s.stored(), ids(0..20), "every payout stored once, in order");
    assert_eq!(tail.as_deref(), Some("payout-19"));
    assert_eq!(s.sends(), (11, 9));
}

#[test]
fn another_writers_message_breaks_the_chain_and_nothing_is_lost() {
    let s = Stream::holding(&ids(0..10));
    {
        let mut state = s.state.lock().unwrap();
        state.foreign_after = Some("payout-12".into());
        // A lost payout and a foreign message in one window: a count of the stream's
        // sequences could not tell this from a complete window.
        state.lose.insert("payout-15".into());
    }
    let tail = publish(&s, &ids(10..20), Some("payout-9"));
    let stored = s.stored();
    assert_eq!(stored.len(), 21);
    assert_eq!(
        sorted(stored.into_iter().filter(|i| i != "foreign").collect()),
        sorted(ids(0..20))
    );
    assert_eq!(tail.as_deref(), Some("payout-19"));
}

#[test]
fn payouts_sent_again_after_a_crash_are_not_taken_for_a_confirmation() {
    // The stream holds the whole window: every ack is a duplicate, the tail unknown.
    let s = Stream::holding(&ids(0..20));
    let tail = publish(&s, &ids(10..20), Some("payout-19"));
    assert_eq!(s.stored(), ids(0..20));
    assert_eq!(tail, None);
    assert_eq!(s.sends(), (11, 9));
    // Half of it: the chain breaks at the first payout not stored before.
    let s = Stream::holding(&ids(0..15));
    let tail = publish(&s, &ids(10..20), Some("payout-9"));
    assert_eq!(s.stored(), ids(0..20));
    assert_eq!(tail.as_deref(), Some("payout-19"));
}

#[test]
fn a_wrong_tail_costs_a_second_sending_never_a_payout() {
    for tail in ["payout-8", "payout-0", "nothing"] {
        let s = Stream::holding(&ids(0..10));
        s.state.lock().unwrap().lose.insert("payout-11".into());
        let after = publish(&s, &ids(10..20), Some(tail));
        assert_eq!(sorted(s.stored()), sorted(ids(0..20)), "tail {tail}");
        assert_eq!(after.as_deref(), Some("payout-19"), "tail {tail}");
        assert_eq!(s.sends(), (11, 9), "tail {tail}");
    }
}

#[test]
fn an_acknowledgement_that_never_comes_is_a_timeout_not_a_stall() {
    let s = Stream::holding(&ids(0..10));
    {
        let mut state = s.state.lock().unwrap();
        state.faults = Some(Faults {
            rng: Rng::new(1),
            send_error: 0,
            lost_message: 0,
            send_hangs: 0,
            ack_lost: 0,
            ack_hangs: 100,
            seen: [0; 5],
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let started = Instant::now();
    let result = rt.block_on(publish_window(
        &s,
        window(&ids(10..20)),
        Some("payout-9".into()),
        TIMEOUT,
    ));
    assert!(
        matches!(result, Err(PublishError::TimedOut { .. })),
        "{result:?}"
    );
    // Bounded by the deadlines (the chain's last ack, then the first per-payout ack),
    // generously: a hung future would never return at all.
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
    let outbox = Outbox::new(log.outbox().unwrap(), "incentive.payouts").unwrap();
    let mut at = 0u64;
    for step in [1usize, 7, 300, 5000, usize::MAX] {
        let n = step.min(payouts.len() - at as usize) as u64;
        outbox.record(at, n, at + n).unwrap();
        at += n;
    }
    let handle = Handle::from_replay(replay, 6_000, 6_000, None).unwrap();
    (outbox, handle, payouts)
}

/// The publisher, driven as its task drives it, through random send failures, lost
/// messages, lost and never-arriving acknowledgements and sends that hang: it drains
/// the whole outbox, every payout reaches the stream once, and no call waits for ever.
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
            ack_lost: 1,
            ack_hangs: 1,
            seen: [0; 5],
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let settings = PublishSettings {
            window: 32,
            timeout: Duration::from_millis(20),
        };
        let mut publisher = Publisher::default();
        let mut rounds = 0;
        let mut failures = 0;
        while outbox.backlog() > 0 {
            rounds += 1;
            assert!(
                rounds < 5_000,
                "seed {seed}: the outbox did not drain ({} left)",
                outbox.backlog()
            );
            if rt
                .block_on(publisher.drain(&s, &outbox, &handle, settings))
                .is_err()
            {
                failures += 1;
            }
        }
        assert_eq!(outbox.next_range().unwrap(), None, "seed {seed}");
        let stored = s.stored();
        assert_eq!(stored.len(), payouts.len(), "seed {seed}: each payout once");
        assert_eq!(sorted(stored), sorted(payouts.clone()), "seed {seed}");
        let seen = s.state.lock().unwrap().faults.as_ref().unwrap().seen;
        assert!(
            seen.iter().all(|&n| n > 0),
            "seed {seed}: every kind of fault was met ({seen:?})"
        );
        assert!(failures > 0, "seed {seed}");
        assert_eq!(handle.health().outbox_backlog, 0, "seed {seed}");
    }
}
