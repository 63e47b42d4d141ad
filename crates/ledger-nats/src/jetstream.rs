//! The service's JetStream adapter: connect with the configured authentication and
//! TLS; the inbound and payout streams and the durable pull consumer; the inbound side
//! of the ingest loop ([`JetStreamInbound`]), the payout sink ([`JetStreamSink`]), the
//! status responder; and [`serve`], which wires them to a [`ledger_service::Service`].

use crate::config::Config;
use crate::notices::JetStreamNotices;
use crate::NatsError;
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures::StreamExt;
use ledger_core::{binding, Code};
use ledger_service::Transport;
use ledger_service::{
    Delivery, Expect, Handle, InStream, Inbound, OutboxEntry, PayoutSink, Service, Status,
    StreamTail, TransportError,
};
use std::time::Duration;
use tracing::{info, warn};

/// Connects with the configured authentication and TLS.
/// How long a tool waits for its first connection before it says why it has none.
const TOOL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a failed first connection means, in the words an operator acts on.
pub(crate) fn connect_hint(e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::Io => "nothing answers there (connection refused or unreachable): is nats-server running, and is the URL right?".into(),
        K::AuthorizationViolation => "the server refused these credentials (authorization violation): check the user and password, token, nkey seed or creds file".into(),
        K::Authentication => "the credentials could not be used to sign the server's nonce: check the nkey seed or creds file".into(),
        K::TimedOut => format!("no answer within {} s", TOOL_CONNECT_TIMEOUT.as_secs()),
        K::Tls => "the TLS handshake failed: check the CA, the client certificate and whether the server expects TLS".into(),
        K::Dns => "the host name does not resolve".into(),
        K::ServerParse => "the URL is not a NATS server address (nats://host:port)".into(),
        K::MaxReconnects => "gave up reconnecting".into(),
    }
}

/// Connects for a command-line tool: once, failing within a few seconds with what went
/// wrong (nothing answering, credentials refused, TLS), rather than retrying in the
/// background while requests time out.
pub async fn connect_now(config: &Config) -> Result<async_nats::Client, NatsError> {
    let options = options(config)
        .await?
        .connection_timeout(TOOL_CONNECT_TIMEOUT)
        .event_callback(|event| async move {
            if let async_nats::Event::ServerError(e) = event {
                let text = e.to_string();
                tracing::debug!("the NATS server reports: {text}");
                if text.to_ascii_lowercase().contains("permissions violation") {
                    if let Ok(mut last) = SERVER_REFUSAL.lock() {
                        *last = Some(text);
                    }
                }
            }
        });
    finish_connect(config, options).await
}

/// The last permission the server refused a tool's connection (its requests then only
/// time out: the refusal comes as an asynchronous server error).
static SERVER_REFUSAL: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// What the server last refused this process's tool connection, in one line that says
/// where to look — for a failure that otherwise reads as a timeout.
pub fn server_refusal() -> Option<String> {
    let last = SERVER_REFUSAL.lock().ok()?.clone()?;
    Some(format!(
        "NATS refused it: {last} — the user lacks that permission (see its permissions in the server configuration, e.g. deploy/nats-accounts.conf)"
    ))
}

/// How often the service pings the broker.
const SERVICE_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Connects for the service: it keeps trying in the background (the service may start
/// before the broker), reporting the broker unreachable on `handle` until it connects,
/// and again whenever the connection drops, with the server's errors logged as they come.
pub async fn connect_watched(
    config: &Config,
    handle: &ledger_service::Handle,
) -> Result<async_nats::Client, NatsError> {
    let urls = config.nats.urls.join(",");
    handle.transport_fault(Some(format!("not connected to NATS at {urls} yet")));
    let watcher = handle.clone();
    let options = options(config)
        .await?
        .retry_on_initial_connect()
        .max_reconnects(None)
        // A broker that stops answering (paused, hung, a half-open connection) is found
        // by pings: two unanswered and the client reconnects, which reports the fault.
        // The client's default of a minute left a paused broker unreported that long.
        .ping_interval(SERVICE_PING_INTERVAL)
        .event_callback(move |event| {
            let handle = watcher.clone();
            let urls = urls.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(%urls, "connected to NATS");
                        handle.transport_fault(None);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%urls, "the NATS connection is lost; reconnecting");
                        handle.transport_fault(Some(format!(
                            "the connection to NATS at {urls} is lost; reconnecting"
                        )));
                    }
                    async_nats::Event::ServerError(e) => {
                        tracing::error!(%urls, "the NATS server reports: {e}");
                        if matches!(e, async_nats::ServerError::AuthorizationViolation) {
                            handle.transport_fault(Some(format!(
                                "NATS at {urls} refuses these credentials (authorization violation)"
                            )));
                        }
                    }
                    other => tracing::info!(%urls, "NATS: {other}"),
                }
            }
        });
    finish_connect(config, options).await
}

/// Connects in the background (the caller goes on at once; the client keeps trying):
/// for a second connection of the service, whose users see failures as they come.
pub async fn connect_background(config: &Config) -> Result<async_nats::Client, NatsError> {
    let options = options(config)
        .await?
        .retry_on_initial_connect()
        .max_reconnects(None);
    finish_connect(config, options).await
}

/// The subject prefix of the inbound stream's first subject given as `<prefix>.>`
/// (`incentive.events`): events are published to `<prefix>.<type>`.
pub fn inbound_prefix(config: &Config) -> Option<String> {
    type_prefixes(config)
        .first()
        .map(|p| p.trim_end_matches('.').to_string())
}

async fn finish_connect(
    config: &Config,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, NatsError> {
    let n = &config.nats;
    // A list, one URL each (the client does not split a comma-separated string): it
    // connects to one and fails over to the others.
    options
        .connect(n.urls.as_slice())
        .await
        .map_err(|cause| NatsError::Connect {
            urls: n.urls.join(","),
            cause,
        })
}

/// The options every connection shares: name, credentials, TLS.
async fn options(config: &Config) -> Result<async_nats::ConnectOptions, NatsError> {
    let n = &config.nats;
    let mut options = async_nats::ConnectOptions::new().name(&n.name);
    if let Some(prefix) = &n.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
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
    Ok(options)
}

pub(crate) fn js_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl Fn(E) -> NatsError {
    move |e| {
        // A JetStream API request nobody answers: the server runs without JetStream.
        let text = e.to_string();
        let source: Box<dyn std::error::Error + Send + Sync> = if text.contains("no responders")
            || text.contains("jetstream unavailable")
        {
            format!("{text}: the NATS server has no JetStream — start nats-server with -js (or `jetstream {{}}` in its configuration)").into()
        } else {
            Box::new(e)
        };
        NatsError::JetStream { what, source }
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

/// The durable consumer of replica `replica`: each replica has its own.
pub fn consumer_name(config: &Config, replica: &str) -> String {
    format!("{}-{replica}", config.inbound.consumer)
}

/// A replica's consumer unused this long is removed by the server (a replica that
/// starts again re-creates its own from its log's position anyway).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Makes sure the inbound and payout streams exist; returns the inbound one.
pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &Config,
) -> Result<stream::Stream, NatsError> {
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
    Ok(inbound)
}

/// Makes sure the streams exist ([`ensure_streams`]); returns the inbound one with the
/// first and last sequences it holds.
async fn streams_and_inbound_span(
    js: &jetstream::Context,
    config: &Config,
) -> Result<(stream::Stream, u64, u64), NatsError> {
    let mut inbound = ensure_streams(js, config).await?;
    let state = &inbound
        .info()
        .await
        .map_err(js_err("inbound stream"))?
        .state;
    let (first, last) = (state.first_sequence, state.last_sequence);
    Ok((inbound, first, last))
}

/// Deletes and creates replica `replica`'s durable pull consumer on the inbound stream,
/// delivering from the sequence after `resume_after` — the last one its log holds.
/// Re-creating it at every start, rather than relying on redelivery of unacknowledged
/// messages, keeps the log in the stream's order after a crash: arrival order decides
/// the fold. Call it only with the replica's presence claimed
/// ([`crate::lease::claim_presence`]): the consumer is the replica's alone.
async fn recreate_consumer(
    inbound: &stream::Stream,
    config: &Config,
    replica: &str,
    resume_after: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>, NatsError> {
    let consumer = consumer_name(config, replica);
    // Not found is fine: first start.
    let _ = inbound.delete_consumer(&consumer).await;
    let deliver_policy = if resume_after == 0 {
        jetstream::consumer::DeliverPolicy::All
    } else {
        jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: resume_after + 1,
        }
    };
    inbound
        .create_consumer(pull::Config {
            durable_name: Some(consumer),
            inactive_threshold: CONSUMER_INACTIVE,
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
    /// To re-create the consumer from a position ([`Inbound::rewind`]).
    js: jetstream::Context,
    /// See [`type_prefixes`].
    prefixes: Vec<String>,
    config: Config,
    replica: String,
    /// Why the consumer cannot go on (it or its stream no longer exists), once known.
    gone: Option<String>,
}

impl JetStreamInbound {
    /// Asks the broker about the consumer: its pending count, or `None` when it cannot
    /// tell. An answer that the consumer (or the whole stream) does not exist is kept in
    /// `gone` for [`Self::next_batch`] to stop on: the broker lost its store, or someone
    /// deleted them. Retrying would then wait for ever, and re-creating the consumer
    /// here, after the log's position, would pass over a recreated stream's messages;
    /// the service stops instead, with the reason, and its next start re-creates what
    /// is missing and consumes the stream as it is (see `serve`).
    async fn ask_consumer(&mut self) -> Option<u64> {
        match self.consumer.info().await {
            Ok(info) => Some(info.num_pending),
            Err(e) => {
                use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
                if matches!(e.kind(), Kind::NotFound | Kind::StreamNotFound) {
                    self.gone = Some(format!(
                        "the inbound stream {} or this replica's consumer on it is gone ({e}): the broker lost its store or they were deleted; stopping, so that the next start re-creates them and consumes the stream as it is now",
                        self.config.inbound.stream
                    ));
                }
                None
            }
        }
    }

    pub async fn new(
        consumer: jetstream::consumer::Consumer<pull::Config>,
        js: jetstream::Context,
        config: &Config,
        replica: &str,
    ) -> Result<JetStreamInbound, NatsError> {
        let fetch_batch = config.inbound.fetch_batch.max(1);
        Ok(JetStreamInbound {
            incoming: pull_stream(&consumer, fetch_batch).await?,
            consumer,
            fetch_batch,
            fetch_wait: Duration::from_millis(config.inbound.fetch_wait_ms.max(10)),
            linger: Duration::from_millis(config.inbound.linger_ms),
            js,
            prefixes: type_prefixes(config),
            config: config.clone(),
            replica: replica.to_string(),
            gone: None,
        })
    }
}

/// One JetStream message, with what its subject and headers say of it.
pub struct JetStreamMessage {
    message: jetstream::Message,
    /// A binary-mode CloudEvent rewritten as the structured object (`None`: the payload
    /// is the event).
    structured: Option<Vec<u8>>,
    /// Why a binary-mode message is not an event.
    refused: Option<(Code, String)>,
    /// The event type its subject is the inbound subject of.
    subject_type: Option<String>,
}

/// The prefixes (`incentive.events.`) of the inbound subjects given as `<prefix>.>`:
/// what follows one in a message's subject is the type of the event it must carry.
fn type_prefixes(config: &Config) -> Vec<String> {
    config
        .inbound
        .subjects
        .iter()
        .filter_map(|s| s.strip_suffix('>'))
        .filter(|p| p.ends_with('.'))
        .map(str::to_string)
        .collect()
}

impl JetStreamMessage {
    /// Reads the message's subject against the inbound `prefixes`, and a binary-mode
    /// CloudEvent (NATS binding: `ce-*` headers, the body as data) into the structured
    /// object the log keeps.
    fn new(message: jetstream::Message, prefixes: &[String]) -> JetStreamMessage {
        let subject_type = prefixes
            .iter()
            .find_map(|p| message.subject.as_str().strip_prefix(p.as_str()))
            .map(str::to_string);
        let (mut structured, mut refused) = (None, None);
        if let Some(headers) = &message.headers {
            let all = || {
                headers.iter().flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.as_ref(), v.as_str().as_bytes()))
                })
            };
            if binding::is_binary(all().map(|(n, _)| n)) {
                match binding::structured(all(), &message.payload, binding::Encoding::Plain) {
                    Ok(raw) => structured = Some(raw),
                    Err(r) => {
                        refused = Some((
                            r.code,
                            format!(
                                "a binary-mode CloudEvent (ce-* headers) that is not an event: {}",
                                r.message
                            ),
                        ))
                    }
                }
            }
        }
        JetStreamMessage {
            message,
            structured,
            refused,
            subject_type,
        }
    }
}

impl Delivery for JetStreamMessage {
    fn payload(&self) -> &[u8] {
        self.structured.as_deref().unwrap_or(&self.message.payload)
    }

    fn transport(&self) -> Transport<'_> {
        if let Some((code, message)) = &self.refused {
            return Transport::Refused(*code, message);
        }
        match &self.subject_type {
            Some(t) => Transport::Subject {
                subject: self.message.subject.as_str(),
                event_type: t,
            },
            None => Transport::None,
        }
    }

    fn position(&self) -> Option<u64> {
        self.message.info().ok().map(|i| i.stream_sequence)
    }

    async fn ack(&self) -> Result<(), TransportError> {
        self.message
            .ack()
            .await
            .map_err(|e| TransportError::message(e.to_string()))
    }

    async fn in_progress(&self) {
        let _ = self.message.ack_with(AckKind::Progress).await;
    }

    async fn nak(&self) {
        let _ = self.message.ack_with(AckKind::Nak(None)).await;
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
        if let Some(why) = self.gone.take() {
            return Err(TransportError::message(why));
        }
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
                self.ask_consumer().await;
            }
            Ok(Some(Ok(m))) => {
                messages.push(JetStreamMessage::new(m, &self.prefixes));
                while messages.len() < self.fetch_batch {
                    let next = match futures::FutureExt::now_or_never(self.incoming.next()) {
                        Some(n) => Some(n),
                        None if self.linger.is_zero() => None,
                        None => tokio::time::timeout(self.linger, self.incoming.next())
                            .await
                            .ok(),
                    };
                    match next {
                        Some(Some(Ok(m))) => {
                            messages.push(JetStreamMessage::new(m, &self.prefixes))
                        }
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
        self.ask_consumer().await
    }

    /// Re-creates the replica's consumer to deliver from the sequence after `after`.
    async fn rewind(&mut self, after: u64) -> Result<(), TransportError> {
        let inbound = self
            .js
            .get_stream(&self.config.inbound.stream)
            .await
            .map_err(TransportError::new)?;
        let consumer = recreate_consumer(&inbound, &self.config, &self.replica, after)
            .await
            .map_err(TransportError::new)?;
        self.incoming = pull_stream(&consumer, self.fetch_batch)
            .await
            .map_err(TransportError::new)?;
        self.consumer = consumer;
        Ok(())
    }
}

/// The payout stream on the service's NATS connection: each message with `Nats-Msg-Id`
/// = its payout id, `Nats-Expected-Last-Sequence` = the sequence it must follow, and
/// `Ledger-Payout-Number` = its index in the fold's issue order.
pub struct JetStreamSink {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// The payout stream's name.
    pub stream: String,
}

/// The header naming a payout's index in the fold's issue order.
pub const PAYOUT_NUMBER: &str = "Ledger-Payout-Number";

fn payout_headers(payout: &OutboxEntry, expect: Expect<'_>) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", payout.payout_id.as_str());
    match expect {
        Expect::LastSequence(n) => headers.insert("Nats-Expected-Last-Sequence", n.to_string()),
        Expect::LastId(id) => headers.insert("Nats-Expected-Last-Msg-Id", id),
    }
    headers.insert(PAYOUT_NUMBER, payout.number.to_string());
    headers
}

/// Messages looked at behind the payout stream's last one for the last that carries a
/// payout number.
const TAIL_LOOK_BACK: u64 = 1024;

impl PayoutSink for JetStreamSink {
    async fn send(&self, payout: &OutboxEntry, expect: Expect<'_>) -> Result<(), TransportError> {
        self.client
            .publish_with_headers(
                payout.subject.clone(),
                payout_headers(payout, expect),
                payout.payload.clone(),
            )
            .await
            .map_err(TransportError::new)
    }

    async fn send_acked(
        &self,
        payout: &OutboxEntry,
        expect: Expect<'_>,
    ) -> Result<
        impl std::future::Future<Output = Result<InStream, TransportError>> + Send + 'static,
        TransportError,
    > {
        let ack = self
            .js
            .publish_with_headers(
                payout.subject.clone(),
                payout_headers(payout, expect),
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

    /// The stream's last sequence, the id of its last message, and the payout number
    /// of the last message carrying one (looking back over up to [`TAIL_LOOK_BACK`]
    /// messages that do not).
    async fn tail(&self) -> Result<StreamTail, TransportError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(TransportError::new)?;
        let state = &stream.cached_info().state;
        let mut tail = StreamTail {
            last_sequence: state.last_sequence,
            ..Default::default()
        };
        if state.messages == 0 {
            return Ok(tail);
        }
        let first = state
            .first_sequence
            .max(tail.last_sequence.saturating_sub(TAIL_LOOK_BACK - 1))
            .max(1);
        let mut looked_back = false;
        for sequence in (first..=tail.last_sequence).rev() {
            looked_back = sequence < tail.last_sequence;
            // A message deleted since is skipped.
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
            if sequence == tail.last_sequence {
                tail.payout_id = header("Nats-Msg-Id");
            }
            if let Some(n) = header(PAYOUT_NUMBER).and_then(|n| n.parse().ok()) {
                tail.number = Some(n);
                break;
            }
        }
        if looked_back {
            // Others' messages at the end: the stream may have grown while they were
            // read. Expect its latest sequence (a payout of the ledger's stored
            // meanwhile is refused by its id).
            tail.last_sequence = self
                .js
                .get_stream(&self.stream)
                .await
                .map_err(TransportError::new)?
                .cached_info()
                .state
                .last_sequence;
        }
        Ok(tail)
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

/// How long JetStream setup is retried at start: a cluster that is still electing its
/// leaders, or a server that is starting, answers errors for a while.
const SETUP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs a JetStream setup step, retrying its JetStream errors for [`SETUP_PATIENCE`].
async fn setup_retried<T, F: std::future::Future<Output = Result<T, NatsError>>>(
    what: &str,
    mut step: impl FnMut() -> F,
) -> Result<T, NatsError> {
    let deadline = std::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match step().await {
            Err(e @ NatsError::JetStream { .. }) if std::time::Instant::now() < deadline => {
                warn!(
                    "setting up {what} failed, retrying: {}",
                    ledger_service::error_chain(&e)
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Runs `service` on JetStream as a replica until `shutdown` resolves; returns the
/// final status. The replica claims its presence before it touches its consumer (a
/// second process of the same replica refuses to start), then folds as a standby and
/// publishes while it holds the lease ([`crate::lease`]).
pub async fn serve(
    mut service: Service,
    handle: Handle,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Status, NatsError> {
    let replica = crate::lease::replica_id(&config.replication, service.data_dir())?;
    let client = connect_watched(config, &handle).await?;
    let js = jetstream::new(client.clone());
    let kv = setup_retried("the lease bucket", || {
        crate::lease::bucket(&js, &config.replication, config.inbound.replicas)
    })
    .await?;
    let me = crate::lease::Presence::this_process(&replica);
    let timing = crate::lease::LeaseTiming::of(&config.replication);
    // A bucket just created on a cluster may not answer reads for a moment.
    let presence = setup_retried("the replica's presence", || {
        crate::lease::claim_presence(&kv, &me, timing.ttl)
    })
    .await?;
    handle.leadership().join(&replica);
    let (stop_lease, lease_stop) = tokio::sync::watch::channel(false);
    let (lease_failed, lease_failure) = tokio::sync::oneshot::channel::<NatsError>();
    let lease = tokio::spawn({
        let leadership = handle.leadership().clone();
        async move {
            if let Err(e) =
                crate::lease::run(kv, me, presence, timing, leadership, lease_stop).await
            {
                let _ = lease_failed.send(e);
            }
        }
    });
    let served = async {
        let (inbound, first, last) =
            setup_retried("the streams", || streams_and_inbound_span(&js, config)).await?;
        // A stream that ends before what the log has consumed was recreated or purged
        // (the broker lost its store): resuming after the log's position would pass
        // over its new messages as if they were in the log already.
        // Everything such a stream holds came after the log's last message: it is
        // consumed from its first message.
        if last < service.resume_after() {
            service.rebase_source(first.saturating_sub(1))?;
        }
        let resume_after = service.resume_after();
        let consumer = setup_retried("the consumer", || {
            recreate_consumer(&inbound, config, &replica, resume_after)
        })
        .await?;
        let inbound = JetStreamInbound::new(consumer, js.clone(), config, &replica).await?;
        info!(stream = %config.inbound.stream, consumer = %consumer_name(config, &replica), replica = %replica, resume_after, "consuming");
        let responder =
            status_responder(client.clone(), config.status_subject.clone(), handle.clone())
                .await?;
        let own_responder = status_responder(
            client.clone(),
            format!("{}.{replica}", config.status_subject),
            handle.clone(),
        )
        .await?;
        let sink = JetStreamSink {
            client: client.clone(),
            js: js.clone(),
            stream: config.payouts.stream.clone(),
        };
        let notices = JetStreamNotices {
            client: client.clone(),
            subject: config.rejected_subject.clone(),
            leadership: handle.leadership().clone(),
        };
        let mut lease_failure = lease_failure;
        let mut failed = None;
        let stop = async {
            tokio::select! {
                _ = shutdown => {}
                e = &mut lease_failure => {
                    if let Ok(e) = e {
                        tracing::error!("{e}");
                        failed = Some(e);
                    }
                }
            }
        };
        let status = service.run(inbound, sink, notices, stop).await;
        responder.abort();
        own_responder.abort();
        // Bounded: with the broker gone, a flush waits for a reconnection for ever.
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, client.flush()).await;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(status?)
    }
    .await;
    let _ = stop_lease.send(true);
    // The lease is released on the way out; a broker that does not answer leaves it to
    // expire (its holder is gone either way).
    let mut lease = lease;
    if tokio::time::timeout(SHUTDOWN_WAIT, &mut lease)
        .await
        .is_err()
    {
        lease.abort();
        tracing::warn!(
            "the lease could not be released (NATS does not answer); it expires by itself"
        );
    }
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, client.flush()).await;
    served
}

/// How long shutting down waits for the broker at each step (a flush, the lease's
/// release) before going on without it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
