//! `claim.submitted` and `claim.decided` (SPEC §4.2): reservations from MDF/co-op
//! buckets, oldest first, and their approval or release.

use super::*;

impl Ledger {
    pub(super) fn claim_submitted(
        &mut self,
        claim_id: &str,
        partner_id: &str,
        program_id: &str,
        amount: Decimal,
    ) -> Applied {
        if self.claims.contains_key(claim_id) {
            return refuse(
                Code::DuplicateClaim,
                format!("claim_id {claim_id} was already submitted"),
            );
        }
        let Some((program, p)) = self.program_by_name(program_id) else {
            return refuse(
                Code::UnknownProgram,
                format!("program_id {program_id:?} names no published program"),
            );
        };
        if !p.kind().is_fund() {
            return refuse(
                Code::WrongProgramKind,
                format!(
                    "claims are made against mdf or coop programs; {program_id} is a {} program",
                    p.kind().as_str()
                ),
            );
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
        let partner = self.syms.intern(partner_id);
        let periods = self.buckets(partner, program);
        let mut claimable = Decimal::ZERO;
        let mut open: Vec<(i64, Decimal)> = Vec::new();
        for &period in &periods {
            let key = EntryKey {
                partner,
                program,
                period,
            };
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            let fund = self.fund_balance(key, entry);
            if !fund.expired_bucket {
                claimable += fund.available;
                open.push((period, fund.available));
            }
        }
        let mut claim = Claim {
            partner,
            program,
            amount,
            status: ClaimStatus::Denied,
            approved_amount: None,
            reservations: Vec::new(),
        };
        if amount <= claimable {
            claim.status = ClaimStatus::Pending;
            let mut remaining = amount;
            for (period, available) in open {
                if remaining.is_zero() {
                    break;
                }
                if available <= Decimal::ZERO {
                    continue;
                }
                let take = available.min(remaining);
                remaining -= take;
                claim.reservations.push((period, take));
                let key = EntryKey {
                    partner,
                    program,
                    period,
                };
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.reserved += take;
                }
                self.dirty.push(key);
            }
            debug_assert!(remaining.is_zero(), "claimable covered the claim");
        }
        let id = Text::from(claim_id);
        self.claims_by_pair
            .entry((partner, program))
            .or_default()
            .insert(id.clone());
        self.claims.insert(id, claim);
        Applied::default()
    }

    /// Long by design: SPEC §4.2's decision in order — checks before any change, then the
    /// walk over the claim's reservations charging or releasing each bucket, then the
    /// payout.
    pub(super) fn claim_decided(
        &mut self,
        event: &Event,
        claim_id: &str,
        approved: bool,
        approved_amount: Option<Decimal>,
    ) -> Applied {
        let Some(claim) = self.claims.get(claim_id) else {
            return refuse(
                Code::UnknownClaim,
                format!("claim_id {claim_id} names no submitted claim"),
            );
        };
        if claim.status != ClaimStatus::Pending {
            return refuse(
                Code::ClaimNotPending,
                format!(
                    "claim {claim_id} is {}, not pending; it cannot be decided again",
                    claim.status.as_str()
                ),
            );
        }
        let Some(p) = self.programs.get(&claim.program) else {
            return refuse(
                Code::UnknownClaim,
                format!("claim {claim_id} refers to a program that no longer exists"),
            );
        };
        let currency = p.currency();
        let kind = p.kind();
        let period_label = p.period_kind().label(p.period_kind().index_of(event.date));
        let (partner, program, claimed) = (claim.partner, claim.program, claim.amount);
        let mut payouts = Vec::new();
        let reservations = claim.reservations.clone();
        if approved {
            let amount = approved_amount.unwrap_or(claimed);
            if amount > claimed {
                return refuse(
                    Code::ApprovedExceedsClaim,
                    format!(
                        "data.approved_amount {amount} exceeds the claimed amount {claimed} of claim {claim_id}"
                    ),
                );
            }
            if amount.scale() > currency.minor_units() {
                return refuse(
                    Code::AmountPrecision,
                    format!(
                        "data.approved_amount {amount} has {} fractional digits; {currency} allows {}",
                        amount.scale(),
                        currency.minor_units()
                    ),
                );
            }
            let mut remaining = amount;
            for (period, took) in reservations {
                let charge = took.min(remaining);
                remaining -= charge;
                let key = EntryKey {
                    partner,
                    program,
                    period,
                };
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.paid += charge;
                    entry.reserved -= took;
                }
                self.dirty.push(key);
            }
            if !amount.is_zero() {
                let partner_id = Text::from(self.syms.name(partner));
                let program_id = Text::from(self.syms.name(program));
                payouts.push(Payout {
                    payout_id: payout_id([
                        &event.source,
                        &event.id,
                        &partner_id,
                        &program_id,
                        &period_label,
                    ]),
                    partner_id,
                    program_id,
                    period: period_label,
                    kind,
                    amount,
                    currency,
                    reason: PayoutReason::Claim,
                    cause_source: event.source.clone(),
                    cause_id: event.id.clone(),
                    cause_time: event.time.clone(),
                });
            }
            if let Some(c) = self.claims.get_mut(claim_id) {
                c.status = ClaimStatus::Approved;
                c.approved_amount = Some(amount);
                c.reservations.clear();
            }
        } else {
            for (period, took) in reservations {
                let key = EntryKey {
                    partner,
                    program,
                    period,
                };
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.reserved -= took;
                }
                self.dirty.push(key);
            }
            if let Some(c) = self.claims.get_mut(claim_id) {
                c.status = ClaimStatus::Rejected;
                c.reservations.clear();
            }
        }
        Applied {
            refusal: None,
            payouts,
        }
    }
}
