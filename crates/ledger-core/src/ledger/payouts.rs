//! Payouts: what the sweep issues, why, and their deterministic uuid v5 ids (SPEC §5).

use super::*;

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
