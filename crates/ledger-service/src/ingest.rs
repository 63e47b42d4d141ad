//! The ingest loop: takes a batch from the transport → group-commits it to the log (one
//! flush; on a storage fault: hold, re-open, retry) → acknowledges every message → hands
//! the batch to the projector, which folds it while the next batch is taken and
//! committed. Nothing is acknowledged before its batch is durable.
//!
//! The transport is behind [`Inbound`] and [`Delivery`] (JetStream in `ledger-nats`, a
//! simulated source in tests); this loop knows nothing of NATS.

use crate::handle::Handle;
use crate::health::FaultSource;
use crate::outbox::Outbox;
use crate::projector::FoldJob;
use crate::{ServiceError, TransportError};
use ledger_log::{Input, Log, Transport};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

/// Where inbound events come from.
pub trait Inbound: Send {
    type Message: Delivery;

    /// The next batch: waits a short while for a first message, then takes what else
    /// arrives (group commit). Empty when nothing arrived within the wait. An error is
    /// one the transport could not recover from.
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Vec<Self::Message>, TransportError>> + Send;

    /// Messages the source holds that it has not yet delivered (the consumer's lag),
    /// asked of the source now; `None` if it cannot tell.
    fn pending(&mut self) -> impl Future<Output = Option<u64>> + Send;

    /// Delivers again from the position after `after`: a message was skipped (lost on a
    /// connection that broke), and the log must keep the source's order. The messages
    /// delivered and not acknowledged are dropped. A source that cannot rewind does
    /// nothing (the loop then takes the gap as one the source really has).
    fn rewind(&mut self, after: u64) -> impl Future<Output = Result<(), TransportError>> + Send {
        let _ = after;
        async { Ok(()) }
    }
}

/// One inbound message and what the loop can answer about it.
pub trait Delivery: Send + Sync {
    fn payload(&self) -> &[u8];
    /// What the transport knows of it that its payload does not say.
    fn transport(&self) -> Transport<'_> {
        Transport::None
    }
    /// Its position in the source (the JetStream stream sequence), if known.
    fn position(&self) -> Option<u64>;
    /// It is durable in the log: the source may forget it.
    fn ack(&self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Still being worked on (the batch is held while the log cannot be written): the
    /// source must not redeliver it yet.
    fn in_progress(&self) -> impl Future<Output = ()> + Send;
    /// Not taken (shutting down with it uncommitted): whoever consumes next gets it.
    fn nak(&self) -> impl Future<Output = ()> + Send;
}

/// Where the loop spends its time (logged at shutdown).
#[derive(Default)]
pub(crate) struct StageTiming {
    pub(crate) batches: u64,
    pub(crate) messages: u64,
    pub(crate) fetch: Duration,
    pub(crate) append: Duration,
    pub(crate) ack: Duration,
}

/// How often the consumer's lag is asked for while messages keep coming.
const LAG_REFRESH: Duration = Duration::from_secs(1);

/// The ingest stage: owns the log.
pub(crate) struct Ingest<'a, I: Inbound> {
    pub(crate) inbound: I,
    pub(crate) log: &'a mut Log,
    pub(crate) handle: Handle,
    pub(crate) outbox: Outbox,
    pub(crate) jobs: tokio::sync::mpsc::Sender<FoldJob>,
    pub(crate) timing: StageTiming,
    backoff: Duration,
    last_lag: Option<Instant>,
    /// The position the source was last rewound to, when the batch after it has not
    /// yet shown whether the gap is real.
    rewound_to: Option<u64>,
    /// A rewind to do (after this position) before the next batch: the last one failed.
    rewind_after: Option<u64>,
}

impl<'a, I: Inbound> Ingest<'a, I> {
    pub(crate) fn new(
        inbound: I,
        log: &'a mut Log,
        handle: Handle,
        outbox: Outbox,
        jobs: tokio::sync::mpsc::Sender<FoldJob>,
    ) -> Self {
        Ingest {
            inbound,
            log,
            handle,
            outbox,
            jobs,
            timing: StageTiming::default(),
            backoff: Duration::from_millis(100),
            last_lag: None,
            rewound_to: None,
            rewind_after: None,
        }
    }

    /// Runs until `shutdown` resolves or the projector stops.
    pub(crate) async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        tokio::pin!(shutdown);
        loop {
            if let Some(after) = self.rewind_after {
                match self.inbound.rewind(after).await {
                    Ok(()) => {
                        self.rewind_after = None;
                        self.rewound_to = Some(after + 1);
                    }
                    Err(e) => {
                        warn!(
                            "re-reading the source from position {} failed, retrying: {}",
                            after + 1,
                            crate::error_chain(&e)
                        );
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                        continue;
                    }
                }
            }
            let t = Instant::now();
            let messages = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                m = self.inbound.next_batch() => m.map_err(ServiceError::Transport)?,
            };
            self.timing.fetch += t.elapsed();
            let messages = self.in_order(messages).await;
            if messages.is_empty() {
                // Nothing to deliver right now: the lag the source reports is the one to
                // show (a value fetched mid-stream must not stay for ever).
                self.refresh_lag(true).await;
                continue;
            }
            let Some(job) = self.commit(&messages, &mut shutdown).await? else {
                // Shutting down with a batch that never became durable: nak it for
                // whoever consumes next (the next start resumes after the log's end).
                for m in &messages {
                    m.nak().await;
                }
                return Ok(());
            };
            let t = Instant::now();
            for m in &messages {
                if let Err(e) = m.ack().await {
                    warn!(
                        "ack failed (the message will be redelivered and deduplicated): {}",
                        crate::error_chain(&e)
                    );
                }
            }
            self.timing.ack += t.elapsed();
            // Fold on the projector while the next batch is taken and committed.
            if self.jobs.send(job).await.is_err() {
                return Ok(()); // the projector stopped on an error, returned by the caller
            }
            self.refresh_lag(false).await;
        }
    }

    /// Keeps the log in the source's order (DECISIONS 54). A message at or before the
    /// log's last source position is, normally, in the log already (redelivered after
    /// its acknowledgement was lost, e.g. across a NATS leader change): acknowledged
    /// again, not appended — an exact re-send would otherwise be logged twice, and
    /// replicas would differ. A message after a gap (one was lost on a broken
    /// connection) is not taken: the source is rewound to the gap, and the batch taken
    /// again from there; a gap still there right after a rewind is the source's own
    /// (deleted or expired messages) and is passed.
    ///
    /// A message at a consumed position that the log does *not* hold means the source's
    /// positions went back while the service ran: a broker killed before it wrote its
    /// last messages to disk comes back without them and gives their sequence numbers
    /// to new messages (DECISIONS 86). It is taken, with everything after it: the log's
    /// source position is rebased to just before it (durably, so that a restart resumes
    /// there too), and later re-sends of logged events are recognised by identity.
    async fn in_order(&mut self, messages: Vec<I::Message>) -> Vec<I::Message> {
        let mut last = self.log.head().source_position;
        let mut expected = last + 1;
        let mut fresh = Vec::with_capacity(messages.len());
        let mut stale = Vec::new();
        // Messages at consumed positions the log cannot tell by their identity (refused
        // ones, conflicting re-uses of an identity): the next one it can tell decides
        // for them.
        let mut undecided: Vec<I::Message> = Vec::new();
        for m in messages {
            let Some(p) = m.position() else {
                fresh.push(m);
                continue;
            };
            if p < expected {
                if p > last {
                    stale.push(m); // delivered twice within this batch
                    continue;
                }
                match self.held(&m) {
                    Some(true) => {
                        stale.append(&mut undecided);
                        stale.push(m);
                        continue;
                    }
                    None => {
                        undecided.push(m);
                        continue;
                    }
                    Some(false) => {
                        let from = undecided.first().and_then(Delivery::position).unwrap_or(p);
                        last = from.saturating_sub(1);
                        self.rebase(last, p);
                        fresh.append(&mut undecided);
                    }
                }
            } else if p > expected && last > 0 {
                if self.rewound_to == Some(expected) {
                    warn!(
                        missing_from = expected,
                        missing_to = p - 1,
                        "the source has no messages at these positions (deleted or expired): continuing after them"
                    );
                } else {
                    warn!(
                        expected,
                        delivered = p,
                        "a message was skipped on its way: re-reading the source from the gap"
                    );
                    // Done before the next batch (and retried there if it fails);
                    // the rest of this batch is not taken.
                    self.rewind_after = Some(expected - 1);
                    break;
                }
            }
            self.rewound_to = None;
            expected = p + 1;
            fresh.push(m);
        }
        stale.append(&mut undecided);
        self.ack_stale(stale, last).await;
        fresh
    }

    /// Whether the log holds a message delivered at a consumed position (see
    /// [`Log::holds`]). A log that cannot be read here cannot tell: the message is
    /// taken for the redelivery it nearly always is (the log's own fault is reported
    /// by the next append).
    fn held(&mut self, m: &I::Message) -> Option<bool> {
        match tokio::task::block_in_place(|| self.log.holds(m.payload(), m.transport())) {
            Ok(held) => held,
            Err(e) => {
                error!(
                    "the log could not be asked whether it holds a redelivered message: {}",
                    crate::error_chain(&e)
                );
                Some(true)
            }
        }
    }

    /// Moves the log's source position back to `to`: a new message came at `p`, at or
    /// before the position the log had consumed.
    fn rebase(&mut self, to: u64, p: u64) {
        let last = self.log.head().source_position;
        if to >= last {
            return;
        }
        warn!(
            delivered = p,
            log_source_position = last,
            consuming_after = to,
            "a message the log does not hold came at a position it had consumed: the source lost messages and re-used their positions; taking it and everything after it"
        );
        if let Err(e) = tokio::task::block_in_place(|| self.log.rebase_source(to)) {
            // The message is still taken (and deduplicated by identity); only a restart
            // before the source passes `last` would resume after the re-used positions.
            error!(
                "the log's source position could not be moved back: {}",
                crate::error_chain(&e)
            );
        }
    }

    /// Acknowledges redelivered messages the log holds already.
    async fn ack_stale(&self, stale: Vec<I::Message>, last: u64) {
        if stale.is_empty() {
            return;
        }
        for m in &stale {
            if let Err(e) = m.ack().await {
                warn!(
                    "ack of a redelivered message failed: {}",
                    crate::error_chain(&e)
                );
            }
        }
        info!(
            stale = stale.len(),
            last, "redelivered messages already in the log: acknowledged, not appended"
        );
    }

    /// Asks the source for its lag: when `idle`, unless it was just asked and said 0;
    /// otherwise at most once per [`LAG_REFRESH`].
    async fn refresh_lag(&mut self, idle: bool) {
        let due = self.last_lag.is_none_or(|t| t.elapsed() >= LAG_REFRESH);
        let stale = idle && self.handle.health().consumer_pending != Some(0);
        if !(due || stale) {
            return;
        }
        self.last_lag = Some(Instant::now());
        if let Some(pending) = self.inbound.pending().await {
            self.handle.health().consumer_pending = Some(pending);
        }
    }

    /// Group-commits a batch. If the log cannot be written, holds the batch and retries
    /// it (nothing is acknowledged): letting the source redeliver it later would let
    /// newer messages overtake it. sled refuses every write after an IO error, so each
    /// retry re-opens the directory first; if the failed call had made the batch durable
    /// after all (the fault came after the flush), the re-opened log holds it and it is
    /// folded from there instead of being appended twice. `None`: shut down first.
    async fn commit(
        &mut self,
        messages: &[I::Message],
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<FoldJob>, ServiceError> {
        self.timing.batches += 1;
        self.timing.messages += messages.len() as u64;
        let t = Instant::now();
        let time_ns = now_ns();
        let inputs: Vec<Input> = messages
            .iter()
            .map(|m| Input {
                raw: m.payload(),
                line: None,
                time_ns,
                transport: m.transport(),
            })
            .collect();
        let last_position = messages.iter().filter_map(Delivery::position).max();
        let before = self.log.head();
        loop {
            let appended =
                tokio::task::block_in_place(|| self.log.append_batch_from(&inputs, last_position));
            match appended {
                Ok(outcomes) => {
                    self.backoff = Duration::from_millis(100);
                    self.handle.health().clear_fault(FaultSource::Log);
                    self.timing.append += t.elapsed();
                    self.handle.health().batch_flush.observe(t.elapsed());
                    return Ok(Some(FoldJob::Outcomes(outcomes, last_position)));
                }
                Err(e) => {
                    let message = crate::error_chain(&e);
                    error!(
                        "the log cannot be written; nothing acknowledged, retrying in {:?}: {message}",
                        self.backoff
                    );
                    self.handle.health().set_fault(FaultSource::Log, message);
                    for m in messages {
                        m.in_progress().await;
                    }
                    tokio::select! {
                        _ = shutdown.as_mut() => return Ok(None),
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                    if self.reopen().await && self.log.head().last_arrival > before.last_arrival {
                        warn!(position = self.log.head().last_seq, "the batch had become durable before the fault; folding it from the log");
                        self.handle.health().clear_all();
                        self.timing.append += t.elapsed();
                        return Ok(Some(FoldJob::Landed(self.log.head().source_position)));
                    }
                }
            }
        }
    }

    /// Lets the projector finish what it holds (so that what is recorded again is
    /// everything folded so far), then re-opens the directory and records again the
    /// outbox entries a fault may have lost. Whether the directory is open again.
    async fn reopen(&mut self) -> bool {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if self.jobs.send(FoldJob::Barrier(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        let reopened = tokio::task::block_in_place(|| self.log.reopen()).and_then(|()| {
            let p = self.handle.read();
            self.outbox.record_missing(p.replay.payouts_issued(), p.seq)
        });
        match reopened {
            Ok(()) => {
                info!("data directory re-opened");
                true
            }
            Err(e) => {
                warn!(
                    "the data directory cannot be re-opened yet: {}",
                    crate::error_chain(&e)
                );
                false
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
