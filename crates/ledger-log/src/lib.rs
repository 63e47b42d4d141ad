//! `ledger-log`: the durable memory of the incentive ledger, in a data directory.
//!
//! - [`Log`]: the append-only log over sled — records keyed by a gap-free sequence from
//!   1, each holding the raw bytes as received, its arrival number and time, and a
//!   SHA-256 hash chain; the identity index that makes intake idempotent; the quarantine
//!   of inputs refused at intake; group commit with one flush per batch. [`LogReader`]
//!   reads the same directory beside it and cannot append.
//! - [`archive`]: the history the fold hands out (payouts, refusals, journal lines),
//!   on disk and indexed for queries.
//! - [`history`]: rebuilding the fold from the log (whole, as of a position or a time),
//!   resuming from a checkpoint; writing checkpoints.
//! - [`lookups`]: a disk store for the fold's lookups that grow with the log.
//! - [`runs`]: sorted runs, the store under the lookups.
//! - [`outbox`]: the ranges of payouts still to publish ([`OutboxStore`]).
//! - [`verify`]: re-checking everything from the bytes and naming the first damage.
//!
//! The domain (what is refused, what balances are) is `ledger-core`'s; this crate only
//! stores and replays. No type of the storage engine appears in its API.

pub mod archive;
pub mod backup;
pub mod canon;
pub mod fuzz_checks;
pub mod history;
mod identities;
pub mod layout;
pub mod log;
pub mod lookups;
pub mod outbox;
pub mod runs;
pub mod simulation;
pub mod verify;

pub use archive::{Archive, Heads, PayoutsOf};
pub use canon::PayoutCanon;
pub use history::{
    fold_read_only, rebuild, rebuild_with_journal, save_checkpoint, Bound, ReadOnlyFold, Rebuilt,
};
pub use log::{
    write_durably, Input, Log, LogError, LogReader, Outcome, Segment, StorageError, Transport,
    FORMAT_VERSION,
};
pub use lookups::LookupStore;
pub use outbox::{OutboxStore, Range};
pub use runs::RunName;
pub use verify::{verify, verify_live, CheckpointStatus, Report};

/// An error and its sources, joined by ": " — for logs and reported faults, where only
/// one line is shown. (Each error's own `Display` leaves its source out; a source whose
/// text the chain already ends with is not repeated.)
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
