//! The service's JetStream adapter: connect with the configured authentication and
//! TLS; the inbound and payout streams and the durable pull consumer; the inbound side
//! of the ingest loop ([`JetStreamInbound`]), the payout sink ([`JetStreamSink`]), the
//! status responder; and [`serve`], which wires them to a [`ledger_service::Service`].

use crate::config::Config;
use crate::notices::JetStreamNotices;
use crate::NatsError;
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures::StreamExt;
use ledger_service::{
    Delivery, Handle, InStream, Inbound, OutboxEntry, PayoutSink, Service, Status, TransportError,
};
use std::time::Duration;
use tracing::{info, warn};

/// Connects with the configured authentication and TLS.
pub async fn connect(config: &Config) -> Result<async_nats::Client, NatsError> {
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
                .map_err(|source| NatsError::Credentials {
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
        .map_err(|source| NatsError::Connect { urls, source })
}

fn js_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl Fn(E) -> NatsError {
    move |e| NatsError::JetStream {
        what,
        source: Box::new(e),
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
) -> Result<stream::Stream, NatsError> {
    if let Ok(s) = js.get_stream(&config.inbound.stream).await {
        return Ok(s);
    }
    match js.get_or_create_stream(inbound_stream_config(config)).await {
        Ok(s) => Ok(s),
        Err(e) => js
            .get_stream(&config.inbound.stream)
            .await
            .map_err(|_| js_err("inbound stream")(e)),
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
) -> Result<jetstream::consumer::Consumer<pull::Config>, NatsError> {
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
    .map_err(js_err("payout stream"))?;
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
        .map_err(js_err("durable consumer"))
}

/// The consumer's continuous pull: up to a batch of requests kept outstanding.
async fn pull_stream(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    fetch_batch: usize,
) -> Result<pull::Stream, NatsError> {
    consumer
        .stream()
        .max_messages_per_batch(fetch_batch.max(1))
        .messages()
        .await
        .map_err(js_err("message stream"))
}

/// The durable pull consumer as the ingest loop's source.
pub struct JetStreamInbound {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    incoming: pull::Stream,
    fetch_batch: usize,
    fetch_wait: Duration,
    linger: Duration,
}

impl JetStreamInbound {
    pub async fn new(
        consumer: jetstream::consumer::Consumer<pull::Config>,
        config: &Config,
    ) -> Result<JetStreamInbound, NatsError> {
        let fetch_batch = config.inbound.fetch_batch.max(1);
        Ok(JetStreamInbound {
            incoming: pull_stream(&consumer, fetch_batch).await?,
            consumer,
            fetch_batch,
            fetch_wait: Duration::from_millis(config.inbound.fetch_wait_ms.max(10)),
            linger: Duration::from_millis(config.inbound.linger_ms),
        })
    }
}

/// One JetStream message.
pub struct JetStreamMessage(jetstream::Message);

impl Delivery for JetStreamMessage {
    fn payload(&self) -> &[u8] {
        &self.0.payload
    }

    fn position(&self) -> Option<u64> {
        self.0.info().ok().map(|i| i.stream_sequence)
    }

    async fn ack(&self) -> Result<(), TransportError> {
        self.0
            .ack()
            .await
            .map_err(|e| TransportError::message(e.to_string()))
    }

    async fn in_progress(&self) {
        let _ = self.0.ack_with(AckKind::Progress).await;
    }

    async fn nak(&self) {
        let _ = self.0.ack_with(AckKind::Nak(None)).await;
    }
}

impl Inbound for JetStreamInbound {
    type Message = JetStreamMessage;

    /// Waits for the first message, then takes what else is already buffered, up to a
    /// batch: the pull stream keeps requests outstanding while the loop commits and
    /// folds. Group commit: messages are taken while they keep coming (a gap of
    /// `linger_ms` ends the batch), so one flush serves many under load while a lone
    /// message waits at most that long.
    async fn next_batch(&mut self) -> Result<Vec<JetStreamMessage>, TransportError> {
        let first = tokio::time::timeout(self.fetch_wait, self.incoming.next()).await;
        let mut messages = Vec::new();
        match first {
            Err(_) => {} // nothing within the wait
            Ok(None) => {
                warn!("the consumer's message stream ended; re-creating it");
                self.incoming = pull_stream(&self.consumer, self.fetch_batch)
                    .await
                    .map_err(TransportError::new)?;
            }
            Ok(Some(Err(e))) => {
                warn!("message stream error (will retry): {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(Some(Ok(m))) => {
                messages.push(JetStreamMessage(m));
                while messages.len() < self.fetch_batch {
                    let next = match futures::FutureExt::now_or_never(self.incoming.next()) {
                        Some(n) => Some(n),
                        None if self.linger.is_zero() => None,
                        None => tokio::time::timeout(self.linger, self.incoming.next())
                            .await
                            .ok(),
                    };
                    match next {
                        Some(Some(Ok(m))) => messages.push(JetStreamMessage(m)),
                        Some(Some(Err(e))) => {
                            warn!("message stream error: {e}");
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
        Ok(messages)
    }

    async fn pending(&mut self) -> Option<u64> {
        self.consumer.info().await.ok().map(|info| info.num_pending)
    }
}

/// The payout stream on the service's NATS connection: each message with
/// `Nats-Msg-Id` = its payout id and, when chained, `Nats-Expected-Last-Msg-Id`.
pub struct JetStreamSink {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
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
    async fn send(&self, payout: &OutboxEntry, after: Option<&str>) -> Result<(), TransportError> {
        self.client
            .publish_with_headers(
                payout.subject.clone(),
                payout_headers(&payout.payout_id, after),
                payout.payload.clone(),
            )
            .await
            .map_err(TransportError::new)
    }

    async fn send_acked(
        &self,
        payout: &OutboxEntry,
        after: Option<&str>,
    ) -> Result<
        impl std::future::Future<Output = Result<InStream, TransportError>> + Send + 'static,
        TransportError,
    > {
        let ack = self
            .js
            .publish_with_headers(
                payout.subject.clone(),
                payout_headers(&payout.payout_id, after),
                payout.payload.clone(),
            )
            .await
            .map_err(TransportError::new)?;
        Ok(async move {
            ack.await
                .map(|a| InStream {
                    sequence: a.sequence,
                    duplicate: a.duplicate,
                })
                .map_err(TransportError::new)
        })
    }
}

/// Answers status requests on `subject` from the handle, until the task is aborted.
/// The status is computed on a blocking thread (its digest reads the whole state once
/// per position), so a busy monitoring loop never holds a runtime thread.
async fn status_responder(
    client: async_nats::Client,
    subject: String,
    handle: Handle,
) -> Result<tokio::task::JoinHandle<()>, NatsError> {
    let mut sub = client
        .subscribe(subject)
        .await
        .map_err(js_err("status subscription"))?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            let h = handle.clone();
            let Ok(status) = tokio::task::spawn_blocking(move || h.status()).await else {
                continue;
            };
            let body = serde_json::to_vec(&status).expect("a status serializes");
            if let Err(e) = client.publish(reply, body.into()).await {
                warn!("status reply failed: {e}");
            }
        }
    }))
}

/// Runs `service` on JetStream until `shutdown` resolves; returns the final status.
pub async fn serve(
    service: Service,
    handle: Handle,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Status, NatsError> {
    let client = connect(config).await?;
    let js = jetstream::new(client.clone());
    let resume_after = service.resume_after();
    let consumer = ensure_streams(&js, config, resume_after).await?;
    let inbound = JetStreamInbound::new(consumer, config).await?;
    info!(stream = %config.inbound.stream, consumer = %config.inbound.consumer, resume_after, "consuming");
    let responder = status_responder(client.clone(), config.status_subject.clone(), handle).await?;
    let sink = JetStreamSink {
        client: client.clone(),
        js,
    };
    let notices = JetStreamNotices {
        client: client.clone(),
        subject: config.rejected_subject.clone(),
    };
    let status = service.run(inbound, sink, notices, shutdown).await;
    responder.abort();
    let _ = client.flush().await;
    Ok(status?)
}
