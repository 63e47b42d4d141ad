//! The live projection: the fold of the log up to a position, and the indexes its
//! queries need so that none of them scans history under the lock the fold writes with.
//!
//! Only this crate sees it, and only through [`crate::Handle`]; the indexes are derived
//! data, caught up after every fold step and never stored.

use ledger_core::Replay;
use std::collections::BTreeMap;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

pub(crate) struct Projection {
    pub(crate) replay: Replay,
    /// Last log position folded.
    pub(crate) seq: u64,
    /// Last arrival (message or line) accounted for, folded or refused.
    pub(crate) arrival: u64,
    /// Log position of the last checkpoint written.
    pub(crate) checkpoint_seq: u64,
    index: Index,
}

/// Indexes over what the fold appends (payouts, refusals): appended to, never rebuilt.
#[derive(Default)]
struct Index {
    /// Payouts indexed so far (a prefix of the fold's).
    payouts: usize,
    /// Partner id → the fold's indexes of its payouts, in issue order.
    payouts_by_partner: HashMap<ledger_core::Text, Vec<u32>>,
    /// Program id → the same, per program.
    payouts_by_program: HashMap<ledger_core::Text, Vec<u32>>,
    /// Refusals counted so far.
    rejections: usize,
    refused_by_code: BTreeMap<&'static str, u64>,
}

impl Projection {
    pub(crate) fn new(replay: Replay, seq: u64, arrival: u64, checkpoint_seq: u64) -> Projection {
        let mut p = Projection {
            replay,
            seq,
            arrival,
            checkpoint_seq,
            index: Index::default(),
        };
        p.catch_up();
        p
    }

    /// Indexes what the fold appended since the last call.
    pub(crate) fn catch_up(&mut self) {
        let payouts = self.replay.payouts();
        for (i, p) in payouts.iter().enumerate().skip(self.index.payouts) {
            // A payout index is below 2^32 as long as the fold holds fewer payouts than
            // that in memory (the history store of issue 15 lifts this).
            let i = u32::try_from(i).expect("fewer than 2^32 payouts in memory");
            self.index
                .payouts_by_partner
                .entry(p.partner_id.clone())
                .or_default()
                .push(i);
            self.index
                .payouts_by_program
                .entry(p.program_id.clone())
                .or_default()
                .push(i);
        }
        self.index.payouts = payouts.len();
        let rejections = self.replay.rejections();
        for r in &rejections[self.index.rejections..] {
            *self
                .index
                .refused_by_code
                .entry(r.code.as_str())
                .or_default() += 1;
        }
        self.index.rejections = rejections.len();
        debug_assert_eq!(
            self.index.refused_by_code.values().sum::<u64>(),
            self.replay.rejections().len() as u64
        );
    }

    /// The fold's indexes of a partner's payouts, in issue order.
    pub(crate) fn partner_payouts(&self, partner_id: &str) -> &[u32] {
        debug_assert_eq!(self.index.payouts, self.replay.payouts().len());
        self.index
            .payouts_by_partner
            .get(partner_id)
            .map_or(&[], Vec::as_slice)
    }

    /// The fold's indexes of a program's payouts, in issue order.
    pub(crate) fn program_payouts(&self, program_id: &str) -> &[u32] {
        debug_assert_eq!(self.index.payouts, self.replay.payouts().len());
        self.index
            .payouts_by_program
            .get(program_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Refusals by code.
    pub(crate) fn refused_by_code(&self) -> &BTreeMap<&'static str, u64> {
        &self.index.refused_by_code
    }
}
