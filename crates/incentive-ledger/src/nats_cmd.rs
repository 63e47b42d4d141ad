//! Commands that talk to NATS: `serve`, `publish`, `status`, `payouts`.
//!
//! Every flag also reads `INCENTIVE_LEDGER_<FLAG_NAME>` from the environment; flags and
//! environment override the `--config` TOML file, which overrides the defaults.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach NATS (shared by every NATS command).
#[derive(Args, Clone, Default)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_URL", value_delimiter = ',')]
    pub nats_url: Vec<String>,
    /// User name (with --nats-password).
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// An nkey seed (SU…).
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_NKEY_SEED", hide_env_values = true)]
    pub nats_nkey_seed: Option<String>,
    /// A .creds file (JWT and nkey seed).
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --nats-tls-key, for mutual TLS.
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,
    /// Prefix of this connection's reply subjects, e.g. `_INBOX_payments` for the
    /// `payments` user of deploy/nats-accounts.conf (default `_INBOX`).
    #[arg(long, env = "INCENTIVE_LEDGER_NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
    /// A TOML configuration file (see deploy/incentive-ledger.toml).
    #[arg(long, env = "INCENTIVE_LEDGER_CONFIG")]
    pub config: Option<PathBuf>,
}

impl NatsArgs {
    /// The file's configuration (or the defaults) with these flags applied.
    pub fn config(&self) -> Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read configuration file {}", path.display())
                })?;
                Config::from_toml(&text)
                    .with_context(|| format!("configuration file {}", path.display()))?
            }
            None => Config::default(),
        };
        let n = &mut c.nats;
        if !self.nats_url.is_empty() {
            n.urls = self.nats_url.clone();
        }
        set(&mut n.user, &self.nats_user);
        set(&mut n.password, &self.nats_password);
        set(&mut n.token, &self.nats_token);
        set(&mut n.nkey_seed, &self.nats_nkey_seed);
        set(&mut n.creds_file, &self.nats_creds);
        set(&mut n.tls_ca, &self.nats_tls_ca);
        set(&mut n.tls_cert, &self.nats_tls_cert);
        set(&mut n.tls_key, &self.nats_tls_key);
        n.tls_required |= self.nats_tls_required;
        set(&mut n.inbox_prefix, &self.nats_inbox_prefix);
        if n.user.is_some() != n.password.is_some() {
            bail!("--nats-user and --nats-password go together");
        }
        if n.tls_cert.is_some() != n.tls_key.is_some() {
            bail!("--nats-tls-cert and --nats-tls-key go together");
        }
        Ok(c)
    }
}

fn set<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        *target = value.clone();
    }
}

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Data directory of the durable log.
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// JetStream stream for inbound events.
    #[arg(long, env = "INCENTIVE_LEDGER_INBOUND_STREAM")]
    pub inbound_stream: Option<String>,
    /// Inbound subjects, comma-separated (default incentive.events.>).
    #[arg(long, env = "INCENTIVE_LEDGER_INBOUND_SUBJECTS", value_delimiter = ',')]
    pub inbound_subjects: Vec<String>,
    /// Durable pull consumer name.
    #[arg(long, env = "INCENTIVE_LEDGER_CONSUMER")]
    pub consumer: Option<String>,
    /// JetStream stream for payouts.
    #[arg(long, env = "INCENTIVE_LEDGER_PAYOUT_STREAM")]
    pub payout_stream: Option<String>,
    /// Payouts are published on <prefix>.<kind>.
    #[arg(long, env = "INCENTIVE_LEDGER_PAYOUT_PREFIX")]
    pub payout_prefix: Option<String>,
    /// Subject of refusal notices.
    #[arg(long, env = "INCENTIVE_LEDGER_REJECTED_SUBJECT")]
    pub rejected_subject: Option<String>,
    /// Request/reply subject of the status responder.
    #[arg(long, env = "INCENTIVE_LEDGER_STATUS_SUBJECT")]
    pub status_subject: Option<String>,
    /// Messages fetched and group-committed at once.
    #[arg(long, env = "INCENTIVE_LEDGER_FETCH_BATCH")]
    pub fetch_batch: Option<usize>,
    /// Longest wait of one fetch, in milliseconds.
    #[arg(long, env = "INCENTIVE_LEDGER_FETCH_WAIT_MS")]
    pub fetch_wait_ms: Option<u64>,
    /// Log positions between checkpoints.
    #[arg(long, env = "INCENTIVE_LEDGER_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<u64>,
    /// Address of the HTTP query API (e.g. 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, env = "INCENTIVE_LEDGER_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Replicas of the inbound and payout streams (and of the lease bucket): 3 on a
    /// 3-node cluster.
    #[arg(long, env = "INCENTIVE_LEDGER_STREAM_REPLICAS")]
    pub stream_replicas: Option<usize>,
    /// This replica's id (default: the one in the data directory's REPLICA file).
    #[arg(long, env = "INCENTIVE_LEDGER_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// A lease not renewed for this long is taken over by a standby (milliseconds).
    #[arg(long, env = "INCENTIVE_LEDGER_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// How often the lease is renewed, or looked at by a standby (milliseconds).
    #[arg(long, env = "INCENTIVE_LEDGER_LEASE_RENEW_MS")]
    pub lease_renew_ms: Option<u64>,
    /// Log output: human or json.
    #[arg(long, env = "INCENTIVE_LEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    fn config(&self) -> Result<Config> {
        let mut c = self.nats.config()?;
        set_value(&mut c.data_dir, &self.data_dir);
        set_value(&mut c.inbound.stream, &self.inbound_stream);
        if !self.inbound_subjects.is_empty() {
            c.inbound.subjects = self.inbound_subjects.clone();
        }
        set_value(&mut c.inbound.consumer, &self.consumer);
        set_value(&mut c.payouts.stream, &self.payout_stream);
        set_value(&mut c.payouts.subject_prefix, &self.payout_prefix);
        set_value(&mut c.rejected_subject, &self.rejected_subject);
        set_value(&mut c.status_subject, &self.status_subject);
        set_value(&mut c.inbound.fetch_batch, &self.fetch_batch);
        set_value(&mut c.inbound.fetch_wait_ms, &self.fetch_wait_ms);
        set_value(&mut c.checkpoint_every, &self.checkpoint_every);
        set_value(&mut c.http_addr, &self.http_addr);
        if self.replica_id.is_some() {
            c.replication.replica_id = self.replica_id.clone();
        }
        set_value(&mut c.replication.lease_ttl_ms, &self.lease_ttl_ms);
        if let Some(n) = self.stream_replicas {
            c.inbound.replicas = n;
            c.payouts.replicas = n;
        }
        set_value(&mut c.replication.lease_renew_ms, &self.lease_renew_ms);
        Ok(c)
    }
}

fn set_value<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INCENTIVE_LEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (a full disk under a redirected stderr) is
        // dropped; reporting that on stderr again would panic the service.
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    crate::set_purge_delay();
    init_logs(args.log_format);
    // A file-size limit reached (RLIMIT_FSIZE) must surface as a write error that the
    // service reports, holds its batch on and retries — not kill it (SIGXFSZ's default).
    // SAFETY: setting a signal's disposition to SIG_IGN has no other effect.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let config = args.config()?;
    let tokens: Vec<ledger_api::KnownToken> = config
        .auth
        .tokens
        .iter()
        .map(|t| t.known().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    if tokens.is_empty() {
        tracing::warn!("no [[auth.tokens]] configured: the HTTP API answers only /health/*");
    }
    tracing::info!(data_dir = %config.data_dir.display(), nats = %config.nats.urls.join(","), http = %config.http_addr, "starting");
    let http_addr = config.http_addr.clone();
    let status = runtime()?.block_on(async move {
        let (handle, mut service) = start(&config, shutdown_signal()).await?;
        let listener = tokio::select! {
            bound = tokio::net::TcpListener::bind(&http_addr) => bound
                .with_context(|| format!("cannot listen on {http_addr} for the HTTP API"))?,
            r = &mut service => {
                r??;
                anyhow::bail!("the service stopped before it started");
            }
        };
        let (stop_http, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
        let mut state = ledger_api::ApiState::with_tokens(handle, tokens);
        if let Some(sink) = http_events(&config).await? {
            state = state.with_events(sink);
        }
        let api = tokio::spawn(ledger_api::serve(listener, state, async move {
            let _ = stop_http_rx.await;
        }));
        let status = service.await??;
        let _ = stop_http.send(());
        let _ = api.await;
        anyhow::Ok(status)
    })?;
    tracing::info!(position = status.position, digest = ?status.digest, outbox_backlog = status.outbox_backlog, "final status");
    Ok(())
}

/// Publishes the events posted over HTTP to the inbound stream, on a connection of its
/// own (it keeps trying in the background: a post while NATS is away fails at once,
/// with the reason, instead of waiting for the service's connection).
struct NatsEvents {
    js: async_nats::jetstream::Context,
    prefix: String,
    stream: String,
}

impl ledger_api::events::EventSink for NatsEvents {
    fn publish(
        &self,
        e: ledger_api::events::Outgoing,
    ) -> futures::future::BoxFuture<'_, Result<ledger_api::events::Stored, String>> {
        Box::pin(async move {
            ledger_nats::publish::publish_event(
                &self.js,
                &self.prefix,
                e.event_type.as_str(),
                &e.source,
                &e.id,
                e.raw,
            )
            .await
            .map(|(stream_sequence, duplicate)| ledger_api::events::Stored {
                stream_sequence,
                duplicate,
            })
            .map_err(|e| ledger_service::error_chain(&e))
        })
    }

    fn stream(&self) -> &str {
        &self.stream
    }
}

/// The sink of `POST /v1/events`, unless the inbound subjects have no `<prefix>.>` to
/// publish under.
async fn http_events(
    config: &Config,
) -> Result<Option<std::sync::Arc<dyn ledger_api::events::EventSink>>> {
    let nats = config.nats();
    let Some(prefix) = ledger_nats::inbound_prefix(&nats) else {
        tracing::warn!("no inbound subject of the form <prefix>.>: POST /v1/events is off");
        return Ok(None);
    };
    let client = ledger_nats::connect_background(&nats).await?;
    Ok(Some(std::sync::Arc::new(NatsEvents {
        js: async_nats::jetstream::new(client),
        prefix,
        stream: config.inbound.stream.clone(),
    })))
}

/// The service as it runs in this process.
pub type Running = tokio::task::JoinHandle<Result<ledger_service::Status, ledger_nats::NatsError>>;

/// Opens the data directory, rebuilds the projection and starts the service on
/// JetStream in this process, until `shutdown` resolves; returns its handle at once.
pub async fn start(
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(ledger_service::Handle, Running)> {
    let service_config = config.service();
    let (service, handle) =
        tokio::task::block_in_place(|| ledger_service::Service::open(service_config))
            .map_err(ledger_nats::NatsError::from)?;
    let nats = config.nats();
    let served = handle.clone();
    let running =
        tokio::spawn(async move { ledger_nats::serve(service, served, &nats, shutdown).await });
    Ok((handle, running))
}

#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// NDJSON files to send, in order (`-` reads stdin). Blank lines are skipped.
    #[arg(long = "events", value_name = "FILE", num_args = 1.., required = true)]
    pub events: Vec<PathBuf>,
    /// Inbound subject prefix; events go to <prefix>.<type>.
    #[arg(
        long,
        env = "INCENTIVE_LEDGER_SUBJECT_PREFIX",
        default_value = "incentive.events"
    )]
    pub subject_prefix: String,
    /// Messages in flight waiting for JetStream acks, at most.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
}

pub fn publish(args: PublishArgs) -> Result<()> {
    let mut inputs = Vec::new();
    for path in &args.events {
        let bytes = if path.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("cannot read stdin")?;
            buf
        } else {
            std::fs::read(path)
                .with_context(|| format!("cannot read events file {}", path.display()))?
        };
        inputs.extend(ledger_core::replay::ndjson_lines(&bytes, 1).map(|(_, l)| l.to_vec()));
    }
    publish_events(&args.nats, &args.subject_prefix, args.window, inputs)
}

/// `--send` and where to: for the commands that make events (`program publish`,
/// `import`, `redrive`) and print them unless told to send them.
#[derive(Args)]
pub struct SendArgs {
    /// Publish the events to the inbound stream (the NATS options below) instead of
    /// writing them out.
    #[arg(long)]
    pub send: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// With --send: the inbound subject prefix; each event goes to <prefix>.<type>.
    #[arg(
        long,
        env = "INCENTIVE_LEDGER_SUBJECT_PREFIX",
        default_value = "incentive.events"
    )]
    pub subject_prefix: String,
}

impl SendArgs {
    /// Publishes `events` as `publish` would.
    pub fn publish(&self, events: Vec<Vec<u8>>) -> Result<()> {
        publish_events(&self.nats, &self.subject_prefix, 256, events)
    }
}

/// Sends `inputs` (one CloudEvent each) to the inbound subjects under `prefix`, at most
/// `window` waiting for their JetStream acknowledgements, and says what was stored.
pub fn publish_events(
    nats: &NatsArgs,
    prefix: &str,
    window: usize,
    inputs: Vec<Vec<u8>>,
) -> Result<()> {
    let config = nats.config()?;
    let count = inputs.len();
    let summary = runtime()?.block_on(named_refusal(async {
        let client = ledger_nats::connect_now(&config.nats()).await?;
        let js = async_nats::jetstream::new(client.clone());
        ledger_nats::ensure_inbound_stream(&js, &config.nats()).await?;
        let s = ledger_nats::publish::publish_all(&js, prefix, inputs, window)
            .await
            .context("publishing failed")?;
        client.flush().await.ok();
        anyhow::Ok(s)
    }))?;
    println!(
        "sent {count}: {} stored by JetStream, {} dropped as exact re-sends",
        summary.published, summary.duplicates
    );
    Ok(())
}

/// A tool's NATS work, whose failure names the permission the server refused, if it
/// refused one (the request itself only times out).
async fn named_refusal<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    work.await.map_err(|e| match ledger_nats::server_refusal() {
        Some(refusal) => e.context(refusal),
        None => e,
    })
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[arg(long, env = "INCENTIVE_LEDGER_STATUS_SUBJECT")]
    pub status_subject: Option<String>,
    /// Ask this replica (its own subject, `<status subject>.<id>`) rather than
    /// whichever answers first.
    #[arg(long)]
    pub replica: Option<String>,
    /// Seconds to wait for the service to answer.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

pub fn status(args: StatusArgs) -> Result<()> {
    let config = args.nats.config()?;
    let mut subject = args
        .status_subject
        .clone()
        .unwrap_or(config.status_subject.clone());
    if let Some(replica) = &args.replica {
        subject = format!("{subject}.{replica}");
    }
    let reply = runtime()?.block_on(named_refusal(async {
        let client = ledger_nats::connect_now(&config.nats()).await?;
        let reply = tokio::time::timeout(
            Duration::from_secs(args.timeout),
            client.request(subject.clone(), "".into()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer on {subject} within {} s: is `incentive-ledger serve` running?",
                args.timeout
            )
        })?
        .map_err(|e| anyhow::anyhow!("status request on {subject} failed: {e}"))?;
        anyhow::Ok(reply.payload)
    }))?;
    let status: ledger_service::Status =
        serde_json::from_slice(&reply).context("the status reply is not a status document")?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

#[derive(Args)]
pub struct PayoutsArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[arg(long, env = "INCENTIVE_LEDGER_PAYOUT_STREAM")]
    pub payout_stream: Option<String>,
}

/// Prints every `payout.issued` message of the payout stream, one JSON object a line.
pub fn payouts(args: PayoutsArgs) -> Result<()> {
    let config = args.nats.config()?;
    let name = args
        .payout_stream
        .clone()
        .unwrap_or(config.payouts.stream.clone());
    let lines = runtime()?.block_on(named_refusal(async {
        let client = ledger_nats::connect_now(&config.nats()).await?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(&name)
            .await
            .map_err(|e| anyhow::anyhow!("payout stream {name}: {e}"))?;
        let info = stream
            .get_info()
            .await
            .map_err(|e| anyhow::anyhow!("payout stream {name}: {e}"))?;
        let mut lines = Vec::new();
        for seq in info.state.first_sequence.max(1)..=info.state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                lines.push(String::from_utf8_lossy(&m.payload).into_owned());
            }
        }
        anyhow::Ok(lines)
    }))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for l in lines {
        std::io::Write::write_all(&mut out, l.as_bytes())?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(())
}
