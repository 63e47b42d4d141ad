//! The payout publisher: publishes the fold's payouts to a [`PayoutSink`] (JetStream in
//! production, a simulated stream in tests) in the fold's issue order, in windows of at
//! most `publish_window` payouts encoded from the history archive when they are sent,
//! and removes from the outbox what the stream holds.
//!
//! **The payout stream is the record of what was published** (DECISIONS 53). Each
//! message carries its payout number (its index in the fold's issue order). The
//! publisher learns where the stream ends by reading its last message and resumes right
//! after it; a window's first payout names the stream sequence it must follow
//! (`Nats-Expected-Last-Sequence`), every other one the payout before it
//! (`Nats-Expected-Last-Msg-Id`). So the stream only ever holds the fold's payouts in
//! order, each once: a payout sent again after a crash, a message lost on the way, or a
//! second publisher — a replica that lost its lease and has not noticed — breaks the
//! chain, the stream refuses the rest, and the publisher reads the stream's end again
//! before it sends anything more. That is also how a new active replica takes over: it
//! starts where the stream ends, whoever wrote it.
//!
//! Only a process whose [`crate::Leadership`] allows it publishes; a standby reads the
//! stream's end now and then to drop from its own outbox what the active one published.
//!
//! Every call into the sink runs under a deadline: a send or an acknowledgement that
//! never resolves (a transport wedged without an error) is a timeout like any other, the
//! stream's end is read again, and the outbox never stalls behind a future that waits
//! for ever. A backlog that still does not move raises the stalled-outbox alarm in
//! [`crate::health::Health`].

use crate::handle::Handle;
use crate::health::FaultSource;
use crate::outbox::{EncodeError, Outbox, OutboxEntry};
use crate::TransportError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The transport's acknowledgement of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InStream {
    pub sequence: u64,
    /// The stream already held a message with this id (`sequence` is its); this one was
    /// not stored.
    pub duplicate: bool,
}

/// Where the payout stream ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTail {
    /// The stream's last sequence (0: it never held a message).
    pub last_sequence: u64,
    /// The payout number of its last message that carries one, looking back over a few
    /// messages that do not (another writer's; the deployment forbids them).
    pub number: Option<u64>,
    /// The id of its last message, when it holds one.
    pub payout_id: Option<String>,
}

/// What the stream must end with for a message to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// Its last sequence (`Nats-Expected-Last-Sequence`): the first payout of a window.
    LastSequence(u64),
    /// The id of its last message (`Nats-Expected-Last-Msg-Id`): every other payout,
    /// naming the one before it.
    LastId(&'a str),
}

/// Where payouts go: a stream that keeps one message per payout id (checked first) and
/// stores a message only if it ends as the message [`Expect`]s (JetStream's
/// `Nats-Msg-Id` and expected-last headers).
pub trait PayoutSink: Send + Sync + 'static {
    /// Publishes without asking for the stream's acknowledgement.
    fn send(
        &self,
        payout: &OutboxEntry,
        expect: Expect<'_>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Publishes; the returned future resolves to the stream's acknowledgement.
    fn send_acked(
        &self,
        payout: &OutboxEntry,
        expect: Expect<'_>,
    ) -> impl Future<
        Output = Result<
            impl Future<Output = Result<InStream, TransportError>> + Send + 'static,
            TransportError,
        >,
    > + Send;

    /// Reads where the stream ends.
    fn tail(&self) -> impl Future<Output = Result<StreamTail, TransportError>> + Send;
}

/// Why publishing stopped (the stream's end is read again, and publishing resumes
/// after it).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing payout {payout_id}")]
    Send {
        payout_id: String,
        #[source]
        source: TransportError,
    },
    #[error("payout {payout_id} not acknowledged")]
    NotAcknowledged {
        payout_id: String,
        #[source]
        source: TransportError,
    },
    #[error("payout {payout_id}: no answer from the transport within {after:?}")]
    TimedOut { payout_id: String, after: Duration },
    #[error(
        "payout {payout_id} was already in the payout stream (sequence {sequence}): \
         the stream moved under this publisher"
    )]
    Moved { payout_id: String, sequence: u64 },
    #[error("the payout stream's end cannot be read")]
    Tail(#[source] TransportError),
    #[error("the payout stream's end: no answer within {0:?}")]
    TailTimedOut(Duration),
    #[error("the payout outbox cannot be read or updated")]
    Outbox(#[from] ledger_log::LogError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(
        "the outbox holds payouts {from}..{to} but the history archive holds them up to {issued}"
    )]
    AheadOfFold { from: u64, to: u64, issued: u64 },
    #[error("the history archive cannot be read")]
    Archive(#[source] ledger_log::LogError),
}

/// Runs one call into the sink for `payout_id` under `limit`: its error becomes
/// `failed(payout_id, error)`, a timeout [`PublishError::TimedOut`].
async fn deadline<T>(
    limit: Duration,
    payout_id: &str,
    failed: fn(String, TransportError) -> PublishError,
    call: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, PublishError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(failed(payout_id.to_string(), source)),
        Err(_) => Err(PublishError::TimedOut {
            payout_id: payout_id.to_string(),
            after: limit,
        }),
    }
}

fn send_failed(payout_id: String, source: TransportError) -> PublishError {
    PublishError::Send { payout_id, source }
}

fn not_acknowledged(payout_id: String, source: TransportError) -> PublishError {
    PublishError::NotAcknowledged { payout_id, source }
}

/// The publisher task's regular tick.
const TICK: Duration = Duration::from_millis(500);

/// The first wait after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(10);

/// How often a standby reads the stream's end to trim its outbox.
const STANDBY_LOOK: Duration = Duration::from_secs(2);

/// Where publishing goes on: the next payout number, and the stream's last sequence,
/// which holds the payout before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    next: u64,
    last_sequence: u64,
}

/// What the publisher knows and has done.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// `None`: read the stream's end before publishing (at start, after any failure,
    /// and whenever this process was not allowed to publish).
    cursor: Option<Cursor>,
    /// Windows the stream stored whole.
    windows: u64,
    /// Times the stream's end was read.
    resyncs: u64,
    /// When a standby last read the stream's end.
    looked: Option<Instant>,
    /// The window in use: halved after a window the stream refused, doubled after one it
    /// stored, between 1 and the configured window — so that a contested stream (another
    /// writer, which the deployment forbids) still takes payouts one at a time.
    window: Option<u64>,
}

/// The publisher's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishSettings {
    /// Payouts per window.
    pub(crate) window: usize,
    /// Longest wait for any one send or acknowledgement.
    pub(crate) timeout: Duration,
}

impl Publisher {
    /// Publishes the fold's recorded payouts beyond the stream's end, if this process
    /// may publish; a standby trims its outbox instead. Stops at the first failure
    /// (the next call reads the stream's end again).
    pub(crate) async fn drain(
        &mut self,
        sink: &impl PayoutSink,
        outbox: &Outbox,
        handle: &Handle,
        settings: PublishSettings,
    ) -> Result<usize, PublishError> {
        let max_window = settings.window.max(1) as u64;
        let leadership = handle.leadership();
        if !leadership.may_publish() {
            self.cursor = None;
            if self.looked.is_none_or(|t| t.elapsed() >= STANDBY_LOOK) {
                self.looked = Some(Instant::now());
                self.sync(sink, outbox, handle, settings.timeout).await?;
            }
            return Ok(0);
        }
        let mut published = 0;
        loop {
            let cursor = match self.cursor {
                Some(c) => c,
                None => self.sync(sink, outbox, handle, settings.timeout).await?,
            };
            let recorded = tokio::task::block_in_place(|| outbox.recorded())?;
            if cursor.next >= recorded {
                self.cursor = Some(cursor);
                handle
                    .health()
                    .set_backlog(outbox.backlog(), Instant::now());
                return Ok(published);
            }
            // Checked before every window: a grant that expired while this process was
            // paused stops it here; the stream's chain stops a window already on its way.
            if !leadership.may_publish() {
                self.cursor = None;
                return Ok(published);
            }
            let window = self.window.unwrap_or(max_window).clamp(1, max_window);
            let count = window.min(recorded - cursor.next);
            let entries = outbox_entries(outbox, handle, cursor.next, count)?;
            match publish_window(sink, entries, cursor.last_sequence, settings.timeout).await {
                Ok(last_sequence) => {
                    let next = cursor.next + count;
                    self.cursor = Some(Cursor {
                        next,
                        last_sequence,
                    });
                    self.windows += 1;
                    self.window = Some((window * 2).min(max_window));
                    published += count as usize;
                    tokio::task::block_in_place(|| outbox.acknowledge_below(next))?;
                    let mut health = handle.health();
                    health.outbox_moved(Instant::now());
                    health.set_backlog(outbox.backlog(), Instant::now());
                }
                Err(e) => {
                    self.cursor = None;
                    self.window = Some((window / 2).max(1));
                    return Err(e);
                }
            }
        }
    }

    /// Reads where the stream ends, drops from the outbox what it holds, and returns
    /// where publishing resumes:
    /// - a stream that never held a message: at the fold's first payout;
    /// - a last message with a payout number: right after it (whoever published it —
    ///   another replica, or this one before a crash); if the stream ends before what
    ///   this outbox took for published (a stream restored from an older state), the
    ///   difference is published again, with a warning;
    /// - a last message without a number (written by a version before numbers): after
    ///   it if its id is one of the outbox's payouts, else at the outbox's oldest;
    /// - a stream whose messages are all gone (purged, expired): at the outbox's oldest.
    async fn sync(
        &mut self,
        sink: &impl PayoutSink,
        outbox: &Outbox,
        handle: &Handle,
        timeout: Duration,
    ) -> Result<Cursor, PublishError> {
        let tail = match tokio::time::timeout(timeout, sink.tail()).await {
            Ok(Ok(tail)) => tail,
            Ok(Err(e)) => return Err(PublishError::Tail(e)),
            Err(_) => return Err(PublishError::TailTimedOut(timeout)),
        };
        self.resyncs += 1;
        let (recorded, oldest) = tokio::task::block_in_place(|| {
            let recorded = outbox.recorded()?;
            let oldest = outbox.next_range()?.map_or(recorded, |r| r.first);
            Ok::<_, PublishError>((recorded, oldest))
        })?;
        let next = if tail.last_sequence == 0 {
            0
        } else if let Some(n) = tail.number {
            n + 1
        } else if let Some(id) = &tail.payout_id {
            locate(handle, id, oldest, recorded)?.map_or(oldest, |n| n + 1)
        } else {
            oldest
        };
        if next < oldest && handle.leadership().may_publish() {
            warn!(
                stream_ends_at = next,
                outbox_from = oldest,
                "the payout stream ends before what this replica took for published: publishing the difference again"
            );
        }
        tokio::task::block_in_place(|| outbox.acknowledge_below(next))?;
        handle
            .health()
            .set_backlog(outbox.backlog(), Instant::now());
        Ok(Cursor {
            next,
            last_sequence: tail.last_sequence,
        })
    }
}

/// The number of the payout `id` among the fold's payouts `from .. to`, read from the
/// archive (bounded by the outbox's backlog).
fn locate(handle: &Handle, id: &str, from: u64, to: u64) -> Result<Option<u64>, PublishError> {
    let Ok(id) = uuid::Uuid::parse_str(id) else {
        return Ok(None);
    };
    let archive = handle.archive();
    let mut at = from;
    while at < to {
        let until = to.min(at + ENCODE_SLICE);
        let payouts = archive.payouts(at, until).map_err(PublishError::Archive)?;
        if let Some(i) = payouts.iter().position(|p| p.payout_id == id) {
            return Ok(Some(at + i as u64));
        }
        if payouts.is_empty() {
            break;
        }
        at += payouts.len() as u64;
    }
    Ok(None)
}

/// The publisher task: drains the outbox whenever the projector wakes it, and every
/// [`TICK`] regardless (sooner after a failure), until `stop` turns true; reports its
/// faults in the health.
pub(crate) async fn run(
    sink: impl PayoutSink,
    outbox: Outbox,
    handle: Handle,
    settings: PublishSettings,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_error: Option<String> = None;
    let mut state = Publisher::default();
    // After a failure the next try comes soon (a chain broken by a moment's contention),
    // then less and less often, up to the regular tick.
    let mut retry = RETRY_FIRST;
    loop {
        let wait = match state.drain(&sink, &outbox, &handle, settings).await {
            Ok(_) => {
                last_error = None;
                retry = RETRY_FIRST;
                handle.health().clear_fault(FaultSource::Publish);
                TICK
            }
            Err(e) => {
                let message = crate::error_chain(&e);
                if last_error.as_ref() != Some(&message) {
                    warn!("payout publishing paused: {message}");
                }
                handle
                    .health()
                    .set_fault(FaultSource::Publish, message.clone());
                last_error = Some(message);
                let wait = retry;
                retry = (retry * 2).min(TICK);
                wait
            }
        };
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    info!(
        windows = state.windows,
        stream_end_reads = state.resyncs,
        "payout windows published"
    );
}

/// Publishes one window of payouts right after the stream's sequence `last_sequence`
/// and returns the stream's new last sequence.
///
/// The first payout names `last_sequence` as the stream's last, each later one the
/// payout before it; only the last one awaits the stream's acknowledgement. If it was
/// stored (not a duplicate), the stream ended with its predecessor, which was stored
/// the same way, back to the first: the whole window, in order. Anything else — a lost
/// message, a payout the stream already held, another writer, no answer in time — is
/// an error, and the caller reads the stream's end again (DECISIONS 53). (Ids, not
/// sequences, chain the window: a foreign message that took one payout's place would
/// put the sequences back in step for the next.)
pub(crate) async fn publish_window(
    sink: &impl PayoutSink,
    entries: Vec<OutboxEntry>,
    last_sequence: u64,
    timeout: Duration,
) -> Result<u64, PublishError> {
    let Some((last, rest)) = entries.split_last() else {
        return Ok(last_sequence);
    };
    let mut expect = Expect::LastSequence(last_sequence);
    for (i, payout) in rest.iter().enumerate() {
        debug_assert_eq!(
            payout.number + 1,
            entries[i + 1].number,
            "a window in order"
        );
        let id = &payout.payout_id;
        deadline(timeout, id, send_failed, sink.send(payout, expect)).await?;
        expect = Expect::LastId(id);
    }
    let id = &last.payout_id;
    let ack = deadline(timeout, id, send_failed, sink.send_acked(last, expect)).await?;
    let stored = deadline(timeout, id, not_acknowledged, ack).await?;
    if stored.duplicate {
        return Err(PublishError::Moved {
            payout_id: id.clone(),
            sequence: stored.sequence,
        });
    }
    Ok(stored.sequence)
}

/// Payouts read from the archive at a time.
const ENCODE_SLICE: u64 = 256;

/// The messages of the fold's payouts `first .. first + count`, read from the history
/// archive (no lock of the projection is held: archived payouts never change).
fn outbox_entries(
    outbox: &Outbox,
    handle: &Handle,
    first: u64,
    count: u64,
) -> Result<Vec<OutboxEntry>, PublishError> {
    let mut entries = Vec::with_capacity(count as usize);
    let archive = handle.archive();
    while (entries.len() as u64) < count {
        let from = first + entries.len() as u64;
        let to = (first + count).min(from + ENCODE_SLICE);
        let payouts = archive.payouts(from, to).map_err(PublishError::Archive)?;
        if payouts.len() as u64 != to - from {
            return Err(PublishError::AheadOfFold {
                from,
                to: first + count,
                issued: from + payouts.len() as u64,
            });
        }
        for (i, payout) in payouts.iter().enumerate() {
            entries.push(outbox.entry(payout, from + i as u64)?);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
