//! The live projection: the fold of the log up to a position — its working set in
//! memory — and the history archive its queries read payouts, refusals and journal
//! lines from.
//!
//! Only this crate sees it, and only through [`crate::Handle`]. After every fold step
//! the history the step produced is drained from the fold into the archive, so that
//! memory holds what the fold needs to decide the next event and nothing more.

use ledger_core::replay::{Drained, Rejection};
use ledger_core::Replay;
use ledger_log::history::Stores;
use ledger_log::{Archive, LogError, LookupStore};
use std::sync::Arc;

pub(crate) struct Projection {
    pub(crate) replay: Replay,
    /// Last log position folded.
    pub(crate) seq: u64,
    /// Last arrival (message or line) accounted for, folded or refused.
    pub(crate) arrival: u64,
    /// Log position of the last checkpoint written.
    pub(crate) checkpoint_seq: u64,
    pub(crate) archive: Archive,
    /// Where the fold's lookups beyond its recent ones are (`None`: all in memory).
    pub(crate) lookups: Option<Arc<LookupStore>>,
    /// History drained from the fold whose write to the archive failed: written before
    /// anything newer, at the next step.
    unwritten: Drained,
}

impl Projection {
    /// A projection of `replay`, whose history up to what it holds is in `archive`;
    /// what it still holds is written there now.
    pub(crate) fn new(
        replay: Replay,
        seq: u64,
        arrival: u64,
        checkpoint_seq: u64,
        archive: Archive,
        lookups: Option<Arc<LookupStore>>,
    ) -> Result<Projection, LogError> {
        let mut p = Projection {
            replay,
            seq,
            arrival,
            checkpoint_seq,
            archive,
            lookups,
            unwritten: Drained::default(),
        };
        p.archive_new(&mut Vec::new())?;
        Ok(p)
    }

    /// Moves what the fold produced since the last call into the archive, adding the
    /// refusals among it to `refused` (for notices). On a write failure the history is
    /// held for the next call, and the error returned: queries miss it until then,
    /// nothing is lost.
    pub(crate) fn archive_new(&mut self, refused: &mut Vec<Rejection>) -> Result<(), LogError> {
        let drained = self.replay.drain_history();
        refused.extend_from_slice(&drained.rejections);
        self.unwritten.extend(drained);
        if !self.unwritten.is_empty() {
            self.archive.write(&self.unwritten)?;
            let written = std::mem::take(&mut self.unwritten);
            debug_assert_eq!(
                written.first_payout + written.payouts.len() as u64,
                self.replay.payouts_issued()
            );
        }
        Ok(())
    }

    /// Whether every payout the fold issued is in the archive.
    pub(crate) fn archived(&self) -> bool {
        self.unwritten.is_empty()
    }

    /// The stores a checkpoint of this projection names.
    pub(crate) fn stores(&self) -> Stores {
        Stores {
            archive: Some(self.archive.clone()),
            lookups: self.lookups.clone(),
        }
    }
}
