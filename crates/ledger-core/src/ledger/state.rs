//! The fold's state types: interned names, entries, programs with their versions and
//! frozen closes, enrollments, sale records, claims. Plain data; the handlers that
//! change them live beside this module, one file per event area.

use super::*;

/// An interned partner or program id. Ordering of entries always uses the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(super) struct Sym(pub(super) u32);

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Interner {
    pub(super) ids: HashMap<String, Sym>,
    pub(super) names: Vec<String>,
}

impl Interner {
    pub(super) fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    pub(super) fn intern(&mut self, name: &str) -> Sym {
        if let Some(s) = self.ids.get(name) {
            return *s;
        }
        let s = Sym(self.names.len() as u32);
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), s);
        s
    }

    pub(super) fn name(&self, s: Sym) -> &str {
        &self.names[s.0 as usize]
    }
}

/// An entry: one partner, one program, one period (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(super) struct EntryKey {
    pub(super) partner: Sym,
    pub(super) program: Sym,
    pub(super) period: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Entry {
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) basis: Decimal,
    /// Counted net amounts less returns, whatever the basis measures (reports: revenue
    /// and incentive cost as a share of it). Never read by a formula.
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) revenue: Decimal,
    /// Counted quantities less returns, whatever the basis measures (reports).
    pub(super) units: i64,
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) adjustments: Decimal,
    /// Sum of payouts (for MDF/co-op: approved claims charged to the bucket).
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) paid: Decimal,
    /// MDF/co-op: amounts held by pending claims.
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) reserved: Decimal,
    /// Training: the certification of every counted completion, in order (statements).
    pub(super) completions: Vec<Text>,
    /// Training: the same completions counted per certification, in first-seen order —
    /// what the formula sums, so evaluating an entry does not walk every completion.
    pub(super) certifications: Vec<(Text, u64)>,
}

/// `earned` of an entry evaluated with `def` and the partner's `target` (SPEC §3, §4):
/// the formula over the basis, rounded to the currency, plus adjustments.
pub(super) fn earned_by(def: &ProgramDef, target: Option<Decimal>, entry: &Entry) -> Decimal {
    let formula = def.rules.formula(
        BasisView {
            basis: entry.basis,
            certifications: &entry.certifications,
        },
        target,
    );
    round_money(formula, def.currency)
        .checked_add(entry.adjustments)
        .unwrap_or(entry.adjustments)
}

/// What a period close froze: the program version then current, and the targets.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Frozen {
    pub(super) def: Arc<ProgramDef>,
    pub(super) targets: HashMap<Sym, Decimal>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Program {
    pub(super) versions: Vec<Arc<ProgramDef>>,
    pub(super) closed: HashMap<i64, Frozen>,
    /// Highest closed period index, which decides bucket expiry.
    pub(super) max_closed: Option<i64>,
    /// The partners with an entry in each period, in creation order.
    pub(super) periods: BTreeMap<i64, Vec<Sym>>,
    /// Partners with an enrollment record, in first-enrollment order.
    pub(super) enrolled_partners: Vec<Sym>,
}

impl Program {
    pub(super) fn current(&self) -> &Arc<ProgramDef> {
        // A program exists only once its first version was applied.
        &self.versions[self.versions.len() - 1]
    }

    pub(super) fn kind(&self) -> Kind {
        self.current().kind
    }

    pub(super) fn currency(&self) -> Currency {
        self.current().currency
    }

    pub(super) fn period_kind(&self) -> PeriodKind {
        self.current().period
    }

    pub(super) fn expires_after(&self) -> u64 {
        match self.current().rules {
            Rules::Fund {
                expires_after_periods,
                ..
            } => expires_after_periods,
            _ => 0,
        }
    }

    /// SPEC §4.2: a bucket of period `p` is expired once some closed `q` has
    /// `index(p) + expires_after_periods ≤ index(q)`.
    pub(super) fn bucket_expired(&self, period: i64) -> bool {
        self.current().kind.is_fund()
            && self.max_closed.is_some_and(|q| {
                i128::from(period) + i128::from(self.expires_after()) <= i128::from(q)
            })
    }

    /// SPEC §3 `invalid_period`: the label is of the program's period kind and overlaps
    /// the dates of some version.
    pub(super) fn period_fits(&self, label: &PeriodLabel) -> bool {
        if label.kind != self.period_kind() {
            return false;
        }
        match label.kind.date_range(label.index) {
            None => true,
            Some((first, last)) => self
                .versions
                .iter()
                .any(|v| first <= v.end_date && last >= v.start_date),
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Enrollment {
    pub(super) enrolled: bool,
    pub(super) target: Option<Decimal>,
}

/// What returns need of a recorded sale, in few allocations (there is one record per
/// sale, half of a typical log): the line ids in one string, the lines in one slice,
/// the entries they counted into in another.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct SaleRecord {
    pub(super) partner: Sym,
    /// Every line's id, concatenated; line `i`'s ends at `lines[i].id_end`.
    pub(super) line_ids: Box<str>,
    pub(super) lines: Box<[LineRecord]>,
    /// (line index, program, period) of every entry a line counted into, by line and
    /// then in program order.
    pub(super) counted: Box<[(u32, Sym, i64)]>,
}

impl SaleRecord {
    pub(super) fn line_id(&self, i: usize) -> &str {
        let start = i
            .checked_sub(1)
            .map_or(0, |p| self.lines[p].id_end as usize);
        self.line_ids
            .get(start..self.lines[i].id_end as usize)
            .unwrap_or_default()
    }

    /// The index of the line with this id.
    pub(super) fn line_index(&self, line_id: &str) -> Option<usize> {
        (0..self.lines.len()).find(|&i| self.line_id(i) == line_id)
    }

    /// The (program, period) entries line `i` counted into.
    pub(super) fn counted_by(&self, i: usize) -> impl Iterator<Item = (Sym, i64)> + '_ {
        self.counted
            .iter()
            .filter(move |c| c.0 as usize == i)
            .map(|&(_, program, period)| (program, period))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct LineRecord {
    pub(super) id_end: u32,
    pub(super) quantity: u64,
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) net_amount: Decimal,
    pub(super) returned_quantity: u64,
    #[serde(with = "crate::values::bin_decimal")]
    pub(super) returned_net: Decimal,
}

/// A claim's status (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClaimStatus {
    Pending,
    Approved,
    Rejected,
    Denied,
}

impl ClaimStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClaimStatus::Pending => "pending",
            ClaimStatus::Approved => "approved",
            ClaimStatus::Rejected => "rejected",
            ClaimStatus::Denied => "denied",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Claim {
    pub(super) partner: Sym,
    pub(super) program: Sym,
    pub(super) amount: Decimal,
    pub(super) status: ClaimStatus,
    pub(super) approved_amount: Option<Decimal>,
    /// What a pending claim took from which bucket (period index), oldest first.
    pub(super) reservations: Vec<(i64, Decimal)>,
}
