//! `ledger-service`: the incentive ledger's live side, independent of any transport.
//!
//! [`Service::open`] opens the data directory and rebuilds the projection (from the
//! checkpoint when there is a valid one); it returns the service and a [`Handle`] — the
//! projection behind typed queries, which the HTTP API and the status responder read.
//! [`Service::run`] then drives two stages, pipelined, until shutdown:
//!
//! - [`ingest`]: batch from the transport → group commit (one flush) → ack → hand over;
//! - [`projector`]: fold in arrival order → record payouts in the [`outbox`] → wake the
//!   [`publisher`] → announce refusals → checkpoint now and then;
//!
//! and the publisher beside them, which drains the outbox to a [`PayoutSink`]. The
//! transport is three traits — [`Inbound`], [`PayoutSink`], [`Notices`] — that
//! `ledger-nats` implements on JetStream; this crate knows nothing of NATS, HTTP or
//! sled.

mod digest;
pub mod handle;
pub mod health;
pub mod histogram;
pub mod ingest;
pub mod leadership;
pub mod outbox;
pub mod planning;
mod projection;
pub mod projector;
pub mod publisher;

pub use handle::{
    EntryStatement, Handle, HistoricError, LeaderboardRow, Metrics, Page, PayoutFilter, Status,
};
pub use ingest::{Delivery, Inbound};
pub use leadership::{Leadership, Replication, Role};
pub use ledger_log::layout::Head as LogHead;
pub use ledger_log::{error_chain, write_durably, Bound, CheckpointStatus, LogError, Transport};
pub use outbox::{Outbox, OutboxEntry};
pub use planning::HeavyError;
pub use publisher::{Expect, InStream, PayoutSink, PublishError, StreamTail};

use ledger_core::replay::Rejection;
use ledger_log::{history, Log};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Longest wait at shutdown for the publisher to finish what it is sending.
const SHUTDOWN_PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// What the service needs to know; the transport's settings are the transport's.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Data directory of the durable log.
    pub data_dir: PathBuf,
    /// Log positions folded between checkpoints (one is also written on shutdown).
    pub checkpoint_every: u64,
    /// Payouts are published on `<payout_subject_prefix>.<kind>`.
    pub payout_subject_prefix: String,
    /// The `source` of the `payout.issued` events.
    pub payout_source: String,
    /// Payouts in flight (published, not yet acknowledged) at most.
    pub publish_window: usize,
    /// Longest wait for any one payout send or acknowledgement.
    pub publish_timeout: Duration,
    /// A payout backlog that has not moved for this long is a fault.
    pub outbox_stall_after: Duration,
    /// Lookups (sale records, used ids, identities) the fold keeps in memory before it
    /// writes them to the data directory's lookup store as one run.
    pub lookups_in_memory: usize,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            data_dir: PathBuf::from("data"),
            checkpoint_every: 100_000,
            payout_subject_prefix: "incentive.payouts".into(),
            payout_source: ledger_core::document::PAYOUT_SOURCE.into(),
            publish_window: 512,
            publish_timeout: Duration::from_secs(10),
            outbox_stall_after: Duration::from_secs(60),
            lookups_in_memory: history::LOOKUPS_IN_MEMORY,
        }
    }
}

/// A transport's failure, with its own error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(Box<dyn std::error::Error + Send + Sync>);

impl TransportError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> TransportError {
        TransportError(Box::new(e))
    }

    pub fn message(m: impl Into<String>) -> TransportError {
        TransportError(m.into().into())
    }
}

/// Why the service stopped; each says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the payout outbox cannot be written")]
    Outbox(#[source] LogError),
    #[error("the transport failed")]
    Transport(#[source] TransportError),
    #[error("the projector stopped")]
    Projector(#[source] tokio::task::JoinError),
}

/// Where refusals are announced (the `incentive.rejected` notices); best effort — the
/// refusals are in the log either way.
pub trait Notices: Send + Sync + 'static {
    fn announce(&self, refused: Vec<Rejection>) -> impl Future<Output = ()> + Send;
}

/// The service over an open data directory.
pub struct Service {
    config: ServiceConfig,
    log: Log,
    outbox: Outbox,
    handle: Handle,
}

impl Service {
    /// Opens the data directory and rebuilds the projection, with the journals
    /// statements explain (from the checkpoint when there is a valid one). Blocking:
    /// call it from a blocking thread or `block_in_place`.
    pub fn open(config: ServiceConfig) -> Result<(Service, Handle), ServiceError> {
        let log = Log::open(&config.data_dir)?;
        let outbox = Outbox::new(
            log.outbox()?,
            &config.payout_subject_prefix,
            &config.payout_source,
        )
        .map_err(ServiceError::Outbox)?;
        let (rebuilt, stores) =
            history::rebuild_archived(&log, config.lookups_in_memory.max(1), &mut |_| {})?;
        let archive = stores
            .archive
            .ok_or_else(|| LogError::Checkpoint("a rebuild without its archive".into()))?;
        for w in &rebuilt.warnings {
            warn!("{w}");
        }
        outbox
            .record_missing(rebuilt.replay.payouts_issued(), rebuilt.seq)
            .map_err(ServiceError::Outbox)?;
        info!(
            position = rebuilt.seq,
            resumed_from = ?rebuilt.resumed_from,
            payouts = rebuilt.replay.payouts_issued(),
            "projection rebuilt"
        );
        let projection = projection::Projection::new(
            rebuilt.replay,
            rebuilt.seq,
            rebuilt.arrival,
            rebuilt.resumed_from.unwrap_or(0),
            archive,
            stores.lookups,
        )?;
        let handle = Handle::new(projection, Some(log.reader()), config.outbox_stall_after);
        handle
            .health()
            .set_backlog(outbox.backlog(), std::time::Instant::now());
        let service = Service {
            config,
            log,
            outbox,
            handle: handle.clone(),
        };
        Ok((service, handle))
    }

    /// Writes a checkpoint of the projection as it stands and loads the log's identity
    /// index, as a running service has both: for measuring what an opened service
    /// holds (`bench-memory --service`) without a transport.
    #[doc(hidden)]
    /// `stage` is called after each step.
    pub fn settle_for_measurement(
        &mut self,
        stage: &mut dyn FnMut(&'static str),
    ) -> Result<(), ServiceError> {
        let p = self.handle.read();
        let (seq, arrival) = (p.seq, p.arrival);
        history::save_checkpoint(&self.log, &p.replay, seq, arrival, &p.stores())?;
        drop(p);
        stage("checkpoint");
        self.log.ensure_index()?;
        stage("identity_index");
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    /// The upstream position (stream sequence) of the last message in the log: the
    /// transport resumes after it, so that the log keeps the stream's order.
    pub fn resume_after(&self) -> u64 {
        self.log.head().source_position
    }

    /// The source's stream ends before the log's source position (it was recreated or
    /// purged): consuming resumes after `position` (the position before its first
    /// message), and events the log holds already are recognised by their identity
    /// when they come again.
    pub fn rebase_source(&mut self, position: u64) -> Result<(), ServiceError> {
        let before = self.log.head().source_position;
        tokio::task::block_in_place(|| self.log.rebase_source(position))?;
        tracing::warn!(
            log_source_position = before,
            stream_first = position + 1,
            "the inbound stream ends before what the log has consumed: it was recreated or purged; consuming it from its first message, events the log holds already are recognised as duplicates"
        );
        Ok(())
    }

    /// Runs until `shutdown` resolves, then finishes the outbox, writes a checkpoint and
    /// returns the final status.
    pub async fn run(
        mut self,
        inbound: impl Inbound,
        sink: impl PayoutSink,
        notices: impl Notices,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Status, ServiceError> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let (stop_publisher, publisher_stop) = tokio::sync::watch::channel(false);
        let publisher = tokio::spawn(publisher::run(
            sink,
            self.outbox.clone(),
            self.handle.clone(),
            publisher::PublishSettings {
                window: self.config.publish_window,
                timeout: self.config.publish_timeout,
            },
            wake.clone(),
            publisher_stop,
        ));
        // One batch folding and one waiting: enough to overlap the stages, and the
        // ingest loop waits when the fold falls behind.
        let (jobs, jobs_rx) = tokio::sync::mpsc::channel(1);
        let projector = tokio::spawn(
            projector::Projector {
                handle: self.handle.clone(),
                outbox: self.outbox.clone(),
                log: self.log.reader(),
                wake,
                notices,
                checkpoint_every: self.config.checkpoint_every.max(1),
                lookups_in_memory: self.config.lookups_in_memory.max(1),
                last_checkpoint: self.handle.read().checkpoint_seq,
                checkpoints: projector::Checkpoints::default(),
                fold_time: Duration::ZERO,
            }
            .run(jobs_rx),
        );
        let mut ingest = ingest::Ingest::new(
            inbound,
            &mut self.log,
            self.handle.clone(),
            self.outbox.clone(),
            jobs,
        );
        let ingested = ingest.run(shutdown).await;
        let timing = std::mem::take(&mut ingest.timing);
        drop(ingest); // hangs up on the projector
        let projected = projector.await.map_err(ServiceError::Projector)?;
        info!(
            batches = timing.batches,
            messages = timing.messages,
            wait_ms = timing.fetch.as_millis() as u64,
            append_ms = timing.append.as_millis() as u64,
            ack_ms = timing.ack.as_millis() as u64,
            fold_ms = projected.as_ref().map_or(0, |d| d.as_millis() as u64),
            "time spent per stage (the fold overlaps the others)"
        );
        let _ = stop_publisher.send(true);
        projected?;
        ingested?;
        info!("shutting down: finishing the outbox and writing a checkpoint");
        // The publisher finishes what it is sending, unless the transport does not
        // answer: then it is stopped, and its ranges wait in the outbox for the next start.
        let mut publisher = publisher;
        let wait = self.config.publish_timeout.min(SHUTDOWN_PUBLISH_WAIT);
        if tokio::time::timeout(wait, &mut publisher).await.is_err() {
            warn!(
                "the payout transport did not answer within {wait:?} of shutdown; stopping the publisher"
            );
            publisher.abort();
        }
        if self.outbox.backlog() > 0 {
            warn!("payouts left in the outbox for the next start");
        }
        projector::checkpoint_now(&self.log, &self.handle)?;
        self.log.flush()?;
        let handle = self.handle.clone();
        let mut status = tokio::task::block_in_place(|| handle.status_exact());
        status.outbox_backlog = self.outbox.backlog();
        info!(position = status.position, digest = ?status.digest, "stopped");
        Ok(status)
    }
}
