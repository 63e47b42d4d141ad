//! `training.completed` (SPEC §3): completions counted per certification.

use super::*;

impl Ledger {
    pub(super) fn training_completed(
        &mut self,
        event: &Event,
        partner_id: &str,
        person_id: &str,
        certification: Option<&str>,
    ) -> Result<Applied, StoreError> {
        let Some(cert) = certification else {
            return Ok(Applied::default());
        };
        let partner = self.syms.get(partner_id);
        let mut counts: Vec<(Sym, i64)> = Vec::new();
        for &sym in &self.program_order {
            let Some(p) = self.programs.get(&sym) else {
                continue;
            };
            let def = p.current();
            let eligible = def.kind == Kind::Training
                && self.counts_for(partner, sym, p)
                && def.start_date <= event.date
                && event.date <= def.end_date
                && def.rules.rewards(cert);
            if !eligible {
                continue;
            }
            let already = match partner {
                Some(s) => self.completion_counted(sym, s, person_id, cert)?,
                None => false,
            };
            if !already {
                counts.push((sym, def.period.index_of(event.date)));
            }
        }
        if counts.is_empty() {
            return Ok(Applied::default());
        }
        let partner = self.syms.intern(partner_id);
        for (program, period) in counts {
            self.recent
                .trained
                .insert((program, partner, Text::from(person_id), Text::from(cert)));
            let key = EntryKey {
                partner,
                program,
                period,
            };
            let entry = self.entry_or_create(key);
            entry.basis += Decimal::ONE;
            entry.completions.push(Text::from(cert));
            crate::rules::count_completion(&mut entry.certifications, cert);
            self.dirty.push(key);
        }
        Ok(Applied::default())
    }
}
