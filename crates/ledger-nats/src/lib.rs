//! `ledger-nats`: the incentive ledger's JetStream adapter — and nothing else.
//!
//! - [`jetstream`]: connect, the inbound and payout streams, the durable pull consumer
//!   as the service's [`ledger_service::Inbound`], the payout stream as its
//!   [`ledger_service::PayoutSink`], the status responder, and [`serve`], which runs a
//!   [`ledger_service::Service`] on them.
//! - [`lease`]: replicas, their presence and the publishing lease (a KV bucket).
//! - [`notices`]: refusal notices on the rejected subject.
//! - [`publish`]: the importer that sends NDJSON events to the inbound subjects.
//! - [`config`]: the NATS side's settings and their defaults.
//!
//! The ledger's logic (commit, fold, outbox, checkpoints, health) is `ledger-service`'s.

pub mod config;
pub mod jetstream;
pub mod lease;
pub mod notices;
pub mod publish;

pub use config::Config;
pub use jetstream::{
    connect_background, connect_now, connect_watched, ensure_inbound_stream, ensure_streams,
    inbound_prefix, serve, server_refusal,
};

/// What went wrong on the NATS side; the variants say what to check.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "cannot connect to NATS at {urls}: {} ({cause})",
        jetstream::connect_hint(cause)
    )]
    Connect {
        urls: String,
        /// Not a `#[source]`: its text is in the message once (the client's own chain
        /// repeats itself).
        cause: async_nats::ConnectError,
    },
    #[error("cannot read the NATS credentials file {path}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JetStream setup failed ({what})")]
    JetStream {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{message}")]
    Replica { message: String },
    #[error(transparent)]
    Service(#[from] ledger_service::ServiceError),
}

#[cfg(test)]
mod asyncapi_tests {
    /// `schemas/asyncapi.json` names the subjects this crate uses by default, every
    /// operation's channel exists and has its NATS binding, every security scheme a
    /// server names is defined.
    #[test]
    fn the_asyncapi_document_matches_the_subjects() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/asyncapi.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["asyncapi"], "3.0.0");
        let c = crate::Config::default();
        let addresses: Vec<&str> = doc["channels"]
            .as_object()
            .unwrap()
            .values()
            .map(|ch| ch["address"].as_str().unwrap())
            .collect();
        let inbound = c.inbound.subjects[0].trim_end_matches(".>");
        for expected in [
            format!("{inbound}.{{type}}"),
            format!("{}.{{kind}}", c.payouts.subject_prefix),
            c.rejected_subject.clone(),
            c.status_subject.clone(),
            format!("{}.{{replica}}", c.status_subject),
        ] {
            assert!(
                addresses.contains(&expected.as_str()),
                "{expected} not in {addresses:?}"
            );
        }
        for (name, op) in doc["operations"].as_object().unwrap() {
            let reference = op["channel"]["$ref"].as_str().unwrap();
            let channel = reference.trim_start_matches("#/channels/");
            assert!(
                doc["channels"].get(channel).is_some(),
                "{name}: {reference}"
            );
            assert_eq!(op["bindings"]["nats"]["bindingVersion"], "0.1.0", "{name}");
        }
        for s in doc["servers"]["nats"]["security"].as_array().unwrap() {
            let name = s["$ref"]
                .as_str()
                .unwrap()
                .trim_start_matches("#/components/securitySchemes/");
            assert!(
                doc["components"]["securitySchemes"].get(name).is_some(),
                "{name}"
            );
        }
    }
}
