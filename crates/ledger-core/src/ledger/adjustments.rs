//! `adjustment.posted` (SPEC §3): manual corrections of an entry's earned amount.

use super::*;

impl Ledger {
    pub(super) fn adjustment_posted(
        &mut self,
        adjustment_id: &str,
        partner_id: &str,
        program_id: &str,
        label: &PeriodLabel,
        amount: Decimal,
    ) -> Result<Applied, StoreError> {
        let used = self.adjustment_used(adjustment_id)?;
        Ok(self.post_adjustment(used, adjustment_id, partner_id, program_id, label, amount))
    }

    fn post_adjustment(
        &mut self,
        used: bool,
        adjustment_id: &str,
        partner_id: &str,
        program_id: &str,
        label: &PeriodLabel,
        amount: Decimal,
    ) -> Applied {
        if used {
            return refuse(
                Code::DuplicateAdjustment,
                format!("adjustment_id {adjustment_id} was already posted"),
            );
        }
        let Some((program, p)) = self.program_by_name(program_id) else {
            return refuse(
                Code::UnknownProgram,
                format!("program_id {program_id:?} names no published program"),
            );
        };
        if !p.period_fits(label) {
            return Self::invalid_period(program_id, p, label);
        }
        let currency = p.currency();
        if amount.scale() > currency.minor_units() {
            return refuse(
                Code::AmountPrecision,
                format!(
                    "data.amount {amount} has {} fractional digits; {currency} allows {}",
                    amount.scale(),
                    currency.minor_units()
                ),
            );
        }
        self.recent.adjustments.insert(Text::from(adjustment_id));
        let partner = self.syms.intern(partner_id);
        let key = EntryKey {
            partner,
            program,
            period: label.index,
        };
        let entry = self.entry_or_create(key);
        entry.adjustments = entry
            .adjustments
            .checked_add(amount)
            .unwrap_or(entry.adjustments);
        self.dirty.push(key);
        Applied::default()
    }
}
