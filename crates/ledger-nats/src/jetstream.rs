//! `serve`: JetStream ingest into the durable log, the live projection, payout
//! publishing through the outbox, refusal notices and the status responder.
//!
//! Two stages, pipelined: the ingest loop owns the log — fetch a batch from the durable
//! pull consumer → group-commit it (one flush) → ack every message → hand the outcomes
//! to the projector — while the projector folds the previous batch in arrival order →
//! records new payouts in the outbox → wakes the publisher → announces refusals →
//! checkpoints every N positions. The publisher publishes the outbox and drops what
//! JetStream acked. Nothing is acked before its batch is durable; if the log cannot be
//! written, the batch is held (nothing acked) and retried with a growing delay.

use crate::config::Config;
use crate::outbox::{Outbox, OutboxEntry};
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures::StreamExt;
use ledger_core::replay::Rejection;
use ledger_core::Replay;
use ledger_log::{history, Input, Log, Outcome};
use serde::Serialize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        urls: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JetStream setup failed ({what}): {message}")]
    JetStream { what: String, message: String },
    #[error(transparent)]
    Log(#[from] ledger_log::LogError),
    #[error("the payout outbox cannot be written: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("the projector stopped: {0}")]
    Projector(String),
}

/// What the status responder reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Status {
    /// Last log position folded into the projection.
    pub position: u64,
    pub arrival: u64,
    pub digest: String,
    pub events: ledger_core::document::Counts,
    pub outbox_backlog: usize,
    pub checkpoint_seq: u64,
    /// Messages the consumer has not yet delivered (consumer lag), when known.
    pub consumer_pending: Option<u64>,
    /// The last storage or publishing fault, until it clears.
    pub fault: Option<String>,
}

/// The projection shared with the status responder (and, later, the HTTP API).
pub struct Projection {
    pub replay: Replay,
    pub seq: u64,
    pub arrival: u64,
    pub checkpoint_seq: u64,
    /// What the ingest loop and the publisher report, under a lock of its own.
    pub health: Arc<Mutex<Health>>,
}

/// What the service's loops report beside the projection. It has its own lock, so
/// that reporting never waits for the fold or for a checkpoint being encoded under the
/// projection's read lock (the ingest loop had waited seconds per 1M events for it).
#[derive(Debug, Default)]
pub struct Health {
    /// The last storage or publishing fault, until it clears.
    pub fault: Option<String>,
    pub outbox_backlog: usize,
    pub consumer_pending: Option<u64>,
    /// Time of each group commit (intake, dedupe, write and flush of one batch).
    pub batch_flush: crate::histogram::Histogram,
}

impl Health {
    /// A new, healthy report to share between the projection and the loops.
    pub fn shared() -> Arc<Mutex<Health>> {
        Arc::new(Mutex::new(Health::default()))
    }

    /// Clears the fault if `source` ("log", "publish") reported it; another's stays.
    fn clear_fault(&mut self, source: &str) {
        if self.fault.as_deref().is_some_and(|f| f.starts_with(source)) {
            self.fault = None;
        }
    }
}

/// The health report for reading or writing; a panic while holding it leaves it usable.
pub fn health(h: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

impl Projection {
    pub fn status(&self) -> Status {
        let doc = self.replay.document();
        let h = health(&self.health);
        Status {
            position: self.seq,
            arrival: self.arrival,
            digest: doc.digest,
            events: doc.events,
            outbox_backlog: h.outbox_backlog,
            checkpoint_seq: self.checkpoint_seq,
            consumer_pending: h.consumer_pending,
            fault: h.fault.clone(),
        }
    }
}

/// The projection behind a read-write lock: the projector writes while it folds; the
/// status responder, the HTTP API and checkpoint encoding only read, side by side.
pub type Shared = Arc<RwLock<Projection>>;

/// The projection for writing. A panic while holding the lock leaves consistent data
/// (it is only read after).
fn lock(shared: &Shared) -> std::sync::RwLockWriteGuard<'_, Projection> {
    shared.write().unwrap_or_else(|p| p.into_inner())
}

/// The projection for reading.
fn read(shared: &Shared) -> std::sync::RwLockReadGuard<'_, Projection> {
    shared.read().unwrap_or_else(|p| p.into_inner())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Connects with the configured authentication and TLS.
pub async fn connect(config: &Config) -> Result<async_nats::Client, ServiceError> {
    let n = &config.nats;
    let mut options = async_nats::ConnectOptions::new()
        .name(&n.name)
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let (Some(user), Some(password)) = (&n.user, &n.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &n.token {
        options = options.token(token.clone());
    }
    if let Some(seed) = &n.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(path) = &n.creds_file {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| ServiceError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?;
    }
    if let Some(ca) = &n.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&n.tls_cert, &n.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if n.tls_required {
        options = options.require_tls(true);
    }
    let urls = n.urls.join(",");
    options
        .connect(urls.as_str())
        .await
        .map_err(|source| ServiceError::Connect { urls, source })
}

fn js_err(what: &str) -> impl Fn(String) -> ServiceError + '_ {
    move |message| ServiceError::JetStream {
        what: what.to_string(),
        message,
    }
}

/// The inbound stream's configuration (the same for the service and the importer).
pub fn inbound_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.inbound.stream.clone(),
        subjects: config.inbound.subjects.clone(),
        storage: stream::StorageType::File,
        num_replicas: config.inbound.replicas,
        max_bytes: config.inbound.max_bytes,
        max_age: Duration::from_secs(config.inbound.max_age_secs),
        ..Default::default()
    }
}

/// Finds the inbound stream, or creates it. Producers need only `$JS.API.STREAM.INFO`
/// on it; when two processes create it at once, the loser finds the winner's.
pub async fn ensure_inbound_stream(
    js: &jetstream::Context,
    config: &Config,
) -> Result<stream::Stream, ServiceError> {
    if let Ok(s) = js.get_stream(&config.inbound.stream).await {
        return Ok(s);
    }
    match js.get_or_create_stream(inbound_stream_config(config)).await {
        Ok(s) => Ok(s),
        Err(e) => js
            .get_stream(&config.inbound.stream)
            .await
            .map_err(|_| js_err("inbound stream")(e.to_string())),
    }
}

/// Makes sure the inbound and payout streams exist, and (re)creates the durable pull
/// consumer so that it delivers from the stream sequence after `resume_after` — the last
/// one the log holds. Re-creating it at every start, rather than relying on redelivery of
/// unacknowledged messages, keeps the log in the stream's order after a crash: arrival
/// order decides the fold.
pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &Config,
    resume_after: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ServiceError> {
    let inbound = ensure_inbound_stream(js, config).await?;
    js.get_or_create_stream(stream::Config {
        name: config.payouts.stream.clone(),
        subjects: vec![format!("{}.>", config.payouts.subject_prefix)],
        storage: stream::StorageType::File,
        num_replicas: config.payouts.replicas,
        duplicate_window: Duration::from_secs(config.payouts.duplicate_window_secs),
        ..Default::default()
    })
    .await
    .map_err(|e| js_err("payout stream")(e.to_string()))?;
    // Not found is fine: first start.
    let _ = inbound.delete_consumer(&config.inbound.consumer).await;
    let deliver_policy = if resume_after == 0 {
        jetstream::consumer::DeliverPolicy::All
    } else {
        jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: resume_after + 1,
        }
    };
    inbound
        .create_consumer(pull::Config {
            durable_name: Some(config.inbound.consumer.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(config.inbound.ack_wait_secs),
            max_ack_pending: config.inbound.max_ack_pending,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("durable consumer")(e.to_string()))
}

/// A refusal notice on the rejected subject (a CloudEvent). Members are written in key
/// order at both levels — the bytes `serde_json::Value` would print — straight from the
/// rejection, without building a `Value` (the service sends one per refusal).
fn rejection_notice(r: &Rejection) -> Vec<u8> {
    /// The row of `Rejection::to_json` plus the arrival number, keys in order.
    #[derive(Serialize)]
    struct Data<'a> {
        /// For messages the line is the arrival number (SPEC §7).
        arrival: u64,
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        line: u64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a str>,
        stage: &'a str,
    }
    #[derive(Serialize)]
    struct Notice<'a> {
        data: Data<'a>,
        datacontenttype: &'a str,
        id: &'a str,
        source: &'a str,
        specversion: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
    }
    let id = uuid_for(&format!(
        "incentive-ledger:rejected:{}:{}",
        r.stage(),
        r.line
    ));
    let notice = Notice {
        data: Data {
            arrival: r.line,
            code: r.code.as_str(),
            id: r.identity.as_ref().map(|(_, id)| id.as_str()),
            line: r.line,
            message: &r.message,
            source: r.identity.as_ref().map(|(source, _)| source.as_str()),
            stage: r.stage(),
        },
        datacontenttype: "application/json",
        id: &id,
        source: "incentive-ledger",
        specversion: "1.0",
        event_type: "refusal.recorded",
    };
    // Strings and integers always serialize.
    serde_json::to_vec(&notice).unwrap_or_default()
}

fn uuid_for(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Publishes what is in the outbox, range by range in order, in windows of at most
/// `window` payouts, each encoded from the projection when it is sent; a range is
/// removed once JetStream has stored all its payouts. Stops at the first failure (the
/// range stays and is published again, with the same ids; the publisher forgets the
/// stream's tail).
async fn drain_outbox(
    sink: &impl PayoutSink,
    outbox: &Outbox,
    shared: &Shared,
    window: usize,
    publisher: &mut Publisher,
) -> Result<usize, String> {
    let window = window.max(1) as u64;
    let mut published = 0;
    loop {
        let range =
            tokio::task::block_in_place(|| outbox.next_range()).map_err(|e| e.to_string())?;
        let Some(range) = range else {
            return Ok(published);
        };
        let end = range.first + range.count;
        let mut at = range.first;
        while at < end {
            let entries = outbox_entries(outbox, shared, at, window.min(end - at))?;
            at += entries.len() as u64;
            let (tail, chained) = publish_window(sink, entries, publisher.tail.take()).await?;
            publisher.tail = tail;
            if chained {
                publisher.chained += 1;
            } else {
                publisher.acked += 1;
            }
        }
        tokio::task::block_in_place(|| outbox.acknowledge(range.first))
            .map_err(|e| e.to_string())?;
        published += range.count as usize;
    }
}

/// What the payout publisher knows and has done.
#[derive(Debug, Default)]
struct Publisher {
    /// The id of the payout stream's last message, as far as the publisher knows.
    tail: Option<String>,
    /// Windows confirmed by the acknowledgement of their last payout.
    chained: u64,
    /// Windows published with an acknowledgement per payout.
    acked: u64,
}

/// JetStream's acknowledgement of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InStream {
    sequence: u64,
    /// The stream already held a message with this `Nats-Msg-Id` (`sequence` is its);
    /// this one was not stored.
    duplicate: bool,
}

/// Where payouts go: the payout stream, each message with `Nats-Msg-Id` = its payout
/// id and, when `after` is given, `Nats-Expected-Last-Msg-Id` = `after`: JetStream then
/// stores it only if the stream's last message has that id.
trait PayoutSink {
    /// Publishes without asking for JetStream's acknowledgement.
    async fn send(&self, payout: &OutboxEntry, after: Option<&str>) -> Result<(), String>;
    /// Publishes; the returned future resolves to JetStream's acknowledgement.
    async fn send_acked(
        &self,
        payout: &OutboxEntry,
        after: Option<&str>,
    ) -> Result<impl std::future::Future<Output = Result<InStream, String>>, String>;
}

/// The payout stream on the service's NATS connection.
struct JetStreamSink {
    client: async_nats::Client,
    js: jetstream::Context,
}

fn payout_headers(id: &str, after: Option<&str>) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    if let Some(after) = after {
        headers.insert("Nats-Expected-Last-Msg-Id", after);
    }
    headers
}

impl PayoutSink for JetStreamSink {
    async fn send(&self, payout: &OutboxEntry, after: Option<&str>) -> Result<(), String> {
        let OutboxEntry {
            subject,
            payout_id: id,
            payload,
        } = payout;
        self.client
            .publish_with_headers(subject.clone(), payout_headers(id, after), payload.clone())
            .await
            .map_err(|err| format!("publishing payout {id}: {err}"))
    }

    async fn send_acked(
        &self,
        payout: &OutboxEntry,
        after: Option<&str>,
    ) -> Result<impl std::future::Future<Output = Result<InStream, String>>, String> {
        let OutboxEntry {
            subject,
            payout_id: id,
            payload,
        } = payout;
        let ack = self
            .js
            .publish_with_headers(subject.clone(), payout_headers(id, after), payload.clone())
            .await
            .map_err(|err| format!("publishing payout {id}: {err}"))?;
        let id = id.clone();
        Ok(async move {
            ack.await
                .map(|a| InStream {
                    sequence: a.sequence,
                    duplicate: a.duplicate,
                })
                .map_err(|err| format!("payout {id} not acknowledged: {err}"))
        })
    }
}

/// Publishes one window of payouts so that JetStream stores each. Returns the id of the
/// payout stream's last message after it, when known, and whether the chain confirmed
/// the window (DECISIONS 26c).
///
/// With the stream's last message `tail` known, the payouts are chained: each names the
/// one before it (the first names `tail`) as the message the stream must end with
/// before it is stored. Only the last payout awaits JetStream's acknowledgement. If it
/// was stored (not a duplicate), so was the one it names, and that one's predecessor,
/// back to the first: the whole window, in order. If anything broke the chain — a
/// lost message, a payout already stored (re-sent after a crash), another writer's
/// message, a server that lost track of its last id, or no known tail — the last one
/// is refused or is a duplicate, and the whole window is published again without the
/// chain, every payout awaiting its own acknowledgement; the ids make the second
/// sending harmless.
async fn publish_window(
    sink: &impl PayoutSink,
    entries: Vec<OutboxEntry>,
    tail: Option<String>,
) -> Result<(Option<String>, bool), String> {
    let Some((last, rest)) = entries.split_last() else {
        return Ok((tail, false));
    };
    let last_id = &last.payout_id;
    if let Some(tail) = &tail {
        let mut after = tail.as_str();
        for payout in rest {
            sink.send(payout, Some(after)).await?;
            after = &payout.payout_id;
        }
        let ack = sink.send_acked(last, Some(after)).await?.await;
        match ack {
            Ok(InStream {
                duplicate: false, ..
            }) => return Ok((Some(last_id.clone()), true)),
            Ok(InStream { sequence, .. }) => debug!(
                payout = %last_id,
                sequence,
                "the last payout of the window was stored before: publishing the window again, each payout acknowledged"
            ),
            Err(e) => debug!("the payout window's chain broke ({e}): publishing it again, each payout acknowledged"),
        }
    }
    let mut acks = Vec::with_capacity(entries.len());
    for payout in &entries {
        acks.push(sink.send_acked(payout, None).await?);
    }
    let mut last = None;
    for ack in acks {
        last = Some(ack.await?);
    }
    // A duplicate leaves the stream's last message unknown.
    let tail = last
        .filter(|stored| !stored.duplicate)
        .map(|_| last_id.clone());
    Ok((tail, false))
}

/// The messages of the fold's payouts `first .. first + count`, encoded from the
/// projection a slice at a time under its read lock.
fn outbox_entries(
    outbox: &Outbox,
    shared: &Shared,
    first: u64,
    count: u64,
) -> Result<Vec<OutboxEntry>, String> {
    let mut entries = Vec::with_capacity(count as usize);
    while (entries.len() as u64) < count {
        let p = read(shared);
        let from = first as usize + entries.len();
        let to = (first + count) as usize;
        let Some(payouts) = p.replay.payouts().get(from..to) else {
            return Err(format!(
                "the outbox holds payouts {from}..{to} but the fold has issued {}",
                p.replay.payouts().len()
            ));
        };
        for payout in payouts.iter().take(FOLD_SLICE) {
            entries.push(outbox.entry(payout).map_err(|e| e.to_string())?);
        }
    }
    Ok(entries)
}

/// Runs the service until `shutdown` resolves; returns the final status.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    shared_out: Option<tokio::sync::oneshot::Sender<(Shared, Arc<Log>)>>,
) -> Result<Status, ServiceError> {
    let mut log = tokio::task::block_in_place(|| Log::open(&config.data_dir))?;
    let outbox = Outbox::new(log.tree_handle("outbox")?, &config.payouts.subject_prefix);
    // Rebuild the projection, with the journals statements explain (from the checkpoint
    // when there is a valid one).
    let rebuilt = tokio::task::block_in_place(|| {
        history::rebuild_with_journal(&log, history::Bound::All, &mut |_| {})
    })?;
    for w in &rebuilt.warnings {
        warn!("{w}");
    }
    record_missing(&outbox, rebuilt.replay.payouts().len(), rebuilt.seq)?;
    info!(
        position = rebuilt.seq,
        resumed_from = ?rebuilt.resumed_from,
        payouts = rebuilt.replay.payouts().len(),
        "projection rebuilt"
    );
    let health_report = Health::shared();
    health(&health_report).outbox_backlog = outbox.backlog();
    let shared: Shared = Arc::new(RwLock::new(Projection {
        checkpoint_seq: rebuilt.resumed_from.unwrap_or(0),
        seq: rebuilt.seq,
        arrival: rebuilt.arrival,
        replay: rebuilt.replay,
        health: health_report.clone(),
    }));
    if let Some(tx) = shared_out {
        let _ = tx.send((shared.clone(), Arc::new(log.reader())));
    }

    let client = connect(&config).await?;
    let js = jetstream::new(client.clone());
    let resume_after = log.head().source_position;
    let mut consumer = ensure_streams(&js, &config, resume_after).await?;
    let mut incoming = pull_stream(&consumer, &config).await?;
    let mut last_lag_check = std::time::Instant::now();
    info!(stream = %config.inbound.stream, consumer = %config.inbound.consumer, resume_after, "consuming");

    // Status responder.
    let status_sub = client
        .subscribe(config.status_subject.clone())
        .await
        .map_err(|e| js_err("status subscription")(e.to_string()))?;
    let status_shared = shared.clone();
    let status_client = client.clone();
    let responder = tokio::spawn(async move {
        let mut sub = status_sub;
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let status = read(&status_shared).status();
                let body = serde_json::to_vec(&status).unwrap_or_default();
                if let Err(e) = status_client.publish(reply, body.into()).await {
                    warn!("status reply failed: {e}");
                }
            }
        }
    });

    // The publisher drains the outbox beside the ingest loop, woken after every fold step.
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_publisher, mut publisher_stop) = tokio::sync::watch::channel(false);
    let publisher = {
        let (outbox, wake, shared) = (outbox.clone(), wake.clone(), shared.clone());
        let report = health_report.clone();
        let sink = JetStreamSink {
            client: client.clone(),
            js: js.clone(),
        };
        let window = config.payouts.publish_window;
        tokio::spawn(async move {
            let mut last_error = None;
            let mut state = Publisher::default();
            loop {
                match drain_outbox(&sink, &outbox, &shared, window, &mut state).await {
                    Ok(_) => {
                        last_error = None;
                        health(&report).clear_fault("publish");
                    }
                    Err(e) => {
                        if last_error.as_ref() != Some(&e) {
                            warn!("payout publishing paused: {e}");
                        }
                        // A log fault is the one to report: it is why publishing stopped.
                        let mut h = health(&report);
                        if h.fault.as_deref().is_none_or(|f| f.starts_with("publish")) {
                            h.fault = Some(format!("publish: {e}"));
                        }
                        last_error = Some(e);
                    }
                }
                if *publisher_stop.borrow() {
                    break;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = publisher_stop.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            info!(
                confirmed_by_last_ack = state.chained,
                acked_per_payout = state.acked,
                "payout windows published"
            );
        })
    };
    tokio::pin!(shutdown);
    let mut timing = StageTiming::default();
    let mut backoff = Duration::from_millis(100);
    // One batch folding and one waiting: enough to overlap the stages, and the ingest
    // loop waits when the fold falls behind.
    let (jobs, jobs_rx) = tokio::sync::mpsc::channel::<FoldJob>(1);
    let projector = tokio::spawn(
        Projector {
            shared: shared.clone(),
            outbox: outbox.clone(),
            log: log.reader(),
            wake: wake.clone(),
            client: client.clone(),
            rejected_subject: config.rejected_subject.clone(),
            checkpoint_every: config.checkpoint_every.max(1),
            last_checkpoint: read(&shared).checkpoint_seq,
            checkpoints: Checkpoints::default(),
            fold_time: Duration::ZERO,
        }
        .run(jobs_rx),
    );
    loop {
        health(&health_report).outbox_backlog = outbox.backlog();

        // Wait for the first message, then take what else is already buffered, up to a
        // batch: the pull stream keeps requests outstanding while we commit and fold.
        let t = std::time::Instant::now();
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = tokio::time::timeout(Duration::from_millis(config.inbound.fetch_wait_ms.max(10)), incoming.next()) => m,
        };
        let mut messages = Vec::new();
        match first {
            Err(_) => {} // nothing within the wait: publish and look again
            Ok(None) => {
                warn!("the consumer's message stream ended; re-creating it");
                incoming = pull_stream(&consumer, &config).await?;
            }
            Ok(Some(Err(e))) => {
                warn!("message stream error (will retry): {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(Some(Ok(m))) => {
                messages.push(m);
                // Group commit: keep taking messages while they keep coming (a gap of
                // `linger_ms` ends the batch), so one flush serves many under load
                // while a lone message waits at most that long.
                let linger = Duration::from_millis(config.inbound.linger_ms);
                while messages.len() < config.inbound.fetch_batch.max(1) {
                    let next = match futures::FutureExt::now_or_never(incoming.next()) {
                        Some(n) => Some(n),
                        None if linger.is_zero() => None,
                        None => tokio::time::timeout(linger, incoming.next()).await.ok(),
                    };
                    match next {
                        Some(Some(Ok(m))) => messages.push(m),
                        Some(Some(Err(e))) => {
                            warn!("message stream error: {e}");
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
        timing.fetch += t.elapsed();
        if messages.is_empty() {
            continue;
        }
        timing.batches += 1;
        timing.messages += messages.len() as u64;
        let t = std::time::Instant::now();
        let time_ns = now_ns();
        let inputs: Vec<Input> = messages
            .iter()
            .map(|m| Input {
                raw: &m.payload,
                line: None,
                time_ns,
            })
            .collect();
        let last_stream_seq = messages
            .iter()
            .filter_map(|m| m.info().ok().map(|i| i.stream_sequence))
            .max();
        // If the log cannot be written, hold the batch and retry it (nothing is acked):
        // letting JetStream redeliver it later would let newer messages overtake it.
        // sled refuses every write after an IO error, so each retry re-opens the
        // directory first; if the failed call had made the batch durable after all (the
        // fault came after the flush), the re-opened log holds it and it is folded from
        // there instead of being appended twice.
        let before = log.head();
        let written = loop {
            match tokio::task::block_in_place(|| log.append_batch_from(&inputs, last_stream_seq)) {
                Ok(o) => {
                    backoff = Duration::from_millis(100);
                    health(&health_report).clear_fault("log");
                    break Some(FoldJob::Outcomes(o));
                }
                Err(e) => {
                    error!("the log cannot be written; nothing acknowledged, retrying in {backoff:?}: {e}");
                    health(&health_report).fault = Some(format!("log: {e}"));
                    for m in &messages {
                        // Keep JetStream from redelivering while we retry.
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                    tokio::select! {
                        _ = &mut shutdown => break None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    // Let the projector finish what it holds, so that what is recorded
                    // again below is everything folded so far.
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    if jobs.send(FoldJob::Barrier(done_tx)).await.is_ok() {
                        let _ = done_rx.await;
                    }
                    let reopened = tokio::task::block_in_place(|| log.reopen())
                        .map_err(ServiceError::from)
                        .and_then(|()| {
                            // Outbox entries written since the last flush may be gone
                            // with the fault: record again what the fold has beyond them.
                            let p = read(&shared);
                            Ok(record_missing(&outbox, p.replay.payouts().len(), p.seq)?)
                        });
                    match reopened {
                        Ok(()) if log.head().last_arrival > before.last_arrival => {
                            warn!(position = log.head().last_seq, "the batch had become durable before the fault; folding it from the log");
                            health(&health_report).fault = None;
                            break Some(FoldJob::Landed);
                        }
                        Ok(()) => info!("data directory re-opened; retrying the batch"),
                        Err(e) => warn!("the data directory cannot be re-opened yet: {e}"),
                    }
                }
            }
        };
        let Some(written) = written else {
            // Shutting down with a batch that never became durable: nak it for whoever
            // consumes next (the next start re-creates the consumer after the log's end).
            for m in &messages {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            break;
        };
        drop(inputs);
        timing.append += t.elapsed();
        health(&health_report).batch_flush.observe(t.elapsed());
        let t = std::time::Instant::now();
        // Durable: acknowledge every message of the batch.
        for m in &messages {
            if let Err(e) = m.ack().await {
                warn!("ack failed (the message will be redelivered and deduplicated): {e}");
            }
        }
        timing.ack += t.elapsed();
        // Fold on the projector while the next batch is fetched and committed.
        if jobs.send(written).await.is_err() {
            break; // the projector stopped on an error, returned below
        }
        // Consumer lag, at most about once a second.
        if last_lag_check.elapsed() >= Duration::from_secs(1) {
            last_lag_check = std::time::Instant::now();
            if let Ok(info) = consumer.info().await {
                health(&health_report).consumer_pending = Some(info.num_pending);
            }
        }
    }
    drop(jobs);
    let projected = match projector.await {
        Ok(r) => r,
        Err(e) => Err(ServiceError::Projector(e.to_string())),
    };
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
    info!("shutting down: finishing the outbox and writing a checkpoint");
    let _ = publisher.await;
    if outbox.backlog() > 0 {
        warn!("payouts left in the outbox for the next start");
    }
    checkpoint(&log, &shared)?;
    log.flush()?;
    responder.abort();
    let _ = client.flush().await;
    let mut status = read(&shared).status();
    status.outbox_backlog = outbox.backlog();
    info!(position = status.position, digest = %status.digest, "stopped");
    Ok(status)
}

/// Records the fold's payouts beyond those the outbox has recorded (after a crash or a
/// storage fault lost the latest entries), and recounts its backlog.
fn record_missing(
    outbox: &Outbox,
    payouts: usize,
    position: u64,
) -> Result<(), crate::outbox::OutboxError> {
    let recorded = outbox.recorded()?;
    if recorded < payouts as u64 {
        tokio::task::block_in_place(|| {
            outbox.record(recorded, payouts as u64 - recorded, position)
        })?;
    }
    outbox.recount();
    Ok(())
}

/// Events folded per hold of the projection lock.
const FOLD_SLICE: usize = 64;

/// Work for the projector, in log order; the first two are what a held batch came to.
enum FoldJob {
    /// Appended now, with what intake made of each input.
    Outcomes(Vec<Outcome>),
    /// Found durable in the log after a re-open (the fault came after the flush): fold
    /// it from there.
    Landed,
    /// Answered once everything sent before it is folded and recorded.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The fold stage: folds each batch into the projection, records its payouts in the
/// outbox, wakes the publisher, announces refusals and takes checkpoints.
struct Projector {
    shared: Shared,
    outbox: Outbox,
    /// A reader of the log (it follows re-opens): `Landed` batches and checkpoints.
    log: Log,
    wake: Arc<tokio::sync::Notify>,
    client: async_nats::Client,
    rejected_subject: String,
    checkpoint_every: u64,
    last_checkpoint: u64,
    checkpoints: Checkpoints,
    fold_time: Duration,
}

impl Projector {
    /// Runs until the ingest loop hangs up; returns the time spent folding. Stops at
    /// the first outbox write failure (the service then stops with it).
    async fn run(
        mut self,
        mut jobs: tokio::sync::mpsc::Receiver<FoldJob>,
    ) -> Result<Duration, ServiceError> {
        while let Some(job) = jobs.recv().await {
            let t = std::time::Instant::now();
            let outcomes = match job {
                FoldJob::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
                FoldJob::Outcomes(o) => Some(o),
                FoldJob::Landed => None,
            };
            let notices = tokio::task::block_in_place(|| self.fold(outcomes))?;
            self.wake.notify_one();
            self.fold_time += t.elapsed();
            for notice in notices {
                if let Err(e) = self
                    .client
                    .publish(self.rejected_subject.clone(), notice.into())
                    .await
                {
                    warn!("refusal notice not published: {e}");
                }
            }
            // Checkpoint every N positions — stored on another thread, and at most ~5%
            // of the time: a checkpoint's cost grows with the state.
            if read(&self.shared).seq >= self.last_checkpoint + self.checkpoint_every {
                if let Some(seq) = self.checkpoints.start(&self.log, &self.shared) {
                    self.last_checkpoint = seq;
                }
            }
        }
        self.checkpoints.finish(&self.shared).await;
        Ok(self.fold_time)
    }

    /// Folds a batch (`None`: what the log holds beyond the projection), in arrival
    /// order, and records its payouts; returns its refusal notices. The lock is taken per
    /// slice, so that queries wait for at most a slice's fold, not a whole batch's.
    fn fold(&mut self, outcomes: Option<Vec<Outcome>>) -> Result<Vec<Vec<u8>>, ServiceError> {
        let (payouts_before, rejections_before) = {
            let p = read(&self.shared);
            (p.replay.payouts().len(), p.replay.rejections().len())
        };
        let Some(outcomes) = outcomes else {
            let mut p = lock(&self.shared);
            let (seq, arrival) = (p.seq, p.arrival);
            (p.seq, p.arrival) = history::fold_new(&self.log, &mut p.replay, seq, arrival)?;
            drop(p);
            return self.record(payouts_before, rejections_before);
        };
        let mut outcomes = outcomes.into_iter().peekable();
        while outcomes.peek().is_some() {
            let mut p = lock(&self.shared);
            for o in outcomes.by_ref().take(FOLD_SLICE) {
                match o {
                    Outcome::Appended {
                        seq,
                        arrival,
                        event,
                    } => {
                        p.replay.apply_logged(&event, arrival);
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
            }
        }
        self.record(payouts_before, rejections_before)
    }

    /// Records the payouts folded since `payouts_before` in the outbox (their range and
    /// the position reached; the publisher encodes them); returns the refusal notices of
    /// the refusals since `rejections_before`, encoded under the projection's read lock.
    fn record(
        &self,
        payouts_before: usize,
        rejections_before: usize,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let (issued, position, notices) = {
            let p = read(&self.shared);
            let rejections = &p.replay.rejections()[rejections_before..];
            (
                p.replay.payouts().len() - payouts_before,
                p.seq,
                rejections.iter().map(rejection_notice).collect::<Vec<_>>(),
            )
        };
        self.outbox
            .record(payouts_before as u64, issued as u64, position)?;
        Ok(notices)
    }
}

/// The consumer's continuous pull: up to a batch of requests kept outstanding.
async fn pull_stream(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    config: &Config,
) -> Result<pull::Stream, ServiceError> {
    consumer
        .stream()
        .max_messages_per_batch(config.inbound.fetch_batch.max(1))
        .messages()
        .await
        .map_err(|e| js_err("message stream")(e.to_string()))
}

/// Where the loop spends its time (logged at shutdown).
#[derive(Default)]
struct StageTiming {
    batches: u64,
    messages: u64,
    fetch: Duration,
    append: Duration,
    ack: Duration,
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
struct Checkpoints {
    running: Option<tokio::task::JoinHandle<Stored>>,
    /// When the last one ended and how long it took, all told.
    last: Option<(std::time::Instant, Duration)>,
}

impl Checkpoints {
    /// Starts one unless one is still being stored or the last one ended too recently
    /// (less than `CHECKPOINT_SPACING` times its duration ago). Returns the position it
    /// covers.
    fn start(&mut self, log: &Log, shared: &Shared) -> Option<u64> {
        if self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return None;
        }
        if let Some(task) = self.running.take() {
            self.collect(futures::FutureExt::now_or_never(task), shared);
        }
        if let Some((ended, took)) = self.last {
            if ended.elapsed() < took * CHECKPOINT_SPACING {
                return None;
            }
        }
        let started = std::time::Instant::now();
        let pending = {
            // Encoding only reads: queries go on meanwhile (the fold waits, it is the
            // projector that encodes).
            let p = read(shared);
            tokio::task::block_in_place(|| {
                history::prepare_checkpoint(log, &p.replay, p.seq, p.arrival)
            })
        };
        let pending = match pending {
            Ok(Some(pending)) => pending,
            Ok(None) => return None,
            Err(e) => {
                warn!("checkpoint not taken: {e}");
                return None;
            }
        };
        let seq = pending.seq;
        let reader = log.reader();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let result = pending.write(&reader);
            (seq, started.elapsed(), result)
        }));
        Some(seq)
    }

    fn collect(&mut self, done: Option<Result<Stored, tokio::task::JoinError>>, shared: &Shared) {
        match done {
            Some(Ok((seq, took, Ok(())))) => {
                self.last = Some((std::time::Instant::now(), took));
                let mut p = lock(shared);
                p.checkpoint_seq = p.checkpoint_seq.max(seq);
                info!(
                    position = seq,
                    took_ms = took.as_millis() as u64,
                    "checkpoint written"
                );
            }
            Some(Ok((seq, took, Err(e)))) => {
                self.last = Some((std::time::Instant::now(), took));
                warn!("checkpoint at {seq} not written: {e}");
            }
            Some(Err(e)) => warn!("checkpoint task failed: {e}"),
            None => {}
        }
    }

    /// Waits for a checkpoint still being stored.
    async fn finish(&mut self, shared: &Shared) {
        if let Some(task) = self.running.take() {
            self.collect(Some(task.await), shared);
        }
    }
}

fn checkpoint(log: &Log, shared: &Shared) -> Result<(), ServiceError> {
    let seq = {
        let p = read(shared);
        let (seq, arrival) = (p.seq, p.arrival);
        tokio::task::block_in_place(|| history::save_checkpoint(log, &p.replay, seq, arrival))?;
        seq
    };
    lock(shared).checkpoint_seq = seq;
    Ok(())
}

#[cfg(test)]
mod notice_tests {
    use super::*;
    use ledger_core::Code;

    /// The notice as it was built before: through `serde_json::Value`.
    fn through_value(r: &Rejection) -> Vec<u8> {
        let id = uuid_for(&format!(
            "incentive-ledger:rejected:{}:{}",
            r.stage(),
            r.line
        ));
        let mut data = r.to_json();
        data["arrival"] = r.line.into();
        serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": "incentive-ledger",
            "type": "refusal.recorded",
            "datacontenttype": "application/json",
            "data": data,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_notice_has_the_bytes_of_its_value_form() {
        let cases = [
            Rejection {
                code: Code::MalformedJson,
                message: "not I-JSON: \"x\"\n\u{2028} at byte 3".into(),
                identity: None,
                line: 7,
            },
            Rejection {
                code: Code::UnknownSale,
                message: "sale INV-1 is not known — é".into(),
                identity: Some(("erp/sap".into(), "e:1/\\x".into())),
                line: u64::MAX,
            },
        ];
        for r in &cases {
            assert_eq!(
                String::from_utf8(rejection_notice(r)).unwrap(),
                String::from_utf8(through_value(r)).unwrap()
            );
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// A payout stream as JetStream keeps one: one message per `Nats-Msg-Id` (checked
    /// first), then `Nats-Expected-Last-Msg-Id` against the last stored message; a
    /// refused message is dropped in silence unless acknowledged. It can lose chosen
    /// messages sent without a reply, and another writer can slip a message in after a
    /// chosen one.
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
    }

    impl Stream {
        fn holding(ids: &[String]) -> Stream {
            let s = Stream::default();
            s.state.lock().unwrap().stored = ids.to_vec();
            s
        }

        fn store(state: &mut State, id: &str, after: Option<&str>) -> Result<InStream, String> {
            if let Some(at) = state.stored.iter().position(|s| s == id) {
                return Ok(InStream {
                    sequence: at as u64 + 1,
                    duplicate: true,
                });
            }
            if let Some(after) = after {
                if state.stored.last().map(String::as_str) != Some(after) {
                    return Err(format!("wrong last msg ID: {:?}", state.stored.last()));
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
    }

    impl PayoutSink for Stream {
        async fn send(&self, payout: &OutboxEntry, after: Option<&str>) -> Result<(), String> {
            let mut state = self.state.lock().unwrap();
            state.plain_sends += 1;
            if !state.lose.remove(&payout.payout_id) {
                let _ = Stream::store(&mut state, &payout.payout_id, after);
            }
            Ok(())
        }

        async fn send_acked(
            &self,
            payout: &OutboxEntry,
            after: Option<&str>,
        ) -> Result<impl std::future::Future<Output = Result<InStream, String>>, String> {
            let mut state = self.state.lock().unwrap();
            state.acked_sends += 1;
            let stored = Stream::store(&mut state, &payout.payout_id, after);
            Ok(std::future::ready(stored))
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

    fn publish(s: &Stream, ids: &[String], tail: Option<&str>) -> Option<String> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(publish_window(s, window(ids), tail.map(str::to_string)))
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
            // A lost payout and a foreign message in one window: a count of the
            // stream's sequences could not tell this from a complete window.
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
}
