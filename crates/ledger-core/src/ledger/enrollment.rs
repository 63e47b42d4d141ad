//! `partner.enrolled` and `partner.withdrawn` (SPEC §3): enrollment records and targets.

use super::*;

impl Ledger {
    pub(super) fn partner_enrolled(
        &mut self,
        partner_id: &str,
        program_id: &str,
        target: Option<Decimal>,
    ) -> Applied {
        let Some((program, p)) = self.program_by_name(program_id) else {
            return refuse(
                Code::UnknownProgram,
                format!("program_id {program_id:?} names no published program"),
            );
        };
        let kind = p.kind();
        let partner = self.syms.get(partner_id);
        if partner.is_some_and(|s| self.is_enrolled(s, program)) {
            return refuse(
                Code::AlreadyEnrolled,
                format!("partner {partner_id} is already enrolled in {program_id}; withdraw first to re-enroll"),
            );
        }
        if kind == Kind::Bonus && target.is_none() {
            return refuse(
                Code::MissingTarget,
                format!("{program_id} is a bonus program: data.target (an amount > 0) is required to enroll"),
            );
        }
        let partner = self.syms.intern(partner_id);
        if !self.enrollments.contains_key(&(partner, program)) {
            if let Some(p) = self.programs.get_mut(&program) {
                p.enrolled_partners.push(partner);
            }
        }
        let record = self.enrollments.entry((partner, program)).or_default();
        record.enrolled = true;
        record.target = target;
        // The current target changed: bonus entries evaluated with it may change.
        if let Some(periods) = self.partner_entries.get(&(partner, program)) {
            self.dirty.extend(periods.iter().map(|&period| EntryKey {
                partner,
                program,
                period,
            }));
        }
        Applied::default()
    }

    pub(super) fn partner_withdrawn(&mut self, partner_id: &str, program_id: &str) -> Applied {
        let Some((program, _)) = self.program_by_name(program_id) else {
            return refuse(
                Code::UnknownProgram,
                format!("program_id {program_id:?} names no published program"),
            );
        };
        let partner = self.syms.get(partner_id);
        match partner.and_then(|s| self.enrollments.get_mut(&(s, program))) {
            Some(e) if e.enrolled => {
                e.enrolled = false;
                Applied::default()
            }
            _ => refuse(
                Code::NotEnrolled,
                format!("partner {partner_id} is not currently enrolled in {program_id}"),
            ),
        }
    }
}
