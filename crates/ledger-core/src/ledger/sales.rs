//! `sale.recorded` and `sale.returned` (SPEC §3): which programs a line counts for,
//! and the returns that take it back.

use super::*;
use std::borrow::Cow;

impl Ledger {
    /// Long by design: one pass over the sale's lines and the programs they count for, in
    /// SPEC §3's order of checks (every refusal before any change), then the recording;
    /// split, the checked lines would have to be handed on.
    pub(super) fn sale_recorded(
        &mut self,
        event: &Event,
        sale: &Sale,
    ) -> Result<Applied, StoreError> {
        let known = self.sale_known(&sale.sale_id)?;
        Ok(self.record_sale(known, event, sale))
    }

    fn record_sale(&mut self, known: bool, event: &Event, sale: &Sale) -> Applied {
        if known {
            return refuse(
                Code::DuplicateSale,
                format!(
                    "sale_id {} was already recorded by an earlier event",
                    sale.sale_id
                ),
            );
        }
        let partner = self.syms.get(&sale.partner_id);
        if self.sale_programs.is_none() {
            let list = self
                .program_order
                .iter()
                .copied()
                .filter(|sym| {
                    self.programs
                        .get(sym)
                        .is_some_and(|p| counts_sales(p.current()))
                })
                .collect();
            self.sale_programs = Some(list);
        }
        // Programs the sale can count for, before looking at lines.
        let candidates: Vec<(Sym, &Program, Measure, i64)> = self
            .sale_programs
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|&sym| {
                let p = self.programs.get(&sym)?;
                let def = p.current();
                let measure = def.rules.measure()?;
                (def.kind.counts_sales()
                    && def.start_date <= event.date
                    && event.date <= def.end_date
                    && self.counts_for(partner, sym, p))
                .then(|| (sym, p, measure, def.period.index_of(event.date)))
            })
            .collect();
        // (line index, program, period, contribution)
        let mut counted: Vec<(usize, Sym, i64, Decimal)> = Vec::new();
        for (i, line) in sale.lines.iter().enumerate() {
            for &(sym, p, measure, period) in &candidates {
                let def = p.current();
                if def.currency == line.currency
                    && def.eligibility.matches(
                        &line.sku,
                        line.product_family.as_deref(),
                        sale.region.as_deref(),
                    )
                {
                    let amount = match measure {
                        Measure::NetAmount => line.net_amount,
                        Measure::Quantity => Decimal::from(line.quantity),
                    };
                    counted.push((i, sym, period, amount));
                }
            }
        }
        // amount_out_of_range: no entry's basis may go beyond ±10^15.
        if !counted.is_empty() {
            // Per (program, period), in that order; a sale touches only a few.
            let mut totals: Vec<((u32, i64), Decimal)> = Vec::with_capacity(counted.len());
            for &(_, sym, period, amount) in &counted {
                match totals.iter_mut().find(|(k, _)| *k == (sym.0, period)) {
                    Some((_, total)) => *total += amount,
                    None => totals.push(((sym.0, period), amount)),
                }
            }
            totals.sort_unstable_by_key(|(k, _)| *k);
            for ((program, period), increase) in totals {
                let existing = partner
                    .map(|s| EntryKey {
                        partner: s,
                        program: Sym(program),
                        period,
                    })
                    .and_then(|k| self.entries.get(&k))
                    .map_or(Decimal::ZERO, |e| e.basis);
                let limit = basis_limit();
                let within = existing
                    .checked_add(increase)
                    .is_some_and(|b| b.abs() <= limit);
                if !within {
                    let name = self.syms.name(Sym(program));
                    let label = self
                        .programs
                        .get(&Sym(program))
                        .map(|p| p.period_kind().label(period))
                        .unwrap_or_default();
                    return refuse(
                        Code::AmountOutOfRange,
                        format!(
                            "the sale would take the basis of partner {} in {name} {label} from {existing} to beyond ±10^15",
                            sale.partner_id
                        ),
                    );
                }
            }
        }
        let partner = match partner {
            Some(s) => s,
            None => self.syms.intern(&sale.partner_id),
        };
        let mut line_ids = String::with_capacity(sale.lines.iter().map(|l| l.line_id.len()).sum());
        let lines: Box<[LineRecord]> = sale
            .lines
            .iter()
            .map(|l| {
                line_ids.push_str(&l.line_id);
                LineRecord {
                    // A sale's lines are at most 1,000 ids of at most 64 characters.
                    id_end: u32::try_from(line_ids.len()).unwrap_or(u32::MAX),
                    quantity: l.quantity,
                    net_amount: l.net_amount,
                    returned_quantity: 0,
                    returned_net: Decimal::ZERO,
                }
            })
            .collect();
        let record = SaleRecord {
            partner,
            line_ids: line_ids.into_boxed_str(),
            lines,
            counted: counted
                .iter()
                .map(|&(i, program, period, _)| (i as u32, program, period))
                .collect(),
        };
        for (i, program, period, amount) in counted {
            let key = EntryKey {
                partner,
                program,
                period,
            };
            let line = &sale.lines[i];
            let entry = self.entry_or_create(key);
            entry.basis += amount;
            entry.revenue += line.net_amount;
            // At most 1,000 lines of at most 10^9 units each per sale.
            entry.units = entry
                .units
                .saturating_add(i64::try_from(line.quantity).unwrap_or(i64::MAX));
            // Lines counting for the same entry mark it once (a sale touches only a few).
            if !self.dirty.contains(&key) {
                self.dirty.push(key);
            }
        }
        self.recent.sales.insert(sale.sale_id.clone(), record);
        Applied::default()
    }

    /// SPEC §3's checks of a return against its sale (all before any change), then
    /// taking back what each line counted.
    pub(super) fn sale_returned(&mut self, ret: &Return) -> Result<Applied, StoreError> {
        if self.return_used(&ret.return_id)? {
            return Ok(refuse(
                Code::DuplicateReturn,
                format!(
                    "return_id {} was already recorded by an earlier event",
                    ret.return_id
                ),
            ));
        }
        let partner = self.syms.get(&ret.partner_id);
        let sale = self.sale_record(&ret.sale_id)?;
        let positions = match check_return(ret, sale.as_deref(), partner) {
            Ok(positions) => positions,
            Err(refused) => return Ok(refused),
        };
        // The return changes the record: it moves to the recent tier if it is not there.
        let in_recent = self.recent.sales.contains_key(&ret.sale_id);
        if let Some(record) = sale.filter(|_| !in_recent).map(Cow::into_owned) {
            self.recent.sales.insert(ret.sale_id.clone(), record);
        }
        Ok(self.take_back(ret, &positions))
    }

    /// Takes back what the returned lines (at `positions` of the sale) counted.
    fn take_back(&mut self, ret: &Return, positions: &[usize]) -> Applied {
        let Some(sale) = self.recent.sales.get_mut(&ret.sale_id) else {
            return Applied::default();
        };
        let partner = sale.partner;
        let mut changes: Vec<(EntryKey, u64, Decimal)> = Vec::new();
        for (line, &i) in ret.lines.iter().zip(positions) {
            let sold = &mut sale.lines[i];
            sold.returned_quantity += line.quantity;
            sold.returned_net += line.net_amount;
            for (program, period) in sale.counted_by(i) {
                changes.push((
                    EntryKey {
                        partner,
                        program,
                        period,
                    },
                    line.quantity,
                    line.net_amount,
                ));
            }
        }
        self.recent.returns.insert(ret.return_id.clone());
        for (key, quantity, net) in changes {
            let measure = self
                .programs
                .get(&key.program)
                .and_then(|p| p.current().rules.measure());
            let amount = match measure {
                Some(Measure::Quantity) => Decimal::from(quantity),
                _ => net,
            };
            // The entry exists: the original line counted into it.
            let entry = self.entry_or_create(key);
            entry.basis -= amount;
            entry.revenue -= net;
            entry.units = entry
                .units
                .saturating_sub(i64::try_from(quantity).unwrap_or(i64::MAX));
            self.dirty.push(key);
        }
        Applied::default()
    }
}

/// SPEC §3's checks of a return against its sale (of `partner`, if known), in order: the
/// positions of the returned lines in the sale, or the refusal.
fn check_return(
    ret: &Return,
    sale: Option<&SaleRecord>,
    partner: Option<Sym>,
) -> Result<Vec<usize>, Applied> {
    let sale = match sale {
        Some(s) if Some(s.partner) == partner => s,
        Some(_) => {
            return Err(refuse(
                Code::UnknownSale,
                format!(
                    "sale {} does not belong to partner {}",
                    ret.sale_id, ret.partner_id
                ),
            ))
        }
        None => {
            return Err(refuse(
                Code::UnknownSale,
                format!("sale_id {} names no recorded sale", ret.sale_id),
            ))
        }
    };
    // Sales have few lines; a long one gets an index rather than a scan per line.
    let by_id: Option<HashMap<&str, usize>> = (sale.lines.len() > 16).then(|| {
        (0..sale.lines.len())
            .map(|i| (sale.line_id(i), i))
            .collect()
    });
    let mut positions = Vec::with_capacity(ret.lines.len());
    for line in &ret.lines {
        let found = match &by_id {
            Some(index) => index.get(line.line_id.as_str()).copied(),
            None => sale.line_index(&line.line_id),
        };
        match found {
            Some(i) => positions.push(i),
            None => {
                return Err(refuse(
                    Code::UnknownLine,
                    format!("sale {} has no line {:?}", ret.sale_id, line.line_id),
                ))
            }
        }
    }
    for (line, &i) in ret.lines.iter().zip(&positions) {
        let sold = &sale.lines[i];
        let quantity = sold.returned_quantity.saturating_add(line.quantity);
        if quantity > sold.quantity {
            return Err(refuse(
                Code::ReturnExceedsSale,
                format!(
                    "line {} of sale {}: {} units would be returned in all, but {} were sold",
                    line.line_id, ret.sale_id, quantity, sold.quantity
                ),
            ));
        }
        let net = sold.returned_net + line.net_amount;
        if net > sold.net_amount {
            return Err(refuse(
                Code::ReturnExceedsSale,
                format!(
                    "line {} of sale {}: a net amount of {} would be returned in all, but the line's net amount is {}",
                    line.line_id, ret.sale_id, net, sold.net_amount
                ),
            ));
        }
    }
    Ok(positions)
}
