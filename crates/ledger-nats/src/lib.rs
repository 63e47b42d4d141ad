//! `ledger-nats`: the incentive ledger on NATS JetStream.
//!
//! - [`service`]: `serve` — durable pull consumer → group commit into the log → ack →
//!   fold → payout outbox → `payout.issued` on JetStream; refusal notices; status replies.
//! - [`outbox`]: payouts recorded with the fold position, published after, removed on ack.
//! - [`publish`]: the importer that sends NDJSON events to the inbound subjects.
//! - [`config`]: the TOML configuration and its defaults.

pub mod config;
pub mod histogram;
pub mod outbox;
pub mod publish;
pub mod service;

pub use config::Config;
pub use service::{run, Status};
