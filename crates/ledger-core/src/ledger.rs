//! The fold: the ledger's state and how each logged event changes it (SPEC §3–§5).
//!
//! [`Ledger::apply`] takes one event that passed intake and returns what happened — a
//! business refusal, or the payouts the event caused — as values. It reads no clock, no
//! randomness and no hash-map iteration order: every iteration that can influence a
//! result goes through sorted or insertion-ordered collections.
//!
//! The settlement sweep of SPEC §5 ("after every applied event, every entry, in order")
//! is incremental: an entry's `earned − paid` can only become non-zero and payable when
//! the event touched the entry, changed the rules or target it is evaluated with, or
//! closed its period. Each handler marks exactly those entries dirty, and only they are
//! swept — sorted by (partner_id, program_id, period index) — which gives the same
//! payouts as sweeping everything, because after each sweep every payable entry has
//! `earned = paid`.

use crate::event::{Event, EventData, ProgramDef, Return, Sale, Text};
use crate::refusal::{Code, Refusal};
use crate::rules::{BasisView, Kind, Measure, Rules};
use crate::values::{basis_limit, round_money, Currency, PeriodKind, PeriodLabel};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Hash maps of the fold: a fast hasher with a per-process random seed. Nothing iterates
/// them where order could reach a result (see the module docs).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// An interned partner or program id. Ordering of entries always uses the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Sym(u32);

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Interner {
    ids: HashMap<String, Sym>,
    names: Vec<String>,
}

impl Interner {
    fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    fn intern(&mut self, name: &str) -> Sym {
        if let Some(s) = self.ids.get(name) {
            return *s;
        }
        let s = Sym(self.names.len() as u32);
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), s);
        s
    }

    fn name(&self, s: Sym) -> &str {
        &self.names[s.0 as usize]
    }
}

/// An entry: one partner, one program, one period (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct EntryKey {
    partner: Sym,
    program: Sym,
    period: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Entry {
    #[serde(with = "crate::values::bin_decimal")]
    basis: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    adjustments: Decimal,
    /// Sum of payouts (for MDF/co-op: approved claims charged to the bucket).
    #[serde(with = "crate::values::bin_decimal")]
    paid: Decimal,
    /// MDF/co-op: amounts held by pending claims.
    #[serde(with = "crate::values::bin_decimal")]
    reserved: Decimal,
    /// Training: the certification of every counted completion, in order (statements).
    completions: Vec<Text>,
    /// Training: the same completions counted per certification, in first-seen order —
    /// what the formula sums, so evaluating an entry does not walk every completion.
    certifications: Vec<(Text, u64)>,
}

/// `earned` of an entry evaluated with `def` and the partner's `target` (SPEC §3, §4):
/// the formula over the basis, rounded to the currency, plus adjustments.
fn earned_by(def: &ProgramDef, target: Option<Decimal>, entry: &Entry) -> Decimal {
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
struct Frozen {
    def: Arc<ProgramDef>,
    targets: HashMap<Sym, Decimal>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Program {
    versions: Vec<Arc<ProgramDef>>,
    closed: HashMap<i64, Frozen>,
    /// Highest closed period index, which decides bucket expiry.
    max_closed: Option<i64>,
    /// The partners with an entry in each period, in creation order.
    periods: BTreeMap<i64, Vec<Sym>>,
    /// Partners with an enrollment record, in first-enrollment order.
    enrolled_partners: Vec<Sym>,
}

impl Program {
    fn current(&self) -> &Arc<ProgramDef> {
        // A program exists only once its first version was applied.
        &self.versions[self.versions.len() - 1]
    }

    fn kind(&self) -> Kind {
        self.current().kind
    }

    fn currency(&self) -> Currency {
        self.current().currency
    }

    fn period_kind(&self) -> PeriodKind {
        self.current().period
    }

    fn expires_after(&self) -> u64 {
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
    fn bucket_expired(&self, period: i64) -> bool {
        self.current().kind.is_fund()
            && self.max_closed.is_some_and(|q| {
                i128::from(period) + i128::from(self.expires_after()) <= i128::from(q)
            })
    }

    /// SPEC §3 `invalid_period`: the label is of the program's period kind and overlaps
    /// the dates of some version.
    fn period_fits(&self, label: &PeriodLabel) -> bool {
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
struct Enrollment {
    enrolled: bool,
    target: Option<Decimal>,
}

/// What returns need of a recorded sale, in few allocations (there is one record per
/// sale, half of a typical log): the line ids in one string, the lines in one slice,
/// the entries they counted into in another.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SaleRecord {
    partner: Sym,
    /// Every line's id, concatenated; line `i`'s ends at `lines[i].id_end`.
    line_ids: Box<str>,
    lines: Box<[LineRecord]>,
    /// (line index, program, period) of every entry a line counted into, by line and
    /// then in program order.
    counted: Box<[(u32, Sym, i64)]>,
}

impl SaleRecord {
    fn line_id(&self, i: usize) -> &str {
        let start = i
            .checked_sub(1)
            .map_or(0, |p| self.lines[p].id_end as usize);
        self.line_ids
            .get(start..self.lines[i].id_end as usize)
            .unwrap_or_default()
    }

    /// The index of the line with this id.
    fn line_index(&self, line_id: &str) -> Option<usize> {
        (0..self.lines.len()).find(|&i| self.line_id(i) == line_id)
    }

    /// The (program, period) entries line `i` counted into.
    fn counted_by(&self, i: usize) -> impl Iterator<Item = (Sym, i64)> + '_ {
        self.counted
            .iter()
            .filter(move |c| c.0 as usize == i)
            .map(|&(_, program, period)| (program, period))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LineRecord {
    id_end: u32,
    quantity: u64,
    #[serde(with = "crate::values::bin_decimal")]
    net_amount: Decimal,
    returned_quantity: u64,
    #[serde(with = "crate::values::bin_decimal")]
    returned_net: Decimal,
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
struct Claim {
    partner: Sym,
    program: Sym,
    amount: Decimal,
    status: ClaimStatus,
    approved_amount: Option<Decimal>,
    /// What a pending claim took from which bucket (period index), oldest first.
    reservations: Vec<(i64, Decimal)>,
}

/// Why a payout was issued (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PayoutReason {
    Claim,
    Accrual,
    Settlement,
    TrueUp,
}

impl PayoutReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            PayoutReason::Claim => "claim",
            PayoutReason::Accrual => "accrual",
            PayoutReason::Settlement => "settlement",
            PayoutReason::TrueUp => "true_up",
        }
    }
}

/// One payout, as published on `payout.issued` and listed in the replay document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Payout {
    pub payout_id: uuid::Uuid,
    pub partner_id: Text,
    pub program_id: Text,
    pub period: Text,
    pub kind: Kind,
    /// Exact, with the currency's minor digits at most; negative for a clawback.
    pub amount: Decimal,
    pub currency: Currency,
    pub reason: PayoutReason,
    pub cause_source: Text,
    pub cause_id: Text,
    /// The `time` of the causing event as written (the `time` of `payout.issued`).
    pub cause_time: Text,
}

/// `uuid_v5(NAMESPACE_URL, "incentive-ledger:payout:" + parts joined by ":")`, each part
/// with `%` escaped as `%25` and then `:` as `%3A` (SPEC §5).
pub fn payout_id(parts: [&str; 5]) -> uuid::Uuid {
    use sha1::Digest;
    // The name is hashed as it is escaped, never built: SHA-1 (with the CPU's SHA
    // instructions where it has them) over the namespace and then the name's pieces.
    let mut hash = sha1::Sha1::new();
    hash.update(uuid::Uuid::NAMESPACE_URL.as_bytes());
    hash.update(b"incentive-ledger:payout:");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash.update(b":");
        }
        // '%' and ':' are ASCII, so they never occur inside a multi-byte character.
        let mut rest = part.as_bytes();
        while let Some(at) = rest.iter().position(|&b| b == b'%' || b == b':') {
            hash.update(&rest[..at]);
            hash.update(if rest[at] == b'%' { b"%25" } else { b"%3A" });
            rest = &rest[at + 1..];
        }
        hash.update(rest);
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // What `Uuid::new_v5` does with the digest: version 5, RFC 4122 variant.
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// What applying one event did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// A business refusal: the event is logged but changed nothing.
    pub refusal: Option<Refusal>,
    /// Payouts caused by the event, in the order they were issued.
    pub payouts: Vec<Payout>,
}

/// One row of `balances` (SPEC §7), with exact values; formatting is the document's job.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub period_index: i64,
    pub kind: Kind,
    pub currency: Currency,
    pub basis: Decimal,
    pub earned: Decimal,
    pub paid: Decimal,
    pub closed: bool,
    /// MDF/co-op buckets only.
    pub fund: Option<FundBalance>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FundBalance {
    pub reserved: Decimal,
    pub expired: Decimal,
    pub available: Decimal,
    pub expired_bucket: bool,
}

/// One row of `claims` (SPEC §7).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimView {
    pub claim_id: String,
    pub partner_id: String,
    pub program_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub status: ClaimStatus,
    pub approved_amount: Option<Decimal>,
}

/// The folded state of a log.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    syms: Interner,
    programs: HashMap<Sym, Program>,
    /// Programs in first-publication order, the order sales and completions visit them.
    program_order: Vec<Sym>,
    /// The programs of `program_order` a sale can count for: their kind counts sales and
    /// has a measure, neither of which a later version may change. Derived from
    /// `program_order`: dropped when a program is added, rebuilt at the next sale (and
    /// after a checkpoint load, as it is not stored).
    #[serde(skip)]
    sale_programs: Option<Vec<Sym>>,
    enrollments: HashMap<(Sym, Sym), Enrollment>,
    entries: HashMap<EntryKey, Entry>,
    /// The period indexes of each (partner, program)'s entries, in creation order.
    partner_entries: HashMap<(Sym, Sym), Vec<i64>>,
    sales: HashMap<Text, SaleRecord>,
    returns: HashSet<Text>,
    claims: HashMap<Text, Claim>,
    adjustments: HashSet<Text>,
    /// (program, partner, person, certification) completions already counted.
    trained: HashSet<(Sym, Sym, Text, Text)>,
    /// Entries the current event may have changed; drained by the sweep.
    #[serde(skip)]
    dirty: Vec<EntryKey>,
    /// Per entry, what every event that touched it left behind (for statements); kept
    /// only when enabled, as it grows with the log.
    #[serde(with = "journal_causes")]
    journal: Option<HashMap<EntryKey, EntryJournal>>,
}

/// Journal lines held per chunk: a busy entry's journal grows without re-allocating and
/// copying every line it already holds.
const JOURNAL_CHUNK: usize = 128;

/// One entry's journal lines, in log order, in chunks of at most [`JOURNAL_CHUNK`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct EntryJournal {
    chunks: Vec<Vec<JournalLine>>,
}

impl EntryJournal {
    fn push(&mut self, line: JournalLine) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < JOURNAL_CHUNK => chunk.push(line),
            _ => {
                // Most entries see few events: the first chunk starts small (and grows
                // up to a chunk as a plain vector would).
                let capacity = if self.chunks.is_empty() {
                    4
                } else {
                    JOURNAL_CHUNK
                };
                let mut chunk = Vec::with_capacity(capacity);
                chunk.push(line);
                self.chunks.push(chunk);
            }
        }
    }

    fn lines(&self) -> impl Iterator<Item = &JournalLine> {
        self.chunks.iter().flatten()
    }
}

/// The event behind journal lines, shared by every line it left (one allocation per
/// event, not four strings per line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cause {
    pub source: Text,
    pub id: Text,
    pub event_type: crate::event::EventType,
    pub time: Text,
}

/// One line of an entry's statement: the event that touched it and the entry after it.
/// Checkpoints hold millions of these: their amounts are encoded in binary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JournalLine {
    #[serde(with = "journal_causes::cause")]
    pub cause: Arc<Cause>,
    #[serde(with = "crate::values::bin_decimal")]
    pub basis: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub adjustments: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub earned: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub paid: Decimal,
    #[serde(with = "crate::values::bin_decimal")]
    pub reserved: Decimal,
    /// The payout the event issued for this entry, if any.
    #[serde(with = "journal_payout")]
    pub payout: Option<(uuid::Uuid, Decimal, PayoutReason)>,
}

/// Journals in checkpoints: the lines an event left share one [`Cause`], and so do they
/// in a checkpoint — a cause is written in full where it first comes up, and as its
/// number after that; reading gives the lines of one cause one shared `Arc` again.
/// (Written per line, causes had been most of a checkpoint's size, and a restored
/// journal held a copy of its cause per line.) The numbering lives for one journal's
/// encoding or decoding, on this thread.
mod journal_causes {
    use super::{Cause, EntryJournal, EntryKey, HashMap};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::cell::RefCell;
    use std::sync::Arc;

    enum Table {
        Writing(std::collections::HashMap<*const Cause, u32>),
        Reading(Vec<Arc<Cause>>),
    }

    thread_local! {
        static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
    }

    /// Installs a table for the duration of one journal's encoding or decoding.
    struct Scope(Option<Table>);

    impl Scope {
        fn enter(table: Table) -> Scope {
            Scope(TABLE.with(|t| t.borrow_mut().replace(table)))
        }
    }

    impl Drop for Scope {
        fn drop(&mut self) {
            let outer = self.0.take();
            TABLE.with(|t| *t.borrow_mut() = outer);
        }
    }

    type Journal = Option<HashMap<EntryKey, EntryJournal>>;

    pub fn serialize<S: Serializer>(value: &Journal, serializer: S) -> Result<S::Ok, S::Error> {
        let _scope = Scope::enter(Table::Writing(Default::default()));
        value.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Journal, D::Error> {
        let _scope = Scope::enter(Table::Reading(Vec::new()));
        Journal::deserialize(deserializer)
    }

    #[derive(Serialize)]
    enum Written<'a> {
        Full(&'a Cause),
        Seen(u32),
    }

    #[derive(Deserialize)]
    enum Read {
        Full(Cause),
        Seen(u32),
    }

    /// `with` for [`super::JournalLine::cause`].
    pub mod cause {
        use super::*;

        pub fn serialize<S: Serializer>(
            value: &Arc<Cause>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let written = TABLE.with(|t| match t.borrow_mut().as_mut() {
                Some(Table::Writing(seen)) => {
                    let next = seen.len() as u32;
                    match seen.entry(Arc::as_ptr(value)) {
                        std::collections::hash_map::Entry::Occupied(n) => Written::Seen(*n.get()),
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(next);
                            Written::Full(value)
                        }
                    }
                }
                // A line encoded on its own: its cause in full.
                _ => Written::Full(value),
            });
            written.serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Arc<Cause>, D::Error> {
            let read = Read::deserialize(deserializer)?;
            TABLE.with(|t| {
                let mut table = t.borrow_mut();
                let causes = match table.as_mut() {
                    Some(Table::Reading(causes)) => Some(causes),
                    _ => None,
                };
                match (read, causes) {
                    (Read::Full(cause), causes) => {
                        let cause = Arc::new(cause);
                        if let Some(causes) = causes {
                            causes.push(cause.clone());
                        }
                        Ok(cause)
                    }
                    (Read::Seen(n), causes) => causes
                        .and_then(|c| c.get(n as usize).cloned())
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!(
                                "journal line refers to cause {n}, which precedes it nowhere"
                            ))
                        }),
                }
            })
        }
    }
}

/// [`JournalLine::payout`] with its amount in the checkpoint form of every other
/// amount (`bin_decimal`).
mod journal_payout {
    use super::PayoutReason;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Held = Option<(uuid::Uuid, Decimal, PayoutReason)>;

    #[derive(Serialize, Deserialize)]
    struct Paid(
        uuid::Uuid,
        #[serde(with = "crate::values::bin_decimal")] Decimal,
        PayoutReason,
    );

    pub fn serialize<S: Serializer>(value: &Held, serializer: S) -> Result<S::Ok, S::Error> {
        value
            .map(|(id, amount, reason)| Paid(id, amount, reason))
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Held, D::Error> {
        let held = Option::<Paid>::deserialize(deserializer)?;
        Ok(held.map(|Paid(id, amount, reason)| (id, amount, reason)))
    }
}

fn refuse(code: Code, message: String) -> Applied {
    Applied {
        refusal: Some(Refusal::new(code, message)),
        payouts: Vec::new(),
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Keeps a journal per entry from now on (what statements explain).
    pub fn enable_journal(&mut self) {
        if self.journal.is_none() {
            self.journal = Some(HashMap::default());
        }
    }

    pub fn journal_enabled(&self) -> bool {
        self.journal.is_some()
    }

    /// Applies one event that passed intake, at the next position of the log.
    pub fn apply(&mut self, event: &Event) -> Applied {
        let mut payouts = Vec::new();
        let refusal = self.apply_into(event, &mut payouts);
        Applied { refusal, payouts }
    }

    /// [`Ledger::apply`], appending the payouts to `payouts` (a replay's growing list)
    /// instead of a vector of their own. On a refusal nothing is appended.
    pub fn apply_into(&mut self, event: &Event, payouts: &mut Vec<Payout>) -> Option<Refusal> {
        debug_assert!(self.dirty.is_empty());
        let applied = match &event.data {
            EventData::ProgramPublished(def) => self.program_published(def),
            EventData::PartnerEnrolled {
                partner_id,
                program_id,
                target,
            } => self.partner_enrolled(partner_id, program_id, *target),
            EventData::PartnerWithdrawn {
                partner_id,
                program_id,
            } => self.partner_withdrawn(partner_id, program_id),
            EventData::SaleRecorded(sale) => self.sale_recorded(event, sale),
            EventData::SaleReturned(ret) => self.sale_returned(ret),
            EventData::TrainingCompleted {
                partner_id,
                person_id,
                certification,
                ..
            } => self.training_completed(event, partner_id, person_id, certification.as_deref()),
            EventData::ClaimSubmitted {
                claim_id,
                partner_id,
                program_id,
                amount,
                ..
            } => self.claim_submitted(claim_id, partner_id, program_id, *amount),
            EventData::ClaimDecided {
                claim_id,
                approved,
                approved_amount,
            } => self.claim_decided(event, claim_id, *approved, *approved_amount),
            EventData::PeriodClosed { program_id, period } => {
                self.period_closed(program_id, period)
            }
            EventData::AdjustmentPosted {
                adjustment_id,
                partner_id,
                program_id,
                period,
                amount,
                ..
            } => self.adjustment_posted(adjustment_id, partner_id, program_id, period, *amount),
        };
        if applied.refusal.is_some() {
            debug_assert!(self.dirty.is_empty(), "a refused event changed entries");
            self.dirty.clear();
        } else {
            payouts.extend(applied.payouts);
            self.sweep(event, payouts);
        }
        applied.refusal
    }

    // ----- lookups -------------------------------------------------------------------

    fn program_by_name(&self, program_id: &str) -> Option<(Sym, &Program)> {
        let sym = self.syms.get(program_id)?;
        self.programs.get(&sym).map(|p| (sym, p))
    }

    fn is_enrolled(&self, partner: Sym, program: Sym) -> bool {
        self.enrollments
            .get(&(partner, program))
            .is_some_and(|e| e.enrolled)
    }

    fn counts_for(&self, partner: Option<Sym>, program: Sym, p: &Program) -> bool {
        !p.current().requires_enrollment || partner.is_some_and(|s| self.is_enrolled(s, program))
    }

    fn entry_or_create(&mut self, key: EntryKey) -> &mut Entry {
        match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                if let Some(p) = self.programs.get_mut(&key.program) {
                    p.periods.entry(key.period).or_default().push(key.partner);
                }
                self.partner_entries
                    .entry((key.partner, key.program))
                    .or_default()
                    .push(key.period);
                v.insert(Entry::default())
            }
        }
    }

    /// Entry order (SPEC §7): partner_id, program_id, period index. Names are compared
    /// only where the symbols differ, so keys of one partner sort without string work.
    fn entry_order(&self, a: &EntryKey, b: &EntryKey) -> std::cmp::Ordering {
        let by_name = |x: Sym, y: Sym| {
            if x == y {
                std::cmp::Ordering::Equal
            } else {
                self.syms.name(x).cmp(self.syms.name(y))
            }
        };
        by_name(a.partner, b.partner)
            .then_with(|| by_name(a.program, b.program))
            .then(a.period.cmp(&b.period))
    }

    /// The program version an entry is evaluated with and the partner's target for it:
    /// the frozen copy if its period is closed, else the current one (SPEC §3, §4).
    fn evaluation(&self, key: EntryKey) -> Option<(&ProgramDef, Option<Decimal>)> {
        let program = self.programs.get(&key.program)?;
        let current_target = self
            .enrollments
            .get(&(key.partner, key.program))
            .and_then(|e| e.target);
        Some(match program.closed.get(&key.period) {
            Some(frozen) => (
                frozen.def.as_ref(),
                frozen.targets.get(&key.partner).copied().or(current_target),
            ),
            None => (program.current().as_ref(), current_target),
        })
    }

    fn earned(&self, key: EntryKey, entry: &Entry) -> Decimal {
        match self.evaluation(key) {
            Some((def, target)) => earned_by(def, target, entry),
            None => entry.adjustments,
        }
    }

    /// Reserved, paid, expired and available of an MDF/co-op bucket (SPEC §4.2).
    fn fund_balance(&self, key: EntryKey, entry: &Entry) -> FundBalance {
        let earned = self.earned(key, entry);
        let expired_bucket = self
            .programs
            .get(&key.program)
            .is_some_and(|p| p.bucket_expired(key.period));
        let unspent = earned - entry.reserved - entry.paid;
        let expired = if expired_bucket {
            unspent.max(Decimal::ZERO)
        } else {
            Decimal::ZERO
        };
        FundBalance {
            reserved: entry.reserved,
            expired,
            available: unspent - expired,
            expired_bucket,
        }
    }

    /// The partner's buckets in a fund program, oldest period first.
    fn buckets(&self, partner: Sym, program: Sym) -> Vec<i64> {
        let mut periods = self
            .partner_entries
            .get(&(partner, program))
            .cloned()
            .unwrap_or_default();
        periods.sort_unstable();
        periods
    }

    // ----- event handlers ------------------------------------------------------------

    fn program_published(&mut self, def: &ProgramDef) -> Applied {
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

    fn partner_enrolled(
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

    fn partner_withdrawn(&mut self, partner_id: &str, program_id: &str) -> Applied {
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

    fn sale_recorded(&mut self, event: &Event, sale: &Sale) -> Applied {
        if self.sales.contains_key(&sale.sale_id) {
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
        for (_, program, period, amount) in counted {
            let key = EntryKey {
                partner,
                program,
                period,
            };
            self.entry_or_create(key).basis += amount;
            // Lines counting for the same entry mark it once (a sale touches only a few).
            if !self.dirty.contains(&key) {
                self.dirty.push(key);
            }
        }
        self.sales.insert(sale.sale_id.clone(), record);
        Applied::default()
    }

    fn sale_returned(&mut self, ret: &Return) -> Applied {
        if self.returns.contains(&ret.return_id) {
            return refuse(
                Code::DuplicateReturn,
                format!(
                    "return_id {} was already recorded by an earlier event",
                    ret.return_id
                ),
            );
        }
        let partner = self.syms.get(&ret.partner_id);
        let sale = match self.sales.get(&ret.sale_id) {
            Some(s) if Some(s.partner) == partner => s,
            Some(_) => {
                return refuse(
                    Code::UnknownSale,
                    format!(
                        "sale {} does not belong to partner {}",
                        ret.sale_id, ret.partner_id
                    ),
                )
            }
            None => {
                return refuse(
                    Code::UnknownSale,
                    format!("sale_id {} names no recorded sale", ret.sale_id),
                )
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
                    return refuse(
                        Code::UnknownLine,
                        format!("sale {} has no line {:?}", ret.sale_id, line.line_id),
                    )
                }
            }
        }
        for (line, &i) in ret.lines.iter().zip(&positions) {
            let sold = &sale.lines[i];
            let quantity = sold.returned_quantity.saturating_add(line.quantity);
            if quantity > sold.quantity {
                return refuse(
                    Code::ReturnExceedsSale,
                    format!(
                        "line {} of sale {}: {} units would be returned in all, but {} were sold",
                        line.line_id, ret.sale_id, quantity, sold.quantity
                    ),
                );
            }
            let net = sold.returned_net + line.net_amount;
            if net > sold.net_amount {
                return refuse(
                    Code::ReturnExceedsSale,
                    format!(
                        "line {} of sale {}: a net amount of {} would be returned in all, but the line's net amount is {}",
                        line.line_id, ret.sale_id, net, sold.net_amount
                    ),
                );
            }
        }
        let Some(sale) = self.sales.get_mut(&ret.sale_id) else {
            return Applied::default();
        };
        let partner = sale.partner;
        let mut changes: Vec<(EntryKey, u64, Decimal)> = Vec::new();
        for (line, &i) in ret.lines.iter().zip(&positions) {
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
        self.returns.insert(ret.return_id.clone());
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
            self.entry_or_create(key).basis -= amount;
            self.dirty.push(key);
        }
        Applied::default()
    }

    fn training_completed(
        &mut self,
        event: &Event,
        partner_id: &str,
        person_id: &str,
        certification: Option<&str>,
    ) -> Applied {
        let Some(cert) = certification else {
            return Applied::default();
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
            let already = partner.is_some_and(|s| {
                self.trained
                    .contains(&(sym, s, Text::from(person_id), Text::from(cert)))
            });
            if !already {
                counts.push((sym, def.period.index_of(event.date)));
            }
        }
        if counts.is_empty() {
            return Applied::default();
        }
        let partner = self.syms.intern(partner_id);
        for (program, period) in counts {
            self.trained
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
        Applied::default()
    }

    fn claim_submitted(
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
        self.claims.insert(Text::from(claim_id), claim);
        Applied::default()
    }

    fn claim_decided(
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

    fn invalid_period(program_id: &str, p: &Program, label: &PeriodLabel) -> Applied {
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

    fn period_closed(&mut self, program_id: &str, label: &PeriodLabel) -> Applied {
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

    fn adjustment_posted(
        &mut self,
        adjustment_id: &str,
        partner_id: &str,
        program_id: &str,
        label: &PeriodLabel,
        amount: Decimal,
    ) -> Applied {
        if self.adjustments.contains(adjustment_id) {
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
        self.adjustments.insert(Text::from(adjustment_id));
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

    // ----- settlement ----------------------------------------------------------------

    /// SPEC §5 over the entries the event may have changed, in entry order.
    fn sweep(&mut self, event: &Event, payouts: &mut Vec<Payout>) {
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
                        journal.entry(key).or_default().push(line);
                    }
                }
            }
            if let Some(p) = payout {
                payouts.push(p);
            }
        }
        self.dirty = dirty;
    }

    /// Pays `earned − paid` of one entry if it is payable and not zero (SPEC §5).
    /// Also returns `earned` when it was computed (a payable entry), which paying does
    /// not change, so that the journal need not compute it again.
    fn settle(
        &mut self,
        key: EntryKey,
        event: &Event,
        closing: Option<(Sym, i64)>,
    ) -> (Option<Payout>, Option<Decimal>) {
        let Some(entry) = self.entries.get(&key) else {
            return (None, None);
        };
        let Some(program) = self.programs.get(&key.program) else {
            return (None, None);
        };
        if program.kind().is_fund() {
            return (None, None); // only claim approvals pay MDF/co-op (SPEC §4.2)
        }
        let closed = program.closed.contains_key(&key.period);
        let Some((def, target)) = self.evaluation(key) else {
            return (None, None);
        };
        let always = def.rules.always_payable();
        if !(always || closed) {
            return (None, None);
        }
        let earned = earned_by(def, target, entry);
        let due = earned - entry.paid;
        if due.is_zero() {
            return (None, Some(earned));
        }
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

    // ----- views ---------------------------------------------------------------------

    /// Every entry, sorted by partner_id, program_id and period index (SPEC §7).
    pub fn balances(&self) -> Vec<Balance> {
        let mut keys: Vec<EntryKey> = self.entries.keys().copied().collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        self.balances_of(&keys)
    }

    /// One partner's entries, in the order of `balances()` — without visiting the others.
    pub fn partner_balances(&self, partner_id: &str) -> Vec<Balance> {
        let Some(partner) = self.syms.get(partner_id) else {
            return Vec::new();
        };
        let mut keys: Vec<EntryKey> = self
            .program_order
            .iter()
            .filter_map(|&program| {
                self.partner_entries
                    .get(&(partner, program))
                    .map(|periods| (program, periods))
            })
            .flat_map(|(program, periods)| {
                periods.iter().map(move |&period| EntryKey {
                    partner,
                    program,
                    period,
                })
            })
            .collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        self.balances_of(&keys)
    }

    fn balances_of(&self, keys: &[EntryKey]) -> Vec<Balance> {
        keys.iter()
            .filter_map(|&key| {
                let entry = self.entries.get(&key)?;
                let program = self.programs.get(&key.program)?;
                let kind = program.kind();
                Some(Balance {
                    partner_id: self.syms.name(key.partner).to_string(),
                    program_id: self.syms.name(key.program).to_string(),
                    period: program.period_kind().label(key.period).into(),
                    period_index: key.period,
                    kind,
                    currency: program.currency(),
                    basis: entry.basis,
                    earned: self.earned(key, entry),
                    paid: entry.paid,
                    closed: program.closed.contains_key(&key.period),
                    fund: kind.is_fund().then(|| self.fund_balance(key, entry)),
                })
            })
            .collect()
    }

    /// One claim, found by its id (no scan of the others).
    pub fn claim(&self, claim_id: &str) -> Option<ClaimView> {
        let (id, c) = self.claims.get_key_value(claim_id)?;
        let currency = self.programs.get(&c.program)?.currency();
        Some(ClaimView {
            claim_id: id.to_string(),
            partner_id: self.syms.name(c.partner).to_string(),
            program_id: self.syms.name(c.program).to_string(),
            amount: c.amount,
            currency,
            status: c.status,
            approved_amount: c.approved_amount,
        })
    }

    /// The entries of one program's period (by its label), in the order of
    /// `balances()`; `None` if there is no such program. Visits the program's partners,
    /// not every entry.
    pub fn period_balances(&self, program_id: &str, period: &str) -> Option<Vec<Balance>> {
        let (program, p) = self.program_by_name(program_id)?;
        let Some(label) = PeriodLabel::parse(period).filter(|l| l.kind == p.period_kind()) else {
            return Some(Vec::new());
        };
        let mut keys: Vec<EntryKey> = self
            .partner_entries
            .iter()
            .filter(|((_, prog), periods)| *prog == program && periods.contains(&label.index))
            .map(|(&(partner, _), _)| EntryKey {
                partner,
                program,
                period: label.index,
            })
            .collect();
        keys.sort_by(|a, b| self.entry_order(a, b));
        Some(self.balances_of(&keys))
    }

    /// Every claim, sorted by claim_id.
    pub fn claims(&self) -> Vec<ClaimView> {
        let mut ids: Vec<&Text> = self.claims.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| {
                let c = self.claims.get(id)?;
                let currency = self.programs.get(&c.program)?.currency();
                Some(ClaimView {
                    claim_id: id.to_string(),
                    partner_id: self.syms.name(c.partner).to_string(),
                    program_id: self.syms.name(c.program).to_string(),
                    amount: c.amount,
                    currency,
                    status: c.status,
                    approved_amount: c.approved_amount,
                })
            })
            .collect()
    }
}

/// A program as the query API shows it: the current version, every version, the closed
/// periods.
#[derive(Debug, Clone)]
pub struct ProgramView {
    pub current: Arc<ProgramDef>,
    pub versions: Vec<Arc<ProgramDef>>,
    /// Labels of the closed periods, in period order.
    pub closed_periods: Vec<String>,
}

impl Ledger {
    /// Every program, sorted by program_id.
    pub fn programs(&self) -> Vec<ProgramView> {
        let mut out: Vec<ProgramView> = self
            .programs
            .values()
            .map(|p| {
                let mut closed: Vec<i64> = p.closed.keys().copied().collect();
                closed.sort_unstable();
                ProgramView {
                    current: Arc::clone(p.current()),
                    versions: p.versions.clone(),
                    closed_periods: closed
                        .into_iter()
                        .map(|i| p.period_kind().label(i).into())
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.current.program_id.cmp(&b.current.program_id));
        out
    }
}

/// Everything that explains one entry's numbers.
#[derive(Debug, Clone)]
pub struct Statement {
    pub balance: Balance,
    /// Every event that touched the entry, in log order (empty unless the journal is on).
    pub lines: Vec<JournalLine>,
    /// How the formula reads the basis now: tiers, target and attainment, cap, expiry…
    pub explanation: serde_json::Value,
}

impl Ledger {
    /// The statement of (partner, program, period label), if that entry exists.
    pub fn statement(&self, partner_id: &str, program_id: &str, period: &str) -> Option<Statement> {
        let partner = self.syms.get(partner_id)?;
        let program_sym = self.syms.get(program_id)?;
        let program = self.programs.get(&program_sym)?;
        let label = PeriodLabel::parse(period).filter(|l| l.kind == program.period_kind())?;
        let key = EntryKey {
            partner,
            program: program_sym,
            period: label.index,
        };
        let entry = self.entries.get(&key)?;
        let balance = self.balances_of(&[key]).into_iter().next()?;
        let (def, target) = self.evaluation(key)?;
        let b = entry.basis;
        let money = |d: Decimal| crate::values::format_money(d, def.currency);
        let exact = crate::values::format_exact;
        let explanation = match &def.rules {
            Rules::Rebate { basis, mode, tiers } => {
                let current = tiers.iter().rev().find(|t| t.from <= b);
                let next = tiers.iter().find(|t| t.from > b);
                serde_json::json!({
                    "basis_measure": basis.as_str(),
                    "mode": match mode { crate::rules::RebateMode::Retroactive => "retroactive", crate::rules::RebateMode::Incremental => "incremental" },
                    "tier_reached": current.map(|t| serde_json::json!({"from": exact(t.from), "rate": exact(t.rate)})),
                    "next_tier": next.map(|t| serde_json::json!({"from": exact(t.from), "rate": exact(t.rate), "still_needed": exact(t.from - b)})),
                })
            }
            Rules::Bonus {
                measure,
                thresholds,
                accelerator,
            } => {
                let attainment = target.filter(|t| !t.is_zero()).map(|t| b / t);
                let next = target.and_then(|t| {
                    thresholds
                        .iter()
                        .find(|th| b < th.attainment * t)
                        .map(|th| (th, th.attainment * t - b))
                });
                serde_json::json!({
                    "measure": measure.as_str(),
                    "target": target.map(exact),
                    "attainment": attainment.map(|a| exact(a.round_dp(6))),
                    "next_threshold": next.map(|(th, need)| serde_json::json!({"attainment": exact(th.attainment), "payout": money(th.payout), "still_needed": exact(need)})),
                    "accelerator": accelerator.as_ref().map(|a| serde_json::json!({"above": exact(a.above), "rate": exact(a.rate)})),
                })
            }
            Rules::Spif {
                rate,
                cap_per_period,
                payout,
            } => serde_json::json!({
                "rate": match rate { crate::rules::SpifRate::PerUnit(r) => serde_json::json!({"per_unit": exact(*r)}), crate::rules::SpifRate::Rate(r) => serde_json::json!({"rate": exact(*r)}) },
                "cap_per_period": cap_per_period.map(money),
                "payout": match payout { crate::rules::SpifPayout::Immediate => "immediate", crate::rules::SpifPayout::PeriodClose => "period_close" },
            }),
            Rules::Training {
                rewards,
                cap_per_period,
            } => serde_json::json!({
                "completions": entry.completions,
                "rewards": rewards.iter().map(|r| serde_json::json!({"certification": r.certification, "amount": money(r.amount)})).collect::<Vec<_>>(),
                "cap_per_period": cap_per_period.map(money),
            }),
            Rules::Fund {
                accrual_rate,
                cap_per_period,
                expires_after_periods,
            } => {
                let expires_index = i128::from(label.index) + i128::from(*expires_after_periods);
                let claims: Vec<serde_json::Value> = {
                    let mut ids: Vec<&Text> = self.claims.keys().collect();
                    ids.sort();
                    ids.into_iter()
                        .filter_map(|id| {
                            let c = self.claims.get(id)?;
                            let took = c.reservations.iter().find(|(p, _)| *p == label.index)?;
                            (c.partner == partner && c.program == program_sym).then(
                                || serde_json::json!({"claim_id": id, "reserved": money(took.1)}),
                            )
                        })
                        .collect()
                };
                serde_json::json!({
                    "accrual_rate": exact(*accrual_rate),
                    "cap_per_period": cap_per_period.map(money),
                    "expires_after_periods": expires_after_periods,
                    "expires_when_closed": i64::try_from(expires_index).ok().map(|i| program.period_kind().label(i)),
                    "expired": program.bucket_expired(label.index),
                    "pending_claims_reserving": claims,
                })
            }
        };
        let lines = self
            .journal
            .as_ref()
            .and_then(|j| j.get(&key))
            .map(|j| j.lines().cloned().collect())
            .unwrap_or_default();
        Some(Statement {
            balance,
            lines,
            explanation,
        })
    }
}

/// Whether sales can count for a program of this definition (its kind and measure are
/// the same in every version; see [`immutable_change`]).
fn counts_sales(def: &ProgramDef) -> bool {
    def.kind.counts_sales() && def.rules.measure().is_some()
}

/// The field a later version may not change, if it does (SPEC §3 `program_immutable_field`).
fn immutable_change(current: &ProgramDef, next: &ProgramDef) -> Option<String> {
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

#[cfg(test)]
mod payout_id_tests {
    use super::payout_id;

    #[test]
    fn parts_are_escaped_percent_first_then_colon() {
        let id = payout_id(["erp:eu", "50%:x", "p", "prog", "2026-Q1"]);
        let name = "incentive-ledger:payout:erp%3Aeu:50%25%3Ax:p:prog:2026-Q1";
        assert_eq!(
            id,
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
        );
        // A part that already looks escaped is escaped again, not left alone.
        let id = payout_id(["s", "a%3Ab", "p", "q", "2026"]);
        let name = "incentive-ledger:payout:s:a%253Ab:p:q:2026";
        assert_eq!(
            id,
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
        );
    }

    /// The name built and escaped character by character, as SPEC §5 words it.
    fn by_the_letter(parts: [&str; 5]) -> uuid::Uuid {
        let mut name = String::from("incentive-ledger:payout:");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                name.push(':');
            }
            for c in part.chars() {
                match c {
                    '%' => name.push_str("%25"),
                    ':' => name.push_str("%3A"),
                    c => name.push(c),
                }
            }
        }
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
    }

    proptest::proptest! {
        #[test]
        fn equals_uuid_v5_of_the_escaped_name(
            parts in proptest::array::uniform5("[a-z%:é€0-9-]{0,70}")
        ) {
            let parts = parts.each_ref().map(String::as_str);
            proptest::prop_assert_eq!(payout_id(parts), by_the_letter(parts));
        }
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    fn line(n: u64, cause: &Arc<Cause>) -> JournalLine {
        JournalLine {
            cause: cause.clone(),
            basis: Decimal::from(n),
            adjustments: Decimal::ZERO,
            earned: Decimal::ZERO,
            paid: Decimal::ZERO,
            reserved: Decimal::ZERO,
            payout: None,
        }
    }

    #[test]
    fn a_journal_keeps_every_line_in_order_across_chunks() {
        let cause = Arc::new(Cause {
            source: "erp".into(),
            id: "e1".into(),
            event_type: crate::event::EventType::SaleRecorded,
            time: "2026-01-01T00:00:00Z".into(),
        });
        let mut journal = EntryJournal::default();
        let n = 3 * JOURNAL_CHUNK as u64 + 5;
        for i in 0..n {
            journal.push(line(i, &cause));
        }
        let bases: Vec<Decimal> = journal.lines().map(|l| l.basis).collect();
        assert_eq!(bases, (0..n).map(Decimal::from).collect::<Vec<_>>());
        assert_eq!(journal.chunks.len(), 4, "three full chunks, then the rest");
        assert!(journal.chunks.iter().all(|c| c.len() <= JOURNAL_CHUNK));
        assert!(
            journal.chunks[1].capacity() == JOURNAL_CHUNK,
            "later chunks never grow"
        );
        // Lines of one event share its cause.
        assert_eq!(Arc::strong_count(&cause), n as usize + 1);
    }

    /// Every (line, cause) of every journal, by entry, in order.
    fn journal_lines(ledger: &Ledger) -> Vec<(EntryKey, Vec<JournalLine>)> {
        let mut all: Vec<_> = ledger
            .journal
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, j)| (*k, j.lines().cloned().collect::<Vec<_>>()))
            .collect();
        all.sort_by_key(|(k, _)| (k.partner.0, k.program.0, k.period));
        all
    }

    #[test]
    fn a_checkpointed_journal_shares_each_cause_again_and_writes_it_once() {
        let mut ledger = Ledger::new();
        ledger.enable_journal();
        let mut payouts = Vec::new();
        for line in crate::gen::Generator::new(crate::gen::GenConfig::new(9, 3000)) {
            if let Ok(accepted) = crate::intake::check(line.as_bytes()) {
                ledger.apply_into(&accepted.event, &mut payouts);
            }
        }
        let before = journal_lines(&ledger);
        let lines: usize = before.iter().map(|(_, l)| l.len()).sum();
        let mut causes = std::collections::HashSet::new();
        for (_, l) in &before {
            causes.extend(l.iter().map(|line| Arc::as_ptr(&line.cause)));
        }
        assert!(
            lines > 2 * causes.len(),
            "{lines} lines, {} causes",
            causes.len()
        );

        let bytes = postcard::to_allocvec(&ledger).unwrap();
        let back: Ledger = postcard::from_bytes(&bytes).unwrap();
        let after = journal_lines(&back);
        assert_eq!(after, before);
        // One `Arc` per cause again, shared by all its lines.
        let mut restored = std::collections::HashSet::new();
        for (_, l) in &after {
            restored.extend(l.iter().map(|line| Arc::as_ptr(&line.cause)));
        }
        assert_eq!(restored.len(), causes.len());

        // Each cause is written once: the encoding is smaller than with every line's
        // cause in full, by about the size of the causes it did not repeat.
        let full: usize = before
            .iter()
            .flat_map(|(_, l)| l)
            .map(|line| postcard::to_allocvec(&line).unwrap().len())
            .sum();
        let lines_alone: usize = bytes.len();
        assert!(
            lines_alone < full,
            "checkpoint {lines_alone} bytes, the lines with full causes alone {full}"
        );
    }

    #[test]
    fn a_line_referring_to_an_unknown_cause_is_refused() {
        // A line outside a journal encodes its cause in full and reads back alone.
        let cause = Arc::new(Cause {
            source: "erp".into(),
            id: "e1".into(),
            event_type: crate::event::EventType::SaleRecorded,
            time: "2026-01-01T00:00:00Z".into(),
        });
        let bytes = postcard::to_allocvec(&line(1, &cause)).unwrap();
        let back: JournalLine = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, line(1, &cause));
        // A reference (variant 1, cause 0) with no cause before it.
        let mut bad = bytes.clone();
        let mut reference = postcard::to_allocvec(&(1u32, 0u32)).unwrap();
        let full_cause = postcard::to_allocvec(&*cause).unwrap();
        reference.extend_from_slice(&bad[1 + full_cause.len()..]);
        bad = reference;
        let err = postcard::from_bytes::<JournalLine>(&bad);
        assert!(err.is_err());
    }
}
