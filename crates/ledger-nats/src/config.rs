//! Service configuration: a TOML file whose every field has a default, overridden by
//! flags and `INCENTIVE_LEDGER_*` environment variables (the binary merges those).
//! See `deploy/incentive-ledger.toml` for a commented sample.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory of the durable log.
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub inbound: InboundConfig,
    pub payouts: PayoutsConfig,
    /// Subject of `incentive.rejected` notices (CloudEvents) for refused inputs.
    pub rejected_subject: String,
    /// Request/reply subject answering with the service's position and digest.
    pub status_subject: String,
    /// Log positions folded between checkpoints (a checkpoint is also written on shutdown).
    pub checkpoint_every: u64,
    /// Address of the HTTP query API.
    pub http_addr: String,
    pub auth: AuthConfig,
}

/// Bearer tokens of the HTTP API.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    /// `admin`, `finance` or `partner:<partner_id>`.
    pub role: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, e.g. `nats://127.0.0.1:4222`.
    pub urls: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// An nkey seed (`SU…`).
    pub nkey_seed: Option<String>,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS.
    pub tls_required: bool,
    /// Connection name shown by the server.
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    pub stream: String,
    pub subjects: Vec<String>,
    /// Durable pull consumer.
    pub consumer: String,
    pub replicas: usize,
    /// Stream limits; -1 / 0 mean unlimited.
    pub max_bytes: i64,
    pub max_age_secs: u64,
    /// Messages fetched and group-committed at once.
    pub fetch_batch: usize,
    /// How long the loop waits for a first message before looking at the outbox again.
    pub fetch_wait_ms: u64,
    /// A batch grows while messages keep arriving with gaps shorter than this.
    pub linger_ms: u64,
    /// Redelivery after this long without an ack.
    pub ack_wait_secs: u64,
    pub max_ack_pending: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutsConfig {
    pub stream: String,
    /// Payouts go to `<subject_prefix>.<kind>`.
    pub subject_prefix: String,
    pub replicas: usize,
    /// JetStream de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window_secs: u64,
    /// Payouts in flight (published, not yet acknowledged) at most.
    pub publish_window: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("data"),
            nats: NatsConfig::default(),
            inbound: InboundConfig::default(),
            payouts: PayoutsConfig::default(),
            rejected_subject: "incentive.rejected".into(),
            status_subject: "incentive.status".into(),
            checkpoint_every: 100_000,
            http_addr: "127.0.0.1:8080".into(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            name: "incentive-ledger".into(),
        }
    }
}

impl Default for InboundConfig {
    fn default() -> InboundConfig {
        InboundConfig {
            stream: "INCENTIVE_EVENTS".into(),
            subjects: vec!["incentive.events.>".into()],
            consumer: "incentive-ledger".into(),
            replicas: 1,
            max_bytes: -1,
            max_age_secs: 0,
            fetch_batch: 4000,
            fetch_wait_ms: 100,
            linger_ms: 2,
            ack_wait_secs: 30,
            max_ack_pending: 20_000,
        }
    }
}

impl Default for PayoutsConfig {
    fn default() -> PayoutsConfig {
        PayoutsConfig {
            stream: "INCENTIVE_PAYOUTS".into(),
            subject_prefix: "incentive.payouts".into(),
            replicas: 1,
            duplicate_window_secs: 120,
            publish_window: 512,
        }
    }
}

impl Config {
    /// Parses a TOML configuration; unknown keys are errors, so that a typo never
    /// silently leaves a default in force.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml_parse(text)
    }
}

fn toml_parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml(
            r#"
            data_dir = "/var/lib/incentive-ledger"
            checkpoint_every = 5000
            [nats]
            urls = ["nats://a:4222", "nats://b:4222"]
            user = "ledger"
            password = "secret"
            [inbound]
            fetch_batch = 256
            "#,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/incentive-ledger"));
        assert_eq!(c.nats.urls.len(), 2);
        assert_eq!(c.inbound.fetch_batch, 256);
        assert_eq!(c.inbound.stream, "INCENTIVE_EVENTS");
        assert_eq!(c.payouts.subject_prefix, "incentive.payouts");
        assert!(
            Config::from_toml("[nats]\nurl = \"x\"").is_err(),
            "unknown keys are refused"
        );
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }
}
