//! The settlement sweep (SPEC §5) over the entries the event made dirty, in entry
//! order; see the module docs of [`super`] for why that equals a full sweep.

use super::*;

impl Ledger {
    /// SPEC §5 over the entries the event may have changed, in entry order.
    pub(super) fn sweep(&mut self, event: &Event, payouts: &mut Vec<Payout>) {
        // Taken for the sweep and given back empty, so its buffer serves every event.
        let mut dirty = std::mem::take(&mut self.dirty);
        if dirty.is_empty() {
            self.dirty = dirty;
            return;
        }
        if dirty.len() > 1 {
            // Equal keys are identical, so an unstable sort (no scratch buffer) is exact.
            dirty.sort_unstable_by(|a, b| self.entry_order(a, b));
            dirty.dedup();
        }
        let closing = match &event.data {
            EventData::PeriodClosed { program_id, period } => {
                self.syms.get(program_id).map(|s| (s, period.index))
            }
            _ => None,
        };
        let mut cause: Option<Arc<Cause>> = None;
        for key in dirty.drain(..) {
            let (payout, earned) = self.settle(key, event, closing);
            if self.journal.is_some() {
                if let Some(entry) = self.entries.get(&key) {
                    let cause = cause.get_or_insert_with(|| {
                        Arc::new(Cause {
                            source: event.source.clone(),
                            id: event.id.clone(),
                            event_type: event.event_type(),
                            time: event.time.clone(),
                        })
                    });
                    let line = JournalLine {
                        cause: cause.clone(),
                        basis: entry.basis,
                        adjustments: entry.adjustments,
                        earned: earned.unwrap_or_else(|| self.earned(key, entry)),
                        paid: entry.paid,
                        reserved: entry.reserved,
                        payout: payout.as_ref().map(|p| (p.payout_id, p.amount, p.reason)),
                    };
                    if let Some(journal) = self.journal.as_mut() {
                        journal.push(key, line);
                    }
                }
            }
            if let Some(p) = payout {
                payouts.push(p);
            }
            if cfg!(debug_assertions) {
                self.check_swept(key);
            }
        }
        self.dirty = dirty;
    }

    /// `(earned, earned − paid, always payable)` of an entry that is payable now (SPEC
    /// §5): a non-fund entry whose rules always pay, or whose period is closed. `None`
    /// for anything else — MDF/co-op buckets are paid only by claim approvals (§4.2).
    pub(super) fn payable(&self, key: EntryKey) -> Option<(Decimal, Decimal, bool)> {
        let entry = self.entries.get(&key)?;
        let program = self.programs.get(&key.program)?;
        if program.kind().is_fund() {
            return None;
        }
        let closed = program.closed.contains_key(&key.period);
        let (def, target) = self.evaluation(key)?;
        let always = def.rules.always_payable();
        if !(always || closed) {
            return None;
        }
        let earned = earned_by(def, target, entry);
        Some((earned, earned - entry.paid, always))
    }

    /// Pays `earned − paid` of one entry if it is payable and not zero (SPEC §5).
    /// Also returns `earned` when it was computed (a payable entry), which paying does
    /// not change, so that the journal need not compute it again.
    pub(super) fn settle(
        &mut self,
        key: EntryKey,
        event: &Event,
        closing: Option<(Sym, i64)>,
    ) -> (Option<Payout>, Option<Decimal>) {
        let Some((earned, due, always)) = self.payable(key) else {
            return (None, None);
        };
        if due.is_zero() {
            return (None, Some(earned));
        }
        let Some(program) = self.programs.get(&key.program) else {
            return (None, None);
        };
        let reason = if always {
            PayoutReason::Accrual
        } else if closing == Some((key.program, key.period)) {
            PayoutReason::Settlement
        } else {
            PayoutReason::TrueUp
        };
        let partner_id = Text::from(self.syms.name(key.partner));
        let program_id = Text::from(self.syms.name(key.program));
        let period = program.period_kind().label(key.period);
        let payout = Payout {
            payout_id: payout_id([&event.source, &event.id, &partner_id, &program_id, &period]),
            partner_id,
            program_id,
            period,
            kind: program.kind(),
            amount: due,
            currency: program.currency(),
            reason,
            cause_source: event.source.clone(),
            cause_id: event.id.clone(),
            cause_time: event.time.clone(),
        };
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.paid += due;
        }
        (Some(payout), Some(earned))
    }
}
