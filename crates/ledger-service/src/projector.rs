//! The fold stage: folds each committed batch into the projection in arrival order,
//! records its payouts in the outbox, wakes the publisher, hands its refusals to the
//! transport's notices, and takes checkpoints (encoded under a read of the projection,
//! stored on a blocking thread, at most ~5% of the time).

use crate::handle::Handle;
use crate::health::FaultSource;
use crate::outbox::Outbox;
use crate::{Notices, ServiceError};
use ledger_core::replay::Rejection;
use ledger_core::store::StoreError;
use ledger_log::{history, LogError, LogReader, Outcome};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long history held in memory waits before it is written again when no batch
/// comes.
const ARCHIVE_RETRY: Duration = Duration::from_millis(500);

/// Events folded per hold of the projection's write lock, so that queries wait for at
/// most a slice's fold, not a whole batch's.
const FOLD_SLICE: usize = 64;

/// Work for the projector, in log order; the first two are what a committed batch came
/// to.
pub(crate) enum FoldJob {
    /// Appended now, with what intake made of each input, and the upstream position of
    /// its last message.
    Outcomes(Vec<Outcome>, Option<u64>),
    /// Found durable in the log after a re-open (the fault came after the flush): fold
    /// it from there; the upstream position the log then held.
    Landed(u64),
    /// Answered once everything sent before it is folded and recorded.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

pub(crate) struct Projector<N> {
    pub(crate) handle: Handle,
    pub(crate) outbox: Outbox,
    /// A reader of the log (it follows re-opens): `Landed` batches and checkpoints.
    pub(crate) log: LogReader,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) notices: N,
    pub(crate) checkpoint_every: u64,
    pub(crate) lookups_in_memory: usize,
    pub(crate) last_checkpoint: u64,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) fold_time: Duration,
}

impl<N: Notices> Projector<N> {
    /// Runs until the ingest loop hangs up; returns the time spent folding. Stops at the
    /// first outbox write failure (the service then stops with it).
    pub(crate) async fn run(
        mut self,
        mut jobs: tokio::sync::mpsc::Receiver<FoldJob>,
    ) -> Result<Duration, ServiceError> {
        loop {
            // History held in memory (the archive failed) is written again after a
            // pause even when no batch comes.
            let held = !self.handle.read().archived();
            let job = if held {
                match tokio::time::timeout(ARCHIVE_RETRY, jobs.recv()).await {
                    Ok(job) => job,
                    Err(_) => Some(FoldJob::Outcomes(Vec::new(), None)),
                }
            } else {
                jobs.recv().await
            };
            let Some(job) = job else {
                break;
            };
            let t = Instant::now();
            let (outcomes, source) = match job {
                FoldJob::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
                FoldJob::Outcomes(o, source) => (Some(o), source),
                FoldJob::Landed(source) => (None, Some(source)),
            };
            let refused = tokio::task::block_in_place(|| self.fold(outcomes))?;
            if let Some(p) = source {
                self.handle.source_folded(p);
            }
            self.wake.notify_one();
            self.fold_time += t.elapsed();
            if !refused.is_empty() {
                self.notices.announce(refused).await;
            }
            self.flush_lookups();
            // Checkpoint every N positions — stored on another thread, and at most ~5%
            // of the time: a checkpoint's cost grows with the state.
            self.checkpoints.collect_finished(&self.handle);
            if self.handle.read().seq >= self.last_checkpoint + self.checkpoint_every {
                if let Some(seq) = self.checkpoints.start(&self.log, &self.handle) {
                    self.last_checkpoint = seq;
                }
            }
        }
        self.checkpoints.finish(&self.handle).await;
        Ok(self.fold_time)
    }

    /// Moves the fold's recent lookups to its lookup store once there are
    /// `lookups_in_memory` of them: taken under the write lock, written
    /// without it (queries read them where they are meanwhile). A write that fails
    /// leaves them in memory for the next try, and reports the fault.
    fn flush_lookups(&self) {
        let (flush, store) = {
            let mut p = self.handle.write();
            let Some(store) = p.lookups.clone() else {
                return;
            };
            if p.replay.lookups_in_memory() < self.lookups_in_memory {
                return;
            }
            (p.replay.take_recent(), store)
        };
        let written = tokio::task::block_in_place(|| store.write(&flush));
        drop(flush);
        let mut p = self.handle.write();
        match written {
            Ok(()) => p.replay.flushed(),
            Err(e) => {
                p.replay.unflush();
                drop(p);
                self.store_fault(
                    "the lookup store cannot be written (held in memory, retried after the next batch)",
                    &e,
                );
            }
        }
    }

    /// Reports that a store of derived data (the archive, the lookups) cannot be
    /// written: in the log, and as the `history` fault until a write succeeds.
    fn store_fault(&self, what: &str, e: &(dyn std::error::Error + 'static)) {
        let message = format!("{what}: {}", crate::error_chain(e));
        warn!("{message}");
        self.handle
            .health()
            .set_fault(FaultSource::History, message);
    }

    /// Folds a batch (`None`: what the log holds beyond the projection), in arrival
    /// order, moves the history it made to the archive, and records its payouts;
    /// returns its refusals.
    fn fold(&mut self, outcomes: Option<Vec<Outcome>>) -> Result<Vec<Rejection>, ServiceError> {
        let payouts_before = self.handle.read().replay.payouts_issued();
        let mut refused = Vec::new();
        // Each slice's history goes to the archive; a failure holds it in memory, and
        // is reported below if the last try fails too.
        let archive = |p: &mut crate::projection::Projection, refused: &mut Vec<Rejection>| {
            let _ = p.archive_new(refused);
        };
        match outcomes {
            None => {
                let mut p = self.handle.write();
                let (seq, arrival) = (p.seq, p.arrival);
                (p.seq, p.arrival) = history::fold_new(&self.log, &mut p.replay, seq, arrival)?;
                archive(&mut p, &mut refused);
                self.handle.advanced(&p);
            }
            Some(outcomes) => {
                let mut outcomes = outcomes.into_iter().peekable();
                while outcomes.peek().is_some() {
                    let mut p = self.handle.write();
                    for o in outcomes.by_ref().take(FOLD_SLICE) {
                        apply(&mut p, o).map_err(|e| ServiceError::Log(LogError::Lookups(e)))?;
                    }
                    archive(&mut p, &mut refused);
                    self.handle.advanced(&p);
                }
            }
        }
        let (issued, position, written) = {
            let mut p = self.handle.write();
            // Writes what a failed slice held (nothing, if every slice's write went).
            let written = p.archive_new(&mut refused);
            (p.replay.payouts_issued() - payouts_before, p.seq, written)
        };
        // The history is held in memory and written at the next step; the fault shows
        // on /health/ready until then.
        match written {
            Err(e) => self.store_fault(
                "the history archive cannot be written (held in memory, retried at the next step)",
                &e,
            ),
            Ok(()) => self.handle.health().clear_fault(FaultSource::History),
        }
        self.outbox
            .record(payouts_before, issued, position)
            .map_err(ServiceError::Outbox)?;
        self.handle
            .health()
            .set_backlog(self.outbox.backlog(), Instant::now());
        Ok(refused)
    }
}

/// Folds one outcome of a committed batch; a lookup store that cannot be read fails it
/// before it changes anything.
fn apply(p: &mut crate::projection::Projection, o: Outcome) -> Result<(), StoreError> {
    match o {
        Outcome::Appended {
            seq,
            arrival,
            event,
        } => {
            assert!(
                seq > p.seq,
                "log positions fold in order: {seq} after {}",
                p.seq
            );
            p.replay.try_apply_logged(&event, arrival)?;
            p.seq = seq;
            p.arrival = arrival;
        }
        Outcome::Duplicate {
            arrival,
            event_type,
            ..
        } => {
            p.replay.record_duplicate(Some(event_type));
            p.arrival = arrival;
        }
        Outcome::Quarantined {
            arrival,
            code,
            message,
            identity,
            event_type,
        } => {
            p.replay.record_quarantined(
                ledger_core::IntakeRefusal {
                    code,
                    message,
                    identity,
                    event_type,
                },
                arrival,
            );
            p.arrival = arrival;
        }
    }
    Ok(())
}

/// What storing a checkpoint came to: the position, the time it took, the outcome.
type Stored = (u64, Duration, Result<(), ledger_log::LogError>);

/// A checkpoint waits at least this many times as long as the previous one took: at
/// most ~5% of the time goes to checkpoints (DECISIONS 21e). A restart then replays at
/// most what arrived in that time — at 50,000 events/s and a 1 s checkpoint, about 1M
/// positions, ~3 s of replay.
const CHECKPOINT_SPACING: u32 = 19;

/// Checkpoints taken while the service runs: the projector encodes the state under a
/// read lock of the projection, then it is checksummed and stored on a blocking thread
/// while ingest goes on. A failed checkpoint is logged and skipped (the log is the
/// truth; the next one may succeed).
#[derive(Default)]
pub(crate) struct Checkpoints {
    running: Option<tokio::task::JoinHandle<Stored>>,
    /// When the last one ended and how long it took, all told.
    last: Option<(Instant, Duration)>,
}

impl Checkpoints {
    /// Starts one unless one is still being stored (or stored and not yet collected,
    /// [`Self::collect_finished`]) or the last one ended too recently
    /// (less than `CHECKPOINT_SPACING` times its duration ago). Returns the position it
    /// covers.
    fn start(&mut self, log: &LogReader, handle: &Handle) -> Option<u64> {
        if self.running.is_some() {
            return None;
        }
        if let Some((ended, took)) = self.last {
            if ended.elapsed() < took * CHECKPOINT_SPACING {
                return None;
            }
        }
        let started = Instant::now();
        let pending = {
            // Encoding only reads: queries go on meanwhile (the fold waits, it is the
            // projector that encodes).
            let p = handle.read();
            // The archive must reach the checkpoint: a restart resumes from it.
            if !p.archived() {
                return None;
            }
            tokio::task::block_in_place(|| {
                history::prepare_checkpoint(log, &p.replay, p.seq, p.arrival, &p.stores())
            })
        };
        let pending = match pending {
            Ok(Some(pending)) => pending,
            Ok(None) => return None,
            Err(e) => {
                warn!("checkpoint not taken: {}", crate::error_chain(&e));
                return None;
            }
        };
        let seq = pending.seq;
        let reader = log.clone();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let result = pending.write(&reader);
            (seq, started.elapsed(), result)
        }));
        Some(seq)
    }

    /// Takes the outcome of a checkpoint that has finished storing, so that the status
    /// names it as soon as it is written (it used to wait for the next one to start,
    /// `checkpoint_every` positions later — the soak showed the status a checkpoint
    /// behind the disk).
    fn collect_finished(&mut self, handle: &Handle) {
        if self.running.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(task) = self.running.take() {
                self.collect(futures::FutureExt::now_or_never(task), handle);
            }
        }
    }

    fn collect(&mut self, done: Option<Result<Stored, tokio::task::JoinError>>, handle: &Handle) {
        match done {
            Some(Ok((seq, took, Ok(())))) => {
                self.last = Some((Instant::now(), took));
                let mut p = handle.write();
                p.checkpoint_seq = p.checkpoint_seq.max(seq);
                handle.advanced(&p);
                info!(
                    position = seq,
                    took_ms = took.as_millis() as u64,
                    "checkpoint written"
                );
            }
            Some(Ok((seq, took, Err(e)))) => {
                self.last = Some((Instant::now(), took));
                warn!(
                    "checkpoint at {seq} not written: {}",
                    crate::error_chain(&e)
                );
            }
            Some(Err(e)) => warn!("checkpoint task failed: {e}"),
            None => {}
        }
    }

    /// Waits for a checkpoint still being stored.
    async fn finish(&mut self, handle: &Handle) {
        if let Some(task) = self.running.take() {
            self.collect(Some(task.await), handle);
        }
    }
}

/// Writes a checkpoint of the projection as it stands (at shutdown).
pub(crate) fn checkpoint_now(log: &LogReader, handle: &Handle) -> Result<(), ServiceError> {
    let seq = {
        let p = handle.read();
        if !p.archived() {
            warn!("no checkpoint at shutdown: the history archive could not be written up to the position");
            return Ok(());
        }
        let (seq, arrival) = (p.seq, p.arrival);
        tokio::task::block_in_place(|| {
            history::save_checkpoint(log, &p.replay, seq, arrival, &p.stores())
        })?;
        seq
    };
    let mut p = handle.write();
    p.checkpoint_seq = seq;
    handle.advanced(&p);
    Ok(())
}
