//! `ledger-core`: the contract of the incentive ledger (SPEC.md) as pure code.
//!
//! Inputs go through [`intake`] (SPEC §1–§2: size, I-JSON, envelope, type, data shape)
//! into typed [`event::Event`]s; the [`ledger::Ledger`] folds them (SPEC §3–§5) and
//! returns refusals and payouts as values; [`replay::Replay`] keeps the counts and
//! produces the [`document::Document`] of SPEC §7 with its digest.
//!
//! This crate does no IO: no files, no network, no clock, no randomness. Everything it
//! computes is a function of its inputs, so any log replays to the same digest anywhere.

pub mod binding;
pub mod describe;
pub mod document;
pub mod event;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod gen;
pub mod ids;
pub mod intake;
pub mod json;
pub mod ledger;
pub mod redrive;
pub mod refusal;
pub mod replay;
pub mod report;
pub mod rules;
pub mod simulate;
pub mod store;
pub mod values;

pub use document::Document;
pub use event::{Event, EventData, EventType, Text};
pub use ids::{hex, identity_key, uuid_v5};
pub use intake::{check, Accepted, IntakeRefusal};
pub use ledger::{Applied, Ledger, Payout, PayoutReason};
pub use refusal::{Code, Refusal};
pub use replay::{Replay, Step};
