//! The replay document of SPEC §7 and its digest.
//!
//! Turns the fold's exact values into the document's strings (money with exactly the
//! currency's minor digits, bases normalized) and computes the digest: SHA-256 over the
//! RFC 8785 form of `{"balances", "claims", "payouts"}`. Counts and refusals are kept by
//! [`crate::replay::Replay`], which assembles the whole document.

use crate::event::Text;
use crate::ledger::{Balance, ClaimView, Payout};
use crate::values::{format_exact, format_money};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Borrow;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub received: u64,
    pub duplicates: u64,
    pub applied: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRow {
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub kind: String,
    pub currency: String,
    pub basis: String,
    pub earned: String,
    pub paid: String,
    pub closed: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reserved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expired: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub available: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expired_bucket: Option<bool>,
}

impl From<&Balance> for BalanceRow {
    fn from(b: &Balance) -> BalanceRow {
        let money = |d| format_money(d, b.currency);
        BalanceRow {
            partner_id: b.partner_id.clone(),
            program_id: b.program_id.clone(),
            period: b.period.clone(),
            kind: b.kind.as_str().to_string(),
            currency: b.currency.to_string(),
            basis: format_exact(b.basis),
            earned: money(b.earned),
            paid: money(b.paid),
            closed: b.closed,
            reserved: b.fund.as_ref().map(|f| money(f.reserved)),
            expired: b.fund.as_ref().map(|f| money(f.expired)),
            available: b.fund.as_ref().map(|f| money(f.available)),
            expired_bucket: b.fund.as_ref().map(|f| f.expired_bucket),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRow {
    pub claim_id: String,
    pub partner_id: String,
    pub program_id: String,
    pub amount: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub approved_amount: Option<String>,
}

impl From<&ClaimView> for ClaimRow {
    fn from(c: &ClaimView) -> ClaimRow {
        ClaimRow {
            claim_id: c.claim_id.clone(),
            partner_id: c.partner_id.clone(),
            program_id: c.program_id.clone(),
            amount: format_money(c.amount, c.currency),
            status: c.status.as_str().to_string(),
            approved_amount: c.approved_amount.map(|a| format_money(a, c.currency)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRow {
    pub payout_id: String,
    pub partner_id: Text,
    pub program_id: Text,
    pub period: Text,
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub reason: String,
    pub cause_source: Text,
    pub cause_id: Text,
}

impl From<&Payout> for PayoutRow {
    fn from(p: &Payout) -> PayoutRow {
        PayoutRow {
            payout_id: p.payout_id.to_string(),
            partner_id: p.partner_id.clone(),
            program_id: p.program_id.clone(),
            period: p.period.clone(),
            kind: p.kind.as_str().to_string(),
            amount: format_money(p.amount, p.currency),
            currency: p.currency.to_string(),
            reason: p.reason.as_str().to_string(),
            cause_source: p.cause_source.clone(),
            cause_id: p.cause_id.clone(),
        }
    }
}

/// The `source` of `payout.issued` events unless configured otherwise.
pub const PAYOUT_SOURCE: &str = "incentive-ledger";

/// A payout event's `time`: the causing event's `time` in UTC with `Z` (as written if it
/// would not parse, which intake does not let happen).
fn payout_time(cause_time: &str) -> std::borrow::Cow<'_, str> {
    match crate::values::normalize_time_utc(cause_time) {
        Some(t) => std::borrow::Cow::Owned(t),
        None => std::borrow::Cow::Borrowed(cause_time),
    }
}

impl PayoutRow {
    /// The `payout.issued` CloudEvent for this payout (schemas/payout-issued.schema.json),
    /// from `source`. Its `time` is the `time` of the event that caused it, in UTC, so
    /// that the message is the same on every replay and redelivery.
    pub fn cloudevent(&self, cause_time: &str, source: &str) -> serde_json::Value {
        serde_json::json!({
            "specversion": "1.0",
            "id": self.payout_id,
            "source": source,
            "type": "payout.issued",
            "time": payout_time(cause_time),
            "subject": format!("{}/{}/{}", self.partner_id, self.program_id, self.period),
            "datacontenttype": "application/json",
            "data": self,
        })
    }
}

/// The `payout.issued` CloudEvent of `p`, written straight into `out`: the same bytes
/// as `serde_json::to_vec(&PayoutRow::from(p).cloudevent(&p.cause_time, source))` (members in
/// key order at both levels, as a `serde_json::Value` prints them), without building
/// the row and the value first — the service writes one per payout.
pub fn write_payout_cloudevent(
    p: &Payout,
    source: &str,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    /// Fields in key order: that is the order `Value` objects print in.
    #[derive(Serialize)]
    struct Data<'a> {
        amount: &'a str,
        cause_id: &'a str,
        cause_source: &'a str,
        currency: &'a str,
        kind: &'a str,
        partner_id: &'a str,
        payout_id: &'a str,
        period: &'a str,
        program_id: &'a str,
        reason: &'a str,
    }
    #[derive(Serialize)]
    struct Event<'a> {
        data: Data<'a>,
        datacontenttype: &'a str,
        id: &'a str,
        source: &'a str,
        specversion: &'a str,
        subject: &'a str,
        time: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
    }
    let mut id = uuid::Uuid::encode_buffer();
    let id = p.payout_id.hyphenated().encode_lower(&mut id);
    let amount = format_money(p.amount, p.currency);
    let currency = p.currency.to_string();
    let subject = format!("{}/{}/{}", p.partner_id, p.program_id, p.period);
    let time = payout_time(&p.cause_time);
    serde_json::to_writer(
        out,
        &Event {
            data: Data {
                amount: &amount,
                cause_id: &p.cause_id,
                cause_source: &p.cause_source,
                currency: &currency,
                kind: p.kind.as_str(),
                partner_id: &p.partner_id,
                payout_id: id,
                period: &p.period,
                program_id: &p.program_id,
                reason: p.reason.as_str(),
            },
            datacontenttype: "application/json",
            id,
            source,
            specversion: "1.0",
            subject: &subject,
            time: &time,
            event_type: "payout.issued",
        },
    )
}

/// A `rejected` row: `source` and `id` when known, else the input's `line`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<u64>,
    pub code: String,
}

/// A row that can be written as CSV (finance's spreadsheets): its header, and its
/// fields in the header's order.
pub trait CsvRow {
    const HEADER: &'static [&'static str];
    fn fields(&self) -> Vec<String>;
}

/// `rows` as CSV (RFC 4180, a header line, CRLF).
pub fn to_csv<'a, R: CsvRow + 'a>(rows: impl IntoIterator<Item = &'a R>) -> String {
    let mut out = String::new();
    crate::values::push_csv_record(&mut out, R::HEADER.iter().copied());
    for r in rows {
        let fields = r.fields();
        crate::values::push_csv_record(&mut out, fields.iter().map(String::as_str));
    }
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(String::new, ToString::to_string)
}

impl CsvRow for BalanceRow {
    const HEADER: &'static [&'static str] = &[
        "partner_id",
        "program_id",
        "period",
        "kind",
        "currency",
        "basis",
        "earned",
        "paid",
        "closed",
        "reserved",
        "expired",
        "available",
        "expired_bucket",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.partner_id.clone(),
            self.program_id.clone(),
            self.period.clone(),
            self.kind.clone(),
            self.currency.clone(),
            self.basis.clone(),
            self.earned.clone(),
            self.paid.clone(),
            self.closed.to_string(),
            opt(&self.reserved),
            opt(&self.expired),
            opt(&self.available),
            opt(&self.expired_bucket),
        ]
    }
}

impl CsvRow for PayoutRow {
    const HEADER: &'static [&'static str] = &[
        "payout_id",
        "partner_id",
        "program_id",
        "period",
        "kind",
        "amount",
        "currency",
        "reason",
        "cause_source",
        "cause_id",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.payout_id.clone(),
            self.partner_id.to_string(),
            self.program_id.to_string(),
            self.period.to_string(),
            self.kind.clone(),
            self.amount.clone(),
            self.currency.clone(),
            self.reason.clone(),
            self.cause_source.to_string(),
            self.cause_id.to_string(),
        ]
    }
}

impl CsvRow for ClaimRow {
    const HEADER: &'static [&'static str] = &[
        "claim_id",
        "partner_id",
        "program_id",
        "amount",
        "status",
        "approved_amount",
    ];
    fn fields(&self) -> Vec<String> {
        vec![
            self.claim_id.clone(),
            self.partner_id.clone(),
            self.program_id.clone(),
            self.amount.clone(),
            self.status.clone(),
            opt(&self.approved_amount),
        ]
    }
}

/// The whole replay document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub events: Counts,
    pub balances: Vec<BalanceRow>,
    pub claims: Vec<ClaimRow>,
    pub payouts: Vec<PayoutRow>,
    pub rejected: Vec<RejectedRow>,
    pub digest: String,
}

/// Hex SHA-256 over the RFC 8785 JSON of `{"balances", "claims", "payouts"}`.
///
/// Rows are written one at a time into the hash, straight from their fields (no JSON
/// value tree), so the document is never held twice in memory.
pub fn digest(balances: &[BalanceRow], claims: &[ClaimRow], payouts: &[PayoutRow]) -> String {
    digest_rows(balances, claims, payouts)
}

/// [`digest`] over rows produced one at a time, so that no row list is built for it.
pub fn digest_rows<B, C, P>(
    balances: impl IntoIterator<Item = B>,
    claims: impl IntoIterator<Item = C>,
    payouts: impl IntoIterator<Item = P>,
) -> String
where
    B: Borrow<BalanceRow>,
    C: Borrow<ClaimRow>,
    P: Borrow<PayoutRow>,
{
    let mut digest = PayoutDigest::begin(balances, claims);
    for p in payouts {
        digest.payout(p.borrow());
    }
    digest.finish()
}

/// The digest of SPEC §7 taken in the order its canonical text runs: balances and
/// claims (the state) first, then the payouts one at a time — each row hashed as it
/// comes, from a history store or a file of their canonical rows, without holding them.
pub struct PayoutDigest {
    hasher: Sha256,
    buf: Vec<u8>,
    section: Section,
    /// Rows hashed in the current section.
    rows: u64,
}

/// The array of the canonical text being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Balances,
    Claims,
    Payouts,
}

impl PayoutDigest {
    /// A digest at the start of the balances: `{"balances":[` is hashed (top-level keys
    /// in RFC 8785 order: balances < claims < payouts). Rows follow in document order.
    pub fn new() -> PayoutDigest {
        let mut hasher = Sha256::new();
        hasher.update(b"{\"balances\":[");
        PayoutDigest {
            hasher,
            buf: Vec::with_capacity(1024),
            section: Section::Balances,
            rows: 0,
        }
    }

    /// Hashes `{"balances":[…],"claims":[…],"payouts":[`.
    pub fn begin<B, C>(
        balances: impl IntoIterator<Item = B>,
        claims: impl IntoIterator<Item = C>,
    ) -> PayoutDigest
    where
        B: Borrow<BalanceRow>,
        C: Borrow<ClaimRow>,
    {
        let mut digest = PayoutDigest::new();
        for b in balances {
            digest.balance(b.borrow());
        }
        for c in claims {
            digest.claim(c.borrow());
        }
        digest.enter(Section::Payouts);
        digest
    }

    /// Moves on to `section` (closing the arrays before it), which must not be behind.
    fn enter(&mut self, section: Section) {
        assert!(section >= self.section, "rows are hashed in document order");
        while self.section < section {
            let (next, text): (Section, &[u8]) = match self.section {
                Section::Balances => (Section::Claims, b"],\"claims\":["),
                Section::Claims => (Section::Payouts, b"],\"payouts\":["),
                Section::Payouts => unreachable!("payouts are the last array"),
            };
            self.hasher.update(text);
            self.section = next;
            self.rows = 0;
        }
    }

    /// Hashes the canonical bytes of the next row of `section`.
    fn row(&mut self, section: Section, canonical: &[u8]) {
        debug_assert!(canonical.first() == Some(&b'{') && canonical.last() == Some(&b'}'));
        self.enter(section);
        if self.rows > 0 {
            self.hasher.update(b",");
        }
        self.hasher.update(canonical);
        self.rows += 1;
    }

    /// Hashes the next row of `section`, its canonical bytes written by `write`.
    fn row_written(&mut self, section: Section, write: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        write(&mut buf);
        self.row(section, &buf);
        self.buf = buf;
    }

    /// The next balance.
    pub fn balance(&mut self, row: &BalanceRow) {
        self.row_written(Section::Balances, |out| row.write_jcs(out));
    }

    /// The next claim (after every balance).
    pub fn claim(&mut self, row: &ClaimRow) {
        self.row_written(Section::Claims, |out| row.write_jcs(out));
    }

    /// The next payout (after every balance and claim).
    pub fn payout(&mut self, row: &PayoutRow) {
        self.row_written(Section::Payouts, |out| row.write_jcs(out));
    }

    /// The next payout, as the canonical bytes [`PayoutRow::write_jcs`] wrote.
    pub fn payout_jcs(&mut self, canonical: &[u8]) {
        self.row(Section::Payouts, canonical);
    }

    /// Hex SHA-256 of the whole text.
    pub fn finish(mut self) -> String {
        self.enter(Section::Payouts);
        self.hasher.update(b"]}");
        crate::ids::hex(&self.hasher.finalize())
    }
}

impl Default for PayoutDigest {
    fn default() -> PayoutDigest {
        PayoutDigest::new()
    }
}

/// A flat JSON object of string and boolean members written in RFC 8785 form; members
/// must come in key order (RFC 8785 sorts by UTF-16 code units, which for these ASCII
/// keys is byte order), checked in debug builds.
struct JcsObject<'a> {
    out: &'a mut Vec<u8>,
    members: usize,
    #[cfg(debug_assertions)]
    last_key: &'static str,
}

impl<'a> JcsObject<'a> {
    fn begin(out: &'a mut Vec<u8>) -> JcsObject<'a> {
        out.push(b'{');
        JcsObject {
            out,
            members: 0,
            #[cfg(debug_assertions)]
            last_key: "",
        }
    }

    fn key(&mut self, key: &'static str) {
        #[cfg(debug_assertions)]
        {
            assert!(self.last_key < key, "{key} written after {}", self.last_key);
            self.last_key = key;
        }
        if self.members > 0 {
            self.out.push(b',');
        }
        self.members += 1;
        crate::json::write_jcs_string(key, self.out);
        self.out.push(b':');
    }

    fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        crate::json::write_jcs_string(value, self.out);
        self
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    fn end(&mut self) {
        self.out.push(b'}');
    }
}

impl BalanceRow {
    /// The row's RFC 8785 form.
    pub fn write_jcs(&self, out: &mut Vec<u8>) {
        let mut o = JcsObject::begin(out);
        o.opt_str("available", self.available.as_deref())
            .str("basis", &self.basis)
            .bool("closed", self.closed)
            .str("currency", &self.currency)
            .str("earned", &self.earned)
            .opt_str("expired", self.expired.as_deref());
        if let Some(b) = self.expired_bucket {
            o.bool("expired_bucket", b);
        }
        o.str("kind", &self.kind)
            .str("paid", &self.paid)
            .str("partner_id", &self.partner_id)
            .str("period", &self.period)
            .str("program_id", &self.program_id)
            .opt_str("reserved", self.reserved.as_deref())
            .end();
    }
}

impl ClaimRow {
    /// The row's RFC 8785 form.
    pub fn write_jcs(&self, out: &mut Vec<u8>) {
        JcsObject::begin(out)
            .str("amount", &self.amount)
            .opt_str("approved_amount", self.approved_amount.as_deref())
            .str("claim_id", &self.claim_id)
            .str("partner_id", &self.partner_id)
            .str("program_id", &self.program_id)
            .str("status", &self.status)
            .end();
    }
}

impl PayoutRow {
    /// The row's RFC 8785 form.
    pub fn write_jcs(&self, out: &mut Vec<u8>) {
        JcsObject::begin(out)
            .str("amount", &self.amount)
            .str("cause_id", &self.cause_id)
            .str("cause_source", &self.cause_source)
            .str("currency", &self.currency)
            .str("kind", &self.kind)
            .str("partner_id", &self.partner_id)
            .str("payout_id", &self.payout_id)
            .str("period", &self.period)
            .str("program_id", &self.program_id)
            .str("reason", &self.reason)
            .end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_payout_event_is_byte_identical_to_the_value_form() {
        let mut replay = crate::Replay::new();
        for (i, line) in crate::gen::Generator::new(crate::gen::GenConfig::new(9, 3000)).enumerate()
        {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let mut payouts = replay.payouts().to_vec();
        assert!(payouts.len() > 100);
        // Strings that need escaping, and a negative amount.
        let mut odd = payouts[0].clone();
        odd.cause_source = "fin\u{1}é\"/\\\n".into();
        odd.cause_id = "id\twith\u{7f}\u{2028}".into();
        odd.cause_time = "2026-01-01T00:00:00.5+01:00".into();
        odd.amount = -odd.amount;
        payouts.push(odd);
        for p in &payouts {
            let expected =
                serde_json::to_vec(&PayoutRow::from(p).cloudevent(&p.cause_time, "erp/x")).unwrap();
            let mut direct = Vec::new();
            write_payout_cloudevent(p, "erp/x", &mut direct).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&expected)
            );
        }
        // The time is the cause's, in UTC with `Z`; the source is the one given.
        let mut odd_event = Vec::new();
        write_payout_cloudevent(&payouts[payouts.len() - 1], "erp/x", &mut odd_event).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&odd_event).unwrap();
        assert_eq!(v["time"], "2025-12-31T23:00:00.500Z");
        assert_eq!(v["source"], "erp/x");
    }

    /// The direct writers give the bytes `write_jcs` gives for the rows' JSON values, on
    /// every row of generated replays (and on strings that need escaping).
    #[test]
    fn canonical_rows_equal_the_value_route() {
        fn via_value<T: Serialize>(row: &T) -> Vec<u8> {
            let mut out = Vec::new();
            crate::json::write_jcs(&serde_json::to_value(row).unwrap(), &mut out);
            out
        }
        let mut replay = crate::Replay::new();
        for (i, line) in
            crate::gen::Generator::new(crate::gen::GenConfig::new(11, 4000)).enumerate()
        {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let mut doc = replay.document();
        assert!(doc.balances.iter().any(|b| b.reserved.is_some()));
        assert!(doc.claims.iter().any(|c| c.approved_amount.is_some()));
        assert!(doc.claims.iter().any(|c| c.approved_amount.is_none()));
        doc.payouts[0].cause_source = "fin\u{1}é\"/\\\n\u{2028}\u{7f}".into();
        doc.claims[0].claim_id = "c\t\u{1f}".into();
        for row in &doc.balances {
            let mut out = Vec::new();
            row.write_jcs(&mut out);
            assert_eq!(out, via_value(row));
        }
        for row in &doc.claims {
            let mut out = Vec::new();
            row.write_jcs(&mut out);
            assert_eq!(out, via_value(row));
        }
        for row in &doc.payouts {
            let mut out = Vec::new();
            row.write_jcs(&mut out);
            assert_eq!(out, via_value(row));
        }
    }

    #[test]
    fn streaming_digest_equals_digest_of_the_whole_canonical_text() {
        let balances = vec![BalanceRow {
            partner_id: "P-1".into(),
            program_id: "R".into(),
            period: "2026-Q1".into(),
            kind: "rebate".into(),
            currency: "EUR".into(),
            basis: "1".into(),
            earned: "0.02".into(),
            paid: "0.00".into(),
            closed: false,
            reserved: None,
            expired: None,
            available: None,
            expired_bucket: None,
        }];
        let payouts = vec![PayoutRow {
            payout_id: "x".into(),
            partner_id: "P-1".into(),
            program_id: "R".into(),
            period: "2026-Q1".into(),
            kind: "rebate".into(),
            amount: "1.00".into(),
            currency: "EUR".into(),
            reason: "settlement".into(),
            cause_source: "fin\u{1}é".into(),
            cause_id: "c:1".into(),
        }];
        let whole = serde_json::json!({"payouts": payouts, "claims": [], "balances": balances});
        let mut canonical = Vec::new();
        crate::json::write_jcs(&whole, &mut canonical);
        let expected = crate::ids::hex(&Sha256::digest(&canonical));
        assert_eq!(digest(&balances, &[], &payouts), expected);
    }
}
