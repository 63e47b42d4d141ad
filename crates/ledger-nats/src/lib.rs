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
    connect, connect_now, connect_watched, ensure_consumer, ensure_inbound_stream, ensure_streams,
    serve,
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
