//! The JetStream side's configuration: how to reach NATS, the inbound stream and its
//! consumer, the payout stream, the refusal and status subjects. Every field has a
//! default; the binary reads them from the `[nats]`, `[inbound]`, `[payouts]` and
//! `[replication]` tables (and the two subjects) of its TOML file, see
//! `deploy/incentive-ledger.toml`.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub nats: NatsConfig,
    pub inbound: InboundConfig,
    pub payouts: PayoutsConfig,
    /// Subject of `incentive.rejected` notices (CloudEvents) for refused inputs.
    pub rejected_subject: String,
    /// Request/reply subject answering with the service's position and digest.
    pub status_subject: String,
    pub replication: ReplicationConfig,
}

/// Replicas and their lease (`[replication]`): any number of `serve` processes, each
/// with its own data directory, fold the inbound stream; the one holding the lease
/// publishes (docs/OPERATIONS.md, "Running in HA").
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// This replica's id: letters, digits, `-` and `_`. Unset: the one kept in the data
    /// directory's `REPLICA` file, made at its first start (host name and a random
    /// suffix), so a second data directory is a second replica.
    pub replica_id: Option<String>,
    /// The JetStream key-value bucket holding the lease and the replicas' presence.
    pub lease_bucket: String,
    /// Its replicas (unset: as many as the inbound stream's).
    pub lease_replicas: Option<usize>,
    /// A lease not renewed for this long is taken over by a standby.
    pub lease_ttl_ms: u64,
    /// How often the active replica renews the lease and a standby looks at it.
    pub lease_renew_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            replica_id: None,
            lease_bucket: "incentive-ledger".into(),
            lease_replicas: None,
            lease_ttl_ms: 4_000,
            lease_renew_ms: 1_000,
        }
    }
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
    /// Prefix of this connection's reply subjects (default `_INBOX`). Give each user its
    /// own (`_INBOX_<user>`, as `deploy/nats-accounts.conf` expects) so that no user may
    /// subscribe to another's replies.
    pub inbox_prefix: Option<String>,
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
    /// The `source` attribute of the `payout.issued` CloudEvents (read by the service).
    pub source: String,
    pub replicas: usize,
    /// JetStream de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window_secs: u64,
    /// Payouts in flight (published, not yet acknowledged) at most (read by the
    /// service's publisher).
    pub publish_window: usize,
    /// Longest wait for JetStream to take or acknowledge one payout before the window is
    /// published again (read by the service's publisher).
    pub publish_timeout_ms: u64,
    /// A payout backlog that has not moved for this long is reported as a fault on
    /// `/health/ready`, `status` and `/metrics` (read by the service).
    pub stall_alarm_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nats: NatsConfig::default(),
            inbound: InboundConfig::default(),
            payouts: PayoutsConfig::default(),
            rejected_subject: "incentive.rejected".into(),
            status_subject: "incentive.status".into(),
            replication: ReplicationConfig::default(),
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
            inbox_prefix: None,
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
            source: "incentive-ledger".into(),
            replicas: 1,
            duplicate_window_secs: 120,
            publish_window: 512,
            publish_timeout_ms: 10_000,
            stall_alarm_secs: 60,
        }
    }
}
