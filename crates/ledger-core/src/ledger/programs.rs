//! `program.published` and `period.closed` (SPEC §3): versions, what a later version
//! may not change, freezing a period's rules and targets at its close.

use super::*;

impl Ledger {
    pub(super) fn program_published(&mut self, def: &ProgramDef) -> Applied {
        let existing = self.program_by_name(&def.program_id).map(|(_, p)| p);
        match existing {
            None if def.version != 1 => {
                return refuse(
                    Code::ProgramVersionConflict,
                    format!(
                    "program {} does not exist yet, so its first version must be 1; got version {}",
                    def.program_id, def.version
                ),
                )
            }
            Some(p) => {
                let current = p.current();
                if current.version.checked_add(1) != Some(def.version) {
                    return refuse(
                        Code::ProgramVersionConflict,
                        format!(
                            "program {} is at version {}; the next version must be {}, got {}",
                            def.program_id,
                            current.version,
                            current.version.saturating_add(1),
                            def.version
                        ),
                    );
                }
                if let Some(message) = immutable_change(current, def) {
                    return refuse(Code::ProgramImmutableField, message);
                }
            }
            None => {}
        }
        let sym = self.syms.intern(&def.program_id);
        let def = Arc::new(def.clone());
        match self.programs.get_mut(&sym) {
            Some(p) => {
                p.versions.push(def);
                // Open entries follow the new rules at once (SPEC §4.1).
                for (period, partners) in &p.periods {
                    if !p.closed.contains_key(period) {
                        self.dirty.extend(partners.iter().map(|&partner| EntryKey {
                            partner,
                            program: sym,
                            period: *period,
                        }));
                    }
                }
            }
            None => {
                self.programs.insert(
                    sym,
                    Program {
                        versions: vec![def],
                        closed: HashMap::default(),
                        max_closed: None,
                        periods: BTreeMap::new(),
                        enrolled_partners: Vec::new(),
                    },
                );
                self.program_order.push(sym);
                self.sale_programs = None;
            }
        }
        Applied::default()
    }

    pub(super) fn invalid_period(program_id: &str, p: &Program, label: &PeriodLabel) -> Applied {
        let message = if label.kind != p.period_kind() {
            format!(
                "{program_id} has {} periods; {:?} is a {} label",
                p.period_kind().as_str(),
                label.label(),
                label.kind.as_str()
            )
        } else {
            format!(
                "period {} does not overlap the dates of any version of {program_id}",
                label.label()
            )
        };
        refuse(Code::InvalidPeriod, message)
    }

    pub(super) fn period_closed(&mut self, program_id: &str, label: &PeriodLabel) -> Applied {
        let Some((program, p)) = self.program_by_name(program_id) else {
            return refuse(
                Code::UnknownProgram,
                format!("program_id {program_id:?} names no published program"),
            );
        };
        if !p.period_fits(label) {
            return Self::invalid_period(program_id, p, label);
        }
        if p.closed.contains_key(&label.index) {
            return refuse(
                Code::PeriodAlreadyClosed,
                format!("period {} of {program_id} is already closed", label.label()),
            );
        }
        let targets: HashMap<Sym, Decimal> = p
            .enrolled_partners
            .iter()
            .filter_map(|&partner| {
                self.enrollments
                    .get(&(partner, program))
                    .and_then(|e| e.target)
                    .map(|t| (partner, t))
            })
            .collect();
        let Some(p) = self.programs.get_mut(&program) else {
            return Applied::default();
        };
        let frozen = Frozen {
            def: Arc::clone(p.current()),
            targets,
        };
        p.closed.insert(label.index, frozen);
        p.max_closed = Some(p.max_closed.map_or(label.index, |m| m.max(label.index)));
        if let Some(partners) = p.periods.get(&label.index) {
            self.dirty.extend(partners.iter().map(|&partner| EntryKey {
                partner,
                program,
                period: label.index,
            }));
        }
        Applied::default()
    }
}

/// Whether sales can count for a program of this definition (its kind and measure are
/// the same in every version; see [`immutable_change`]).
pub(super) fn counts_sales(def: &ProgramDef) -> bool {
    def.kind.counts_sales() && def.rules.measure().is_some()
}

/// The field a later version may not change, if it does (SPEC §3 `program_immutable_field`).
pub(super) fn immutable_change(current: &ProgramDef, next: &ProgramDef) -> Option<String> {
    let id = &current.program_id;
    if current.kind != next.kind {
        return Some(format!(
            "kind of {id} is {} and cannot change to {}",
            current.kind.as_str(),
            next.kind.as_str()
        ));
    }
    if current.currency != next.currency {
        return Some(format!(
            "currency of {id} is {} and cannot change to {}",
            current.currency, next.currency
        ));
    }
    if current.period != next.period {
        return Some(format!(
            "period of {id} is {} and cannot change to {}",
            current.period.as_str(),
            next.period.as_str()
        ));
    }
    if current.rules.measure() != next.rules.measure() {
        let field = match current.kind {
            Kind::Rebate => "rules.basis",
            Kind::Bonus => "rules.measure",
            _ => "the SPIF's choice of rules.per_unit or rules.rate",
        };
        let show = |m: Option<Measure>| m.map_or("none", |m| m.as_str());
        return Some(format!(
            "{field} of {id} measures {} and cannot change to {}",
            show(current.rules.measure()),
            show(next.rules.measure())
        ));
    }
    if let (
        Rules::Fund {
            expires_after_periods: a,
            ..
        },
        Rules::Fund {
            expires_after_periods: b,
            ..
        },
    ) = (&current.rules, &next.rules)
    {
        if a != b {
            return Some(format!(
                "rules.expires_after_periods of {id} is {a} and cannot change to {b}"
            ));
        }
    }
    None
}
