//! The replay document of SPEC §7 and its digest.
//!
//! Turns the fold's exact values into the document's strings (money with exactly the
//! currency's minor digits, bases normalized) and computes the digest: SHA-256 over the
//! RFC 8785 form of `{"balances", "claims", "payouts"}`. Counts and refusals are kept by
//! [`crate::replay::Replay`], which assembles the whole document.

use crate::ledger::{Balance, ClaimView, Payout};
use crate::values::{format_exact, format_money};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    pub partner_id: String,
    pub program_id: String,
    pub period: String,
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub reason: String,
    pub cause_source: String,
    pub cause_id: String,
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
pub fn digest(balances: &[BalanceRow], claims: &[ClaimRow], payouts: &[PayoutRow]) -> String {
    #[derive(Serialize)]
    struct Digested<'a> {
        balances: &'a [BalanceRow],
        claims: &'a [ClaimRow],
        payouts: &'a [PayoutRow],
    }
    let value = serde_json::to_value(Digested {
        balances,
        claims,
        payouts,
    })
    // Serializing plain structs of strings and booleans cannot fail.
    .unwrap_or(serde_json::Value::Null);
    let mut canonical = Vec::with_capacity(4096);
    crate::json::write_jcs(&value, &mut canonical);
    let hash = Sha256::digest(&canonical);
    hash.iter().map(|b| format!("{b:02x}")).collect()
}
