//! The fold's invariants as code, and the reference model of its sweep.
//!
//! - [`Ledger::unsettled`] is the naive model of SPEC §5: it visits *every* entry, in
//!   order, and lists what a full sweep would still pay. After every applied event it is
//!   empty — the incremental sweep (which visits only the entries the event made dirty)
//!   left nothing a full sweep would pay, so the two issue the same payouts. The property
//!   tests check it after every event of generated streams (TigerBeetle keeps its
//!   `reference_model.zig` beside its state machine for the same reason).
//! - [`Fingerprint`]: a cheap summary of the state, compared before and after a refused
//!   event in debug builds (a refusal changes nothing).
//! - The per-event checks of debug builds (and so of every test): a swept non-fund
//!   entry that is payable has `earned = paid`; a fund bucket's `reserved` is what its
//!   pending claims hold from it, and `available = earned − reserved − paid − expired`
//!   with `expired ≥ 0`.

use super::*;

/// Sizes of every collection of the state: cheap enough to take around every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([usize; 12]);

impl Ledger {
    /// The state's [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        let versions = self.programs.values().map(|p| p.versions.len()).sum();
        let closed = self.programs.values().map(|p| p.closed.len()).sum();
        Fingerprint([
            self.syms.names.len(),
            self.programs.len(),
            versions,
            closed,
            self.enrollments.len(),
            self.entries.len(),
            self.partner_entries.len(),
            self.recent.sales.len(),
            self.recent.returns.len(),
            self.claims.len(),
            self.recent.adjustments.len(),
            self.recent.trained.len(),
        ])
    }

    /// What a full sweep of every entry, in order, would pay now: `(partner, program,
    /// period label, amount)` of each payable entry whose `earned − paid` is not zero.
    /// The reference model of the incremental sweep; empty after every applied event.
    pub fn unsettled(&self) -> Vec<(String, String, String, Decimal)> {
        let mut keys: Vec<EntryKey> = self.entries.keys().copied().collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        keys.into_iter()
            .filter_map(|key| {
                let (_, due, _) = self.payable(key)?;
                let program = self.programs.get(&key.program)?;
                (!due.is_zero()).then(|| {
                    (
                        self.syms.name(key.partner).to_string(),
                        self.syms.name(key.program).to_string(),
                        program.period_kind().label(key.period).into(),
                        due,
                    )
                })
            })
            .collect()
    }

    /// The checks of one swept entry (debug builds).
    pub(super) fn check_swept(&self, key: EntryKey) {
        if let Some((earned, due, _)) = self.payable(key) {
            assert!(
                due.is_zero(),
                "a payable entry was left with earned {earned} ≠ paid after the sweep"
            );
        }
        let (Some(entry), Some(program)) =
            (self.entries.get(&key), self.programs.get(&key.program))
        else {
            return;
        };
        if !program.kind().is_fund() {
            return;
        }
        let fund = self.fund_balance(key, entry);
        assert!(!fund.expired.is_sign_negative(), "expired < 0: {fund:?}");
        assert_eq!(
            fund.available,
            self.earned(key, entry) - entry.reserved - entry.paid - fund.expired,
            "available = earned − reserved − paid − expired"
        );
        if !self.derived_stale {
            let held: Decimal = self
                .claims_by_pair
                .get(&(key.partner, key.program))
                .into_iter()
                .flatten()
                .filter_map(|id| self.claims.get(id))
                .filter(|c| c.status == ClaimStatus::Pending)
                .flat_map(|c| c.reservations.iter())
                .filter(|(period, _)| *period == key.period)
                .map(|(_, amount)| *amount)
                .sum();
            assert_eq!(
                entry.reserved, held,
                "a bucket's reserved is what its pending claims hold from it"
            );
        }
    }
}
