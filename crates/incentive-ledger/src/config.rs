//! The configuration file of `serve` (TOML; see `deploy/incentive-ledger.toml`): every
//! key has a default, unknown keys are errors (so that a typo never silently leaves a
//! default in force). It is one file for the operator; each crate gets its own part —
//! the service ([`ledger_service::ServiceConfig`]), the JetStream side
//! ([`ledger_nats::Config`]) and the HTTP API (address and tokens).

use ledger_nats::config::{InboundConfig, NatsConfig, PayoutsConfig, ReplicationConfig};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

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
    pub replication: ReplicationConfig,
    /// Log positions folded between checkpoints (a checkpoint is also written on shutdown).
    pub checkpoint_every: u64,
    /// Lookups (sale records, used ids, identities) held in memory before they are
    /// written to the data directory's lookup store: the fold's main memory knob.
    pub lookups_in_memory: usize,
    /// Address of the HTTP query API.
    pub http_addr: String,
    pub auth: ledger_api::AuthConfig,
}

impl Default for Config {
    fn default() -> Config {
        let nats = ledger_nats::Config::default();
        let service = ledger_service::ServiceConfig::default();
        Config {
            data_dir: service.data_dir,
            nats: nats.nats,
            inbound: nats.inbound,
            payouts: nats.payouts,
            rejected_subject: nats.rejected_subject,
            status_subject: nats.status_subject,
            replication: nats.replication,
            checkpoint_every: service.checkpoint_every,
            lookups_in_memory: service.lookups_in_memory,
            http_addr: "127.0.0.1:8080".into(),
            auth: ledger_api::AuthConfig::default(),
        }
    }
}

impl Config {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The service's part.
    pub fn service(&self) -> ledger_service::ServiceConfig {
        ledger_service::ServiceConfig {
            data_dir: self.data_dir.clone(),
            checkpoint_every: self.checkpoint_every,
            payout_subject_prefix: self.payouts.subject_prefix.clone(),
            payout_source: self.payouts.source.clone(),
            publish_window: self.payouts.publish_window,
            publish_timeout: Duration::from_millis(self.payouts.publish_timeout_ms.max(1)),
            outbox_stall_after: Duration::from_secs(self.payouts.stall_alarm_secs.max(1)),
            lookups_in_memory: self.lookups_in_memory.max(1),
        }
    }

    /// The JetStream side's part.
    pub fn nats(&self) -> ledger_nats::Config {
        ledger_nats::Config {
            nats: self.nats.clone(),
            inbound: self.inbound.clone(),
            payouts: self.payouts.clone(),
            rejected_subject: self.rejected_subject.clone(),
            status_subject: self.status_subject.clone(),
            replication: self.replication.clone(),
        }
    }
}

/// The configuration loader on arbitrary bytes (the `config` fuzz target, and the suite's
/// replay of its corpus): never a panic; a file that parses gives each part, and each
/// token entry that names no file resolves or says why. (Entries with `token_file` are
/// not resolved: a fuzzer's path could be any file of the machine.)
#[cfg_attr(not(test), allow(dead_code))]
pub fn fuzz_check(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let service = config.service();
    assert!(service.lookups_in_memory >= 1);
    assert!(!service.publish_timeout.is_zero() && !service.outbox_stall_after.is_zero());
    let _ = config.nats();
    for token in config.auth.tokens.iter().filter(|t| t.token_file.is_none()) {
        if let Err(why) = token.known() {
            assert!(!why.is_empty());
        }
    }
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
            [payouts]
            stall_alarm_secs = 30
            source = "acme/incentives"
            "#,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/incentive-ledger"));
        assert_eq!(c.nats.urls.len(), 2);
        assert_eq!(c.inbound.fetch_batch, 256);
        assert_eq!(c.inbound.stream, "INCENTIVE_EVENTS");
        assert_eq!(c.payouts.subject_prefix, "incentive.payouts");
        assert_eq!(c.service().payout_source, "acme/incentives");
        assert_eq!(
            Config::default().service().payout_source,
            "incentive-ledger"
        );
        assert_eq!(c.service().outbox_stall_after, Duration::from_secs(30));
        assert_eq!(c.service().checkpoint_every, 5000);
        assert_eq!(c.nats().inbound.fetch_batch, 256);
        assert!(
            Config::from_toml("[nats]\nurl = \"x\"").is_err(),
            "unknown keys are refused"
        );
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert_eq!(Config::default().rejected_subject, "incentive.rejected");
    }

    /// The sample in deploy/ parses with the service's own reader.
    #[test]
    fn the_sample_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/incentive-ledger.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.inbound.subjects, vec!["incentive.events.>".to_string()]);
        assert_eq!(c.nats.user.as_deref(), Some("ledger"));
        assert_eq!(c.replication.lease_ttl_ms, 4_000);
        // Its token entries are each well formed (the environment one names a variable).
        assert_eq!(c.auth.tokens.len(), 3);
        assert!(c.auth.tokens[0].resolve().is_ok());
        assert!(c.auth.tokens[2].resolve().is_ok());
        assert!(c.auth.tokens[1]
            .resolve()
            .unwrap_err()
            .contains("INCENTIVE_LEDGER_FINANCE_TOKEN"));
    }

    /// The fuzz target's corpus (`fuzz/corpus/config/`) holds on stable too.
    #[test]
    fn the_config_fuzz_corpus_holds() {
        assert!(ledger_core::fuzz_checks::replay_corpus("config", fuzz_check) >= 14);
    }

    /// The cluster sample names every node and asks for three replicas of everything.
    #[test]
    fn the_cluster_sample_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/cluster/incentive-ledger.toml");
        let c = Config::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(c.nats.urls.len(), 3);
        assert_eq!((c.inbound.replicas, c.payouts.replicas), (3, 3));
        assert_eq!(c.replication.lease_replicas, Some(3));
    }
}
