//! The payout publisher: drains the outbox to a [`PayoutSink`] (JetStream in
//! production, a simulated stream in tests), range by range in order, in windows of at
//! most `publish_window` payouts encoded from the projection when they are sent; a range
//! is removed once the sink has stored all its payouts.
//!
//! Every call into the sink runs under a deadline: a send or an acknowledgement that
//! never resolves (a transport wedged without an error) is a timeout like any other, the
//! window is published again, and the outbox never stalls behind a future that waits
//! for ever. A backlog that still does not move raises the stalled-outbox alarm in
//! [`crate::health::Health`].

use crate::handle::Handle;
use crate::health::FaultSource;
use crate::outbox::{EncodeError, Outbox, OutboxEntry};
use crate::TransportError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The transport's acknowledgement of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InStream {
    pub sequence: u64,
    /// The stream already held a message with this id (`sequence` is its); this one was
    /// not stored.
    pub duplicate: bool,
}

/// Where payouts go: a stream that keeps one message per payout id and, when `after` is
/// given, stores a message only if its last message has the id `after` (JetStream's
/// `Nats-Msg-Id` and `Nats-Expected-Last-Msg-Id`).
pub trait PayoutSink: Send + Sync + 'static {
    /// Publishes without asking for the stream's acknowledgement.
    fn send(
        &self,
        payout: &OutboxEntry,
        after: Option<&str>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Publishes; the returned future resolves to the stream's acknowledgement.
    fn send_acked(
        &self,
        payout: &OutboxEntry,
        after: Option<&str>,
    ) -> impl Future<
        Output = Result<
            impl Future<Output = Result<InStream, TransportError>> + Send + 'static,
            TransportError,
        >,
    > + Send;
}

/// Why publishing stopped (the range stays in the outbox and is published again).
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

/// What the publisher knows and has done.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// The id of the stream's last message, as far as the publisher knows.
    tail: Option<String>,
    /// Windows confirmed by the acknowledgement of their last payout.
    chained: u64,
    /// Windows published with an acknowledgement per payout.
    acked: u64,
    /// How far into the oldest range the stream has stored every payout: `(its first
    /// payout, the next one to publish)`. A failure resumes there instead of at the
    /// range's start: with a fault now and then, a range of thousands of payouts
    /// published again from its start each time might never get through whole.
    resume: Option<(u64, u64)>,
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
    /// Publishes what is in the outbox. Stops at the first failure (the range stays
    /// and is published again, with the same ids; the publisher forgets the tail).
    pub(crate) async fn drain(
        &mut self,
        sink: &impl PayoutSink,
        outbox: &Outbox,
        handle: &Handle,
        settings: PublishSettings,
    ) -> Result<usize, PublishError> {
        let window = settings.window.max(1) as u64;
        let mut published = 0;
        loop {
            let range = tokio::task::block_in_place(|| outbox.next_range())?;
            let Some(range) = range else {
                handle.health().set_backlog(0, Instant::now());
                return Ok(published);
            };
            let end = range.first + range.count;
            let mut at = match self.resume {
                Some((first, at)) if first == range.first && at <= end => at,
                _ => range.first,
            };
            while at < end {
                let entries = outbox_entries(outbox, handle, at, window.min(end - at))?;
                at += entries.len() as u64;
                let (tail, chained) =
                    publish_window(sink, entries, self.tail.take(), settings.timeout).await?;
                self.tail = tail;
                if chained {
                    self.chained += 1;
                } else {
                    self.acked += 1;
                }
                self.resume = Some((range.first, at));
                handle.health().outbox_moved(Instant::now());
            }
            tokio::task::block_in_place(|| outbox.acknowledge(range.first))?;
            self.resume = None;
            handle
                .health()
                .set_backlog(outbox.backlog(), Instant::now());
            published += range.count as usize;
        }
    }
}

/// The publisher task: drains the outbox whenever the projector wakes it, and every
/// 500 ms regardless, until `stop` turns true; reports its faults in the health.
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
    loop {
        match state.drain(&sink, &outbox, &handle, settings).await {
            Ok(_) => {
                last_error = None;
                handle.health().clear_fault(FaultSource::Publish);
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
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    info!(
        confirmed_by_last_ack = state.chained,
        acked_per_payout = state.acked,
        "payout windows published"
    );
}

/// Publishes one window of payouts so that the stream stores each. Returns the id of
/// the stream's last message after it, when known, and whether the chain confirmed the
/// window (DECISIONS 26c).
///
/// With the stream's last message `tail` known, the payouts are chained: each names the
/// one before it (the first names `tail`) as the message the stream must end with
/// before it is stored. Only the last payout awaits the stream's acknowledgement. If it
/// was stored (not a duplicate), so was the one it names, and that one's predecessor,
/// back to the first: the whole window, in order. If anything broke the chain — a lost
/// message, a payout already stored (re-sent after a crash), another writer's message,
/// a server that lost track of its last id, no known tail, or no answer in time — the
/// whole window is published again without the chain, every payout awaiting its own
/// acknowledgement; the ids make the second sending harmless.
pub(crate) async fn publish_window(
    sink: &impl PayoutSink,
    entries: Vec<OutboxEntry>,
    tail: Option<String>,
    timeout: Duration,
) -> Result<(Option<String>, bool), PublishError> {
    let Some((last, rest)) = entries.split_last() else {
        return Ok((tail, false));
    };
    let last_id = &last.payout_id;
    if let Some(tail) = &tail {
        match chained(sink, rest, last, tail, timeout).await {
            Ok(InStream {
                duplicate: false, ..
            }) => return Ok((Some(last_id.clone()), true)),
            Ok(InStream { sequence, .. }) => debug!(
                payout = %last_id,
                sequence,
                "the last payout of the window was stored before: publishing the window again, each payout acknowledged"
            ),
            Err(e) => debug!(
                "the payout window's chain broke ({}): publishing it again, each payout acknowledged",
                crate::error_chain(&e)
            ),
        }
    }
    let mut acks = Vec::with_capacity(entries.len());
    for payout in &entries {
        let id = &payout.payout_id;
        let ack = deadline(timeout, id, send_failed, sink.send_acked(payout, None)).await?;
        acks.push((id, ack));
    }
    let mut last = None;
    for (id, ack) in acks {
        last = Some(deadline(timeout, id, not_acknowledged, ack).await?);
    }
    // A duplicate leaves the stream's last message unknown.
    let tail = last
        .filter(|stored| !stored.duplicate)
        .map(|_| last_id.clone());
    Ok((tail, false))
}

/// Sends `rest` chained after `tail` without replies, then `last` chained after them,
/// and waits for `last`'s acknowledgement.
async fn chained(
    sink: &impl PayoutSink,
    rest: &[OutboxEntry],
    last: &OutboxEntry,
    tail: &str,
    timeout: Duration,
) -> Result<InStream, PublishError> {
    let mut after = tail;
    for payout in rest {
        let id = &payout.payout_id;
        deadline(timeout, id, send_failed, sink.send(payout, Some(after))).await?;
        after = id;
    }
    let id = &last.payout_id;
    let ack = deadline(timeout, id, send_failed, sink.send_acked(last, Some(after))).await?;
    deadline(timeout, id, not_acknowledged, ack).await
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
        for payout in &payouts {
            entries.push(outbox.entry(payout)?);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
